//! Each saga step's behaviour table, run through its component.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;
use wasaga_host::archive::{Archive, ObjectArchive};
use wasaga_host::runtime::{CallError, MemoryState};

fn placed(sku: &str, quantity: u32, token: &str) -> serde_json::Value {
    json!({
        "customer_id": "c-1",
        "items": [{"sku": sku, "quantity": quantity, "unit_price_cents": 1250}],
        "total_cents": 1250 * i64::from(quantity),
        "payment": {"card_token": token}
    })
}

fn kinds(emits: &[wasaga_host::runtime::Emitted]) -> Vec<&str> {
    emits.iter().map(|e| e.kind.as_str()).collect()
}

#[tokio::test]
async fn inventory_reserves_all_or_nothing_and_compensates() {
    let runtime = runtime();
    let step = load(&runtime, "inventory").await;
    let state = Arc::new(MemoryState::default());
    let run = |event: TestEvent| {
        let (runtime, step, state) = (runtime.clone(), &step, state.clone());
        async move { call(&runtime, step, &state, &event).await.expect("inventory call succeeds") }
    };

    let out = run(TestEvent::new("stock.set", "", json!({"sku": "SKU-1", "available": 5}))).await;
    assert_eq!(kinds(&out), ["stock.updated"]);
    assert_eq!(payload(&out[0])["levels"][0]["available"], 5);

    let out = run(TestEvent::new("order.placed", "o-1", placed("SKU-1", 2, "tok_ok"))).await;
    assert_eq!(kinds(&out), ["stock.reserved"]);
    let reserved = payload(&out[0]);
    assert_eq!(reserved["total_cents"], 2500);
    assert_eq!(reserved["payment"]["card_token"], "tok_ok");
    assert_eq!(reserved["levels"][0]["available"], 3);
    assert_eq!(reserved["levels"][0]["reserved"], 2);

    // The same order placed again (a redelivery with a new event id) has no effect.
    let out = run(TestEvent::new("order.placed", "o-1", placed("SKU-1", 2, "tok_ok"))).await;
    assert!(out.is_empty(), "duplicate order.placed emitted {:?}", kinds(&out));

    // Not enough stock: nothing is reserved, the short SKU is named.
    let order = json!({
        "customer_id": "c-2",
        "items": [
            {"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100},
            {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 100}
        ],
        "total_cents": 200,
        "payment": {"card_token": "tok_ok"}
    });
    let out = run(TestEvent::new("order.placed", "o-2", order)).await;
    assert_eq!(kinds(&out), ["stock.unavailable"]);
    let short = payload(&out[0])["short"].clone();
    assert_eq!(short.as_array().map(Vec::len), Some(1), "{short}");
    assert_eq!(short[0]["sku"], "SKU-2");

    let out = run(TestEvent::new("order.completed", "o-1", json!({}))).await;
    assert_eq!(kinds(&out), ["stock.committed"]);
    assert_eq!(payload(&out[0])["levels"][0]["sold"], 2);

    // Cancelling a completed order returns its stock.
    let out = run(TestEvent::new("order.cancelled", "o-1", json!({"reason": "customer_request"}))).await;
    assert_eq!(kinds(&out), ["stock.released"]);
    let released = payload(&out[0]);
    assert_eq!(released["restocked"], true);
    assert_eq!(released["levels"][0]["available"], 5);
    assert_eq!(released["levels"][0]["sold"], 0);
    let out = run(TestEvent::new("order.cancelled", "o-1", json!({"reason": "customer_request"}))).await;
    assert!(out.is_empty(), "a second cancel released stock again");
}

#[tokio::test]
async fn payment_follows_the_test_card_tokens() {
    let runtime = runtime();
    let step = load(&runtime, "payment").await;
    let reserved = |token: &str| {
        json!({
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 700}],
            "total_cents": 700,
            "payment": {"card_token": token},
            "levels": []
        })
    };
    // (token, attempt, expected kind or error label)
    let table = [
        ("tok_ok", 1, "payment.captured"),
        ("tok_decline", 1, "payment.declined"),
        ("tok_unknown", 1, "payment.declined"),
        ("tok_flaky_2", 1, "retryable"),
        ("tok_flaky_2", 2, "retryable"),
        ("tok_flaky_2", 3, "payment.captured"),
        ("tok_flaky_9", 5, "retryable"),
        ("tok_trap", 1, "trap"),
    ];
    for (token, attempt, expected) in table {
        let state = Arc::new(MemoryState::default());
        let event = TestEvent::new("stock.reserved", &format!("o-{token}"), reserved(token)).attempt(attempt);
        let got = match call(&runtime, &step, &state, &event).await {
            Ok(emits) => emits.first().map(|e| e.kind.clone()).unwrap_or_default(),
            Err(error) => error.label().to_owned(),
        };
        assert_eq!(got, expected, "{token} on attempt {attempt}");
    }
}

