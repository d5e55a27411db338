//! Dead letters you can debug: the recording of a dead letter's last attempt, offline
//! replay with `wasaga replay` against the serving and a fixed component, a dry run on a
//! chosen version that commits nothing, the real replay on it, sampled recordings of
//! successful calls replayed against a candidate, and the recording's size bound.

use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use wasaga_host::config::{Settings, StepSettings};

const WAIT: Duration = Duration::from_secs(90);

async fn app_with(tune: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    tune(&mut settings);
    spawn_with(dir, settings).await
}

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    app.admin_get("/api/admin/dead-letters").await.json().await.expect("json")
}

/// A `tok_trap` order, dead-lettered by payment; returns (order id, dead letter).
async fn trapped_order(app: &TestApp) -> (String, Value) {
    app.stock_up("SKU-1", 10).await;
    let id = app.place(&[("SKU-1", 1)], "tok_trap").await;
    eventually(WAIT, "the order is cancelled", async || app.order(&id).await["status"] == "cancelled").await;
    eventually(WAIT, "the dead letter is listed", async || !dead_letters(app).await.is_empty()).await;
    let dead = dead_letters(app).await.into_iter().next().expect("a dead letter");
    (id, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letters_recording_replays_offline_against_the_serving_and_a_fixed_step() {
    let app = app_with(|_| {}).await;
    let (order_id, dead) = trapped_order(&app).await;
    let id = dead["id"].as_str().expect("id");
    let recording: Value =
        app.admin_get(&format!("/api/admin/dead-letters/{id}/recording")).await.json().await.expect("json");
    assert_eq!(recording["step"], "payment");
    assert_eq!(recording["attempt"], 5);
    assert_eq!(recording["outcome"]["outcome"], "failed");
    assert_eq!(recording["outcome"]["kind"], "trap");
    // The host calls payment made: it looked up its record of the order, found none.
    let calls = recording["calls"].as_array().expect("calls");
    assert_eq!(calls[0]["call"], "state_get", "{recording}");
    assert_eq!(calls[0]["key"], format!("payment/{order_id}"));
    assert!(calls[0]["value"].is_null());
    let file = app.dir.path().join("trap.json");
    std::fs::write(&file, recording.to_string()).expect("save");
    let file = file.to_str().expect("path");

    // The serving payment reproduces the trap.
    let serving = components_dir().join("payment.wasm");
    let (code, out) = wasaga_cli(&["replay", file, "--plugin", serving.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reproduced") && out.contains("trap"), "{out}");
    // A fixed build captures, and the replay says where it diverged.
    let fixed = components_dir().join("payment-fixed.wasm");
    let (code, out) = wasaga_cli(&["replay", file, "--plugin", fixed.to_str().expect("path")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("outcome: ok") && out.contains("payment.captured") && out.contains("diverged"), "{out}");
    // Without --plugin, the recorded version comes from the plugins folder.
    let plugins = app.plugins_dir();
    let (code, out) =
        wasaga_cli(&["replay", file, "--plugins-dir", plugins.to_str().expect("path"), "--data-dir", "/nonexistent"]);
    assert_eq!(code, 0, "{out}");
    // A file that is not a recording cannot run.
    std::fs::write(app.dir.path().join("junk.json"), "{}").expect("junk");
    let junk = app.dir.path().join("junk.json");
    let (code, out) = wasaga_cli(&["replay", junk.to_str().expect("path")]);
    assert_eq!(code, 2, "{out}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_on_a_chosen_version_commits_nothing_then_the_replay_runs_on_it() {
    let app = app_with(|_| {}).await;
    let (order_id, dead) = trapped_order(&app).await;
    let id = dead["id"].as_str().expect("id");
    // Keep a fixed version in the fleet's registry: upload it, roll back.
    let fixed = app.upload("payment", component("payment-fixed")).await.json::<Value>().await.expect("json");
    let fixed = fixed["digest"].as_str().expect("digest").to_owned();
    assert_eq!(app.rollback("payment").await.status(), 200);
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 10)]);
    app.assert_invariants(&stocked).await;
    let before = (app.order(&order_id).await, app.stock("SKU-1").await);

    let dry_run = async || -> Value {
        let response = app
            .http
            .post(app.url(&format!("/api/admin/dead-letters/{id}/replay?version={fixed}&dry_run=true")))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    };
    let run = dry_run().await;
    assert_eq!(run["version"], fixed.as_str());
    // The fixed version no longer traps. It captures while payment has no record of the
    // order; once the cancellation (which followed the dead letter) voided the payment,
    // reading live state, the fix rightly charges a cancelled order nothing.
    assert_eq!(run["outcome"], "ok", "{run}");
    eventually(WAIT, "the dry run sees the voided payment", async || {
        let run = dry_run().await;
        run["outcome"] == "ok" && run["emits"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // Nothing was committed: the order, the stock and the dead letter are as they were.
    assert_eq!((app.order(&order_id).await, app.stock("SKU-1").await), before);
    assert_eq!(dead_letters(&app).await.len(), 1);
    // Without a version, the dry run is on the serving version.
    let serving: Value = app
        .http
        .post(app.url(&format!("/api/admin/dead-letters/{id}/replay?dry_run=true")))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(serving["version"], app.plugin("payment").await.expect("payment")["digest"], "{serving}");

    // The real replay, on the fixed version: handled once, the dead letter gone.
    let response = app
        .http
        .post(app.url(&format!("/api/admin/dead-letters/{id}/replay?version={fixed}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    eventually(WAIT, "the dead letter is gone", async || dead_letters(&app).await.is_empty()).await;
    app.assert_invariants(&stocked).await;
    // Bad requests are refused with what was wrong.
    for query in ["version=nope", "dry_run=maybe", "version=sha256:ABC"] {
        let response = app
            .http
            .post(app.url(&format!("/api/admin/dead-letters/{id}/replay?{query}")))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 422, "{query}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_recordings_check_a_candidate_offline() {
    let app = app_with(|s| {
        s.steps.insert("payment".to_owned(), StepSettings { record_sample: 1.0, ..Default::default() });
    })
    .await;
    app.stock_up("SKU-1", 100).await;
    let mut ids = Vec::new();
    for token in ["tok_ok", "tok_flaky_2", "tok_ok", "tok_ok"] {
        ids.push(app.place(&[("SKU-1", 1)], token).await);
    }
    for id in &ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
    let out_dir = app.dir.path().join("recordings");
    let url = format!("http://{}", app.addr);
    let out_path = out_dir.to_str().expect("path");
    let (code, out) =
        wasaga_cli(&["recordings", "--url", &url, "--token", &app.token, "pull", "payment", "-o", out_path]);
    assert_eq!(code, 0, "{out}");
    let strict = components_dir().join("payment-strict.wasm");
    let (code, out) =
        wasaga_cli(&["replay", out_dir.to_str().expect("path"), "--plugin", strict.to_str().expect("path")]);
    assert_eq!(code, 1, "the strict candidate declines a flaky card: {out}");
    assert!(out.contains("same") && out.contains("1 different"), "{out}");
    let serving = components_dir().join("payment.wasm");
    let (code, out) =
        wasaga_cli(&["replay", out_dir.to_str().expect("path"), "--plugin", serving.to_str().expect("path")]);
    assert_eq!(code, 0, "the serving version reproduces every call: {out}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_past_its_size_limit_is_truncated_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    std::fs::write(dir.path().join("plugins/hostile.wasm"), component("hostile")).expect("copy");
    let mut settings = test_settings(&dir, Some(fresh_pg_database().await));
    settings.recording_max_bytes = 4096;
    settings.step_max_log_lines = 1000;
    let url = settings.store_url.clone().expect("pg");
    let app = spawn_with(dir, settings).await;
    let store = wasaga_host::store::open(&url, &Default::default()).await.expect("store");
    // Logs a lot, then fails.
    let event = wasaga_host::saga::SagaContext::host_event("hostile.flood-log-fail", "o-1", "{}".to_owned());
    store.emit(&event).await.expect("emit");
    eventually(WAIT, "the dead letter", async || !dead_letters(&app).await.is_empty()).await;
    let id = dead_letters(&app).await[0]["id"].as_str().expect("id").to_owned();
    let recording: Value =
        app.admin_get(&format!("/api/admin/dead-letters/{id}/recording")).await.json().await.expect("json");
    assert_eq!(recording["truncated"], true, "{recording}");
    assert!(recording.to_string().len() < 16 * 1024, "the recording is bounded");
    app.stop().await;
}
