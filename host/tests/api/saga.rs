//! The saga end to end over HTTP, on SQLite and on PostgreSQL: every card token, stock
//! outs, cancels, idempotency, bad input, dead letters, and mixed traffic with the
//! invariants of ARCHITECTURE.md checked once quiet.

use crate::helpers::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

on_every_store!(
    every_card_token_ends_as_designed,
    out_of_stock_cancels_without_taking_stock,
    cancelling_compensates,
    idempotency_key_semantics,
    bad_input_is_refused_and_stores_nothing,
    dead_letters_can_be_discarded_and_replayed,
    mixed_traffic_keeps_the_invariants,
    hot_swap_under_load_loses_no_order,
    the_host_acts_in_the_commits_of_the_steps,
    a_batch_reads_the_keys_of_its_orders_up_front,
);

async fn wait_terminal(app: &TestApp, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    eventually(Duration::from_secs(60), "order is terminal", async || {
        last = app.order(id).await;
        last["status"] != "pending"
    })
    .await;
    last
}

fn kinds(order: &serde_json::Value) -> Vec<String> {
    order["timeline"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["kind"].as_str().map(str::to_owned))
        .collect()
}

async fn every_card_token_ends_as_designed(db: Db) {
    let app = spawn_saga(db).await;
    app.stock_up("SKU-1", 100).await;
    let table = [
        ("tok_ok", "completed", None),
        ("tok_flaky_2", "completed", None),
        ("tok_decline", "cancelled", Some("payment_declined")),
        ("tok_flaky_9", "cancelled", Some("step_failed")),
        ("tok_trap", "cancelled", Some("step_failed")),
    ];
    let mut placed = Vec::new();
    for (token, _, _) in table {
        placed.push(app.place(&[("SKU-1", 2)], token).await);
    }
    for ((token, status, reason), id) in table.iter().zip(&placed) {
        let order = wait_terminal(&app, id).await;
        assert_eq!(order["status"], *status, "{token}: {order}");
        assert_eq!(order["cancel_reason"].as_str(), *reason, "{token}");
        assert_eq!(order["total_cents"], 2500);
        let timeline = order["timeline"].as_array().cloned().unwrap_or_default();
        assert_eq!(timeline[0]["kind"], "order.placed");
        assert_eq!(timeline[0]["step"], "host");
        for entry in &timeline {
            assert!(entry["event_id"].is_string() && entry["at"].is_string() && entry["step_version"].is_string());
        }
        if *status == "completed" {
            let versions: Vec<&str> =
                timeline.iter().filter(|t| t["step"] == "payment").filter_map(|t| t["step_version"].as_str()).collect();
            assert!(versions.iter().all(|v| v.starts_with("sha256:")), "{versions:?}");
        }
    }
    let dead = app.admin_get("/api/admin/dead-letters").await.json::<Vec<serde_json::Value>>().await.expect("json");
    assert_eq!(dead.len(), 2, "tok_flaky_9 and tok_trap are dead-lettered: {dead:?}");
    assert!(dead.iter().all(|d| d["step"] == "payment" && d["attempts"] == 5), "{dead:?}");
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 100)])).await;
    app.stop().await;
}

