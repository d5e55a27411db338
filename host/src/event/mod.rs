//! The event vocabulary every layer shares: the event as stored and carried, its wire
//! JSON, ids, component digests, the clock, consumer and step names, and the
//! subscription matcher.
//!
//! **Architecture Invariant:** this module imports nothing else of the host, so `store`,
//! `transport`, `stream`, `outbox` and `runtime` can all use it without reaching up into
//! `saga`.

mod digest;
pub mod owner;
pub mod wire;

pub use digest::{Digest, DigestError};
pub use owner::{Owner, Owners};

/// An event as stored in the outbox and carried by every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub kind: String,
    /// Empty for events of no order (`stock.set`).
    pub order_id: String,
    /// JSON text.
    pub payload: String,
    /// The emitter: a step name or `host`.
    pub step: String,
    pub step_version: String,
    pub occurred_at_ms: i64,
    /// The attempt of the call that emitted it (1 for the host's own events). Shown in
    /// timelines; not on the wire.
    pub attempt: u32,
    /// The W3C `traceparent` of the span that emitted it, when tracing is on: carried on
    /// the wire (`"trace"`) and in broker headers, so one order is one trace everywhere.
    pub trace: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A new, time-ordered event id (UUIDv7).
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The consumer name of the host's own order logic; no step may take it.
/// `text` as every store can hold it: PostgreSQL text cannot hold NUL, which a step's
/// message may carry.
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

pub const HOST_CONSUMER: &str = "host";

/// The version the host's own events carry.
pub const HOST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The longest step name: it becomes part of queue, group and file names.
pub const MAX_STEP_NAME: usize = 64;

/// Why a name cannot be a step's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("step name {0:?} is invalid: use 1 to 64 lowercase letters, digits and '-', not starting with '-'")]
    Invalid(String),
    #[error("step name {0:?} is reserved for the host's own consumer")]
    Reserved(String),
}

/// The one rule for step names, used by uploads, the plugins folder and the manifest.
pub fn check_step_name(name: &str) -> Result<(), NameError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_STEP_NAME
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(NameError::Invalid(name.to_owned()));
    }
    if name == HOST_CONSUMER {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// Kinds only the host emits: the order's own (`order.*`) and the saga's failure
/// notices (`step.*`). A step emitting one could complete or cancel orders itself.
pub fn host_owned_kind(kind: &str) -> bool {
    kind.starts_with("order.") || kind.starts_with("step.")
}

/// Whether subscriptions `patterns` (kinds, or prefixes ending in `*`) take `kind`.
pub fn subscribed(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_step_names() {
        for (name, ok) in [
            ("payment", true),
            ("a-1", true),
            (&"x".repeat(64)[..], true),
            (&"x".repeat(65)[..], false),
            ("", false),
            ("-a", false),
            ("Pay", false),
            ("pay.ment", false),
            ("host", false),
        ] {
            assert_eq!(check_step_name(name).is_ok(), ok, "{name}");
        }
        assert!(matches!(check_step_name("host"), Err(NameError::Reserved(_))));
    }

    #[test]
    fn host_kinds_are_the_orders_and_the_failure_notices() {
        assert!(host_owned_kind("order.completed"));
        assert!(host_owned_kind("step.dead-lettered"));
        assert!(!host_owned_kind("payment.captured"));
        assert!(!host_owned_kind("orders.x"));
    }

    #[test]
    fn patterns_match_kinds_and_prefixes() {
        let patterns = vec!["stock.*".to_owned(), "order.cancelled".to_owned()];
        assert!(subscribed(&patterns, "stock.reserved"));
        assert!(subscribed(&patterns, "order.cancelled"));
        assert!(!subscribed(&patterns, "order.completed"));
        assert!(subscribed(&["*".to_owned()], "anything"));
    }
}
