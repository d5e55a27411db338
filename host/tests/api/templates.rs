//! The steps `cargo xtask new-step` writes, in Rust, Python (componentize-py) and
//! JavaScript (componentize-js), built by `cargo xtask build-plugins --fixtures` with the
//! real toolchains: each runs in the saga, logs through the host, and passes the
//! recording it ships with.

use crate::helpers::*;
use std::time::Duration;

const TEMPLATES: [&str; 3] = ["rs-counter", "py-counter", "js-counter"];

/// The recording each template ships (`xtask/templates/recording.json`), for `name`.
fn recording(name: &str) -> String {
    include_str!("../../../xtask/templates/recording.json").replace("{{name}}", name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_templates_in_three_languages_run_in_the_saga() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    install_saga_steps(&plugins);
    for name in TEMPLATES {
        std::fs::write(plugins.join(format!("{name}.wasm")), component(name)).expect("copy template step");
    }
    let mut settings = test_settings(&dir, None);
    // Python and JavaScript steps are interpreters: give their calls room.
    settings.step_deadline_ms = 5_000;
    settings.step_memory_mib = 128;
    let app = spawn_with(dir, settings).await;
    for name in TEMPLATES {
        let plugin = app.plugin(name).await.unwrap_or_else(|| panic!("{name} is loaded"));
        assert_eq!(plugin["subscribes"], serde_json::json!(["order.completed"]), "{name}");
    }
    app.stock_up("SKU-1", 10).await;
    let first = app.place(&[("SKU-1", 1)], "tok_ok").await;
    let second = app.place(&[("SKU-1", 1)], "tok_ok").await;
    for order in [&first, &second] {
        let mut timeline = Vec::new();
        eventually(Duration::from_secs(120), "every template counted the order", async || {
            timeline = app.order(order).await["timeline"].as_array().cloned().unwrap_or_default();
            TEMPLATES.iter().all(|name| timeline.iter().any(|e| e["step"] == *name))
        })
        .await;
        for name in TEMPLATES {
            let event = timeline.iter().find(|e| e["step"] == name).expect("its event");
            assert_eq!(event["kind"], format!("{name}.counted"), "{name}");
            assert!(event["step_version"].as_str().is_some_and(|v| v.starts_with("sha256:")), "{event}");
        }
    }
    let stats = app.plugins().await;
    for name in TEMPLATES {
        let plugin = stats.iter().find(|p| p["name"] == name).expect("listed");
        assert_eq!(plugin["stats"]["failures"], 0, "{name} never failed: {plugin}");
        assert!(plugin["stats"]["calls"].as_u64().is_some_and(|c| c >= 2), "{name}: {plugin}");
    }
}

#[tokio::test]
async fn each_template_passes_the_recording_it_ships_with() {
    for name in TEMPLATES {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("forty-second-order.json"), recording(name)).expect("recording");
        let plugin = components_dir().join(format!("{name}.wasm"));
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasaga"))
            .arg("replay")
            .arg(dir.path())
            .arg("--plugin")
            .arg(&plugin)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .await
            .expect("wasaga replay runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name} reproduces its recording:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 same"), "{name}: {stdout}");
    }
}

/// A large component (the Python template, about 18 MB) serves on the baseline
/// compiler's code as soon as it is loaded, and moves to Cranelift's in place: the same
/// loaded version, the same answers, and the count kept in its state goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_component_serves_on_baseline_code_then_on_cranelift() {
    use wasaga_host::runtime::{MemoryState, Runtime, RuntimeConfig, Tier};
    init_logging();
    let bytes = component("py-counter");
    assert!(bytes.len() >= 4 * 1024 * 1024, "the Python template is large: {} bytes", bytes.len());
    let config =
        RuntimeConfig { cache_dir: None, memory_mib: 128, deadline: Duration::from_secs(5), ..runtime_config() };
    let runtime = Runtime::new(config).expect("runtime");
    let step = runtime.load("py-counter", bytes).await.expect("the Python template loads");
    assert_eq!(step.tier(), Tier::Baseline, "served at once on Winch's code");
    let state = std::sync::Arc::new(MemoryState::default());
    let counted = async |n: u64| {
        let event = TestEvent::new("order.completed", &format!("o-{n}"), serde_json::json!({}));
        let emits = call(&runtime, &step, &state, &event).await.expect("the call succeeds");
        assert_eq!(emits.len(), 1);
        assert_eq!(payload(&emits[0])["completed"], n, "{:?}", emits[0]);
    };
    counted(1).await;
    eventually(Duration::from_secs(300), "Cranelift's code replaces the baseline's", async || {
        step.tier() == Tier::Optimized
    })
    .await;
    for n in 2..=3 {
        counted(n).await;
    }
}
