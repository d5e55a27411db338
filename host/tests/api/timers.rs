//! Time and callbacks: durable timers (`emit.delay-ms` of `wasaga:saga@0.2.0`) fire once
//! however many hosts try, and across a host killed before they were due; the 3-D Secure
//! flow that needs them with signed webhooks (`tok_3ds`: the gateway confirms by webhook,
//! or the payment step's timer declines); and a step built against 0.1.0 serving beside
//! 0.2.0 ones.

use crate::crash::Server;
use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wasaga_gateway::WebhookTarget;
use wasaga_host::store::{BatchCommit, Store, TimerRow};

const WAIT: Duration = Duration::from_secs(120);
/// The secret the gateway signs webhooks with, and the host checks them by.
const HOOK_SECRET: &str = "whsec_4f1c8a2e9b7d";

on_every_store!(timers_fire_once_however_many_hosts_fire_them);

/// 60 timers due now and 5 due in an hour, fired by four racers at once (two threads,
/// one store as hosts share it): each due one reaches the outbox once, the others wait.
async fn timers_fire_once_however_many_hosts_fire_them(db: Db) {
    let (store, _dir) = test_store(db).await;
    let timer = |i: usize, delay_ms: i64| TimerRow {
        event: stored_event(&format!("timer-{i}"), "payment.timeout", &format!("o-{}", i % 10)),
        delay_ms,
    };
    let batch = BatchCommit {
        consumer: "payment".to_owned(),
        timers: (0..60).map(|i| timer(i, 0)).chain((60..65).map(|i| timer(i, 3_600_000))).collect(),
        ..BatchCommit::default()
    };
    store.commit_batch(&batch).await.expect("the timers are written with the batch");
    let orders: Vec<String> = (0..10).map(|i| format!("o-{i}")).collect();
    assert_eq!(store.pending_timers(&orders).await.expect("pending").len(), 65);
    let fire = |store: Arc<dyn Store>| async move {
        let mut fired = 0;
        loop {
            match store.fire_timers(7).await.expect("fire") {
                0 => break fired,
                n => fired += n,
            }
        }
    };
    let racers: Vec<_> = (0..4).map(|_| tokio::spawn(fire(store.clone()))).collect();
    let mut fired = 0;
    for racer in racers {
        fired += racer.await.expect("racer");
    }
    fired += store.fire_timers(100).await.expect("fire the rest");
    assert_eq!(fired, 60, "every due timer fires once");
    assert_eq!(store.fire_timers(100).await.expect("fire"), 0, "nothing fires twice");
    let mut ids: Vec<String> =
        store.timelines(&orders).await.expect("timelines").into_iter().map(|r| r.event_id).collect();
    ids.sort();
    let mut due: Vec<String> = (0..60).map(|i| format!("timer-{i}")).collect();
    due.sort();
    assert_eq!(ids, due, "each due timer is in the outbox once");
    let pending = store.pending_timers(&orders).await.expect("pending");
    let ids: Vec<&str> = pending.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "{pending:?}");
    assert!(ids.iter().all(|id| ["timer-60", "timer-61", "timer-62", "timer-63", "timer-64"].contains(id)));
    let soon = wasaga_host::event::now_ms() + 3_000_000;
    assert!(pending.iter().all(|t| t.due_at_ms > soon), "due in an hour by the store's clock: {pending:?}");
}

/// Settings for payment through the gateway at `url` with 3-D Secure: webhooks signed
/// with [`HOOK_SECRET`], the order id at `/data/order_id`, and `timeout_ms` to wait.
fn settings_file(dir: &std::path::Path, url: &str, timeout_ms: u64) -> std::path::PathBuf {
    let key = crate::outbound::KEY;
    let toml = format!(
        "[steps.payment]\noutbound = [\"{url}\"]\nhook_secret = \"{HOOK_SECRET}\"\nhook_order_id = \"/data/order_id\"\n\n\
         [steps.payment.env]\nWASAGA_GATEWAY_URL = \"{url}\"\nWASAGA_PAYMENT_ACTION_TIMEOUT_MS = \"{timeout_ms}\"\n\n\
         [steps.payment.outbound_headers]\nauthorization = \"Bearer {key}\"\n"
    );
    let path = dir.join("wasaga.toml");
    std::fs::write(&path, toml).expect("settings");
    path
}

/// Point the gateway's webhooks at `server`.
fn webhooks_to(gateway: &wasaga_gateway::Gateway, server: &Server) {
    let url = format!("http://{}/api/hooks/payment", server.api.addr);
    gateway.send_webhooks_to(WebhookTarget { url, secret: HOOK_SECRET.to_owned() });
}

fn kinds_of(order: &Value) -> Vec<String> {
    order["timeline"].as_array().into_iter().flatten().filter_map(|e| e["kind"].as_str().map(str::to_owned)).collect()
}

