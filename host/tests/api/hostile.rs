//! Hostile components and bad files: each fails its one call or upload with a clear
//! reason, and the runtime keeps serving other steps meanwhile.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;
use wasaga_host::runtime::{CallError, LoadError, MemoryState};

async fn hostile_call(kind: &str, payload: serde_json::Value) -> Result<Vec<wasaga_host::runtime::Emitted>, CallError> {
    let runtime = runtime();
    let step = load(&runtime, "hostile").await;
    let state = Arc::new(MemoryState::default());
    call(&runtime, &step, &state, &TestEvent::new(kind, "o-1", payload)).await
}

#[tokio::test]
async fn each_hostile_behaviour_fails_only_its_call() {
    // (event kind, payload, expected error label)
    let table = [
        ("hostile.loop", json!({}), "timeout"),
        ("hostile.alloc", json!({}), "memory"),
        ("hostile.stack", json!({}), "trap"),
        ("hostile.trap", json!({}), "trap"),
        ("hostile.flood", json!({"mib": 100}), "memory"),
        ("hostile.flood", json!({"mib": 4}), "too_large"),
        ("hostile.fatal", json!({}), "fatal"),
        ("hostile.retry", json!({}), "retryable"),
    ];
    for (kind, payload, expected) in table {
        let error = hostile_call(kind, payload.clone()).await.expect_err(kind);
        assert_eq!(error.label(), expected, "{kind} {payload}: {error}");
    }
}

#[tokio::test]
async fn exhausting_the_call_stack_is_reported_as_such() {
    let error = hostile_call("hostile.deep", json!({})).await.expect_err("overflows");
    assert!(matches!(error, CallError::Trap(_)), "{error}");
    assert!(error.to_string().contains("stack"), "{error}");
}

#[tokio::test]
async fn a_looping_step_does_not_hold_up_other_steps() {
    let runtime = runtime();
    let hostile = Arc::new(load(&runtime, "hostile").await);
    let payment = Arc::new(load(&runtime, "payment").await);
    let looping = {
        let (runtime, hostile) = (runtime.clone(), hostile.clone());
        tokio::spawn(async move {
            let state = Arc::new(MemoryState::default());
            call(&runtime, &hostile, &state, &TestEvent::new("hostile.loop", "o-1", json!({}))).await
        })
    };
    let reserved = json!({"items": [], "total_cents": 100, "payment": {"card_token": "tok_ok"}, "levels": []});
    for i in 0..50 {
        let state = Arc::new(MemoryState::default());
        let event = TestEvent::new("stock.reserved", &format!("o-{i}"), reserved.clone());
        let out = call(&runtime, &payment, &state, &event).await.expect("payment is unaffected");
        assert_eq!(out[0].kind, "payment.captured");
    }
    let error = looping.await.expect("task").expect_err("the loop is stopped");
    assert!(matches!(error, CallError::Timeout { .. }), "{error}");
    // The hostile step itself still serves its next call.
    let state = Arc::new(MemoryState::default());
    let out = call(&runtime, &hostile, &state, &TestEvent::new("hostile.ok", "o-2", json!({}))).await.expect("ok");
    assert_eq!(out[0].kind, "hostile.done");
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance() {
    let runtime = runtime();
    let hostile = load(&runtime, "hostile").await;
    for _ in 0..3 {
        let state = Arc::new(MemoryState::default());
        let event = TestEvent::new("hostile.static", "o-1", json!({}));
        let out = call(&runtime, &hostile, &state, &event).await.expect("ok");
        assert_eq!(payload(&out[0])["count"], 1, "a global survived from an earlier call");
    }
}

async fn refusal(name: &str, bytes: impl Into<bytes::Bytes>) -> LoadError {
    runtime().load(name, bytes.into()).await.expect_err("must be refused")
}

#[tokio::test]
async fn bad_files_are_refused_with_a_reason() {
    let not_wasm = refusal("payment", &b"#!/bin/sh\necho hi\n"[..]).await;
    assert!(matches!(not_wasm, LoadError::NotWasm), "{not_wasm}");

    let core = wat::parse_str("(module (func (export \"handle\")))").expect("wat");
    let error = refusal("payment", core).await;
    assert!(matches!(error, LoadError::CoreModule), "{error}");
    assert!(error.to_string().contains("wasm32-wasip2"), "{error}");

    let other_world = wat::parse_str("(component)").expect("wat");
    let error = refusal("payment", other_world).await;
    assert!(error.to_string().contains("does not export wasaga:saga/handler@0.2.0 or @0.1.0"), "{error}");

    let wrong_shape =
        wat::parse_str(r#"(component (instance $i) (export "wasaga:saga/handler@0.1.0" (instance $i)))"#).expect("wat");
    let error = refusal("payment", wrong_shape).await;
    assert!(matches!(error, LoadError::Contract(_)), "{error}");

    let truncated = component("payment").slice(..4096);
    let error = refusal("payment", truncated).await;
    assert!(matches!(error, LoadError::Compile(_)), "{error}");
}

#[tokio::test]
async fn a_component_importing_sockets_is_refused_naming_the_import() {
    let error = refusal("sockets", component("sockets")).await;
    assert!(matches!(error, LoadError::ForbiddenImport(_)), "{error}");
    assert!(error.to_string().contains("wasi:sockets/"), "{error}");
}

#[tokio::test]
async fn a_manifest_naming_another_step_is_refused() {
    let error = refusal("payment", component("hostile")).await;
    assert!(matches!(error, LoadError::NameMismatch { .. }), "{error}");
    assert!(error.to_string().contains("\"hostile\""), "{error}");
    let error = refusal("Bad/Name", component("payment")).await;
    assert!(matches!(error, LoadError::Name(_)), "{error}");
}