async fn out_of_stock_cancels_without_taking_stock(db: Db) {
    let app = spawn_saga(db).await;
    app.stock_up("SKU-A", 3).await;
    app.stock_up("SKU-B", 1).await;
    let id = app.place(&[("SKU-A", 2), ("SKU-B", 2)], "tok_ok").await;
    let order = wait_terminal(&app, &id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancel_reason"], "out_of_stock");
    assert!(!kinds(&order).contains(&"payment.captured".to_owned()));
    app.assert_invariants(&BTreeMap::from([("SKU-A".to_owned(), 3), ("SKU-B".to_owned(), 1)])).await;
    let a = app.stock("SKU-A").await.expect("level");
    assert_eq!(a["available"], 3, "a failed reservation took stock: {a}");
    app.stop().await;
}

/// On the embedded default the host's order logic runs in the commit of the step batch
/// that emits its events, and those events are not queued for the host's consumer: the
/// order completes or cancels, and the stock read model moves, only if that commit did it.
async fn the_host_acts_in_the_commits_of_the_steps(db: Db) {
    let app = spawn_saga(db).await;
    app.stock_up("SKU-1", 10).await;
    let completed = app.place(&[("SKU-1", 3)], "tok_ok").await;
    let declined = app.place(&[("SKU-1", 2)], "tok_decline").await;
    assert_eq!(wait_terminal(&app, &completed).await["status"], "completed");
    let order = wait_terminal(&app, &declined).await;
    assert_eq!(
        (order["status"].as_str(), order["cancel_reason"].as_str()),
        (Some("cancelled"), Some("payment_declined"))
    );
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 10)])).await;
    eventually(Duration::from_secs(30), "the sale reaches the read model", async || {
        app.stock("SKU-1").await.is_some_and(|s| s["sold"] == 3 && s["reserved"] == 0 && s["available"] == 7)
    })
    .await;
    // Each event once on the timeline, though the host may also be sent the events it
    // already handled (when they went through the relay): its inbox drops them.
    for id in [&completed, &declined] {
        let mut seen = kinds(&app.order(id).await);
        let count = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), count, "an event twice on {id}'s timeline: {seen:?}");
    }
    app.stop().await;
}

/// A step's keys that name the order are read for a whole batch in one query, once its
/// calls have shown them: orders one after another still end as designed, and the
/// metrics say the guesses were read by the calls. SQL Server reads key by key, so
/// nothing is read ahead there.
async fn a_batch_reads_the_keys_of_its_orders_up_front(db: Db) {
    let key_by_key = matches!(db, Db::Mssql);
    let app = spawn_saga(db).await;
    app.stock_up("SKU-1", 10).await;
    for token in ["tok_ok", "tok_ok", "tok_decline", "tok_ok"] {
        let id = app.place(&[("SKU-1", 1)], token).await;
        let order = wait_terminal(&app, &id).await;
        let want = if token == "tok_ok" { "completed" } else { "cancelled" };
        assert_eq!(order["status"], want, "{order}");
    }
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 10)])).await;
    let metrics = app.get("/metrics").await.text().await.expect("metrics text");
    let count = |step: &str, outcome: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("wasaga_state_read_ahead_total{")
                    && l.contains(&format!("step=\"{step}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    if key_by_key {
        assert_eq!(count("payment", "read") + count("inventory", "read"), 0.0, "{metrics}");
    } else {
        // payment reads `payment/<order id>` on every `stock.reserved`: after the first, it is read ahead.
        assert!(count("payment", "read") >= 2.0, "{metrics}");
        assert!(count("inventory", "read") >= 2.0, "{metrics}");
    }
    app.stop().await;
}

async fn cancelling_compensates(db: Db) {
    let app = spawn_saga(db).await;
    app.stock_up("SKU-1", 10).await;
    // A completed order cancelled: refunded and restocked.
    let completed = app.place(&[("SKU-1", 3)], "tok_ok").await;
    assert_eq!(wait_terminal(&app, &completed).await["status"], "completed");
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 10)])).await;
    assert_eq!(app.cancel(&completed).await, 202);
    assert_eq!(app.cancel(&completed).await, 409, "a second cancel");
    assert_eq!(app.cancel("no-such-order").await, 404);
    // A cancel racing the payment of a fresh order.
    let racing = app.place(&[("SKU-1", 2)], "tok_flaky_1").await;
    let status = app.cancel(&racing).await;
    assert!(status == 202 || status == 409, "{status}");
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 10)])).await;
    let order = app.order(&completed).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancel_reason"], "customer_request");
    assert!(kinds(&order).contains(&"payment.refunded".to_owned()), "{order}");
    assert_eq!(app.stock("SKU-1").await.expect("level")["sold"], 0);
    app.stop().await;
}

