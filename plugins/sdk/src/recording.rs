//! The recording of one step call: the event, the version that ran it, every host call
//! in order with its arguments and answers, and the outcome. The host keeps one with
//! every dead letter (and, when enabled, with a sample of successful calls); `wasaga
//! replay` re-runs it against a component offline, and [`crate::testing`] against a
//! step's native build in its own tests. The JSON shape is stable: `format` is bumped by
//! any change a reader must know about.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format version this crate writes; it reads this one and the ones before it
/// (format 2 added [`HostCall::Http`]).
pub const FORMAT: u32 = 2;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// The step's name.
    pub step: String,
    /// The digest of the component that ran (`sha256:…`).
    pub version: String,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// The event handled.
    pub event: RecordedEvent,
    /// Who emitted the event (what `provenance.current` answered).
    pub origin: RecordedOrigin,
    /// Every host call in the order the step made them.
    pub calls: Vec<HostCall>,
    /// How the call ended.
    pub outcome: Outcome,
    /// Set when the recording hit its size limit: calls after that point are missing.
    #[serde(default)]
    pub truncated: bool,
    /// JSON pointers whose values in the event and emitted payloads were replaced by
    /// [`REDACTED`] when the recording was written (the host's `redact` setting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
    /// The step's settings when it ran (`[steps.NAME.env]`), given to it again on replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<(String, String)>,
}

/// What a redacted payload field holds instead of its value.
pub const REDACTED: &str = "[redacted]";

/// The event as the step received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Event id.
    pub id: String,
    /// Dotted kind.
    pub kind: String,
    /// Order id (empty for events of no order).
    pub order_id: String,
    /// Emission time, ms since the epoch.
    pub occurred_at_ms: u64,
    /// The payload as JSON text.
    pub payload: String,
}

/// The emitter of the event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecordedOrigin {
    /// Step name or `host`.
    pub step: String,
    /// Its version.
    pub step_version: String,
}

/// One host call with its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum HostCall {
    /// `state.get(key)` and what it returned.
    StateGet {
        /// The key.
        key: String,
        /// The value returned, if any.
        value: Option<Bytes>,
    },
    /// `state.put(key, value)`.
    StatePut {
        /// The key.
        key: String,
        /// The value written.
        value: Bytes,
    },
    /// `state.delete(key)`.
    StateDelete {
        /// The key.
        key: String,
    },
    /// `archive.put(name, body, content-type)` and its result.
    ArchivePut {
        /// The object name.
        name: String,
        /// The body's length (the body itself is not kept).
        bytes: usize,
        /// The content type.
        content_type: String,
        /// The error returned, if the put failed.
        error: Option<String>,
    },
    /// `log.log(level, message)`.
    Log {
        /// `debug`, `info`, `warn` or `error`.
        level: String,
        /// The message (cut to the host's line limit).
        message: String,
    },
    /// An outbound HTTP request as sent (secret headers left out) and what answered it.
    Http {
        /// The method.
        method: String,
        /// The absolute URL.
        url: String,
        /// Headers as sent, the host's idempotency key included, secrets left out.
        headers: Vec<(String, String)>,
        /// The request body.
        body: Bytes,
        /// The answer, if one came.
        response: Option<HttpAnswer>,
        /// Why no answer came, if none did.
        error: Option<String>,
    },
}

/// The answer to a recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The step returned events.
    Ok {
        /// The events returned, in order.
        emits: Vec<RecordedEmit>,
    },
    /// The call failed: `kind` is the host's label (`trap`, `timeout`, `retryable`,
    /// `fatal`, `memory`, `limit`, …) and `message` its error.
    Failed {
        /// The kind of failure.
        kind: String,
        /// What the host said.
        message: String,
    },
}

impl Outcome {
    /// A short name: `ok`, or the failure's kind.
    pub fn label(&self) -> &str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Failed { kind, .. } => kind,
        }
    }
}

/// An event a step returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEmit {
    /// Dotted kind.
    pub kind: String,
    /// The payload as JSON text.
    pub payload: String,
    /// A timer's delay (absent for events published with the commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// Bytes in a recording: text when they are UTF-8 (state is usually JSON), base64
/// otherwise, so a recording stays readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BytesRepr {
    Text(String),
    Base64(String),
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => BytesRepr::Text(text.to_owned()),
            Err(_) => {
                use base64::Engine;
                BytesRepr::Base64(base64::engine::general_purpose::STANDARD.encode(&self.0))
            }
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match BytesRepr::deserialize(deserializer)? {
            BytesRepr::Text(text) => Ok(Bytes(text.into_bytes())),
            BytesRepr::Base64(encoded) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(encoded).map(Bytes).map_err(serde::de::Error::custom)
            }
        }
    }
}

