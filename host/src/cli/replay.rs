//! `wasaga replay FILE|DIR [--plugin step.wasm]`: re-run recorded calls against a
//! component, offline: no store, broker or network. Every host call is answered from the
//! recording (state as the recorded call read it, archive puts with their recorded
//! results), and the run is compared with the recording, call by call.
//!
//! Exit codes: 0 when every replay reproduced its recording (same host calls, same
//! outcome); 1 when one diverged (a fix that now succeeds, a regression that now fails);
//! 2 when a replay could not run (an unreadable file, a recording whose step or version
//! is not a valid name, no component for the version).

use crate::archive::{Archive, ArchiveError};
use crate::event::Digest;
use crate::runtime::{CallInput, LoadedStep, Network, Origin, Recorder, Runtime, RuntimeConfig, StateError, StepState};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasaga_sdk::recording::{Outcome, RecordedEmit, Recording, divergence};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    NotARecording { path: PathBuf, reason: String },
    #[error("{path}: the recording's field `{field}` is refused: {reason}")]
    BadField { path: PathBuf, field: &'static str, reason: String },
    #[error(
        "no component for {step} {version}: pass --plugin FILE, or run where the plugins folder or compile cache has it"
    )]
    NoComponent { step: String, version: String },
    #[error("the component cannot run: {0}")]
    Refused(String),
    #[error("{0} holds no recordings (*.json)")]
    Empty(PathBuf),
}

/// Where to look for components.
pub struct Sources {
    /// A component given on the command line: used for every recording.
    pub plugin: Option<PathBuf>,
    /// The plugins folder, searched for a file whose digest is the recorded version.
    pub plugins_dir: PathBuf,
    /// The data folder, whose compile cache may hold the recorded version.
    pub data_dir: PathBuf,
}

/// How one replay went.
pub struct Replayed {
    pub report: String,
    pub reproduced: bool,
    /// The recording succeeded but the replay failed.
    pub newly_failed: bool,
}

/// Replay `path` (a recording, or a folder of them); the text to print and the exit code.
///
/// Every recording is read and checked before anything else is touched: a recording is
/// untrusted input, and one whose `version` is not a digest (a path, say) is refused
/// before any plugins folder, compile cache or component file is looked at.
pub async fn run(path: &Path, sources: &Sources) -> Result<(String, i32), ReplayError> {
    let single = !path.is_dir();
    let files = if single { vec![path.to_owned()] } else { recording_files(path)? };
    let recordings = files.iter().map(|file| read_recording(file)).collect::<Result<Vec<_>, _>>()?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(sources.data_dir.join("compile-cache")),
        // A replay is a handful of calls: the baseline compiler's code serves them sooner
        // than Cranelift could compile a large component.
        baseline_only: true,
        ..RuntimeConfig::default()
    })
    .map_err(|e| ReplayError::Refused(e.to_string()))?;
    if single {
        let replayed = replay_checked(&runtime, &recordings[0], sources).await?;
        return Ok((replayed.report, if replayed.reproduced { 0 } else { 1 }));
    }
    let (mut same, mut different, mut failed) = (0, 0, 0);
    let mut out = String::new();
    for (file, checked) in files.iter().zip(&recordings) {
        let replayed = replay_checked(&runtime, checked, sources).await?;
        if replayed.reproduced {
            same += 1;
        } else if replayed.newly_failed {
            failed += 1;
            let _ = writeln!(out, "{}: FAILED\n{}", file.display(), indent(&replayed.report));
        } else {
            different += 1;
            let _ = writeln!(out, "{}: DIFFERENT\n{}", file.display(), indent(&replayed.report));
        }
    }
    let _ = writeln!(out, "{} recordings: {same} same, {different} different, {failed} failed", files.len());
    let code = if different + failed == 0 { 0 } else { 1 };
    Ok((out, code))
}

/// The `*.json` files in `dir`, sorted.
fn recording_files(dir: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ReplayError::Read { path: dir.to_owned(), reason: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ReplayError::Empty(dir.to_owned()));
    }
    Ok(files)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// A recording whose names were checked: its step is a step name, its version a digest.
