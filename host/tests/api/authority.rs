//! Authority: no step or publisher acts beyond what it was given. Every event kind has one
//! owner; a step emitting another's kind fails as invalid output, and the host's consumer
//! ignores events whose emitter does not own their kind.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use wasaga_host::event::StoredEvent;
use wasaga_host::saga::SagaContext;

const WAIT: Duration = Duration::from_secs(90);

async fn dead_letters(api: &Api) -> Vec<Value> {
    api.admin_get("/api/admin/dead-letters").await.json().await.expect("dead letters are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_emitting_kinds_it_does_not_own_is_dead_lettered_and_believed_by_no_one() {
    let (app, _store) = pg_app(&["forger"], |_| {}).await;
    app.stock_up("SKU-1", 10).await;
    // A declined order the forger tries to complete with a capture of its own.
    let mut body = order_body(&[("SKU-1", 1)], "tok_decline");
    body["customer_id"] = json!("forge-payment");
    let response = app.post_json("/api/orders", &body).await;
    assert_eq!(response.status(), 202);
    let declined = response.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").to_owned();
    // Another order the forger answers with a stock level of its own.
    let stocked = app.place(&[("SKU-1", 1)], "tok_ok").await;
    for id in [&declined, &stocked] {
        eventually(WAIT, "the order ends", async || app.order(id).await["status"] != "pending").await;
    }
    assert_eq!(app.order(&declined).await["status"], "cancelled", "a forged capture completed a declined order");
    eventually(WAIT, "both forgeries are dead-lettered", async || {
        dead_letters(&app).await.iter().filter(|d| d["step"] == "forger").count() == 2
    })
    .await;
    let errors: Vec<String> = dead_letters(&app)
        .await
        .iter()
        .filter(|d| d["step"] == "forger")
        .map(|d| d["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("payment.captured") && e.contains("step payment owns it")),
        "the dead letter names the kind and its owner: {errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("stock.set") && e.contains("the host owns it")), "{errors:?}");
    assert!(app.stock("SKU-FORGED").await.is_none(), "a forged stock level reached the read model");
    // The listing says who owns what.
    for (name, owned) in [
        ("payment", json!(["payment.*"])),
        ("inventory", json!(["inventory.*", "stock.*"])),
        ("forger", json!(["forger.*"])),
    ] {
        assert_eq!(app.plugin(name).await.expect("listed")["owns"], owned, "{name}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_of_a_kind_the_step_does_not_own_is_refused_like_any_event() {
    let (app, _store) = pg_app(&["forger"], |_| {}).await;
    app.stock_up("SKU-1", 10).await;
    // The forger's capture of a declined order, asked for as a timer due at once.
    let mut body = order_body(&[("SKU-1", 1)], "tok_decline");
    body["customer_id"] = json!("forge-timer");
    let response = app.post_json("/api/orders", &body).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").to_owned();
    eventually(WAIT, "the forged timer is dead-lettered", async || {
        dead_letters(&app)
            .await
            .iter()
            .any(|d| d["step"] == "forger" && d["error"].as_str().is_some_and(|e| e.contains("payment.captured")))
    })
    .await;
    eventually(WAIT, "the order ends", async || app.order(&id).await["status"] != "pending").await;
    let order = app.order(&id).await;
    assert_eq!(order["status"], "cancelled", "a forged timer completed a declined order: {order}");
    assert_eq!(order["timers"], json!([]), "no timer was written: {order}");
    app.stop().await;
}

/// An event as another program on the broker or the store could write it.
fn published(kind: &str, order_id: &str, emitter: &str, payload: Value) -> StoredEvent {
    StoredEvent { step: emitter.to_owned(), ..SagaContext::host_event(kind, order_id, payload.to_string()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_acts_only_on_events_whose_emitter_owns_their_kind() {
    let (app, store) = pg_app(&[], |_| {}).await;
    app.stock_up("SKU-1", 10).await;
    // Two pending orders the saga never started (their first event is one no step takes).
    for id in ["o-forged", "o-genuine"] {
        let start = SagaContext::host_event("test.nothing", id, "{}".to_owned());
        store.create_order(&new_order(id, start.clone()), None).await.expect("order");
    }
    let level =
        json!({"levels": [{"sku": "SKU-1", "available": 1_000_000, "reserved": 0, "sold": 0, "seq": 1u64 << 40}]});
    store.emit(&published("payment.captured", "o-forged", "forger", json!({}))).await.expect("emit");
    store.emit(&published("stock.updated", "", "forger", level)).await.expect("emit");
    store.emit(&published("payment.captured", "o-genuine", "payment", json!({}))).await.expect("emit");
    eventually(WAIT, "the owner's capture completes its order", async || {
        app.order("o-genuine").await["status"] == "completed"
    })
    .await;
    eventually(WAIT, "both forgeries are counted as ignored", async || {
        let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
        metrics.lines().filter(|l| l.starts_with("wasaga_foreign_events_total")).count() == 2
    })
    .await;
    assert_eq!(app.order("o-forged").await["status"], "pending", "a capture from a non-owner completed an order");
    let stock = app.stock("SKU-1").await.expect("stock");
    assert_eq!(stock["available"], 10, "a level from a non-owner reached the read model: {stock}");
    app.stop().await;
}

async fn history(api: &Api, step: &str) -> Vec<Value> {
    api.admin_get(&format!("/api/admin/plugins/{step}/history")).await.json().await.expect("history is JSON")
}

async fn digest_of(api: &Api, step: &str) -> String {
    api.plugin(step).await.expect("listed")["digest"].as_str().expect("digest").to_owned()
}

async fn ended(api: &Api, ids: &[String]) {
    for id in ids {
        eventually(WAIT, "the order ends", async || api.order(id).await["status"] != "pending").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_that_fails_on_every_version_does_not_roll_a_good_swap_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.auto_rollback_min_calls = 10;
    settings.auto_rollback_failure_rate = 0.2;
    let app = spawn_with(dir, settings).await;
    app.stock_up("SKU-1", 100).await;
    // The same code under a new digest: a good version.
    let uploaded = app.upload("payment", component("payment-v2")).await;
    assert_eq!(uploaded.status(), 200);
    let v2 = digest_of(&app, "payment").await;
    // Anyone may place orders: half of them with a card that traps on every version.
    let placed = (0..24).map(|i| app.place(&[("SKU-1", 1)], if i % 2 == 0 { "tok_trap" } else { "tok_ok" }));
    let ids: Vec<String> = futures::future::join_all(placed).await;
    ended(&app, &ids).await;
    assert_eq!(digest_of(&app, "payment").await, v2, "client traffic rolled a good version back");
    let changes: Vec<Value> = history(&app, "payment")
        .await
        .into_iter()
        .filter(|h| h["action"] == "auto-rollback" || h["action"] == "rollback")
        .collect();
    assert!(changes.is_empty(), "no rollback in the history: {changes:?}");
    let stats = &app.plugin("payment").await.expect("payment")["stats"];
    assert!(stats["failures"].as_u64() >= Some(10), "the traps were counted as failures: {stats}");
    assert_eq!(stats["regressions"], 0, "but not against the version: {stats}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_is_rolled_back_once_for_the_fleet_and_never_served_again() {
    let url = fresh_pg_database().await;
    let dirs = host_dirs(2);
    let token = format!("t-{}", rand_id());
    let env =
        [("WASAGA_AUTO_ROLLBACK_MIN_CALLS", "10".to_owned()), ("WASAGA_AUTO_ROLLBACK_FAILURE_RATE", "0.2".to_owned())];
    let a = crate::crash::Server::start_env(dirs[0].path(), Some(&url), &token, &env);
    let b = crate::crash::Server::start_env(dirs[1].path(), Some(&url), &token, &env);
    a.api.wait_ready().await;
    b.api.wait_ready().await;
    a.api.stock_up("SKU-1", 1000).await;
    let v1 = digest_of(&a.api, "payment").await;
    assert_eq!(a.api.upload("payment", component("payment-half-trap")).await.status(), 200);
    let bad = digest_of(&a.api, "payment").await;
    eventually(WAIT, "host B serves the upload", async || digest_of(&b.api, "payment").await == bad).await;
    // Both hosts take orders; both see the bad version fail where v1 does not.
    let placed = (0..60).map(|i| {
        let api = if i % 2 == 0 { &a.api } else { &b.api };
        api.place(&[("SKU-1", 1)], "tok_ok")
    });
    let ids: Vec<String> = futures::future::join_all(placed).await;
    for api in [&a.api, &b.api] {
        eventually(WAIT, "the fleet serves v1 again", async || digest_of(api, "payment").await == v1).await;
    }
    ended(&a.api, &ids).await;
    let rollbacks: Vec<Value> =
        history(&a.api, "payment").await.into_iter().filter(|h| h["action"] == "auto-rollback").collect();
    assert_eq!(rollbacks.len(), 1, "one decision for the fleet: {rollbacks:?}");
    assert_eq!(rollbacks[0]["digest"], bad.as_str(), "{rollbacks:?}");
    // The rejected version is not kept as the one to go back to.
    let payment = b.api.plugin("payment").await.expect("payment");
    assert!(payment["previous"].is_null(), "the rejected version could serve again: {payment}");
    assert_eq!(b.api.rollback("payment").await.status(), 409, "nothing to roll back to");
    a.kill();
    b.kill();
}
