//! Watches the plugins folder: a new or changed `<step>.wasm` is installed once the
//! file has been quiet for a moment (notify-debouncer-full) and its size and mtime have
//! stopped changing, so a file still being copied is not read half-way. Temporary names
//! (`.x.tmp`, `x.part`) are ignored, which makes write-then-rename the safe way to drop a
//! file in. Each install runs on its own task: a component that is slow to compile or to
//! describe itself holds up neither the watcher nor the other files.
//!
//! The fleet's registry outranks a folder: a file installs only if its digest is new to
//! the fleet ([`StepRegistry::install_from_folder`], the one rule at start and on every
//! change), and a change of metadata alone (a `touch`, a `chmod`) is not a change at all:
//! attribute events are dropped, and a file whose bytes are those last judged (an mtime
//! alone arrives as a data event) is read and left alone.
//! An operator who wants an older version back says so through the admin API (upload or
//! rollback), never by a file.

use super::{Installed, RegistryError, Source, StepRegistry};
use crate::event::Digest;
use crate::runtime::LoadError;
use bytes::Bytes;
use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// How long a file must stay unchanged before it is read.
const QUIET: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch the plugins folder {dir}: {reason}")]
pub struct WatchError {
    dir: PathBuf,
    reason: String,
}

/// The step a file in the plugins folder installs, if it is named like a component and
/// not like a temporary file. Whether the name is a valid step name is the registry's
/// one rule to decide (a refusal is logged with its reason).
pub fn step_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (!stem.is_empty() && !stem.starts_with('.')).then(|| stem.to_owned())
}

/// Read a component file, refusing one over `max_bytes` before reading it.
pub(super) async fn read_component(path: &Path, max_bytes: usize) -> Result<Bytes, RegistryError> {
    let unreadable = |e: std::io::Error| LoadError::Compile(format!("cannot read {}: {e}", path.display()));
    let len = tokio::fs::metadata(path).await.map_err(unreadable)?.len();
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_bytes {
        return Err(LoadError::TooLarge { bytes: len, limit: max_bytes }.into());
    }
    Ok(Bytes::from(tokio::fs::read(path).await.map_err(unreadable)?))
}

/// Stops watching when dropped; [`StepWatcher::stop`] also waits for installs in hand.
pub struct StepWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for StepWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StepWatcher {
    /// Watch `dir` and install what appears in it into `registry`.
    pub fn start(dir: &Path, registry: Arc<StepRegistry>) -> Result<StepWatcher, WatchError> {
        let fail = |reason: String| WatchError { dir: dir.to_owned(), reason };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut debouncer = new_debouncer(QUIET, None, move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            for event in events {
                if event.kind.is_access() || event.kind.is_remove() {
                    continue;
                }
                if matches!(event.kind, EventKind::Modify(ModifyKind::Metadata(_))) {
                    // Same bytes, new mtime or mode: nothing to install.
                    for step in event.paths.iter().filter_map(|path| step_name(path)) {
                        count(&step, FileOutcome::MetadataOnly);
                    }
                    continue;
                }
                for path in &event.paths {
                    let _ = tx.send(path.clone());
                }
            }
        })
        .map_err(|e| fail(e.to_string()))?;
        debouncer.watch(dir, RecursiveMode::NonRecursive).map_err(|e| fail(e.to_string()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(dispatch(rx, registry, stopped));
        Ok(StepWatcher { _debouncer: debouncer, task, stop: Some(stop) })
    }

    /// Stop watching, end the installs in hand and wait until they have let go of the
    /// registry (and with it the store, which a restart in the same process reopens).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn fingerprint(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Per file: whether an install runs, and whether the file changed again meanwhile.
type InFlight = Arc<Mutex<HashMap<PathBuf, bool>>>;

/// Per file: the digest of the bytes last judged, so a change of metadata alone (an
/// mtime set by `touch -m` arrives as a data event) costs a read and nothing more.
type LastRead = Arc<Mutex<HashMap<PathBuf, Digest>>>;

async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
    registry: Arc<StepRegistry>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let in_flight: InFlight = Arc::default();
    let last_read: LastRead = Arc::default();
    let mut installs = tokio::task::JoinSet::new();
    loop {
        let path = tokio::select! {
            path = rx.recv() => match path {
                Some(path) => path,
                None => break,
            },
            Some(_) = installs.join_next() => continue,
            _ = &mut stopped => break,
        };
        if step_name(&path).is_none() {
            continue;
        }
        {
            let mut running = in_flight.lock();
            if let Some(again) = running.get_mut(&path) {
                // Installed once the current install ends, from the file as it is then.
                *again = true;
                continue;
            }
            running.insert(path.clone(), false);
        }
        installs.spawn(install_until_settled(path, registry.clone(), in_flight.clone(), last_read.clone()));
    }
    installs.shutdown().await;
}

async fn install_until_settled(path: PathBuf, registry: Arc<StepRegistry>, in_flight: InFlight, last_read: LastRead) {
    loop {
        // The debouncer saw no event for a while; make sure the file agrees.
        let mut seen = fingerprint(&path);
        loop {
            tokio::time::sleep(QUIET).await;
            let now = fingerprint(&path);
            if now == seen {
                break;
            }
            seen = now;
        }
        if seen.is_some() {
            install_file(&registry, &path, &last_read).await;
        }
        let mut running = in_flight.lock();
        match running.get_mut(&path) {
            Some(again) if *again => *again = false,
            _ => {
                running.remove(&path);
                return;
            }
        }
    }
}

async fn install_file(registry: &StepRegistry, path: &Path, last_read: &LastRead) {
    let Some(name) = step_name(path) else { return };
    match read_component(path, registry.runtime().config().max_component_bytes).await {
        Ok(bytes) => {
            let digest = Digest::of(&bytes);
            if last_read.lock().get(path) == Some(&digest) {
                count(&name, FileOutcome::MetadataOnly);
                return;
            }
            // The registry logs refusals with their reason; the old version keeps serving.
            let judged = match registry.install_from_folder(&name, path, bytes, Source::File).await {
                Ok(_) | Err(RegistryError::Refused(_)) => true,
                // The fleet could not be asked or changed: the next event tries again.
                Err(_) => false,
            };
            if judged {
                last_read.lock().insert(path.to_owned(), digest);
            }
        }
        Err(error) => {
            count(&name, FileOutcome::Refused);
            tracing::warn!(path = %path.display(), %error, "cannot install this step file");
        }
    }
}

/// What a file in the plugins folder did, counted in
/// `wasaga_plugin_file_events_total{step, outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileOutcome {
    /// New bytes, now serving for the fleet.
    Installed,
    /// The bytes this host serves already.
    Unchanged,
    /// Bytes the fleet has seen before (and superseded, or is rolling out): left alone.
    Known,
    /// Unreadable, or refused by validation.
    Refused,
    /// A change of metadata only (mode, times; or bytes the same as when last read):
    /// ignored.
    MetadataOnly,
}