pub struct CheckedRecording {
    pub recording: Recording,
    pub version: Digest,
}

impl CheckedRecording {
    /// Check the fields of `recording` that name something on this machine.
    pub fn check(recording: Recording) -> Result<CheckedRecording, (&'static str, String)> {
        crate::event::check_step_name(&recording.step).map_err(|e| ("step", e.to_string()))?;
        let version = recording.version.parse::<Digest>().map_err(|e| ("version", e.to_string()))?;
        Ok(CheckedRecording { recording, version })
    }
}

fn read_recording(path: &Path) -> Result<CheckedRecording, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Read { path: path.to_owned(), reason: e.to_string() })?;
    let recording =
        Recording::from_json(&text).map_err(|reason| ReplayError::NotARecording { path: path.to_owned(), reason })?;
    CheckedRecording::check(recording).map_err(|(field, reason)| ReplayError::BadField {
        path: path.to_owned(),
        field,
        reason,
    })
}

async fn replay_checked(
    runtime: &Arc<Runtime>,
    checked: &CheckedRecording,
    sources: &Sources,
) -> Result<Replayed, ReplayError> {
    let (step, from) = component(runtime, checked, sources).await?;
    Ok(replay(runtime, &checked.recording, &step, &from).await)
}

/// The component to run: the given file, or the recorded version from the plugins
/// folder or the compile cache.
async fn component(
    runtime: &Arc<Runtime>,
    checked: &CheckedRecording,
    sources: &Sources,
) -> Result<(LoadedStep, String), ReplayError> {
    let name = &checked.recording.step;
    if let Some(file) = &sources.plugin {
        let bytes = std::fs::read(file).map_err(|e| ReplayError::Read { path: file.clone(), reason: e.to_string() })?;
        let step = runtime.load(name, Bytes::from(bytes)).await.map_err(|e| ReplayError::Refused(e.to_string()))?;
        return Ok((step, file.display().to_string()));
    }
    if let Ok(entries) = std::fs::read_dir(&sources.plugins_dir) {
        for file in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let Ok(bytes) = std::fs::read(&file) else { continue };
            if Digest::of(&bytes) == checked.version {
                let step =
                    runtime.load(name, Bytes::from(bytes)).await.map_err(|e| ReplayError::Refused(e.to_string()))?;
                return Ok((step, file.display().to_string()));
            }
        }
    }
    match runtime.load_cached(name, &checked.version).await {
        Ok(step) => Ok((step, format!("the compile cache in {}", sources.data_dir.display()))),
        Err(_) => Err(ReplayError::NoComponent { step: name.clone(), version: checked.version.to_string() }),
    }
}

