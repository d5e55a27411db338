//! The plugins folder watcher: dropped files swap a step; half-written, temporary or
//! invalid files never serve.

use crate::helpers::*;
use std::io::Write;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn version_of(app: &TestApp, name: &str) -> Option<String> {
    app.registry().current(name).map(|step| step.version.clone())
}

#[tokio::test]
async fn a_file_written_then_renamed_swaps_the_step() {
    let app = spawn_app().await;
    let dir = app.plugins_dir();
    let tmp = dir.join(".echo.wasm.tmp");
    std::fs::write(&tmp, component("echo-v1")).expect("write");
    std::fs::rename(&tmp, dir.join("echo.wasm")).expect("rename");
    eventually(WAIT, "echo v1 serves", async || version_of(&app, "echo").await.as_deref() == Some("1.0.0")).await;
    // A new step in the folder is listed like the others.
    let listed = app.plugin("echo").await.expect("echo listed");
    assert_eq!(listed["version"], "1.0.0");
    assert!(app.registry().refusals("echo").is_empty(), "the temporary file was read");
    app.stop().await;
}

#[tokio::test]
async fn a_slow_copy_is_loaded_only_once_complete() {
    let app = spawn_app().await;
    let target = app.plugins_dir().join("echo.wasm");
    let bytes = component("echo-v2");
    let mut file = std::fs::File::create(&target).expect("create");
    // Written in pieces with pauses shorter than the watcher's quiet period.
    for chunk in bytes.chunks(bytes.len() / 8 + 1) {
        file.write_all(chunk).expect("write chunk");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    drop(file);
    eventually(WAIT, "echo v2 serves", async || version_of(&app, "echo").await.as_deref() == Some("2.0.0")).await;
    assert!(
        app.registry().refusals("echo").is_empty(),
        "a partial file was read: {:?}",
        app.registry().refusals("echo")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_truncated_file_is_refused_and_the_old_version_keeps_serving() {
    let app = spawn_app().await;
    let target = app.plugins_dir().join("payment.wasm");
    let serving = app.registry().current("payment").expect("payment loaded").digest.clone();
    let full = component("payment");
    // A copy that stalls long enough to be read half-way.
    std::fs::write(&target, &full[..full.len() / 2]).expect("write half");
    eventually(WAIT, "the half file is refused", async || !app.registry().refusals("payment").is_empty()).await;
    assert_eq!(app.registry().current("payment").expect("still loaded").digest, serving);
    // Completing the copy brings back the same version: nothing to swap.
    std::fs::write(&target, &full).expect("write whole");
    std::fs::write(app.plugins_dir().join("echo.wasm"), component("echo-v1")).expect("marker");
    eventually(WAIT, "the marker file loads", async || version_of(&app, "echo").await.is_some()).await;
    assert_eq!(app.registry().current("payment").expect("loaded").digest, serving);
    app.stop().await;
}

#[tokio::test]
async fn temporary_and_foreign_names_are_ignored() {
    let app = spawn_app().await;
    let dir = app.plugins_dir();
    std::fs::write(dir.join("echo.wasm.part"), b"partial").expect("write");
    std::fs::write(dir.join(".echo.wasm.tmp"), b"temp").expect("write");
    std::fs::write(dir.join("README.txt"), b"notes").expect("write");
    std::fs::write(dir.join("Bad Name.wasm"), b"junk").expect("write");
    // A real file dropped after them is handled, so the earlier ones were seen too.
    std::fs::write(dir.join("echo.wasm"), component("echo-v1")).expect("write");
    eventually(WAIT, "echo serves", async || version_of(&app, "echo").await.is_some()).await;
    assert!(app.registry().refusals("echo").is_empty());
    assert_eq!(app.registry().snapshot().len(), 4, "only the three saga steps and echo are loaded");
    app.stop().await;
}

#[tokio::test]
async fn uploads_and_rollbacks_survive_a_restart() {
    let app = spawn_app().await;
    assert_eq!(app.upload("echo", component("echo-v1")).await.status(), 200);
    assert_eq!(app.upload("echo", component("echo-v2")).await.status(), 200);
    assert_eq!(app.rollback("echo").await.status(), 200);
    let payment = app.registry().current("payment").expect("payment").digest.clone();
    let dir = app.stop().await;

    let app = spawn_app_in(dir).await;
    assert_eq!(version_of(&app, "echo").await.as_deref(), Some("1.0.0"), "the rollback was not kept");
    // The version rolled back from is still there to roll forward to.
    let echo = app.plugin("echo").await.expect("echo listed");
    assert_eq!(echo["previous"]["version"], "2.0.0", "{echo}");
    assert_eq!(app.rollback("echo").await.status(), 200);
    assert_eq!(version_of(&app, "echo").await.as_deref(), Some("2.0.0"));
    assert_eq!(app.registry().current("payment").expect("payment").digest, payment);
    app.stop().await;
}