async fn idempotency_key_semantics(db: Db) {
    let app = spawn_saga(db).await;
    let send = |key: &str, body: serde_json::Value| {
        app.http.post(app.url("/api/orders")).header("idempotency-key", key).json(&body).send()
    };
    let first = send("k-1", order_body(&[("SKU-1", 1)], "tok_ok")).await.expect("sent");
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().expect("location").to_owned();
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send("k-1", order_body(&[("SKU-1", 1)], "tok_ok")).await.expect("sent");
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["order_id"], first["order_id"], "the same key and body return the same order");
    assert_eq!(location, format!("/api/orders/{}", first["order_id"].as_str().expect("id")));
    let other = send("k-1", order_body(&[("SKU-1", 2)], "tok_ok")).await.expect("sent");
    assert_eq!(other.status(), 422);
    assert_eq!(app.all_orders().await.len(), 1, "no second order");
    // Concurrent first requests with one key: one order, the others 202 (same order) or 409.
    let racers = (0..8).map(|_| send("k-2", order_body(&[("SKU-2", 1)], "tok_ok")));
    let statuses: Vec<u16> =
        futures::future::join_all(racers).await.into_iter().map(|r| r.expect("sent").status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 202 || *s == 409), "{statuses:?}");
    assert_eq!(app.all_orders().await.len(), 2, "{statuses:?}");
    app.stop().await;
}

