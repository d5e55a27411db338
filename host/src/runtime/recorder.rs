//! Records every host call a step makes during one call, in order, with its answer:
//! the material of a dead letter's recording, a shadow's comparison and a replay. The
//! record is bounded in bytes; past the bound it stops and says it was truncated.
//! [`redact_recording`] takes configured fields out of a recording before it is kept.

use parking_lot::Mutex;
use std::sync::Arc;
use wasaga_sdk::recording::{HostCall, Outcome, REDACTED, Recording};

/// One call's host calls.
#[derive(Debug)]
pub struct Recorder {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<HostCall>,
    bytes: usize,
    truncated: bool,
    /// The step's settings during the call.
    settings: Vec<(String, String)>,
}

impl Recorder {
    /// A recorder keeping at most about `max_bytes` of calls.
    pub fn new(max_bytes: usize) -> Arc<Recorder> {
        Arc::new(Recorder { max_bytes, inner: Mutex::new(Inner::default()) })
    }

    pub(super) fn record(&self, call: HostCall) {
        let size = approximate_size(&call);
        let mut inner = self.inner.lock();
        if inner.truncated {
            return;
        }
        if inner.bytes.saturating_add(size) > self.max_bytes {
            inner.truncated = true;
            return;
        }
        inner.bytes += size;
        inner.calls.push(call);
    }

    pub(super) fn note_settings(&self, settings: &[(String, String)]) {
        self.inner.lock().settings = settings.to_vec();
    }

    /// The step's settings during the call.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.inner.lock().settings.clone()
    }

    /// The calls recorded, and whether the record was cut short.
    pub fn take(&self) -> (Vec<HostCall>, bool) {
        let mut inner = self.inner.lock();
        (std::mem::take(&mut inner.calls), inner.truncated)
    }
}

/// Replace the value at each of `pointers` (RFC 6901 JSON pointers, e.g.
/// `/payment/card_token`) in the event payload and in every emitted payload with
/// [`REDACTED`], and likewise in the JSON bodies of outbound requests and their answers
/// (a card token sent to a gateway); list in the recording the pointers that matched, so
/// a replay can say why it may diverge. A payload that is not JSON, or lacks the field,
/// is kept as it is; other host calls (state values, log lines) are not touched.
pub fn redact_recording(recording: &mut Recording, pointers: &[String]) {
    if pointers.is_empty() {
        return;
    }
    let mut matched = Vec::new();
    redact_payload(&mut recording.event.payload, pointers, &mut matched);
    if let Outcome::Ok { emits } = &mut recording.outcome {
        for emit in emits {
            redact_payload(&mut emit.payload, pointers, &mut matched);
        }
    }
    for call in &mut recording.calls {
        if let HostCall::Http { body, response, .. } = call {
            redact_bytes(&mut body.0, pointers, &mut matched);
            if let Some(answer) = response {
                redact_bytes(&mut answer.body.0, pointers, &mut matched);
            }
        }
    }
    for pointer in pointers {
        if matched.contains(&pointer) && !recording.redacted.contains(pointer) {
            recording.redacted.push(pointer.clone());
        }
    }
}

fn redact_bytes<'p>(bytes: &mut Vec<u8>, pointers: &'p [String], matched: &mut Vec<&'p String>) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let mut text = text.to_owned();
    let before = matched.len();
    redact_payload(&mut text, pointers, matched);
    if matched.len() > before {
        *bytes = text.into_bytes();
    }
}

fn redact_payload<'p>(payload: &mut String, pointers: &'p [String], matched: &mut Vec<&'p String>) {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(payload) else { return };
    let mut changed = false;
    for pointer in pointers {
        if let Some(field) = value.pointer_mut(pointer) {
            *field = serde_json::Value::String(REDACTED.to_owned());
            changed = true;
            matched.push(pointer);
        }
    }
    // Only a payload that changed is written again, so the others keep their bytes.
    if changed && let Ok(text) = serde_json::to_string(&value) {
        *payload = text;
    }
}