#[tokio::test]
async fn payment_refunds_a_capture_exactly_once() {
    let runtime = runtime();
    let step = load(&runtime, "payment").await;
    let state = Arc::new(MemoryState::default());
    let reserved = json!({"items": [], "total_cents": 900, "payment": {"card_token": "tok_ok"}, "levels": []});
    let out = call(&runtime, &step, &state, &TestEvent::new("stock.reserved", "o-9", reserved)).await.expect("capture");
    assert_eq!(kinds(&out), ["payment.captured"]);
    let cancel = || TestEvent::new("order.cancelled", "o-9", json!({"reason": "customer_request"}));
    let out = call(&runtime, &step, &state, &cancel()).await.expect("refund");
    assert_eq!(kinds(&out), ["payment.refunded"]);
    assert_eq!(payload(&out[0])["amount_cents"], 900);
    let out = call(&runtime, &step, &state, &cancel()).await.expect("second cancel");
    assert!(out.is_empty(), "refunded twice");
}

#[tokio::test]
async fn payment_does_not_capture_after_a_cancel() {
    let runtime = runtime();
    let step = load(&runtime, "payment").await;
    let state = Arc::new(MemoryState::default());
    let cancel = TestEvent::new("order.cancelled", "o-3", json!({"reason": "customer_request"}));
    assert!(call(&runtime, &step, &state, &cancel).await.expect("cancel").is_empty());
    let reserved = json!({"items": [], "total_cents": 900, "payment": {"card_token": "tok_ok"}, "levels": []});
    let out =
        call(&runtime, &step, &state, &TestEvent::new("stock.reserved", "o-3", reserved)).await.expect("late reserve");
    assert!(out.is_empty(), "captured a cancelled order: {:?}", kinds(&out));
}

#[tokio::test]
async fn analytics_archives_each_event_once_under_its_id() {
    let runtime = runtime();
    let step = load(&runtime, "analytics").await;
    let state = Arc::new(MemoryState::default());
    let archive = Arc::new(ObjectArchive::from_url("memory://").expect("memory archive"));
    let mut event = TestEvent::new("order.placed", "o-7", placed("SKU-9", 3, "tok_ok"));
    event.origin.step = "host".to_owned();
    event.origin.step_version = "0.1.0".to_owned();
    for _ in 0..2 {
        let dyn_archive: Arc<dyn Archive> = archive.clone();
        let out = runtime.call(&step, event.input(), state.clone(), Some(dyn_archive)).await.expect("analytics call");
        assert!(out.is_empty());
    }
    let names = archive.list("events").await.expect("list");
    let expected = format!("events/2025/11/26/o-7/{}.json", event.id);
    assert_eq!(names, std::slice::from_ref(&expected));
    let body = archive.get(&expected).await.expect("get").expect("object exists");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("object is JSON");
    assert_eq!(body["id"], event.id);
    assert_eq!(body["kind"], "order.placed");
    assert_eq!(body["order_id"], "o-7");
    assert_eq!(body["payload"]["items"][0]["sku"], "SKU-9");
    assert_eq!(body["step"], "host");
    assert_eq!(body["step_version"], "0.1.0");
}

/// Another host handling the same events (a redelivery, a replay) shares nothing with
/// this one but create-only archive objects: analytics keeps no state for hosts to
/// conflict on.
#[tokio::test]
async fn analytics_leaves_no_state_however_often_an_order_is_delivered() {
    let runtime = runtime();
    let step = load(&runtime, "analytics").await;
    let state = Arc::new(MemoryState::default());
    let archive = Arc::new(ObjectArchive::from_url("memory://").expect("memory archive"));
    let events = [
        TestEvent::new("order.placed", "o-9", placed("SKU-9", 2, "tok_ok")),
        TestEvent::new("payment.captured", "o-9", json!({"amount_cents": 900})),
        TestEvent::new("order.completed", "o-9", json!({})),
    ];
    for _ in 0..2 {
        for event in &events {
            let dyn_archive: Arc<dyn Archive> = archive.clone();
            let out = runtime.call(&step, event.input(), state.clone(), Some(dyn_archive)).await.expect("call");
            assert!(out.is_empty());
        }
    }
    assert!(state.snapshot().is_empty(), "analytics wrote state: {:?}", state.snapshot().keys());
    assert_eq!(archive.list("events").await.expect("list").len(), events.len(), "one object per event");
}

#[tokio::test]
async fn analytics_without_an_archive_fails_retryably() {
    let runtime = runtime();
    let step = load(&runtime, "analytics").await;
    let state = Arc::new(MemoryState::default());
    let event = TestEvent::new("order.placed", "o-8", placed("SKU-1", 1, "tok_ok"));
    let error = call(&runtime, &step, &state, &event).await.expect_err("no archive");
    assert!(matches!(error, CallError::Retryable(_)), "{error}");
}