fn count(order: &Value, kind: &str) -> usize {
    kinds_of(order).iter().filter(|k| *k == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_d_secure_orders_complete_through_webhooks_while_the_host_is_killed() {
    let (url, gateway, _task) = crate::outbound::gateway().await;
    gateway.set_action_delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    // Two minutes to authenticate: every webhook arrives well before its timer.
    let config = settings_file(dir.path(), &url, 120_000);
    let token = format!("t-{}", rand_id());
    let start = || Server::start_with(dir.path(), None, Some(&config), &token);
    let mut server = start();
    server.api.wait_ready().await;
    webhooks_to(&gateway, &server);
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 300)]);
    server.api.stock_up("SKU-1", 300).await;
    let mut ids = Vec::new();
    for round in 0..2 {
        for _ in 0..100 {
            ids.push(server.api.place(&[("SKU-1", 1)], "tok_3ds").await);
        }
        // Killed with charges awaiting the cardholder and webhooks on their way: the
        // gateway retries them until the host is back (at a new address).
        server.kill();
        server = start();
        server.api.wait_ready().await;
        webhooks_to(&gateway, &server);
        eprintln!("round {round}: host killed and restarted with {} orders placed", ids.len());
    }
    for id in &ids {
        eventually(WAIT, "the order completes through its webhook", async || {
            server.api.order(id).await["status"] == "completed"
        })
        .await;
    }
    server.api.assert_invariants(&stocked).await;
    let ledger = gateway.ledger();
    let orders = server.api.all_orders().await;
    let (charges, refunds) = crate::outbound::check_ledger(&ledger, &orders);
    assert_eq!((charges, refunds), (200, 0), "{ledger}");
    assert!(gateway.webhooks_delivered() >= 200, "each charge confirmed by webhook");
    // Each order captured once; its timer is still pending (it fires later and changes nothing).
    for id in ids.iter().take(20) {
        let order = server.api.order(id).await;
        assert_eq!(count(&order, "payment.hook"), 1, "{order}");
        assert_eq!(count(&order, "payment.captured"), 1, "{order}");
        let timers = order["timers"].as_array().expect("timers");
        assert_eq!(timers.len(), 1, "{order}");
        assert_eq!(timers[0]["kind"], "payment.timeout", "{order}");
        assert_eq!(timers[0]["step"], "payment", "{order}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_webhooks_withheld_each_timer_cancels_its_order_once_even_fired_late() {
    let (url, gateway, _task) = crate::outbound::gateway().await;
    gateway.withhold_webhooks(true);
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let config = settings_file(dir.path(), &url, 3_000);
    let token = format!("t-{}", rand_id());
    let start = || Server::start_with(dir.path(), None, Some(&config), &token);
    let server = start();
    server.api.wait_ready().await;
    webhooks_to(&gateway, &server);
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 90)]);
    server.api.stock_up("SKU-1", 90).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(server.api.place(&[("SKU-1", 2)], "tok_3ds").await);
    }
    // Each order waits for its cardholder, with its timer pending.
    let mut latest_due = time::OffsetDateTime::UNIX_EPOCH;
    for id in &ids {
        let mut due = None;
        eventually(WAIT, "the payment step sets its timer", async || {
            let order = server.api.order(id).await;
            due = order["timers"][0]["due_at"].as_str().map(str::to_owned);
            due.is_some()
        })
        .await;
        let due = time::OffsetDateTime::parse(&due.unwrap_or_default(), &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time");
        latest_due = latest_due.max(due);
    }
    // The host dies before any timer is due and comes back after all are: the late host
    // fires what became due while it was down.
    server.kill();
    eventually(WAIT, "every timer is due", async || time::OffsetDateTime::now_utc() > latest_due).await;
    let server = start();
    server.api.wait_ready().await;
    for id in &ids {
        eventually(WAIT, "the timer cancels the order", async || server.api.order(id).await["status"] == "cancelled")
            .await;
        let order = server.api.order(id).await;
        assert_eq!(order["cancel_reason"], "payment_declined", "{order}");
        assert_eq!(count(&order, "payment.timeout"), 1, "{order}");
        assert_eq!(count(&order, "payment.declined"), 1, "{order}");
        assert_eq!(count(&order, "order.cancelled"), 1, "{order}");
        assert_eq!(order["timers"].as_array().map(Vec::len), Some(0), "fired: {order}");
    }
    server.api.assert_invariants(&stocked).await;
    eventually(WAIT, "the reservations are released", async || {
        server.api.stock("SKU-1").await.is_some_and(|s| s["available"] == 90)
    })
    .await;
    let ledger = gateway.ledger();
    assert_eq!(ledger["charges"].as_array().map(Vec::len), Some(0), "nothing captured: {ledger}");
    assert_eq!(ledger["awaiting_action"].as_array().map(Vec::len), Some(30), "{ledger}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_built_against_0_1_serves_beside_0_2_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    install_saga_steps(&plugins);
    std::fs::write(plugins.join("inventory.wasm"), component("inventory-0-1")).expect("install the 0.1.0 build");
    let app = spawn_app_in(dir).await;
    let steps = app.plugins().await;
    let contract = |name: &str| steps.iter().find(|s| s["name"] == name).map(|s| s["contract"].clone());
    assert_eq!(contract("inventory"), Some(Value::from("wasaga:saga@0.1.0")), "{steps:?}");
    assert_eq!(contract("payment"), Some(Value::from("wasaga:saga@0.2.0")), "{steps:?}");
    app.stock_up("SKU-1", 10).await;
    let mut ids = Vec::new();
    for token in ["tok_ok", "tok_ok", "tok_decline", "tok_flaky_1"] {
        ids.push(app.place(&[("SKU-1", 1)], token).await);
    }
    let placed_out = app.place(&[("SKU-1", 50)], "tok_ok").await;
    for (id, status) in ids.iter().zip(["completed", "completed", "cancelled", "completed"]) {
        eventually(WAIT, "the order ends", async || app.order(id).await["status"] == status).await;
    }
    eventually(WAIT, "the 0.1.0 step refuses what it cannot reserve", async || {
        app.order(&placed_out).await["cancel_reason"] == "out_of_stock"
    })
    .await;
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 10)])).await;
    app.stop().await;
}