impl Recording {
    /// Read a recording from JSON, checking its format.
    pub fn from_json(text: &str) -> Result<Recording, String> {
        let recording: Recording = serde_json::from_str(text).map_err(|e| format!("not a recording: {e}"))?;
        if recording.format == 0 || recording.format > FORMAT {
            return Err(format!(
                "recording format {} is not supported (this reader knows 1 to {FORMAT})",
                recording.format
            ));
        }
        Ok(recording)
    }

    /// The value each key had when the step first read it: the state a replay starts from.
    pub fn state_read(&self) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
        let mut seen = std::collections::BTreeMap::new();
        for call in &self.calls {
            if let HostCall::StateGet { key, value } = call {
                seen.entry(key.clone()).or_insert_with(|| value.as_ref().map(|b| b.0.clone()));
            }
        }
        seen
    }

    /// The state writes the step made, in order (`None`: a delete).
    pub fn writes(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.calls
            .iter()
            .filter_map(|call| match call {
                HostCall::StatePut { key, value } => Some((key.clone(), Some(value.0.clone()))),
                HostCall::StateDelete { key } => Some((key.clone(), None)),
                _ => None,
            })
            .collect()
    }
}

/// The first place two sequences of host calls differ, for a replay's report.
pub fn divergence(recorded: &[HostCall], replayed: &[HostCall]) -> Option<String> {
    for (i, (want, got)) in recorded.iter().zip(replayed).enumerate() {
        if want != got {
            return Some(format!("call {}: recorded {}, replay made {}", i + 1, describe(want), describe(got)));
        }
    }
    match recorded.len().cmp(&replayed.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "call {}: recorded {}, replay made no more calls",
            replayed.len() + 1,
            describe(&recorded[replayed.len()])
        )),
        std::cmp::Ordering::Less => Some(format!(
            "call {}: replay made {}, the recording has no more calls",
            recorded.len() + 1,
            describe(&replayed[recorded.len()])
        )),
    }
}

/// One host call as a short line.
pub fn describe(call: &HostCall) -> String {
    let show = |bytes: &Bytes| {
        let text = String::from_utf8_lossy(&bytes.0);
        if text.len() > 80 { format!("{}…", &text[..text.floor_char_boundary(80)]) } else { text.into_owned() }
    };
    match call {
        HostCall::StateGet { key, value: Some(v) } => format!("state.get({key:?}) → {}", show(v)),
        HostCall::StateGet { key, value: None } => format!("state.get({key:?}) → none"),
        HostCall::StatePut { key, value } => format!("state.put({key:?}, {})", show(value)),
        HostCall::StateDelete { key } => format!("state.delete({key:?})"),
        HostCall::ArchivePut { name, bytes, error, .. } => match error {
            None => format!("archive.put({name:?}, {bytes} bytes)"),
            Some(e) => format!("archive.put({name:?}, {bytes} bytes) → error {e}"),
        },
        HostCall::Log { level, message } => format!("log.{level}({message:?})"),
        HostCall::Http { method, url, body, response, error, .. } => match (response, error) {
            (Some(answer), _) => {
                format!("http {method} {url} {} → {} {}", show(body), answer.status, show(&answer.body))
            }
            (None, Some(error)) => format!("http {method} {url} {} → error {error}", show(body)),
            (None, None) => format!("http {method} {url} {}", show(body)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_text_when_they_can_be() {
        let json = serde_json::to_string(&Bytes(b"{\"a\":1}".to_vec())).expect("json");
        assert_eq!(json, r#"{"text":"{\"a\":1}"}"#);
        let binary = serde_json::to_string(&Bytes(vec![0xff, 0x00])).expect("json");
        assert_eq!(binary, r#"{"base64":"/wA="}"#);
        for text in [json, binary] {
            let back: Bytes = serde_json::from_str(&text).expect("reads back");
            assert_eq!(serde_json::to_string(&back).expect("json"), text);
        }
    }

    #[test]
    fn the_first_difference_is_reported() {
        let get = HostCall::StateGet { key: "a".into(), value: None };
        let put = HostCall::StatePut { key: "a".into(), value: Bytes(b"1".to_vec()) };
        assert_eq!(divergence(&[get.clone(), put.clone()], &[get.clone(), put.clone()]), None);
        let other = HostCall::StatePut { key: "a".into(), value: Bytes(b"2".to_vec()) };
        let report = divergence(&[get.clone(), put], &[get.clone(), other]).expect("differs");
        assert!(
            report.starts_with("call 2: recorded state.put(\"a\", 1), replay made state.put(\"a\", 2)"),
            "{report}"
        );
        assert!(divergence(std::slice::from_ref(&get), &[]).expect("shorter").contains("no more calls"));
    }
}
