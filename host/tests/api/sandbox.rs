//! The sandbox's edges, from the host side of the imports: a guest blocked in a WASI
//! call, a `describe()` that never returns, a flood of state, log lines or archive
//! objects, a forbidden event kind, a component defining too many memories, an oversized
//! or slow-to-compile component, and names the host keeps for itself. Each fails its one
//! call or load with an error naming the limit, and nothing else waits for it.

use crate::helpers::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasaga_host::archive::{Archive, CallArchive, ObjectArchive};
use wasaga_host::runtime::{CallError, LoadError, MemoryState, Runtime, RuntimeConfig};

async fn hostile_call_with(
    runtime: &Arc<Runtime>,
    kind: &str,
    archive: Option<Arc<dyn Archive>>,
) -> Result<Vec<wasaga_host::runtime::Emitted>, CallError> {
    let step = load(runtime, "hostile").await;
    let state = Arc::new(MemoryState::default());
    let event = TestEvent::new(kind, "o-1", json!({}));
    runtime.call(&step, event.input(), state, archive).await
}

#[tokio::test]
async fn a_guest_sleeping_in_a_wasi_call_is_stopped_at_the_deadline() {
    let runtime = runtime();
    let error = hostile_call_with(&runtime, "hostile.sleep", None).await.expect_err("stopped");
    assert!(matches!(error, CallError::Timeout { .. }), "{error}");
    // The step (and the runtime) serve the next call.
    let ok = hostile_call_with(&runtime, "hostile.ok", None).await.expect("the next call succeeds");
    assert_eq!(ok[0].kind, "hostile.done");
}

#[tokio::test]
async fn a_describe_that_never_returns_is_refused_and_blocks_nothing() {
    let runtime = runtime();
    let slow = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.load("hostile", component("hostile-slow-describe")).await }
    });
    // Meanwhile other components load and serve.
    let payment = load(&runtime, "payment").await;
    let state = Arc::new(MemoryState::default());
    let reserved = json!({"items": [], "total_cents": 100, "payment": {"card_token": "tok_ok"}, "levels": []});
    let out = call(&runtime, &payment, &state, &TestEvent::new("stock.reserved", "o-1", reserved)).await;
    assert_eq!(out.expect("payment serves")[0].kind, "payment.captured");
    let error = slow.await.expect("joins").expect_err("refused");
    assert!(matches!(error, LoadError::Describe(CallError::Timeout { .. })), "{error}");
    assert!(error.to_string().contains("describe()") && error.to_string().contains("deadline"), "{error}");
}

#[tokio::test]
async fn a_flood_of_state_writes_fails_the_call_naming_the_limit() {
    let runtime = runtime();
    let error = hostile_call_with(&runtime, "hostile.flood-state", None).await.expect_err("over the limit");
    assert!(matches!(error, CallError::Limit(_)), "{error}");
    assert!(error.to_string().contains("WASAGA_STEP_MAX_STATE_BYTES"), "{error}");
    assert!(error.is_retryable(), "the step's failure: retried, then dead-lettered");
}

#[tokio::test]
async fn a_flood_of_archive_objects_fails_the_call_naming_the_limit() {
    let runtime = runtime();
    let archive: Arc<dyn Archive> = Arc::new(ObjectArchive::from_url("memory://").expect("memory archive"));
    let call_archive: Arc<dyn Archive> = CallArchive::new(archive);
    let error =
        hostile_call_with(&runtime, "hostile.flood-archive", Some(call_archive)).await.expect_err("over the limit");
    assert!(matches!(error, CallError::Limit(_)), "{error}");
    assert!(error.to_string().contains("WASAGA_STEP_MAX_ARCHIVE"), "{error}");
}

