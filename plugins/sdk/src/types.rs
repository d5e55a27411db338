//! The step's view of the WIT types, as plain Rust values that also exist natively.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One event of the saga, as delivered to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id assigned by the host.
    pub id: String,
    /// Dotted kind, e.g. `order.placed`.
    pub kind: String,
    /// The order it belongs to; empty for events of no order.
    pub order_id: String,
    /// Emission time in milliseconds since the Unix epoch.
    pub occurred_at_ms: u64,
    /// The kind's payload as JSON text.
    pub payload: String,
}

impl Event {
    /// Decode the payload; a payload that does not match is a fatal error naming the kind.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_str(&self.payload)
            .map_err(|e| StepError::Fatal(format!("payload of {} is invalid: {e}", self.kind)))
    }
}

/// An event the step asks the host to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// Dotted kind.
    pub kind: String,
    /// JSON text.
    pub payload: String,
    /// A durable timer: the host publishes the event this many milliseconds after the
    /// commit, once, even across restarts (`None`: with the commit). See [`Emit::after`].
    pub delay_ms: Option<u64>,
}

impl Emit {
    /// An event with a typed payload serialised to JSON.
    pub fn json<T: Serialize>(kind: &str, payload: &T) -> Result<Emit, StepError> {
        let payload =
            serde_json::to_string(payload).map_err(|e| StepError::Fatal(format!("cannot encode {kind}: {e}")))?;
        Ok(Emit { kind: kind.to_owned(), payload, delay_ms: None })
    }

    /// The same event as a timer: published `delay` after the handling commits, and
    /// delivered even if the order has ended meanwhile (the handler decides what it
    /// means then). Needs a host serving `wasaga:saga@0.2.0`.
    pub fn after(self, delay: std::time::Duration) -> Emit {
        Emit { delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)), ..self }
    }
}

/// Facts about this delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// 1 on first delivery, then 2, 3, ... on retries.
    pub attempt: u32,
}

/// A technical failure; business outcomes are events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Redeliver later with backoff.
    Retryable(String),
    /// Dead-letter at once.
    Fatal(String),
}

/// What a step says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The name the step is installed under.
    pub name: String,
    /// A semantic version.
    pub version: String,
    /// Event kinds: exact, `prefix.*`, or `*`.
    pub subscribes: Vec<String>,
}

impl Manifest {
    /// A manifest from string slices.
    pub fn new<const N: usize>(name: &str, version: &str, subscribes: [&str; N]) -> Manifest {
        Manifest {
            name: name.to_owned(),
            version: version.to_owned(),
            subscribes: subscribes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Log levels of the host's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the step handled.
    Warn,
    /// Something that failed.
    Error,
}

/// Who emitted the event being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The emitting step, or `host`.
    pub step: String,
    /// Its version (content digest).
    pub step_version: String,
}
