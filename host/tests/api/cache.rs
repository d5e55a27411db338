//! The compile cache: a restart loads machine code instead of compiling.

use crate::helpers::*;
use wasaga_host::runtime::Runtime;

#[tokio::test]
async fn a_restart_loads_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || wasaga_host::runtime::RuntimeConfig { cache_dir: Some(dir.path().to_owned()), ..runtime_config() };
    let first = Runtime::new(config()).expect("runtime");
    let step = first.load("inventory", component("inventory")).await.expect("loads");
    assert!(!step.from_cache, "a fresh cache cannot have it");
    drop(first);

    let second = Runtime::new(config()).expect("runtime");
    let step = second.load("inventory", component("inventory")).await.expect("loads again");
    assert!(step.from_cache, "the second start compiled again");
    // The cached code runs.
    let state = std::sync::Arc::new(wasaga_host::runtime::MemoryState::default());
    let event = TestEvent::new("stock.set", "", serde_json::json!({"sku": "A", "available": 1}));
    assert_eq!(call(&second, &step, &state, &event).await.expect("call").len(), 1);
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || wasaga_host::runtime::RuntimeConfig { cache_dir: Some(dir.path().to_owned()), ..runtime_config() };
    let first = Runtime::new(config()).expect("runtime");
    first.load("payment", component("payment")).await.expect("loads");
    for entry in std::fs::read_dir(dir.path()).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt it");
    }
    let second = Runtime::new(config()).expect("runtime");
    let step = second.load("payment", component("payment")).await.expect("loads despite the corrupt entry");
    assert!(!step.from_cache);
}