#[tokio::test]
async fn a_flood_of_log_lines_is_cut_and_the_call_succeeds() {
    let runtime = runtime();
    let out = hostile_call_with(&runtime, "hostile.flood-log", None).await.expect("the call succeeds");
    assert!(out.is_empty());
    let metrics = wasaga_host::telemetry::metrics().render();
    let dropped = metrics
        .lines()
        .find(|line| line.starts_with("wasaga_step_log_dropped_total") && line.contains("hostile"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 9_900.0, "dropped lines are counted: {dropped}");
}

#[tokio::test]
async fn a_step_may_not_emit_the_hosts_kinds() {
    let runtime = runtime();
    let error = hostile_call_with(&runtime, "hostile.emit-order", None).await.expect_err("refused");
    assert!(matches!(error, CallError::InvalidKind(ref kind) if kind == "order.completed"), "{error}");
    assert!(!error.is_retryable(), "dead-lettered at once: retrying cannot help");
}

#[tokio::test]
async fn a_trap_names_the_guests_last_stderr_line() {
    let runtime = runtime();
    let error = hostile_call_with(&runtime, "hostile.print", None).await.expect_err("traps");
    assert!(error.to_string().contains("trapping after a line on stderr"), "{error}");
}

#[tokio::test]
async fn a_component_defining_too_many_memories_is_refused_naming_the_limit() {
    let runtime = runtime();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/fixtures/wat/many-memories.wat");
    let bytes = wat::parse_file(&path).expect("valid WAT");
    let error = runtime.load("many", bytes.into()).await.expect_err("refused");
    assert!(error.to_string().contains("linear memories"), "{error}");
    assert!(error.to_string().contains("at most 2"), "{error}");
}

#[tokio::test]
async fn oversized_and_slow_to_compile_components_are_refused() {
    let small = Runtime::new(RuntimeConfig { max_component_bytes: 1024, ..runtime_config() }).expect("runtime");
    let error = small.load("payment", component("payment")).await.expect_err("too large");
    assert!(matches!(error, LoadError::TooLarge { .. }), "{error}");
    assert!(error.to_string().contains("WASAGA_MAX_COMPONENT_MIB"), "{error}");
    // No cache: a compile that takes longer than the limit is given up on.
    let hasty =
        Runtime::new(RuntimeConfig { compile_timeout: Duration::from_millis(1), cache_dir: None, ..runtime_config() })
            .expect("runtime");
    let error = hasty.load("payment", component("payment")).await.expect_err("too slow");
    assert!(matches!(error, LoadError::CompileTimeout(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_given_up_on_cannot_pile_up() {
    // Every compile is given up on at once, but its thread goes on: repeated uploads
    // must wait for a slot (and be refused as busy), not start a thread each.
    let hasty = Runtime::new(RuntimeConfig {
        compile_timeout: Duration::from_millis(1),
        compile_slots: 2,
        cache_dir: None,
        ..runtime_config()
    })
    .expect("runtime");
    let loads = (0..8).map(|_| hasty.load("payment", component("payment")));
    let errors: Vec<LoadError> =
        futures::future::join_all(loads).await.into_iter().map(|r| r.expect_err("too slow")).collect();
    assert!(
        errors.iter().all(|e| matches!(e, LoadError::CompileTimeout(_) | LoadError::CompilesBusy(_))),
        "{errors:?}"
    );
    let running = hasty.compiles_running();
    assert!(running <= 2, "{running} compiles run after their uploads were refused");
    assert!(errors.iter().any(|e| matches!(e, LoadError::CompilesBusy(_))), "{errors:?}");
    eventually(Duration::from_secs(60), "the abandoned compiles end", async || hasty.compiles_running() == 0).await;
}

#[tokio::test]
async fn a_forbidden_import_is_refused_before_compiling() {
    // No cache, so a compile would show; the refusal comes from reading the imports.
    let runtime = Runtime::new(RuntimeConfig { cache_dir: None, ..runtime_config() }).expect("runtime");
    let started = Instant::now();
    let error = runtime.load("sockets", component("sockets")).await.expect_err("refused");
    let took = started.elapsed();
    assert!(matches!(error, LoadError::ForbiddenImport(ref import) if import.starts_with("wasi:sockets/")), "{error}");
    assert!(error.to_string().contains("--stub-wasi"), "the refusal says how to remove it: {error}");
    eprintln!("refused in {took:?} without compiling");
}

#[tokio::test]
async fn the_hosts_name_and_bad_names_are_refused_by_one_rule() {
    let runtime = runtime();
    for (name, fragment) in [("host", "reserved"), ("Bad/Name", "invalid"), (&"x".repeat(65)[..], "invalid")] {
        let error = runtime.load(name, component("payment")).await.expect_err(name);
        assert!(matches!(error, LoadError::Name(_)), "{name}: {error}");
        assert!(error.to_string().contains(fragment), "{name}: {error}");
    }
}

#[tokio::test]
async fn one_step_cannot_take_every_instance_slot() {
    // Two slots, one per step: while hostile sleeps in one, payment still gets the other.
    let runtime =
        Runtime::new(RuntimeConfig { concurrency: 2, per_step_concurrency: 1, ..runtime_config() }).expect("runtime");
    let hostile = Arc::new(load(&runtime, "hostile").await);
    let payment = load(&runtime, "payment").await;
    let sleepers: Vec<_> = (0..3)
        .map(|i| {
            let (runtime, hostile) = (runtime.clone(), hostile.clone());
            tokio::spawn(async move {
                let state = Arc::new(MemoryState::default());
                call(&runtime, &hostile, &state, &TestEvent::new("hostile.sleep", &format!("o-{i}"), json!({}))).await
            })
        })
        .collect();
    let reserved = json!({"items": [], "total_cents": 100, "payment": {"card_token": "tok_ok"}, "levels": []});
    for i in 0..5 {
        let state = Arc::new(MemoryState::default());
        let event = TestEvent::new("stock.reserved", &format!("p-{i}"), reserved.clone());
        let out = call(&runtime, &payment, &state, &event).await.expect("payment is not starved");
        assert_eq!(out[0].kind, "payment.captured");
    }
    for sleeper in sleepers {
        let error = sleeper.await.expect("joins").expect_err("stopped at the deadline");
        assert!(matches!(error, CallError::Timeout { .. }), "{error}");
    }
}
