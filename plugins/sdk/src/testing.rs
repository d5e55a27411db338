//! Dead letters as regression tests: run a [`Recording`] through a step's native build,
//! starting from the state the recorded call read, and compare what happens with what
//! was recorded.
//!
//! ```text
//! #[test]
//! fn the_dead_letter_of_order_42_is_fixed() {
//!     let run = wasaga_sdk::testing::replay::<Payment>("tests/recordings/order-42.json");
//!     assert!(run.succeeded(), "{run}");
//! }
//! ```

use crate::Step;
use crate::host::Host;
use crate::recording::{Bytes, HostCall, Outcome, RecordedEmit, Recording, divergence};
use crate::types::{Context, Event, Level, Origin, StepError};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The recording replayed.
    pub recording: Recording,
    /// How the replayed call ended.
    pub outcome: Outcome,
    /// The host calls the replayed call made.
    pub calls: Vec<HostCall>,
}

impl Replay {
    /// Whether the replayed call returned events (rather than failing).
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The events the replayed call returned.
    pub fn emits(&self) -> &[RecordedEmit] {
        match &self.outcome {
            Outcome::Ok { emits } => emits,
            Outcome::Failed { .. } => &[],
        }
    }

    /// Where the replay first did something other than the recorded call, if anywhere.
    pub fn divergence(&self) -> Option<String> {
        // Failures compare by kind: a native panic and a component's trap say it differently.
        let same_outcome = match (&self.outcome, &self.recording.outcome) {
            (Outcome::Ok { emits: a }, Outcome::Ok { emits: b }) => a == b,
            (a, b) => a.label() == b.label(),
        };
        if !same_outcome && divergence(&self.recording.calls, &self.calls).is_none() {
            return Some(format!(
                "the same host calls, but the outcome was {} where the recording says {}",
                self.outcome.label(),
                self.recording.outcome.label()
            ));
        }
        divergence(&self.recording.calls, &self.calls)
    }
}

impl std::fmt::Display for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "replay of {} ({}) on {}",
            self.recording.event.kind, self.recording.event.id, self.recording.step
        )?;
        match &self.outcome {
            Outcome::Ok { emits } => {
                writeln!(f, "outcome: ok, {} event(s)", emits.len())?;
                for emit in emits {
                    writeln!(f, "  emit {} {}", emit.kind, emit.payload)?;
                }
            }
            Outcome::Failed { kind, message } => writeln!(f, "outcome: {kind}: {message}")?,
        }
        match self.divergence() {
            Some(report) => writeln!(f, "diverged: {report}"),
            None => writeln!(f, "same host calls and outcome as recorded"),
        }
    }
}

/// Replay the recording in the JSON file at `path` through `S`. Panics with a clear
/// message if the file cannot be read: it is a test helper.
pub fn replay<S: Step>(path: impl AsRef<Path>) -> Replay {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let recording = Recording::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    replay_recording::<S>(&recording)
}

/// Replay `recording` through `S`'s native logic.
pub fn replay_recording<S: Step>(recording: &Recording) -> Replay {
    let mut host = ReplayHost {
        state: recording.state_read(),
        calls: RefCell::new(Vec::new()),
        origin: Origin { step: recording.origin.step.clone(), step_version: recording.origin.step_version.clone() },
        archive: recording
            .calls
            .iter()
            .filter_map(|c| match c {
                HostCall::ArchivePut { name, error, .. } => Some((name.clone(), error.clone())),
                _ => None,
            })
            .collect(),
        settings: recording.settings.iter().cloned().collect(),
        exchanges: RefCell::new(
            recording.calls.iter().filter(|c| matches!(c, HostCall::Http { .. })).cloned().collect(),
        ),
    };
    let event = Event {
        id: recording.event.id.clone(),
        kind: recording.event.kind.clone(),
        order_id: recording.event.order_id.clone(),
        occurred_at_ms: recording.event.occurred_at_ms,
        payload: recording.event.payload.clone(),
    };
    let ctx = Context { attempt: recording.attempt };
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| S::handle(&mut host, &ctx, &event)));
    let outcome = match run {
        Ok(Ok(emits)) => Outcome::Ok {
            emits: emits
                .into_iter()
                .map(|e| RecordedEmit { kind: e.kind, payload: e.payload, delay_ms: e.delay_ms })
                .collect(),
        },
        Ok(Err(StepError::Retryable(message))) => Outcome::Failed { kind: "retryable".to_owned(), message },
        Ok(Err(StepError::Fatal(message))) => Outcome::Failed { kind: "fatal".to_owned(), message },
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".to_owned());
            Outcome::Failed { kind: "trap".to_owned(), message }
        }
    };
    Replay { recording: recording.clone(), outcome, calls: host.calls.into_inner() }
}

/// Answers a replayed call from the recording: state as the recorded call first read
/// it (then as the replay changes it), archive puts with their recorded results.
struct ReplayHost {
    state: BTreeMap<String, Option<Vec<u8>>>,
    calls: RefCell<Vec<HostCall>>,
    origin: Origin,
    archive: BTreeMap<String, Option<String>>,
    /// The step's settings when it ran.
    settings: BTreeMap<String, String>,
    /// Recorded requests not answered yet.
    exchanges: RefCell<Vec<HostCall>>,
}

impl Host for ReplayHost {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let value = self.state.get(key).cloned().flatten();
        self.calls.borrow_mut().push(HostCall::StateGet { key: key.to_owned(), value: value.clone().map(Bytes) });
        value
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        self.state.insert(key.to_owned(), Some(value.to_vec()));
        self.calls.borrow_mut().push(HostCall::StatePut { key: key.to_owned(), value: Bytes(value.to_vec()) });
    }

    fn delete(&mut self, key: &str) {
        self.state.insert(key.to_owned(), None);
        self.calls.borrow_mut().push(HostCall::StateDelete { key: key.to_owned() });
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.calls.borrow_mut().push(HostCall::Log { level: level.to_owned(), message: message.to_owned() });
    }

    fn archive_put(&mut self, name: &str, body: &[u8], content_type: &str) -> Result<(), String> {
        let error = self.archive.get(name).cloned().flatten();
        self.calls.borrow_mut().push(HostCall::ArchivePut {
            name: name.to_owned(),
            bytes: body.len(),
            content_type: content_type.to_owned(),
            error: error.clone(),
        });
        error.map_or(Ok(()), Err)
    }

    fn origin(&self) -> Origin {
        self.origin.clone()
    }

    fn setting(&self, name: &str) -> Option<String> {
        self.settings.get(name).cloned()
    }

    /// Answered from the recording: the first unanswered recorded request with the same
    /// method, URL and body; a request the recording lacks would call out, and fails.
    fn http(&mut self, request: &crate::http::Request) -> Result<crate::http::Response, String> {
        let mut exchanges = self.exchanges.borrow_mut();
        let found = exchanges.iter().position(|c| {
            matches!(c, HostCall::Http { method, url, body, .. }
                if *method == request.method && *url == request.url && body.0 == request.body)
        });
        let Some(HostCall::Http { method, url, headers, body, response, error }) = found.map(|i| exchanges.remove(i))
        else {
            return Err(format!("would call out: {} {} is not in the recording", request.method, request.url));
        };
        self.calls.borrow_mut().push(HostCall::Http {
            method,
            url,
            headers,
            body,
            response: response.clone(),
            error: error.clone(),
        });
        match response {
            Some(answer) => {
                Ok(crate::http::Response { status: answer.status, headers: answer.headers, body: answer.body.0 })
            }
            None => Err(error.unwrap_or_else(|| "no answer".to_owned())),
        }
    }
}