/// Run `recording`'s event on `step`, answering host calls from the recording.
pub async fn replay(runtime: &Runtime, recording: &Recording, step: &LoadedStep, from: &str) -> Replayed {
    let state = Arc::new(ReplayState { values: Mutex::new(recording.state_read()) });
    let archive: Arc<dyn Archive> = Arc::new(ReplayArchive { recording: recording.clone() });
    let recorder = Recorder::new(usize::MAX);
    let event = &recording.event;
    let origin = Origin { step: recording.origin.step.clone(), step_version: recording.origin.step_version.clone() };
    let input = CallInput {
        id: &event.id,
        kind: &event.kind,
        order_id: &event.order_id,
        occurred_at_ms: event.occurred_at_ms,
        payload: &event.payload,
        origin: &origin,
        attempt: recording.attempt,
        // Offline: requests are answered from the recording; a new one is a divergence.
        network: Network::Recorded { calls: &recording.calls, settings: Some(&recording.settings) },
    };
    let result = runtime.call_recorded(step, input, state, Some(archive), Some(recorder.clone())).await;
    let (calls, _) = recorder.take();
    let outcome = match result {
        Ok(emits) => Outcome::Ok {
            emits: emits
                .into_iter()
                .map(|e| RecordedEmit { kind: e.kind, payload: e.payload, delay_ms: e.delay_ms })
                .collect(),
        },
        Err(error) => Outcome::Failed { kind: error.label().to_owned(), message: error.to_string() },
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "recording: {} on {} (attempt {}), event {} {} of order {}",
        recording.outcome.label(),
        recording.step,
        recording.attempt,
        event.kind,
        event.id,
        if event.order_id.is_empty() { "-" } else { &event.order_id }
    );
    let _ = writeln!(report, "  recorded version {}", recording.version);
    let _ = writeln!(report, "replayed on {} {} ({}) from {from}", step.name, step.version, step.digest);
    match &outcome {
        Outcome::Ok { emits } => {
            let _ = writeln!(report, "outcome: ok, {} event(s)", emits.len());
            for emit in emits {
                let _ = writeln!(report, "  emit {} {}", emit.kind, emit.payload);
            }
        }
        Outcome::Failed { kind, message } => {
            let _ = writeln!(report, "outcome: {kind}: {message}");
        }
    }
    for (key, value) in crate::saga::shadow::writes_of(&calls) {
        match value {
            Some(value) => writeln!(report, "  write {key} = {}", String::from_utf8_lossy(&value)),
            None => writeln!(report, "  delete {key}"),
        }
        .ok();
    }
    if let Outcome::Failed { kind, message } = &recording.outcome {
        let _ = writeln!(report, "recorded outcome: {kind}: {message}");
    }
    if recording.truncated {
        let _ = writeln!(report, "note: the recording was truncated; calls past its end are not compared");
    }
    if !recording.redacted.is_empty() {
        let _ = writeln!(
            report,
            "note: {} redacted when recorded; the replay saw the placeholder, so a step that depends on it may diverge",
            recording.redacted.join(", ")
        );
    }
    let same_outcome = outcome.label() == recording.outcome.label()
        && match (&outcome, &recording.outcome) {
            (Outcome::Ok { emits: a }, Outcome::Ok { emits: b }) => same_emits(a, b),
            _ => true,
        };
    let diverged = if recording.truncated {
        divergence(&recording.calls, &calls[..calls.len().min(recording.calls.len())])
    } else {
        divergence(&recording.calls, &calls)
    };
    let reproduced = same_outcome && diverged.is_none();
    match (&diverged, same_outcome) {
        (Some(where_), _) => {
            let _ = writeln!(report, "diverged at {where_}");
        }
        (None, false) => {
            let _ = writeln!(report, "diverged: the same host calls, but the outcome differs from the recording");
        }
        (None, true) => {
            let _ = writeln!(report, "reproduced: the same host calls and outcome as recorded");
        }
    }
    let newly_failed = matches!(recording.outcome, Outcome::Ok { .. }) && !matches!(outcome, Outcome::Ok { .. });
    Replayed { report, reproduced, newly_failed }
}

/// Emits compared as JSON values, so key order does not count.
fn same_emits(a: &[RecordedEmit], b: &[RecordedEmit]) -> bool {
    let parse =
        |p: &str| serde_json::from_str::<serde_json::Value>(p).unwrap_or(serde_json::Value::String(p.to_owned()));
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.kind == y.kind && parse(&x.payload) == parse(&y.payload))
}

/// State as the recorded call first read it, then as the replay changes it.
struct ReplayState {
    values: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
}

#[async_trait]
impl StepState for ReplayState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.values.lock().get(key).cloned().flatten())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        self.values.lock().insert(key.to_owned(), Some(value));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.values.lock().insert(key.to_owned(), None);
        Ok(())
    }
}

/// Archive puts answered with their recorded results; nothing is written.
struct ReplayArchive {
    recording: Recording,
}

#[async_trait]
impl Archive for ReplayArchive {
    async fn put_once(&self, name: &str, _body: Bytes, _content_type: &str) -> Result<(), ArchiveError> {
        let failed = self.recording.calls.iter().any(|call| {
            matches!(call, wasaga_sdk::recording::HostCall::ArchivePut { name: n, error: Some(_), .. } if n == name)
        });
        if failed { Err(ArchiveError::Name(name.to_owned())) } else { Ok(()) }
    }

    async fn list(&self, _prefix: &str) -> Result<Vec<String>, ArchiveError> {
        Ok(Vec::new())
    }

    async fn get(&self, _name: &str) -> Result<Option<Bytes>, ArchiveError> {
        Ok(None)
    }
}
