//! The analytics step: archives every event of the saga as an immutable JSON object and
//! keeps running totals (orders, revenue, refunds, units sold).
//!
//! Archive objects are named `events/{yyyy}/{mm}/{dd}/{order_id}/{event_id}.json` (UTC
//! date of `occurred_at_ms`, `_` for an event of no order). The name depends only on the
//! event, and the archive is create-only, so a redelivered event never duplicates.
//!
//! State, in this step's namespace:
//! - `totals`: the [`Totals`].
//! - `order/{order_id}`: an [`OrderRecord`] of what was already counted for the order,
//!   so each kind counts at most once per order however often it is delivered.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use wasaga_sdk::events::{OrderPlaced, PaymentCaptured, PaymentRefunded, kinds};
use wasaga_sdk::{Context, Emit, Event, Host, HostExt, Manifest, Step, StepError};

/// State key of the running totals.
pub const TOTALS_KEY: &str = "totals";

/// Running totals over every order seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Orders placed.
    pub orders: u64,
    /// Sum of every `payment.captured`.
    pub revenue_captured_cents: i64,
    /// Sum of every `payment.refunded`.
    pub refunded_cents: i64,
    /// Units of completed (and not since cancelled) orders, per SKU.
    pub units_sold: BTreeMap<String, u64>,
}

/// What has been counted for one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderRecord {
    /// Units per SKU, from `order.placed`.
    pub items: BTreeMap<String, u64>,
    /// `order.placed` was counted.
    pub placed: bool,
    /// `payment.captured` was counted.
    pub captured: bool,
    /// `payment.refunded` was counted.
    pub refunded: bool,
    /// `order.completed` was seen.
    pub completed: bool,
    /// `order.cancelled` was seen.
    pub cancelled: bool,
    /// The items are currently included in `units_sold`.
    pub units_counted: bool,
}

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
        if !event.order_id.is_empty() {
            count(host, event)?;
        }
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

/// Decode a payload for the totals; a payload that does not decode is logged and left out,
/// as the event is archived already.
fn decode<T: serde::de::DeserializeOwned>(host: &dyn Host, event: &Event) -> Option<T> {
    match event.payload() {
        Ok(value) => Some(value),
        Err(StepError::Fatal(reason) | StepError::Retryable(reason)) => {
            wasaga_sdk::warn!(host, "not counted: {reason}");
            None
        }
    }
}

