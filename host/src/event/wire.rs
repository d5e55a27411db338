//! The event on the wire: the same JSON on every transport, the Kafka topic and in every
//! archive object: `{"id","kind","order_id","occurred_at_ms","payload":{…},"step","step_version"}`,
//! plus `"trace"` (a W3C traceparent) when tracing is on.

use super::StoredEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Serialize)]
struct WireOut<'a> {
    id: &'a str,
    kind: &'a str,
    order_id: &'a str,
    occurred_at_ms: i64,
    payload: Payload<'a>,
    step: &'a str,
    step_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a str>,
}

/// A payload is JSON; one that is not (which the host never writes) is carried as a
/// JSON string rather than corrupting the document.
#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

#[derive(Deserialize)]
struct WireIn {
    id: String,
    kind: String,
    order_id: String,
    occurred_at_ms: i64,
    payload: Box<RawValue>,
    step: String,
    step_version: String,
    #[serde(default)]
    trace: Option<String>,
}

/// The wire JSON of `event`.
pub fn encode(event: &StoredEvent) -> String {
    let payload = match serde_json::from_str::<&RawValue>(&event.payload) {
        Ok(raw) => Payload::Json(raw),
        Err(_) => Payload::Text(&event.payload),
    };
    let out = WireOut {
        id: &event.id,
        kind: &event.kind,
        order_id: &event.order_id,
        occurred_at_ms: event.occurred_at_ms,
        payload,
        step: &event.step,
        step_version: &event.step_version,
        trace: event.trace.as_deref(),
    };
    // Serialising borrowed strings and valid raw JSON cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// Parse wire JSON back into an event.
pub fn decode(text: &str) -> Result<StoredEvent, serde_json::Error> {
    let w: WireIn = serde_json::from_str(text)?;
    Ok(StoredEvent {
        id: w.id,
        kind: w.kind,
        order_id: w.order_id,
        occurred_at_ms: w.occurred_at_ms,
        payload: w.payload.get().to_owned(),
        step: w.step,
        step_version: w.step_version,
        attempt: 1,
        trace: w.trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_the_payload_as_an_object() {
        let event = StoredEvent {
            id: "e-1".into(),
            kind: "order.placed".into(),
            order_id: "o-1".into(),
            payload: r#"{"total_cents":100}"#.into(),
            step: "host".into(),
            step_version: "0.1.0".into(),
            occurred_at_ms: 42,
            attempt: 1,
            trace: None,
        };
        let text = encode(&event);
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["payload"]["total_cents"], 100);
        assert_eq!(value["step"], "host");
        assert_eq!(decode(&text).expect("decodes"), event);
    }
}
