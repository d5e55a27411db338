//! Versions as first-class: an order pinned to the version that handled its first event,
//! a canary taking a stable share of orders, a shadow compared with the serving version,
//! and automatic rollback of a candidate (or a fresh swap) that fails too often.

use crate::helpers::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use wasaga_host::config::{Settings, StepSettings, Versioning};

const WAIT: Duration = Duration::from_secs(90);

async fn app_with(tune: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    tune(&mut settings);
    spawn_with(dir, settings).await
}

fn pinned(settings: &mut Settings) {
    settings.steps.insert("payment".to_owned(), StepSettings { versioning: Versioning::Pinned, ..Default::default() });
}

/// The digest that emitted the first event of `kind` in an order's timeline.
fn version_of(order: &Value, kind: &str) -> Option<String> {
    order["timeline"].as_array()?.iter().find(|e| e["kind"] == kind)?["step_version"].as_str().map(str::to_owned)
}

async fn digest(app: &TestApp, step: &str) -> String {
    app.plugin(step).await.expect("loaded")["digest"].as_str().expect("digest").to_owned()
}

async fn complete(app: &TestApp, ids: &[String]) {
    for id in ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
}

async fn refunds_after_a_swap(versioning_pinned: bool) {
    let app = app_with(|s| {
        if versioning_pinned {
            pinned(s)
        }
    })
    .await;
    app.stock_up("SKU-1", 100).await;
    let v1 = digest(&app, "payment").await;
    let captured: Vec<String> = futures::future::join_all((0..5).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    complete(&app, &captured).await;
    assert_eq!(app.upload("payment", component("payment-v2")).await.status(), 200);
    let v2 = digest(&app, "payment").await;
    for id in &captured {
        assert_eq!(app.cancel(id).await, 202);
    }
    let expected = if versioning_pinned { &v1 } else { &v2 };
    for id in &captured {
        eventually(WAIT, "the refund", async || version_of(&app.order(id).await, "payment.refunded").is_some()).await;
        let order = app.order(id).await;
        assert_eq!(version_of(&order, "payment.captured").as_ref(), Some(&v1));
        assert_eq!(version_of(&order, "payment.refunded").as_ref(), Some(expected), "refunded by the wrong version");
    }
    let later = app.place(&[("SKU-1", 1)], "tok_ok").await;
    complete(&app, std::slice::from_ref(&later)).await;
    assert_eq!(version_of(&app.order(&later).await, "payment.captured"), Some(v2), "new orders run on the new version");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_step_refunds_on_the_version_that_captured() {
    refunds_after_a_swap(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_step_refunds_on_the_serving_version() {
    refunds_after_a_swap(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_takes_a_stable_share_of_orders_then_is_promoted() {
    let app = app_with(|_| {}).await;
    app.stock_up("SKU-1", 1000).await;
    let v1 = digest(&app, "payment").await;
    let response = app.upload_rollout("payment", "rollout=canary&percent=30", component("payment-v2")).await;
    assert_eq!(response.status(), 200);
    let entry: Value = response.json().await.expect("json");
    assert_eq!(entry["digest"], v1, "the serving version is unchanged");
    assert_eq!(entry["rollout"]["mode"], "canary");
    assert_eq!(entry["rollout"]["percent"], 30);
    let v2 = entry["rollout"]["digest"].as_str().expect("candidate").to_owned();
    let ids: Vec<String> = futures::future::join_all((0..200).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    complete(&app, &ids).await;
    // Cancel some: each refund runs on the version that captured (the order's bucket).
    for id in &ids[..20] {
        assert_eq!(app.cancel(id).await, 202);
    }
    let mut on_candidate = 0;
    for (i, id) in ids.iter().enumerate() {
        let order = if i < 20 {
            eventually(WAIT, "the refund", async || version_of(&app.order(id).await, "payment.refunded").is_some())
                .await;
            app.order(id).await
        } else {
            app.order(id).await
        };
        let captured = version_of(&order, "payment.captured").expect("captured");
        assert!(captured == v1 || captured == v2, "{captured}");
        if i < 20 {
            assert_eq!(version_of(&order, "payment.refunded"), Some(captured.clone()), "an order on two versions");
        }
        on_candidate += usize::from(captured == v2);
    }
    // 200 draws at 30%: the mean is 60, and 35..=85 is about ±4 standard deviations.
    assert!((35..=85).contains(&on_candidate), "{on_candidate} of 200 orders on the canary");
    let promoted: Value = app
        .http
        .post(app.url("/api/admin/plugins/payment/promote"))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(promoted["digest"], v2);
    assert!(promoted["rollout"].is_null());
    assert_eq!(promoted["previous"]["digest"], v1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rolled_back_leaves_the_serving_version() {
    let app = app_with(|_| {}).await;
    let v1 = digest(&app, "payment").await;
    let response = app.upload_rollout("payment", "rollout=canary&percent=50", component("payment-v2")).await;
    assert_eq!(response.status(), 200);
    let rolled: Value = app.rollback("payment").await.json().await.expect("json");
    assert_eq!(rolled["digest"], v1);
    assert!(rolled["rollout"].is_null(), "{rolled}");
    // Bad rollout requests are refused with what was wrong.
    for query in
        ["rollout=canary", "rollout=canary&percent=0", "rollout=canary&percent=100", "rollout=blue", "percent=5"]
    {
        let response = app
            .http
            .put(app.url(&format!("/api/admin/plugins/payment?{query}")))
            .bearer_auth(&app.token)
            .header("content-type", "application/wasm")
            .body(component("payment-v2"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 422, "{query}");
    }
    let promote = app.http.post(app.url("/api/admin/plugins/payment/promote")).bearer_auth(&app.token).send().await;
    assert_eq!(promote.expect("sent").status(), 409, "nothing to promote");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_differs_is_counted_and_sampled_and_changes_no_order() {
    let app = app_with(|_| {}).await;
    app.stock_up("SKU-1", 100).await;
    let response = app.upload_rollout("payment", "rollout=shadow", component("payment-strict")).await;
    assert_eq!(response.status(), 200);
    let mut ids = Vec::new();
    for token in ["tok_ok", "tok_flaky_2", "tok_ok", "tok_flaky_2", "tok_ok"] {
        ids.push(app.place(&[("SKU-1", 1)], token).await);
    }
    complete(&app, &ids).await;
    let shadow =
        async || -> Value { app.admin_get("/api/admin/plugins/payment/shadow").await.json().await.expect("json") };
    eventually(WAIT, "the shadow compared every call", async || shadow().await["calls"].as_u64() >= Some(5)).await;
    let report = shadow().await;
    assert!(report["same"].as_u64() >= Some(3), "{report}");
    assert!(report["different"].as_u64() >= Some(2), "{report}");
    let samples = report["samples"].to_string();
    assert!(samples.contains("payment.declined") && samples.contains("flaky_card"), "{report}");
    // The live saga was untouched: every order completed on the serving version.
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 100)]);
    app.assert_invariants(&stocked).await;
    app.stop().await;
}

async fn auto_rollback_metric(app: &TestApp) -> f64 {
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("wasaga_auto_rollbacks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn history(app: &TestApp) -> Vec<Value> {
    app.admin_get("/api/admin/plugins/payment/history").await.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_by_itself_and_a_healthy_one_is_not() {
    let app = app_with(|s| {
        s.auto_rollback_min_calls = 10;
        s.auto_rollback_failure_rate = 0.2;
    })
    .await;
    app.stock_up("SKU-1", 1000).await;
    let start_canary = async |file: &str| {
        let response = app.upload_rollout("payment", "rollout=canary&percent=50", component(file)).await;
        assert_eq!(response.status(), 200);
    };
    // A healthy candidate serves on.
    start_canary("payment-v2").await;
    let ids: Vec<String> = futures::future::join_all((0..60).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    complete(&app, &ids).await;
    assert!(app.plugin("payment").await.expect("payment")["rollout"].is_object(), "a healthy canary was rolled back");
    assert_eq!(app.rollback("payment").await.status(), 200);
    // A candidate trapping on half of its orders is rolled back within the window.
    start_canary("payment-half-trap").await;
    let ids: Vec<String> = futures::future::join_all((0..80).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    eventually(WAIT, "the failing canary is rolled back", async || {
        app.plugin("payment").await.is_some_and(|p| p["rollout"].is_null())
    })
    .await;
    let entries = history(&app).await;
    let rolled = entries.iter().find(|h| h["action"] == "auto-rollback").expect("the history says why");
    assert!(rolled["reason"].as_str().unwrap_or_default().contains("failure rate"), "{rolled}");
    assert!(auto_rollback_metric(&app).await >= 1.0);
    // The trapped events were retried on the serving version: the saga is whole.
    complete(&app, &ids).await;
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 1000)]);
    app.assert_invariants(&stocked).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_swap_that_fails_too_often_is_rolled_back() {
    let app = app_with(|s| {
        s.auto_rollback_min_calls = 10;
        s.auto_rollback_failure_rate = 0.2;
    })
    .await;
    app.stock_up("SKU-1", 1000).await;
    let v1 = digest(&app, "payment").await;
    assert_eq!(app.upload("payment", component("payment-half-trap")).await.status(), 200);
    let ids: Vec<String> = futures::future::join_all((0..60).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    eventually(WAIT, "the failing version is rolled back", async || digest(&app, "payment").await == v1).await;
    complete(&app, &ids).await;
    let versions: BTreeSet<String> = futures::future::join_all(ids.iter().map(|id| app.order(id)))
        .await
        .iter()
        .filter_map(|o| version_of(o, "payment.captured"))
        .collect();
    assert!(versions.contains(&v1), "orders completed on the version rolled back to");
    assert!(history(&app).await.iter().any(|h| h["action"] == "auto-rollback"));
    app.stop().await;
}