#[tokio::test]
async fn a_timer_keeps_its_delay_within_the_limit_and_a_0_1_step_sets_none() {
    let runtime = runtime();
    let echo = load_as(&runtime, "echo-v1", "echo").await;
    assert_eq!(echo.contract, "0.2.0");
    let state = Arc::new(wasaga_host::runtime::MemoryState::default());
    let timer = TestEvent::new("echo.ping", "o-1", serde_json::json!({ "delay_ms": 5000 }));
    let emitted = call(&runtime, &echo, &state, &timer).await.expect("a timer");
    assert_eq!(emitted.iter().map(|e| e.delay_ms).collect::<Vec<_>>(), [Some(5000)]);
    let now = TestEvent::new("echo.ping", "o-1", serde_json::json!({}));
    let emitted = call(&runtime, &echo, &state, &now).await.expect("an event");
    assert_eq!(emitted.iter().map(|e| e.delay_ms).collect::<Vec<_>>(), [None]);
    // 31 days: past WASAGA_STEP_MAX_TIMER_SECS (30 days), the call fails naming it.
    let far = TestEvent::new("echo.ping", "o-1", serde_json::json!({ "delay_ms": 31u64 * 86_400_000 }));
    let error = call(&runtime, &echo, &state, &far).await.expect_err("too far");
    assert_eq!(error.label(), "too_large", "{error}");
    assert!(error.to_string().contains("WASAGA_STEP_MAX_TIMER_SECS"), "{error}");

    let old = load_as(&runtime, "inventory-0-1", "inventory").await;
    assert_eq!(old.contract, "0.1.0");
    assert_eq!(old.subscribes, load(&runtime, "inventory").await.subscribes, "describe() works the same");
    let set = TestEvent::new("stock.set", "", serde_json::json!({ "sku": "A", "available": 3 }));
    let emitted = call(&runtime, &old, &state, &set).await.expect("the 0.1.0 step serves");
    assert!(emitted.iter().all(|e| e.delay_ms.is_none()), "{emitted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_rabbitmq_fire_each_timer_once_after_one_is_killed() {
    let _shared = crate::brokers::RABBIT.read().await;
    let (url, gateway, _task) = crate::outbound::gateway().await;
    gateway.withhold_webhooks(true);
    let fleet = crate::crash::RabbitFleet::new(2).await;
    let config = settings_file(fleet.dirs[0].path(), &url, 2_000);
    let mut servers = fleet.start_all(&config).await;
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 40)]);
    servers[0].api.stock_up("SKU-1", 40).await;
    let mut ids = Vec::new();
    for i in 0..20usize {
        ids.push(servers[i % 2].api.place(&[("SKU-1", 1)], "tok_3ds").await);
    }
    for id in &ids {
        eventually(WAIT, "the payment step sets its timer", async || {
            servers[0].api.order(id).await["timers"].as_array().is_some_and(|t| t.len() == 1)
        })
        .await;
    }
    // One host dies with the timers pending: the other relays, and fires each once.
    servers.remove(0).kill();
    let host = &servers[0].api;
    for id in &ids {
        eventually(WAIT, "the timer cancels the order", async || host.order(id).await["status"] == "cancelled").await;
        let order = host.order(id).await;
        assert_eq!(order["cancel_reason"], "payment_declined", "{order}");
        assert_eq!(count(&order, "payment.timeout"), 1, "{order}");
        assert_eq!(count(&order, "order.cancelled"), 1, "{order}");
    }
    host.assert_invariants(&stocked).await;
    let ledger = gateway.ledger();
    assert_eq!(ledger["charges"].as_array().map(Vec::len), Some(0), "nothing captured: {ledger}");
}
