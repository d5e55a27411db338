//! The analytics step: archives every event of the saga as an immutable JSON object.
//!
//! Archive objects are named `events/{yyyy}/{mm}/{dd}/{order_id}/{event_id}.json` (UTC
//! date of `occurred_at_ms`, `_` for an event of no order). The name depends only on the
//! event, and the archive is create-only, so a redelivered event never duplicates.
//!
//! It keeps no state. Figures over many orders (revenue, units sold) are queries over the
//! archive: a running total kept in one state key would be read and written by every
//! batch, so the analytics batches of a fleet's hosts would conflict and run again
//! (`wasaga_batch_conflicts_total{consumer="analytics"}`), and one host would do the work
//! of all.

use serde::Serialize;
use serde_json::Value;
use wasaga_sdk::{Context, Emit, Event, Host, Manifest, Step, StepError};

/// The archived form of an event: the wire shape of the host's events (`event/` in the host).
#[derive(Debug, Serialize)]
struct ArchivedEvent<'a> {
    id: &'a str,
    kind: &'a str,
    order_id: &'a str,
    occurred_at_ms: u64,
    payload: Value,
    step: String,
    step_version: String,
}

/// The analytics step.
pub struct Analytics;

impl Step for Analytics {
    fn manifest() -> Manifest {
        Manifest::new("analytics", "0.1.0", ["*"])
    }

