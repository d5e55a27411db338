//! Recordings are untrusted input: `wasaga replay` refuses one whose version is not a
//! digest before it opens anything, `wasaga recordings pull` names files only after
//! checked ids, and configured payload fields never reach a recording.

use crate::helpers::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wasaga_host::config::StepSettings;

const WAIT: Duration = Duration::from_secs(90);

/// `wasaga` with `args`, killed if it has not exited within `limit`: exit code and output.
fn wasaga_within(limit: Duration, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasaga"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasaga runs");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wasaga {args:?} still ran after {limit:?}: it opened something it should not have");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// A well-formed recording of payment with `version` as its version.
fn recording_with_version(version: &str) -> Value {
    json!({
        "format": 1,
        "step": "payment",
        "version": version,
        "attempt": 1,
        "event": {"id": "e-1", "kind": "stock.reserved", "order_id": "o-1", "occurred_at_ms": 1,
                  "payload": "{\"payment\":{\"card_token\":\"tok_ok\"}}"},
        "origin": {"step": "inventory", "step_version": "sha256:0"},
        "calls": [],
        "outcome": {"outcome": "ok", "emits": []}
    })
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_recording_whose_version_is_a_path_is_refused_before_anything_is_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Reading a FIFO blocks until someone writes to it: a replay that looks at the
    // plugins folder (or at a path the version names) never returns.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    mkfifo(&plugins.join("payment.wasm"));
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("compile-cache")).expect("cache dir");
    let outside = dir.path().join("outside");
    mkfifo(&outside);
    let hex = "a".repeat(64);
    let versions = [
        outside.display().to_string(),
        "sha256:../../x".to_owned(),
        format!("sha256:../../{}", &hex[..58]),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{hex}/"),
        String::new(),
    ];
    for version in &versions {
        // Alone, and in a folder of recordings.
        let file = dir.path().join("recording.json");
        std::fs::write(&file, recording_with_version(version).to_string()).expect("write");
        let folder = dir.path().join("folder");
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(folder.join("bad.json"), recording_with_version(version).to_string()).expect("write");
        for target in [&file, &folder] {
            let (code, out) = wasaga_within(
                Duration::from_secs(30),
                &[
                    "replay",
                    target.to_str().expect("path"),
                    "--plugins-dir",
                    plugins.to_str().expect("path"),
                    "--data-dir",
                    data.to_str().expect("path"),
                ],
            );
            assert_eq!(code, 2, "version {version:?}: {out}");
            assert!(out.contains("field `version`") && out.contains("not a digest"), "version {version:?}: {out}");
        }
    }
    // A step name that is not one is refused the same way.
    let mut bad_step = recording_with_version(&format!("sha256:{hex}"));
    bad_step["step"] = json!("../payment");
    let file = dir.path().join("step.json");
    std::fs::write(&file, bad_step.to_string()).expect("write");
    let (code, out) = wasaga_within(
        Duration::from_secs(30),
        &["replay", file.to_str().expect("path"), "--plugins-dir", plugins.to_str().expect("path")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("field `step`"), "{out}");
    // Nothing was written beside the cache either.
    assert_eq!(std::fs::read_dir(data.join("compile-cache")).expect("cache").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_fields_are_redacted_in_recordings_and_a_replay_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.steps.insert(
        "payment".to_owned(),
        StepSettings { record_sample: 1.0, redact: vec!["/payment/card_token".to_owned()], ..Default::default() },
    );
    let app = spawn_with(dir, settings).await;
    app.stock_up("SKU-1", 10).await;
    let ok = app.place(&[("SKU-1", 1)], "tok_ok").await;
    let trapped = app.place(&[("SKU-1", 1)], "tok_trap").await;
    for id in [&ok, &trapped] {
        eventually(WAIT, "the order ends", async || app.order(id).await["status"] != "pending").await;
    }
    let sampled: Vec<Value> =
        app.admin_get("/api/admin/recordings?step=payment&limit=100").await.json().await.expect("json");
    let dead: Vec<Value> = app.admin_get("/api/admin/dead-letters").await.json().await.expect("json");
    let dead_id = dead.iter().find(|d| d["step"] == "payment").expect("payment's dead letter")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let recording: Value =
        app.admin_get(&format!("/api/admin/dead-letters/{dead_id}/recording")).await.json().await.expect("json");
    let charges: Vec<&Value> = sampled.iter().filter(|r| r["event"]["kind"] == "stock.reserved").collect();
    assert!(!charges.is_empty(), "a sampled recording of the charge: {sampled:?}");
    for recorded in sampled.iter().chain([&recording]) {
        // No payload holds a card token (a log line or a trap message the step wrote
        // is its own business).
        let text = recorded.to_string();
        let payloads = format!("{}{}", recorded["event"], recorded["outcome"]["emits"]);
        assert!(!payloads.contains("tok_ok") && !payloads.contains("tok_trap"), "a card token was recorded: {text}");
    }
    for recorded in charges.into_iter().chain([&recording]) {
        let text = recorded.to_string();
        let payload: Value =
            serde_json::from_str(recorded["event"]["payload"].as_str().expect("payload")).expect("json payload");
        assert_eq!(payload["payment"]["card_token"], "[redacted]", "{text}");
        assert_eq!(recorded["redacted"], json!(["/payment/card_token"]), "{text}");
    }
    // The replay runs on the placeholder: payment declines an unknown card where the
    // recorded call trapped, and the report says which field was redacted.
    let file = app.dir.path().join("trap.json");
    std::fs::write(&file, recording.to_string()).expect("save");
    let serving = components_dir().join("payment.wasm");
    let (code, out) = wasaga_within(
        Duration::from_secs(120),
        &["replay", file.to_str().expect("path"), "--plugin", serving.to_str().expect("path")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/payment/card_token redacted") && out.contains("diverged"), "{out}");
    app.stop().await;
}

#[test]
fn pulled_recordings_name_files_only_by_checked_ids() {
    let good = format!("sha256:{}", "b".repeat(64));
    let named = |id: &str, version: &str| {
        let mut recording = recording_with_version(version);
        recording["event"]["id"] = json!(id);
        wasaga_host::cli::recording_file_name(&recording)
    };
    assert_eq!(
        named("0190a5b2-7c1e-7d3a-9f00-1234567890ab", &good).as_deref(),
        Ok("0190a5b2-7c1e-7d3a-9f00-1234567890ab.json")
    );
    let long = "x".repeat(200);
    for id in ["../../etc/x", "/tmp/x", "a/b", "..", ".hidden", "-rf", "", "a\0b", long.as_str()] {
        assert!(named(id, &good).is_err(), "{id:?} named a file");
    }
    let refused = named("e-1", "sha256:../../x").expect_err("a path as version");
    assert!(refused.contains("version"), "{refused}");
}