async fn bad_input_is_refused_and_stores_nothing(db: Db) {
    let app = spawn_saga(db).await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.http.post(app.url("/api/orders")).header("content-type", content_type).body(body).send()
    };
    // (body, content type, status)
    let table: [(&'static str, &'static str, u16); 9] = [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        (r#"{"customer_id":"c"}"#, "text/plain", 415),
        (r#"{"customer_id":"c","items":[],"payment":{"card_token":"tok_ok"}}"#, "application/json", 422),
        (
            r#"{"customer_id":"c","items":[{"sku":"A","quantity":0,"unit_price_cents":1}],"payment":{"card_token":"tok_ok"}}"#,
            "application/json",
            422,
        ),
        (
            r#"{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":-1}],"payment":{"card_token":"tok_ok"}}"#,
            "application/json",
            422,
        ),
        (
            r#"{"customer_id":"c","items":[{"sku":"","quantity":1,"unit_price_cents":1}],"payment":{"card_token":"tok_ok"}}"#,
            "application/json",
            422,
        ),
        (
            r#"{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"payment":{"card_token":"tok_ok"},"x":1}"#,
            "application/json",
            422,
        ),
        (r#"{"items":[{"sku":"A","quantity":"many"}]}"#, "application/json", 422),
    ];
    for (body, content_type, status) in table {
        let response = raw(body, content_type).await.expect("sent");
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{body}");
    }
    let control = json!({"customer_id": "c\u{0}", "items": [{"sku": "A\u{7}", "quantity": 1, "unit_price_cents": 1}], "payment": {"card_token": "tok_ok"}});
    let response = app.post_json("/api/orders", &control).await;
    assert_eq!(response.status(), 422, "control characters are refused before they reach a store");
    let listed: serde_json::Value = raw(r#"{"items":[{"sku":"","quantity":0}],"y":2}"#, "application/json")
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let fields: Vec<&str> =
        listed["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(
        fields,
        ["y", "customer_id", "items[0].sku", "items[0].quantity", "items[0].unit_price_cents", "payment"]
    );
    let big = format!(r#"{{"customer_id":"{}"}}"#, "x".repeat(70 * 1024));
    let response = app
        .http
        .post(app.url("/api/orders"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);
    for (path, status) in [
        ("/api/orders/nope", 404),
        ("/api/orders?limit=0", 422),
        ("/api/orders?limit=501", 422),
        ("/api/orders?status=lost", 422),
        ("/api/orders?after=x", 422),
    ] {
        assert_eq!(app.admin_get(path).await.status().as_u16(), status, "{path}");
    }
    let response = app.http.put(app.url("/api/stock/SKU-1")).json(&json!({"available": 5})).send().await.expect("sent");
    assert_eq!(response.status(), 401, "stock is admin-only");
    let response = app
        .http
        .put(app.url("/api/stock/SKU-1"))
        .bearer_auth(&app.token)
        .json(&json!({"available": -1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 422);
    assert!(app.all_orders().await.is_empty(), "bad input stored an order");
    assert!(app.stock("SKU-1").await.is_none());
    app.stop().await;
}

async fn dead_letters_can_be_discarded_and_replayed(db: Db) {
    let app = spawn_saga(db).await;
    app.stock_up("SKU-1", 10).await;
    let trapped = [app.place(&[("SKU-1", 1)], "tok_trap").await, app.place(&[("SKU-1", 1)], "tok_trap").await];
    for id in &trapped {
        assert_eq!(wait_terminal(&app, id).await["cancel_reason"], "step_failed");
    }
    let letters = || async {
        app.admin_get("/api/admin/dead-letters").await.json::<Vec<serde_json::Value>>().await.expect("json")
    };
    let mut dead = Vec::new();
    eventually(Duration::from_secs(30), "two dead letters", async || {
        dead = letters().await;
        dead.len() == 2
    })
    .await;
    assert_eq!(dead[0]["event"]["kind"], "stock.reserved");
    assert!(dead[0]["error"].as_str().unwrap_or_default().contains("trap"), "{}", dead[0]);
    let discard = app
        .http
        .delete(app.url(&format!("/api/admin/dead-letters/{}", dead[0]["id"].as_str().expect("id"))))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(discard.status(), 204);
    let replay_path = format!("/api/admin/dead-letters/{}/replay", dead[1]["id"].as_str().expect("id"));
    let replay = app.http.post(app.url(&replay_path)).bearer_auth(&app.token).send().await.expect("sent");
    assert_eq!(replay.status(), 202);
    let replay = app.http.post(app.url(&replay_path)).bearer_auth(&app.token).send().await.expect("sent");
    assert_eq!(replay.status(), 404, "a replayed letter is gone");
    // By the time of the replay, payment has seen the order's cancel and voided it, so the
    // replayed capture is handled without effect: no new dead letter, no charge.
    eventually(Duration::from_secs(30), "the replayed event is handled", async || letters().await.is_empty()).await;
    for id in &trapped {
        let order = app.order(id).await;
        assert_eq!(order["status"], "cancelled");
        assert!(!kinds(&order).contains(&"payment.captured".to_owned()), "{order}");
    }
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 10)])).await;
    let no_auth = app.http.get(app.url("/api/admin/dead-letters")).send().await.expect("sent");
    assert_eq!(no_auth.status(), 401);
    app.stop().await;
}

async fn mixed_traffic_keeps_the_invariants(db: Db) {
    let app = spawn_saga(db).await;
    let skus = ["SKU-1", "SKU-2", "SKU-3"];
    let mut stocked = BTreeMap::new();
    for (i, sku) in skus.iter().enumerate() {
        let n = 40 + 20 * i as u64;
        app.stock_up(sku, n).await;
        stocked.insert(sku.to_string(), n);
    }
    let tokens = ["tok_ok", "tok_ok", "tok_ok", "tok_decline", "tok_flaky_1", "tok_flaky_2", "tok_flaky_9", "tok_trap"];
    let owned = app;
    let app = &owned;
    let mut ids = Vec::new();
    let mut placing = Vec::new();
    for i in 0..240usize {
        let lines: Vec<(&str, u32)> = match i % 3 {
            0 => vec![(skus[i % 3], 1)],
            1 => vec![(skus[0], 1), (skus[(i / 3) % 3], 2)],
            _ => vec![(skus[2], 3)],
        };
        let token = tokens[i % tokens.len()];
        placing.push(async move { (i, app.place(&lines, token).await) });
        if placing.len() == 16 {
            ids.extend(futures::future::join_all(std::mem::take(&mut placing)).await);
        }
    }
    ids.extend(futures::future::join_all(placing).await);
    // Cancel every seventh order at once, racing its saga.
    for (i, id) in &ids {
        if i % 7 == 0 {
            let status = app.cancel(id).await;
            assert!(status == 202 || status == 409, "{status}");
        }
    }
    app.assert_invariants(&stocked).await;
    owned.stop().await;
}

async fn hot_swap_under_load_loses_no_order(db: Db) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let app = spawn_saga(db).await;
    app.stock_up("SKU-1", 100_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicUsize::new(0));
    // Four loaders, each placing its next order once its last is handled: four orders
    // are in flight at every swap, and on a slow store no backlog outgrows the waits.
    let loaders: Vec<_> = (0..4)
        .map(|i| {
            let (api, stop, handled) = (app.api.clone(), stop.clone(), handled.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = api.place(&[("SKU-1", 1)], if i == 3 { "tok_flaky_1" } else { "tok_ok" }).await;
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while api.order(&id).await["status"] == "pending" {
                        assert!(std::time::Instant::now() < deadline, "order {id} not handled within 60 s");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    handled.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let progress = |n: usize| {
        let handled = handled.clone();
        async move {
            let target = handled.load(Ordering::Relaxed) + n;
            eventually(Duration::from_secs(60), "orders flow", async || handled.load(Ordering::Relaxed) >= target)
                .await;
        }
    };
    let payment_version = |app: &TestApp| app.registry().current("payment").map(|p| p.version.clone());
    progress(20).await;
    // An upload of a new version.
    assert_eq!(app.upload("payment", component("payment-v2")).await.status(), 200);
    assert_eq!(payment_version(&app).as_deref(), Some("0.2.0"));
    progress(20).await;
    // A file of a new version dropped into the plugins folder (write, then rename).
    let dir = app.plugins_dir();
    std::fs::write(dir.join(".payment.wasm.tmp"), component("payment-fixed")).expect("write");
    std::fs::rename(dir.join(".payment.wasm.tmp"), dir.join("payment.wasm")).expect("rename");
    eventually(Duration::from_secs(30), "the dropped file serves", async || {
        payment_version(&app).as_deref() == Some("0.5.0")
    })
    .await;
    progress(20).await;
    // And a rollback to the uploaded version.
    assert_eq!(app.rollback("payment").await.status(), 200);
    assert_eq!(payment_version(&app).as_deref(), Some("0.2.0"));
    progress(20).await;
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        loader.await.expect("loader");
    }
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 100_000)])).await;
    let orders = app.all_orders().await;
    assert!(orders.iter().all(|o| o["status"] == "completed"), "an order did not complete across the swaps");
    let versions: std::collections::BTreeSet<String> = orders
        .iter()
        .flat_map(|o| o["timeline"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["kind"] == "payment.captured")
        .filter_map(|t| t["step_version"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(versions.len(), 3, "captures by every payment version: {versions:?}");
    app.stop().await;
}

mod generated {
    //! Property test: generated order mixes (contended SKUs, every token, cancels racing
    //! the saga) end with the invariants of ARCHITECTURE.md, on both stores.

    use super::*;
    use proptest::prelude::*;

    const TOKENS: [&str; 6] = ["tok_ok", "tok_decline", "tok_flaky_1", "tok_flaky_3", "tok_flaky_9", "tok_trap"];

    #[derive(Debug, Clone)]
    struct Line {
        sku: usize,
        quantity: u32,
        token: usize,
        cancel: bool,
    }

    fn line() -> impl Strategy<Value = Line> {
        (0..3usize, 1..4u32, 0..TOKENS.len(), proptest::bool::weighted(0.2))
            .prop_map(|(sku, quantity, token, cancel)| Line { sku, quantity, token, cancel })
    }

    async fn run(db: Db, stock: Vec<u64>, lines: Vec<Line>) {
        let app = spawn_saga(db).await;
        let skus = ["SKU-A", "SKU-B", "SKU-C"];
        let mut stocked = BTreeMap::new();
        for (sku, n) in skus.iter().zip(&stock) {
            app.stock_up(sku, *n).await;
            stocked.insert(sku.to_string(), *n);
        }
        let placing = lines.iter().map(|l| {
            let app = &app;
            async move { app.place(&[(skus[l.sku], l.quantity)], TOKENS[l.token]).await }
        });
        let placed = futures::future::join_all(placing).await;
        for (id, l) in placed.iter().zip(&lines) {
            if l.cancel {
                let status = app.cancel(id).await;
                assert!(status == 202 || status == 409, "{status}");
            }
        }
        app.assert_invariants(&stocked).await;
        app.stop().await;
    }

    fn block_on(future: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn order_mixes_keep_the_invariants_on_sqlite(stock in proptest::collection::vec(0..25u64, 3), lines in proptest::collection::vec(line(), 5..40)) {
            block_on(run(Db::Sqlite, stock, lines));
        }

        #[test]
        fn order_mixes_keep_the_invariants_on_postgres(stock in proptest::collection::vec(0..25u64, 3), lines in proptest::collection::vec(line(), 5..40)) {
            block_on(run(Db::Postgres, stock, lines));
        }
    }
}

#[tokio::test]
async fn orders_wait_for_the_saga_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
    std::fs::write(dir.path().join("plugins/inventory.wasm"), component("inventory")).expect("copy");
    let app = spawn_app_in(dir).await;
    let response = app.post_json("/api/orders", &order_body(&[("SKU-1", 1)], "tok_ok")).await;
    assert_eq!(response.status(), 503, "an order nobody can pay for is refused");
    let body: serde_json::Value = response.json().await.expect("problem");
    assert!(body["detail"].as_str().unwrap_or_default().contains("payment"), "{body}");
    assert!(app.all_orders().await.is_empty());
    app.stop().await;
}

/// A step whose changes the store refuses (PostgreSQL text cannot hold NUL) does not
/// block its queue: the event is dead-lettered after a few tries and the next one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_store_refuses_does_not_block_its_queue() {
    let url = fresh_pg_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    std::fs::write(dir.path().join("plugins/hostile.wasm"), component("hostile")).expect("copy");
    let settings = test_settings(&dir, Some(url.clone()));
    let app = spawn_with(dir, settings).await;
    let store = wasaga_host::store::open(&url, &Default::default()).await.expect("store");
    let event = |kind: &str| wasaga_host::saga::SagaContext::host_event(kind, "o-hostile", "{}".to_owned());
    store.emit(&event("hostile.nulkey")).await.expect("emit");
    store.emit(&event("hostile.ok")).await.expect("emit");
    eventually(Duration::from_secs(60), "the next event is handled", async || {
        store.timelines(&["o-hostile".to_owned()]).await.expect("timeline").iter().any(|t| t.kind == "hostile.done")
    })
    .await;
    let dead_letters =
        async || app.admin_get("/api/admin/dead-letters").await.json::<Vec<serde_json::Value>>().await.expect("json");
    eventually(Duration::from_secs(60), "the refused event is dead-lettered", async || {
        !dead_letters().await.is_empty()
    })
    .await;
    let dead = dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event"]["kind"], "hostile.nulkey");
    assert!(dead[0]["error"].as_str().unwrap_or_default().contains("store refused"), "{}", dead[0]);
    app.stop().await;
}