/// Update the totals, counting each kind at most once per order.
fn count(host: &mut dyn Host, event: &Event) -> Result<(), StepError> {
    let key = format!("order/{}", event.order_id);
    let before = host.get_json::<OrderRecord>(&key)?.unwrap_or_default();
    let mut record = before.clone();
    let old_totals = host.get_json::<Totals>(TOTALS_KEY)?.unwrap_or_default();
    let mut totals = old_totals.clone();

    match event.kind.as_str() {
        kinds::ORDER_PLACED if !record.placed => {
            if let Some(placed) = decode::<OrderPlaced>(host, event) {
                for line in placed.items {
                    *record.items.entry(line.sku).or_default() += u64::from(line.quantity);
                }
                record.placed = true;
                totals.orders += 1;
            }
        }
        kinds::PAYMENT_CAPTURED if !record.captured => {
            if let Some(captured) = decode::<PaymentCaptured>(host, event) {
                record.captured = true;
                totals.revenue_captured_cents += captured.amount_cents;
            }
        }
        kinds::PAYMENT_REFUNDED if !record.refunded => {
            if let Some(refunded) = decode::<PaymentRefunded>(host, event) {
                record.refunded = true;
                totals.refunded_cents += refunded.amount_cents;
            }
        }
        kinds::ORDER_COMPLETED => record.completed = true,
        kinds::ORDER_CANCELLED => record.cancelled = true,
        _ => {}
    }

    // Units count while the order is placed and completed and not cancelled; deciding
    // it from the flags makes the result independent of the order events arrive in.
    let counts = record.placed && record.completed && !record.cancelled;
    if counts != record.units_counted {
        for (sku, units) in &record.items {
            let sold = totals.units_sold.entry(sku.clone()).or_default();
            *sold = if counts { *sold + units } else { sold.saturating_sub(*units) };
        }
        record.units_counted = counts;
    }

    if record != before {
        host.put_json(&key, &record)?;
    }
    if totals != old_totals {
        host.put_json(TOTALS_KEY, &totals)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
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

    fn totals(host: &MemoryHost) -> Totals {
        host.get_json::<Totals>(TOTALS_KEY).unwrap().unwrap_or_default()
    }

    /// Run `events`; expect (orders, revenue, refunds, units sold per SKU).
    fn check(events: &[Event], expected: (u64, i64, i64, &[(&str, u64)])) {
        let mut host = MemoryHost::default();
        for event in events {
            assert_eq!(run(&mut host, event).unwrap(), vec![]);
        }
        let totals = totals(&host);
        let units: Vec<_> = totals
            .units_sold
            .iter()
            .filter(|(_, units)| **units > 0)
            .map(|(sku, units)| (sku.as_str(), *units))
            .collect();
        let actual = (totals.orders, totals.revenue_captured_cents, totals.refunded_cents);
        assert_eq!(actual, (expected.0, expected.1, expected.2), "after {events:?}");
        assert_eq!(units, expected.3, "after {events:?}");
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
        let before = host.state.clone();
        let set = json!({"sku": "A", "available": 3});
        run(&mut host, &event("s1", kinds::STOCK_SET, "", set)).unwrap();
        assert!(host.archive.contains_key("events/2024/02/29/_/s1.json"));
        assert_eq!(host.state, before, "an event of no order counts nothing");
    }

    #[test]
    fn archive_failure_is_retryable_and_counts_nothing() {
        let archive_error = Some("disk full".into());
        let mut host = MemoryHost { archive_error, ..MemoryHost::default() };
        let err = run(&mut host, &placed("o1")).unwrap_err();
        assert!(matches!(&err, StepError::Retryable(reason) if reason.contains("disk full")));
        assert!(host.state.is_empty());
        host.archive_error = None;
        run(&mut host, &placed("o1")).unwrap();
        assert_eq!(totals(&host).orders, 1);
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
        assert_eq!(totals(&host).orders, 0);
    }

    #[test]
    fn totals_table() {
        let units: &[(&str, u64)] = &[("A", 3), ("B", 1)];
        check(&[placed("o1")], (1, 0, 0, &[]));
        check(&[placed("o1"), placed("o1")], (1, 0, 0, &[]));
        check(&[placed("o1"), placed("o2")], (2, 0, 0, &[]));
        check(&[placed("o1"), captured("o1"), captured("o1")], (1, 3500, 0, &[]));
        check(&[placed("o1"), captured("o1"), completed("o1")], (1, 3500, 0, units));
        check(&[placed("o1"), completed("o1"), completed("o1")], (1, 0, 0, units));
        // Cancelling a completed order takes its units back, once.
        let cancel_completed = [placed("o1"), captured("o1"), completed("o1"), cancelled("o1"), refunded("o1")];
        check(&cancel_completed, (1, 3500, 3500, &[]));
        let mut twice = cancel_completed.to_vec();
        twice.extend(cancel_completed.iter().cloned());
        check(&twice, (1, 3500, 3500, &[]));
        // A pending order cancelled never sold anything.
        check(&[placed("o1"), cancelled("o1"), cancelled("o1")], (1, 0, 0, &[]));
        // Out of order: completion seen before the placement still counts the units.
        check(&[completed("o1"), placed("o1")], (1, 0, 0, units));
        // Two orders add up.
        check(&[placed("o1"), completed("o1"), placed("o2"), completed("o2")], (2, 0, 0, &[("A", 6), ("B", 2)]));
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
