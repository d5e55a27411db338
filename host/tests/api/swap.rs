//! Hot swap and rollback under continuous calls: no call fails, and each result comes
//! from exactly the version the call started on.

use crate::helpers::*;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use wasaga_host::registry::{Installed, Source, StepRegistry};
use wasaga_host::runtime::MemoryState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_fails_no_call() {
    let registry = StepRegistry::new(runtime());
    registry.install("echo", component("echo-v1"), Source::Upload).await.expect("v1 loads");
    let stop = Arc::new(AtomicBool::new(false));
    let total_calls = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for task in 0..4 {
        let (registry, stop, total_calls) = (registry.clone(), stop.clone(), total_calls.clone());
        callers.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut calls = 0u32;
            while !stop.load(Ordering::Relaxed) || calls < 20 {
                let step = registry.current("echo").expect("echo is always loaded");
                let state = Arc::new(MemoryState::default());
                let event = TestEvent::new("echo.ping", &format!("o-{task}-{calls}"), serde_json::json!({}));
                let out = call(registry.runtime(), &step, &state, &event).await.expect("no call fails during a swap");
                let replied = payload(&out[0])["version"].as_str().map(str::to_owned);
                // The reply names the version of the very instance the call used.
                assert_eq!(replied.as_deref(), Some(step.version.as_str()));
                seen.insert(step.version.clone());
                calls += 1;
                total_calls.fetch_add(1, Ordering::Relaxed);
            }
            (seen, calls)
        }));
    }
    let swap = |bytes: Bytes| {
        let registry = registry.clone();
        async move { registry.install("echo", bytes, Source::Upload).await.expect("swap") }
    };
    let mut versions = Vec::new();
    for bytes in [component("echo-v2"), component("echo-v1"), component("echo-v2")] {
        let installed = swap(bytes).await;
        assert!(matches!(installed, Installed::Swapped(_)));
        versions.push(installed.slot().current.version.clone());
        // Let the callers run on this version for a while before the next swap.
        let target = total_calls.load(Ordering::Relaxed) + 40;
        eventually(Duration::from_secs(30), "callers make progress", async || {
            total_calls.load(Ordering::Relaxed) >= target
        })
        .await;
    }
    assert_eq!(versions, ["2.0.0", "1.0.0", "2.0.0"]);
    let rolled = registry.rollback("echo").await.expect("rollback");
    assert_eq!(rolled.current.version, "1.0.0");
    assert_eq!(rolled.previous.as_ref().map(|p| p.version.as_str()), Some("2.0.0"));
    stop.store(true, Ordering::Relaxed);
    let mut all_seen = BTreeSet::new();
    for caller in callers {
        let (seen, calls) = caller.await.expect("caller task");
        assert!(calls >= 20);
        all_seen.extend(seen);
    }
    assert_eq!(all_seen, BTreeSet::from(["1.0.0".to_owned(), "2.0.0".to_owned()]));
}

#[tokio::test]
async fn a_refused_version_leaves_the_serving_one_untouched() {
    let registry = StepRegistry::new(runtime());
    registry.install("echo", component("echo-v1"), Source::Upload).await.expect("v1 loads");
    let before = registry.current("echo").expect("loaded");
    registry.install("echo", component("hostile"), Source::Upload).await.expect_err("wrong name");
    registry.install("echo", Bytes::from_static(b"junk"), Source::Upload).await.expect_err("not wasm");
    let after = registry.current("echo").expect("still loaded");
    assert!(Arc::ptr_eq(&before, &after));
    assert_eq!(registry.refusals("echo").len(), 2);
    assert!(registry.snapshot()["echo"].previous.is_none());
}

#[tokio::test]
async fn the_same_bytes_twice_change_nothing() {
    let registry = StepRegistry::new(runtime());
    registry.install("echo", component("echo-v1"), Source::Upload).await.expect("v1");
    let again = registry.install("echo", component("echo-v1"), Source::File).await.expect("same");
    assert!(matches!(again, Installed::Unchanged(_)));
    assert!(registry.snapshot()["echo"].previous.is_none(), "re-installing the same bytes made a previous version");
}

#[tokio::test]
async fn rollback_needs_a_previous_version() {
    let registry = StepRegistry::new(runtime());
    registry.rollback("echo").await.expect_err("unknown step");
    registry.install("echo", component("echo-v1"), Source::Upload).await.expect("v1");
    let error = registry.rollback("echo").await.expect_err("no previous");
    assert!(error.to_string().contains("no previous version"), "{error}");
}