    fn handle(host: &mut dyn Host, _ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError> {
        archive(host, event)?;
        Ok(vec![])
    }
}

wasaga_sdk::export_step!(Analytics);

/// Write the event's archive object; a storage failure is worth retrying.
fn archive(host: &mut dyn Host, event: &Event) -> Result<(), StepError> {
    let payload = match serde_json::from_str(&event.payload) {
        Ok(value) => value,
        Err(e) => {
            // Keep the event anyway: the archive is the record of what happened.
            wasaga_sdk::warn!(host, "payload of {} {} is not JSON: {e}", event.kind, event.id);
            Value::String(event.payload.clone())
        }
    };
    let origin = host.origin();
    let body = ArchivedEvent {
        id: &event.id,
        kind: &event.kind,
        order_id: &event.order_id,
        occurred_at_ms: event.occurred_at_ms,
        payload,
        step: origin.step,
        step_version: origin.step_version,
    };
    let body =
        serde_json::to_vec(&body).map_err(|e| StepError::Fatal(format!("cannot encode event {}: {e}", event.id)))?;
    let name = object_name(event);
    host.archive_put(&name, &body, "application/json")
        .map_err(|reason| StepError::Retryable(format!("archive {name}: {reason}")))
}

/// `events/{yyyy}/{mm}/{dd}/{order_id}/{event_id}.json`, by the UTC date of the event.
pub fn object_name(event: &Event) -> String {
    wasaga_sdk::archive::object_name(&event.order_id, &event.id, event.occurred_at_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasaga_sdk::events::kinds;
    use wasaga_sdk::{MemoryHost, Origin};

    /// 2024-02-29T23:59:59.999Z.
    const LEAP_DAY_MS: u64 = 1_709_251_199_999;

    fn event(id: &str, kind: &str, order_id: &str, payload: Value) -> Event {
        Event {
            id: id.to_owned(),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: LEAP_DAY_MS,
            payload: payload.to_string(),
        }
    }

    fn placed(order_id: &str) -> Event {
        let payload = json!({"customer_id": "c-1", "total_cents": 3500,
            "items": [{"sku": "A", "quantity": 2, "unit_price_cents": 1000},
                      {"sku": "B", "quantity": 1, "unit_price_cents": 1500},
                      {"sku": "A", "quantity": 1, "unit_price_cents": 1000}],
            "payment": {"card_token": "tok_ok"}});
        event(&format!("placed-{order_id}"), kinds::ORDER_PLACED, order_id, payload)
    }

    fn captured(order_id: &str) -> Event {
        let payload = json!({"amount_cents": 3500});
        event(&format!("captured-{order_id}"), kinds::PAYMENT_CAPTURED, order_id, payload)
    }

    fn refunded(order_id: &str) -> Event {
        let payload = json!({"amount_cents": 3500});
        event(&format!("refunded-{order_id}"), kinds::PAYMENT_REFUNDED, order_id, payload)
    }

    fn completed(order_id: &str) -> Event {
        event(&format!("completed-{order_id}"), kinds::ORDER_COMPLETED, order_id, json!({}))
    }

    fn cancelled(order_id: &str) -> Event {
        let payload = json!({"reason": "customer_request"});
        event(&format!("cancelled-{order_id}"), kinds::ORDER_CANCELLED, order_id, payload)
    }

    fn run(host: &mut MemoryHost, event: &Event) -> Result<Vec<Emit>, StepError> {
        Analytics::handle(host, &Context { attempt: 1 }, event)
    }

    #[test]
    fn manifest_subscribes_to_everything() {
        let manifest = Analytics::manifest();
        assert_eq!((manifest.name.as_str(), manifest.version.as_str()), ("analytics", "0.1.0"));
        assert_eq!(manifest.subscribes, ["*"]);
    }

    #[test]
    fn archive_name_and_body() {
        let origin = Origin { step: "inventory".into(), step_version: "sha256:ab".into() };
        let mut host = MemoryHost { origin, ..MemoryHost::default() };
        run(&mut host, &placed("o-1")).unwrap();
        let (body, content_type) = &host.archive["events/2024/02/29/o-1/placed-o-1.json"];
        assert_eq!(content_type, "application/json");
        let body: Value = serde_json::from_slice(body).unwrap();
        let object = body.as_object().unwrap();
        let mut fields: Vec<_> = object.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["id", "kind", "occurred_at_ms", "order_id", "payload", "step", "step_version"]);
        assert_eq!(body["id"], "placed-o-1");
        assert_eq!(body["kind"], "order.placed");
        assert_eq!(body["order_id"], "o-1");
        assert_eq!(body["occurred_at_ms"], LEAP_DAY_MS);
        assert_eq!(body["payload"]["payment"]["card_token"], "tok_ok", "a value, not a string");
        assert_eq!((&body["step"], &body["step_version"]), (&json!("inventory"), &json!("sha256:ab")));
    }

    #[test]
    fn object_names() {
        let check = |order_id: &str, id: &str, ms: u64, expected: &str| {
            let mut event = event(id, "stock.set", order_id, json!({}));
            event.occurred_at_ms = ms;
            assert_eq!(object_name(&event), expected);
        };
        check("o1", "e1", 0, "events/1970/01/01/o1/e1.json");
        check("", "e1", 0, "events/1970/01/01/_/e1.json");
        check("o1", "e1", LEAP_DAY_MS, "events/2024/02/29/o1/e1.json");
        check("o1", "e1", LEAP_DAY_MS + 1, "events/2024/03/01/o1/e1.json");
        check("o1", "e1", 951_868_799_999, "events/2000/02/29/o1/e1.json");
        check("o1", "e1", 1_767_225_599_999, "events/2025/12/31/o1/e1.json");
        check(
            "0194f1c2-7b3a-7c00-8d2e-3f1a2b3c4d5e",
            "0194f1c2-7b3a-7c00-8d2e-3f1a2b3c4d5f",
            1_767_225_600_000,
            "events/2026/01/01/0194f1c2-7b3a-7c00-8d2e-3f1a2b3c4d5e/\
             0194f1c2-7b3a-7c00-8d2e-3f1a2b3c4d5f.json",
        );
        check("../x", "a/b", 0, "events/1970/01/01/.._x/a_b.json");
        check("..", ".", 0, "events/1970/01/01/_/_.json");
    }

    #[test]
    fn archive_is_written_once_per_event() {
        let mut host = MemoryHost::default();
        let e = placed("o1");
        run(&mut host, &e).unwrap();
        run(&mut host, &e).unwrap();
        assert_eq!(host.archive.len(), 1);
        let set = json!({"sku": "A", "available": 3});
        run(&mut host, &event("s1", kinds::STOCK_SET, "", set)).unwrap();
        assert!(host.archive.contains_key("events/2024/02/29/_/s1.json"));
        assert!(host.state.is_empty(), "analytics keeps no state");
    }

    #[test]
    fn archive_failure_is_retryable() {
        let archive_error = Some("disk full".into());
        let mut host = MemoryHost { archive_error, ..MemoryHost::default() };
        let err = run(&mut host, &placed("o1")).unwrap_err();
        assert!(matches!(&err, StepError::Retryable(reason) if reason.contains("disk full")));
        assert!(host.state.is_empty());
        host.archive_error = None;
        run(&mut host, &placed("o1")).unwrap();
        assert_eq!(host.archive.len(), 1);
    }

    #[test]
    fn a_payload_that_is_not_json_is_archived_as_a_string() {
        let mut host = MemoryHost::default();
        let mut e = placed("o1");
        e.payload = "not json".into();
        run(&mut host, &e).unwrap();
        let (body, _) = host.archive.values().next().unwrap();
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["payload"], "not json");
    }

    #[test]
    fn every_redelivery_is_without_effect() {
        let history = [placed("o1"), captured("o1"), completed("o1"), cancelled("o1"), refunded("o1")];
        for prefix in 1..=history.len() {
            let mut host = MemoryHost::default();
            for e in &history[..prefix] {
                run(&mut host, e).unwrap();
            }
            let state = host.state.clone();
            let archive = host.archive.clone();
            for e in &history[..prefix] {
                run(&mut host, e).unwrap();
            }
            assert_eq!(host.state, state, "after redelivering {prefix} events");
            assert_eq!(host.archive, archive);
        }
    }
}
