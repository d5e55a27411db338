//! Saga deadlines: an order still pending `order_deadline_secs` after it was placed is
//! cancelled with `cancel_reason: "deadline"` and compensated, exactly once, whether a
//! completion races it or not.

use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A server with a one-second deadline, upkeep every 100 ms, retries from
/// `retry_base_ms`, and room for many attempts.
async fn app_with(retry_base_ms: u64) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.order_deadline_secs = 1;
    settings.maintenance_interval_ms = 100;
    settings.retry_base_ms = retry_base_ms;
    settings.max_attempts = 20;
    spawn_with(dir, settings).await
}

fn kinds(order: &Value) -> Vec<String> {
    order["timeline"].as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_that_never_finish_are_cancelled_at_their_deadline_and_compensated_once() {
    // tok_flaky_9 fails nine times; retries from 200 ms doubling take it past a second.
    let app = app_with(200).await;
    app.stock_up("SKU-1", 20).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.place(&[("SKU-1", 2)], "tok_flaky_9").await);
    }
    for id in &ids {
        eventually(WAIT, "the order is cancelled at its deadline", async || {
            app.order(id).await["status"] == "cancelled"
        })
        .await;
        let order = app.order(id).await;
        assert_eq!(order["cancel_reason"], "deadline", "{order}");
    }
    // Compensated: the stock is back, once.
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 20)])).await;
    eventually(WAIT, "the reservations are released", async || {
        app.stock("SKU-1").await.is_some_and(|s| s["available"] == 20)
    })
    .await;
    // Time passes; nothing is cancelled twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let order = app.order(id).await;
        let cancels = kinds(&order).iter().filter(|k| *k == "order.cancelled").count();
        assert_eq!(cancels, 1, "{order}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_racing_a_completion_ends_each_order_once() {
    // Flaky cards take a few retries of ~150 ms each: some orders complete just before
    // the one-second deadline, some just after it.
    let app = app_with(150).await;
    app.stock_up("SKU-1", 200).await;
    let mut ids = Vec::new();
    for i in 0..24usize {
        let token = format!("tok_flaky_{}", 1 + i % 4);
        ids.push(app.place(&[("SKU-1", 1)], &token).await);
    }
    for id in &ids {
        eventually(WAIT, "the order ends", async || {
            matches!(app.order(id).await["status"].as_str(), Some("completed" | "cancelled"))
        })
        .await;
    }
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 200)])).await;
    let (mut completed, mut expired) = (0, 0);
    for id in &ids {
        let order = app.order(id).await;
        let kinds = kinds(&order);
        let ends = kinds.iter().filter(|k| *k == "order.completed" || *k == "order.cancelled").count();
        assert_eq!(ends, 1, "one end per order: {order}");
        match order["status"].as_str() {
            Some("completed") => completed += 1,
            _ => {
                assert_eq!(order["cancel_reason"], "deadline", "{order}");
                expired += 1;
            }
        }
    }
    eprintln!("{completed} completed before their deadline, {expired} cancelled at it");
    app.stop().await;
}