impl FileOutcome {
    fn as_str(self) -> &'static str {
        match self {
            FileOutcome::Installed => "installed",
            FileOutcome::Unchanged => "unchanged",
            FileOutcome::Known => "known",
            FileOutcome::Refused => "refused",
            FileOutcome::MetadataOnly => "metadata_only",
        }
    }
}

fn count(step: &str, outcome: FileOutcome) {
    metrics::counter!("wasaga_plugin_file_events_total", "step" => step.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

impl StepRegistry {
    /// The one rule for a file found in the plugins folder, at start and on every change:
    /// install `bytes` as `name` only if their digest is new to the fleet (never kept as
    /// a version of `name`, never in its history). Bytes the fleet has seen are left
    /// alone whether they serve, were superseded or were rejected: an old file touched or
    /// copied back on one host must not roll the fleet back. An operator installs a known
    /// version on purpose through the admin API (`PUT /api/admin/plugins/{name}`, i.e.
    /// `wasaga plugins push`, or a rollback).
    pub(super) async fn install_from_folder(
        &self,
        name: &str,
        path: &Path,
        bytes: Bytes,
        source: Source,
    ) -> Result<FileOutcome, RegistryError> {
        let digest = Digest::of(&bytes);
        if self.current(name).is_some_and(|current| *current.digest == *digest.as_str()) {
            count(name, FileOutcome::Unchanged);
            return Ok(FileOutcome::Unchanged);
        }
        if let Some(fleet) = &self.fleet {
            let seen = fleet.has_seen(name, &digest).await.inspect_err(|error| {
                count(name, FileOutcome::Refused);
                tracing::warn!(step = %name, path = %path.display(), %error,
                    "cannot ask the fleet whether it knows this file; leaving it alone");
            })?;
            if seen {
                count(name, FileOutcome::Known);
                tracing::warn!(step = %name, path = %path.display(), step_version = %digest,
                    "this file holds a version the fleet has seen before; keeping the fleet's \
                     (install it on purpose with `wasaga plugins push` or a rollback)");
                return Ok(FileOutcome::Known);
            }
        }
        match self.install(name, bytes, source).await {
            Ok(Installed::Swapped(_)) => {
                count(name, FileOutcome::Installed);
                Ok(FileOutcome::Installed)
            }
            Ok(Installed::Unchanged(_)) => {
                count(name, FileOutcome::Unchanged);
                Ok(FileOutcome::Unchanged)
            }
            Err(error) => {
                count(name, FileOutcome::Refused);
                Err(error)
            }
        }
    }
}