fn approximate_size(call: &HostCall) -> usize {
    let bytes = |b: &wasaga_sdk::recording::Bytes| b.0.len();
    32 + match call {
        HostCall::StateGet { key, value } => key.len() + value.as_ref().map_or(0, bytes),
        HostCall::StatePut { key, value } => key.len() + bytes(value),
        HostCall::StateDelete { key } => key.len(),
        HostCall::ArchivePut { name, content_type, error, .. } => {
            name.len() + content_type.len() + error.as_ref().map_or(0, String::len)
        }
        HostCall::Log { level, message } => level.len() + message.len(),
        HostCall::Http { method, url, headers, body, response, error } => {
            let fields = |h: &[(String, String)]| h.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
            method.len()
                + url.len()
                + fields(headers)
                + bytes(body)
                + response.as_ref().map_or(0, |r| fields(&r.headers) + bytes(&r.body))
                + error.as_ref().map_or(0, String::len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasaga_sdk::recording::{RecordedEmit, RecordedEvent, RecordedOrigin};

    fn recording(payload: &str, emits: &[&str]) -> Recording {
        Recording {
            format: wasaga_sdk::recording::FORMAT,
            step: "payment".to_owned(),
            version: format!("sha256:{}", "0".repeat(64)),
            attempt: 1,
            event: RecordedEvent {
                id: "e-1".to_owned(),
                kind: "stock.reserved".to_owned(),
                order_id: "o-1".to_owned(),
                occurred_at_ms: 1,
                payload: payload.to_owned(),
            },
            origin: RecordedOrigin::default(),
            calls: Vec::new(),
            outcome: Outcome::Ok {
                emits: emits
                    .iter()
                    .map(|p| RecordedEmit {
                        kind: "payment.captured".to_owned(),
                        payload: (*p).to_owned(),
                        delay_ms: None,
                    })
                    .collect(),
            },
            truncated: false,
            redacted: Vec::new(),
            settings: Vec::new(),
        }
    }

    #[test]
    fn redaction_replaces_the_pointed_fields_of_every_payload_and_says_which() {
        let mut r = recording(
            r#"{"payment":{"card_token":"tok_secret"},"items":[{"sku":"A"}]}"#,
            &[r#"{"card_token":"tok_secret","amount_cents":5}"#, "not json"],
        );
        let pointers = vec!["/payment/card_token".to_owned(), "/card_token".to_owned(), "/absent".to_owned()];
        redact_recording(&mut r, &pointers);
        let text = serde_json::to_string(&r).expect("json");
        assert!(!text.contains("tok_secret"), "{text}");
        let payload: serde_json::Value = serde_json::from_str(&r.event.payload).expect("json");
        assert_eq!(payload["payment"]["card_token"], REDACTED);
        assert_eq!(payload["items"][0]["sku"], "A", "other fields are kept");
        let Outcome::Ok { emits } = &r.outcome else { panic!("ok") };
        assert_eq!(emits[1].payload, "not json", "a payload that is not JSON is kept");
        assert_eq!(r.redacted, vec!["/payment/card_token".to_owned(), "/card_token".to_owned()]);
        // Read back, the recording still says what was redacted.
        let back = Recording::from_json(&text).expect("reads");
        assert_eq!(back.redacted, r.redacted);
    }

    #[test]
    fn redaction_reaches_the_json_bodies_of_outbound_requests_and_answers() {
        use wasaga_sdk::recording::{Bytes, HttpAnswer};
        let mut r = recording(r#"{"payment":{"card_token":"tok_secret"}}"#, &[]);
        r.calls.push(HostCall::Http {
            method: "POST".to_owned(),
            url: "http://127.0.0.1:9911/v1/charges".to_owned(),
            headers: vec![("idempotency-key".to_owned(), "e-1/payment/0".to_owned())],
            body: Bytes(br#"{"token":"tok_secret","amount_cents":5}"#.to_vec()),
            response: Some(HttpAnswer {
                status: 200,
                headers: vec![],
                body: Bytes(br#"{"id":"ch_1","token":"tok_secret"}"#.to_vec()),
            }),
            error: None,
        });
        redact_recording(&mut r, &["/payment/card_token".to_owned(), "/token".to_owned()]);
        let text = serde_json::to_string(&r).expect("json");
        assert!(!text.contains("tok_secret"), "{text}");
        assert!(text.contains("amount_cents") && text.contains("ch_1"), "other fields are kept: {text}");
        assert_eq!(r.redacted, vec!["/payment/card_token".to_owned(), "/token".to_owned()]);
    }

    #[test]
    fn without_pointers_a_recording_is_unchanged() {
        let payload = r#"{ "b": 1,  "a": 2 }"#;
        let mut r = recording(payload, &[]);
        redact_recording(&mut r, &["/c".to_owned()]);
        assert_eq!(r.event.payload, payload);
        assert!(r.redacted.is_empty());
        assert!(!serde_json::to_string(&r).expect("json").contains("redacted"));
    }

    #[test]
    fn a_recording_past_its_bound_is_cut_and_says_so() {
        let recorder = Recorder::new(200);
        for i in 0..10 {
            recorder.record(HostCall::StateDelete { key: format!("key-{i}-{}", "x".repeat(20)) });
        }
        let (calls, truncated) = recorder.take();
        assert!(truncated);
        assert!(!calls.is_empty() && calls.len() < 10, "{} calls kept", calls.len());
    }
}
