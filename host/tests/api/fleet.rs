//! A fleet: several `wasaga serve` processes on one PostgreSQL database (and one RabbitMQ
//! namespace, one Kafka topic, one archive), any of them taking orders and admin calls,
//! hosts SIGKILLed and restarted in the middle. Stock is never oversold, no event is
//! handled twice, the plugin registry is the fleet's, and the concurrency control
//! itself is tested against the store.

use crate::brokers::{Brokers, RABBIT};
use crate::crash::Server;
use crate::helpers::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasaga_host::store::{BatchCommit, Store, StoreError};

const WAIT: Duration = Duration::from_secs(120);

/// One archive folder for hosts on this machine (a fleet shares its archive).
fn shared_archive() -> (tempfile::TempDir, Vec<(&'static str, String)>) {
    let archive = tempfile::tempdir().expect("shared archive");
    let env = vec![("WASAGA_ARCHIVE_URL", format!("file://{}", archive.path().display()))];
    (archive, env)
}

/// Place one order per key, each sent to host `i % n` first and retried with the same
/// Idempotency-Key on the next host whenever one refuses or is gone. Returns the order
/// ids by key.
async fn place_across(
    hosts: Arc<parking_lot::Mutex<Vec<Api>>>,
    prefix: &str,
    keys: usize,
    accepted: Arc<AtomicUsize>,
) -> Vec<String> {
    let orders = (0..keys).map(|i| {
        let hosts = hosts.clone();
        let accepted = accepted.clone();
        async move {
            let key = format!("{prefix}-{i}");
            let body = order_body(&[("SKU-1", 1)], "tok_ok");
            let started = Instant::now();
            for attempt in 0usize.. {
                let api = {
                    let hosts = hosts.lock();
                    hosts[(i + attempt) % hosts.len()].clone()
                };
                let sent = api
                    .http
                    .post(api.url("/api/orders"))
                    .header("idempotency-key", &key)
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status() == 202
                    && let Ok(body) = response.json::<Value>().await
                    && let Some(id) = body["order_id"].as_str()
                {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    return id.to_owned();
                }
                assert!(started.elapsed() < WAIT, "order {key} was never accepted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            unreachable!()
        }
    });
    futures::future::join_all(orders).await
}

/// 300 one-unit orders of a SKU stocked with 100, sent to three hosts at once, one host
/// SIGKILLed and restarted in the middle: exactly 100 complete.
async fn three_hosts_never_oversell(env: Vec<(&'static str, String)>) {
    let url = fresh_pg_database().await;
    let dirs = host_dirs(3);
    let token = format!("t-{}", rand_id());
    let start = |i: usize| Server::start_env(dirs[i].path(), Some(&url), &token, &env);
    let mut servers: Vec<Server> = (0..3).map(start).collect();
    for server in &servers {
        server.api.wait_ready().await;
    }
    servers[0].api.stock_up("SKU-1", 100).await;
    let hosts = Arc::new(parking_lot::Mutex::new(servers.iter().map(|s| s.api.clone()).collect::<Vec<_>>()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let placing = tokio::spawn(place_across(hosts.clone(), "oversell", 300, accepted.clone()));
    eventually(WAIT, "a third of the orders are accepted", async || accepted.load(Ordering::Relaxed) >= 100).await;
    let killed = servers.remove(2);
    killed.kill();
    let restarted = start(2);
    restarted.api.wait_ready().await;
    hosts.lock()[2] = restarted.api.clone();
    servers.push(restarted);
    let ids = placing.await.expect("every order placed");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 300, "one order per Idempotency-Key across hosts");
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 100)]);
    servers[1].api.assert_invariants(&stocked).await;
    let orders = servers[0].api.all_orders().await;
    let completed = orders.iter().filter(|o| o["status"] == "completed").count();
    let out_of_stock = orders.iter().filter(|o| o["cancel_reason"] == "out_of_stock").count();
    assert_eq!(completed, 100, "exactly the stock was sold");
    assert_eq!(out_of_stock, 200);
    let level = servers[2].api.stock("SKU-1").await.expect("stock");
    assert_eq!((level["available"].as_u64(), level["sold"].as_u64()), (Some(0), Some(100)), "{level}");
    for server in servers {
        server.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_postgres_rabbitmq_and_kafka_never_oversell() {
    let _shared = RABBIT.read().await;
    // A durable tansu: the analytics consumer moves to another host and resumes from
    // the committed offset (see `brokers::tansu`).
    let brokers = Brokers::start(true).await;
    three_hosts_never_oversell(brokers.env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_the_embedded_transport_on_postgres_never_oversell() {
    let (_archive, env) = shared_archive();
    three_hosts_never_oversell(env).await;
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_data_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let token = format!("t-{}", rand_id());
    let first = Server::start_env(dir.path(), None, &token, &[]);
    first.api.wait_ready().await;
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_wasaga"))
        .arg("serve")
        .env("WASAGA_HTTP_ADDR", "127.0.0.1:0")
        .env("WASAGA_DATA_DIR", dir.path().join("data"))
        .env("WASAGA_PLUGINS_DIR", dir.path().join("plugins"))
        .env("WASAGA_ADMIN_TOKEN", &token)
        .output()
        .expect("runs");
    assert!(!second.status.success(), "a second process started on the same SQLite store");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("wasaga.db.lock") && stderr.contains("another wasaga process"), "{stderr}");
    first.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_with_a_live_host_id_is_refused() {
    let url = fresh_pg_database().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins folder");
    }
    let token = format!("t-{}", rand_id());
    let id = [("WASAGA_HOST_ID", format!("twin-{}", rand_id()))];
    let first = Server::start_env(dirs[0].path(), Some(&url), &token, &id);
    // Another folder, another machine perhaps: the same id while the first is alive.
    let mut second = std::process::Command::new(wasaga_bin())
        .arg("serve")
        .env("WASAGA_HTTP_ADDR", "127.0.0.1:0")
        .env("WASAGA_DATA_DIR", dirs[1].path().join("data"))
        .env("WASAGA_PLUGINS_DIR", dirs[1].path().join("plugins"))
        .env("WASAGA_ADMIN_TOKEN", &token)
        .env("WASAGA_STORE_URL", &url)
        .env("WASAGA_HOST_ID", &id[0].1)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = second.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second host with a live host id still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr).expect("reads");
    assert!(!status.success(), "a second host with the same id started: {stderr}");
    assert!(stderr.contains("another host is running with WASAGA_HOST_ID"), "{stderr}");
    // The first host is unharmed; once it is killed, its id is free again after its
    // lease ends (a restart after a crash is not refused).
    first.api.get("/healthz").await.error_for_status().expect("the first host still serves");
    first.kill();
    let third = Server::start_env(dirs[2].path(), Some(&url), &token, &id);
    third.api.get("/healthz").await.error_for_status().expect("the id is taken over after a crash");
    third.kill();
}

/// How long until every host in `hosts` serves `digest` for `step`.
async fn converged(hosts: &[&Api], step: &str, digest: &str) -> Duration {
    let started = Instant::now();
    eventually(Duration::from_secs(20), &format!("every host serves {digest}"), async || {
        for api in hosts {
            let plugin = api.plugin(step).await;
            if plugin.is_none_or(|p| p["digest"] != digest) {
                return false;
            }
        }
        true
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_on_one_host_and_a_rollback_on_another_serve_everywhere() {
    let url = fresh_pg_database().await;
    let dirs = host_dirs(3);
    let token = format!("t-{}", rand_id());
    let (_archive, env) = shared_archive();
    let servers: Vec<Server> = dirs.iter().map(|d| Server::start_env(d.path(), Some(&url), &token, &env)).collect();
    for server in &servers {
        server.api.wait_ready().await;
    }
    let apis: Vec<&Api> = servers.iter().map(|s| &s.api).collect();
    let (a, b, c) = (apis[0], apis[1], apis[2]);
    let original = a.plugin("payment").await.expect("payment")["digest"].as_str().expect("digest").to_owned();

    let uploaded = a.upload("payment", component("payment-v2")).await;
    assert_eq!(uploaded.status(), 200);
    let v2 = uploaded.json::<Value>().await.expect("json")["digest"].as_str().expect("digest").to_owned();
    let took = converged(&apis, "payment", &v2).await;
    eprintln!("an upload on host A served by every host after {took:?}");
    c.stock_up("SKU-1", 10).await;
    let id = c.place(&[("SKU-1", 1)], "tok_ok").await;
    eventually(WAIT, "the order completes", async || c.order(&id).await["status"] == "completed").await;
    let order = c.order(&id).await;
    let captured = order["timeline"].as_array().expect("timeline").iter().find(|e| e["kind"] == "payment.captured");
    assert_eq!(captured.expect("captured")["step_version"], v2, "the order on host C ran on the upload from host A");

    assert_eq!(b.rollback("payment").await.status(), 200);
    let took = converged(&apis, "payment", &original).await;
    eprintln!("a rollback on host B served by every host after {took:?}");
    eventually(Duration::from_secs(20), "every host reports the rolled-back version", async || {
        let hosts: Vec<Value> = a.admin_get("/api/admin/hosts").await.json().await.expect("hosts");
        hosts.len() == 3 && hosts.iter().all(|h| h["steps"]["payment"] == original)
    })
    .await;
    for server in servers {
        server.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restarting_with_an_older_file_does_not_roll_the_fleet_back() {
    let url = fresh_pg_database().await;
    let dirs = host_dirs(2);
    let token = format!("t-{}", rand_id());
    let a = Server::start_env(dirs[0].path(), Some(&url), &token, &[]);
    let b = Server::start_env(dirs[1].path(), Some(&url), &token, &[]);
    a.api.wait_ready().await;
    b.api.wait_ready().await;
    let v2 = a.api.upload("payment", component("payment-v2")).await.json::<Value>().await.expect("json")["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    converged(&[&a.api, &b.api], "payment", &v2).await;
    // Host B restarts; its folder still holds the first payment.
    b.kill();
    let b = Server::start_env(dirs[1].path(), Some(&url), &token, &[]);
    b.api.wait_ready().await;
    converged(&[&a.api, &b.api], "payment", &v2).await;
    a.kill();
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_swap_under_load_across_the_fleet_loses_nothing() {
    let url = fresh_pg_database().await;
    let dirs = host_dirs(2);
    let token = format!("t-{}", rand_id());
    let (_archive, env) = shared_archive();
    let servers: Vec<Server> = dirs.iter().map(|d| Server::start_env(d.path(), Some(&url), &token, &env)).collect();
    for server in &servers {
        server.api.wait_ready().await;
    }
    servers[0].api.stock_up("SKU-1", 1000).await;
    let hosts = Arc::new(parking_lot::Mutex::new(servers.iter().map(|s| s.api.clone()).collect::<Vec<_>>()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let first = tokio::spawn({
        let (hosts, accepted) = (hosts.clone(), accepted.clone());
        async move { place_across(hosts, "before", 80, accepted).await }
    });
    // Swap once some orders were captured on the first version, while the rest flow.
    eventually(WAIT, "an order completes on the first version", async || {
        servers[0].api.all_orders().await.iter().any(|o| o["status"] == "completed")
    })
    .await;
    let uploaded = servers[1].api.upload("payment", component("payment-v2")).await;
    assert_eq!(uploaded.status(), 200);
    let v2 = uploaded.json::<Value>().await.expect("json")["digest"].as_str().expect("digest").to_owned();
    converged(&[&servers[0].api, &servers[1].api], "payment", &v2).await;
    let mut ids = first.await.expect("placed");
    ids.extend(place_across(hosts, "after", 40, accepted).await);
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 1000)]);
    servers[0].api.assert_invariants(&stocked).await;
    let mut versions = BTreeSet::new();
    for id in &ids {
        let order = servers[0].api.order(id).await;
        assert_eq!(order["status"], "completed", "{order}");
        for event in order["timeline"].as_array().expect("timeline") {
            if event["kind"] == "payment.captured" {
                versions.insert(event["step_version"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    assert_eq!(versions.len(), 2, "both payment versions captured orders: {versions:?}");
    for server in servers {
        server.kill();
    }
}

/// One read-modify-write of a counter, as a batch does it: read with the version, write
/// the next value, commit; a conflict re-runs it on fresh state. Returns the re-runs.
async fn increment(store: &dyn Store, event_id: String) -> u32 {
    let mut reruns = 0;
    loop {
        let seen = store.state_get("counter", "n").await.expect("read");
        let n: u64 = seen.as_ref().map(|v| String::from_utf8_lossy(&v.value).parse().unwrap_or(0)).unwrap_or(0);
        let commit = BatchCommit {
            consumer: "counter".to_owned(),
            inbox: vec![(event_id.clone(), "test".to_owned())],
            state: vec![("n".to_owned(), Some((n + 1).to_string().into_bytes()))],
            state_reads: vec![("n".to_owned(), seen.map(|v| v.version))],
            ..BatchCommit::default()
        };
        match store.commit_batch(&commit).await {
            Ok(()) => return reruns,
            Err(StoreError::Conflict(_)) => reruns += 1,
            Err(error) => panic!("commit failed: {error}"),
        }
    }
}

async fn no_update_is_lost(db: Db, writers: usize, each: usize) {
    let (store, _dir) = test_store(db).await;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut reruns = 0;
                for i in 0..each {
                    reruns += increment(&*store, format!("e-{w}-{i}")).await;
                }
                reruns
            })
        })
        .collect();
    let reruns: u32 = futures::future::join_all(tasks).await.into_iter().map(|r| r.expect("joins")).sum();
    let n = store.state_get("counter", "n").await.expect("read").expect("written");
    assert_eq!(String::from_utf8_lossy(&n.value), (writers * each).to_string(), "an update was lost");
    eprintln!("{db:?}: {writers} writers × {each} increments, {reruns} re-runs after conflicts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update_on_postgres() {
    no_update_is_lost(Db::Postgres, 4, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SQL Server: set WASAGA_TEST_MSSQL_URL"]
async fn concurrent_writers_lose_no_update_on_mssql() {
    no_update_is_lost(Db::Mssql, 4, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update_on_sqlite() {
    no_update_is_lost(Db::Sqlite, 4, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_handling_the_same_event_commit_it_once() {
    let (store, _dir) = test_store(Db::Postgres).await;
    let commit = |value: &str| BatchCommit {
        consumer: "step".to_owned(),
        inbox: vec![("the-event".to_owned(), "test".to_owned())],
        state: vec![("k".to_owned(), Some(value.as_bytes().to_vec()))],
        state_reads: vec![("k".to_owned(), None)],
        ..BatchCommit::default()
    };
    let (first, second) = (commit("a"), commit("b"));
    let (a, b) = tokio::join!(store.commit_batch(&first), store.commit_batch(&second));
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "exactly one commit wins: {a:?} {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert!(matches!(loser, Err(StoreError::Conflict(_))), "the loser conflicts: {loser:?}");
    let value = store.state_get("step", "k").await.expect("read").expect("written");
    assert!(matches!(value.value.as_slice(), b"a" | b"b"), "{:?}", value.value);
}

/// Deliveries queued with a commit: an event's only if the event was written, and the
/// events written as relayed, so the relay never publishes them a second time.
async fn deliveries_are_queued_only_for_written_events(db: Db) {
    use wasaga_host::store::{Channel, OrderTransition};
    let (store, _dir) = test_store(db).await;
    let event = |id: &str, order_id: &str| stored_event(id, "k", order_id);
    let queued = |id: &str| ("c".to_owned(), id.to_owned(), format!("wire {id}"));
    store.create_order(&new_order("o-1", event("placed", "o-1")), Some(&[queued("placed")])).await.expect("placed");
    let transition = |order_id: &str, id: &str| OrderTransition {
        order_id: order_id.to_owned(),
        from: &["pending"],
        to: "completed",
        reason: None,
        event: event(id, order_id),
    };
    let commit = BatchCommit {
        consumer: "host".to_owned(),
        outbox: vec![event("emitted", "o-1")],
        // The first applies; the second names no order, so writes no event.
        transitions: vec![transition("o-1", "completed"), transition("o-missing", "phantom")],
        queued: Some(vec![queued("emitted"), queued("completed"), queued("phantom")]),
        ..BatchCommit::default()
    };
    store.commit_batch(&commit).await.expect("committed");
    let claimed: BTreeSet<String> = store
        .claim("c", "h", i64::MAX / 4, 30_000, 10)
        .await
        .expect("claims")
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    let expected: BTreeSet<String> = ["placed", "emitted", "completed"].map(String::from).into();
    assert_eq!(claimed, expected, "{db:?}: a delivery for each written event, none for the phantom");
    let unrelayed = store.unrelayed(Channel::Transport, 10).await.expect("reads");
    assert!(unrelayed.is_empty(), "{db:?}: queued events are not relayed again: {unrelayed:?}");
}

on_every_store!(a_batch_applies_its_transitions_in_order);

/// A batch's transitions and stock levels end as if applied one at a time, in order: an
/// order changed twice in a batch sees its first change, a transition that no longer
/// applies writes no event, and the newest level of a SKU stays whatever the order.
async fn a_batch_applies_its_transitions_in_order(db: Db) {
    use wasaga_host::store::{Channel, OrderTransition, StockRow};
    let (store, _dir) = test_store(db).await;
    for n in 1..=2 {
        let (order, placed) = (format!("o-{n}"), format!("placed-{n}"));
        store.create_order(&new_order(&order, stored_event(&placed, "k", &order)), None).await.expect("placed");
    }
    let transition = |order_id: &str, from: &'static [&'static str], to: &'static str, id: &str| OrderTransition {
        order_id: order_id.to_owned(),
        from,
        to,
        reason: (to == "cancelled").then(|| format!("reason of {id}")),
        event: stored_event(id, "k", order_id),
    };
    let level =
        |sku: &str, seq: i64| StockRow { sku: sku.to_owned(), available: 10 - seq, reserved: seq, sold: 0, seq };
    let commit = BatchCommit {
        consumer: "host".to_owned(),
        transitions: vec![
            transition("o-1", &["pending"], "completed", "t1"),
            transition("o-2", &["pending"], "cancelled", "t2"),
            // o-1 is completed by now: this one does not apply.
            transition("o-1", &["pending"], "cancelled", "t3"),
            // and this one does, from the state t1 left.
            transition("o-1", &["completed"], "refunded", "t4"),
            transition("o-missing", &["pending"], "completed", "t5"),
        ],
        stock: vec![level("SKU-A", 2), level("SKU-A", 1), level("SKU-B", 1), level("SKU-A", 3), level("SKU-B", 0)],
        ..BatchCommit::default()
    };
    store.commit_batch(&commit).await.expect("committed");

    let o1 = store.order("o-1").await.expect("reads").expect("o-1");
    assert_eq!((o1.status.as_str(), o1.cancel_reason.as_deref()), ("refunded", None), "{db:?}: {o1:?}");
    let o2 = store.order("o-2").await.expect("reads").expect("o-2");
    assert_eq!((o2.status.as_str(), o2.cancel_reason.as_deref()), ("cancelled", Some("reason of t2")), "{db:?}");
    let written: Vec<String> =
        store.unrelayed(Channel::Transport, 10).await.expect("reads").into_iter().map(|(_, e)| e.id).collect();
    assert_eq!(written, ["placed-1", "placed-2", "t1", "t2", "t4"], "{db:?}: the applied ones' events, in order");
    let a = store.stock("SKU-A").await.expect("reads").expect("SKU-A");
    assert_eq!((a.seq, a.available), (3, 7), "{db:?}: the newest level stays: {a:?}");
    let b = store.stock("SKU-B").await.expect("reads").expect("SKU-B");
    assert_eq!((b.seq, b.available), (1, 9), "{db:?}: the newest level stays: {b:?}");
}

/// An event waiting for the relay (a stock level set through the API) is not overtaken:
/// while one waits, a commit leaves its own events to the relay too, in outbox order.
async fn a_commit_does_not_queue_past_an_event_waiting_for_the_relay(db: Db) {
    use wasaga_host::store::Channel;
    let (store, _dir) = test_store(db).await;
    let event = |id: &str, kind: &str| stored_event(id, kind, "o-1");
    store.emit(&event("stock", "stock.set")).await.expect("emitted");
    let queued = [("inventory".to_owned(), "placed".to_owned(), "wire".to_owned())];
    store.create_order(&new_order("o-1", event("placed", "order.placed")), Some(&queued)).await.expect("placed");
    let claimed = store.claim("inventory", "h", i64::MAX / 4, 30_000, 10).await.expect("claims");
    assert!(claimed.is_empty(), "{db:?}: the order was queued past the stock level: {claimed:?}");
    let waiting: Vec<String> =
        store.unrelayed(Channel::Transport, 10).await.expect("reads").into_iter().map(|(_, e)| e.id).collect();
    assert_eq!(waiting, ["stock", "placed"], "{db:?}: both wait for the relay, in order");

    // Once they are relayed, the next order queues its own delivery.
    let seqs: Vec<i64> =
        store.unrelayed(Channel::Transport, 10).await.expect("reads").into_iter().map(|(s, _)| s).collect();
    store.mark_relayed(Channel::Transport, &seqs, 1).await.expect("relayed");
    let order = |n: u32| {
        let id = format!("placed-{n}");
        (
            new_order(&format!("o-{n}"), stored_event(&id, "order.placed", &format!("o-{n}"))),
            [("inventory".to_owned(), id, "wire".to_owned())],
        )
    };
    let (new, queued) = order(2);
    store.create_order(&new, Some(&queued)).await.expect("placed");
    let claimed = store.claim("inventory", "h", i64::MAX / 4, 30_000, 10).await.expect("claims");
    assert_eq!(claimed.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["placed-2"], "{db:?}");
    store.settle("h", &[claimed[0].id], &[]).await.expect("settles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_does_not_queue_past_an_event_waiting_for_the_relay_on_sqlite() {
    a_commit_does_not_queue_past_an_event_waiting_for_the_relay(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_does_not_queue_past_an_event_waiting_for_the_relay_on_postgres() {
    a_commit_does_not_queue_past_an_event_waiting_for_the_relay(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_queued_only_for_written_events_on_sqlite() {
    deliveries_are_queued_only_for_written_events(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_queued_only_for_written_events_on_postgres() {
    deliveries_are_queued_only_for_written_events(Db::Postgres).await;
}

mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the interleaving of writers and increments, the counter ends at the
        /// number of increments: a stale read always conflicts and re-runs.
        #[test]
        fn interleaved_writers_never_lose_an_update(writers in 2usize..5, each in 1usize..12) {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            runtime.block_on(no_update_is_lost(Db::Sqlite, writers, each));
        }
    }
}

/// The value of metric `name` on the line with `label`, from this host's metrics.
async fn metric(api: &Api, name: &str, label: &str) -> Option<u64> {
    let metrics = api.get("/metrics").await.text().await.ok()?;
    let prefix = format!("{name}{{");
    let line = metrics.lines().find(|l| l.starts_with(&prefix) && l.contains(label))?;
    line.rsplit(' ').next()?.parse::<f64>().ok().map(|n| n as u64)
}

/// Partitions of the analytics group this host consumes, from its metrics.
async fn stream_partitions(api: &Api) -> Option<u64> {
    metric(api, "wasaga_stream_partitions", "analytics").await
}

/// Wait until the hosts consume 2 of the topic's 6 partitions each.
async fn shared_evenly(servers: &[Server]) {
    eventually(WAIT, "each host consumes 2 of the 6 partitions", async || {
        for server in servers {
            if stream_partitions(&server.api).await != Some(2) {
                return false;
            }
        }
        true
    })
    .await;
}

/// What three hosts sharing the stream share: a durable tansu, Azurite, one database.
struct StreamFleet {
    _brokers: Brokers,
    url: String,
    dirs: Vec<tempfile::TempDir>,
    token: String,
    env: Vec<(&'static str, String)>,
}

impl StreamFleet {
    async fn new() -> StreamFleet {
        let brokers = Brokers::start(true).await;
        let env = brokers.env();
        let (url, dirs, token) = (fresh_pg_database().await, host_dirs(3), format!("t-{}", rand_id()));
        StreamFleet { _brokers: brokers, url, dirs, token, env }
    }

    fn start(&self, i: usize) -> Server {
        Server::start_env(self.dirs[i].path(), Some(&self.url), &self.token, &self.env)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_stream_and_archive_each_event_once_through_a_kill() {
    let _shared = RABBIT.read().await;
    let fleet = StreamFleet::new().await;
    let start = |i: usize| fleet.start(i);
    let mut servers: Vec<Server> = (0..3).map(start).collect();
    for server in &servers {
        server.api.wait_ready().await;
    }
    servers[0].api.stock_up("SKU-1", 1000).await;
    let mut ids = Vec::new();
    for i in 0..60usize {
        ids.push(servers[i % 3].api.place(&[("SKU-1", 1)], ["tok_ok", "tok_decline"][i % 2]).await);
    }
    // Every host a member with its share: the analytics work is spread, not stood by.
    shared_evenly(&servers).await;
    // One host dies with deliveries in hand; the others take its partitions once its
    // leases end and it leaves the list of live hosts, then give them back to it.
    servers.remove(2).kill();
    for i in 0..60usize {
        ids.push(servers[i % 2].api.place(&[("SKU-1", 1)], ["tok_ok", "tok_decline"][i % 2]).await);
    }
    eventually(WAIT, "the two live hosts take all 6 partitions", async || {
        let mut total = 0;
        for server in &servers {
            total += stream_partitions(&server.api).await.unwrap_or(0);
        }
        total == 6
    })
    .await;
    servers.push(start(2));
    servers[2].api.wait_ready().await;
    for i in 0..30usize {
        ids.push(servers[i % 3].api.place(&[("SKU-1", 1)], "tok_ok").await);
    }
    shared_evenly(&servers).await;
    // Every event of every order archived once, none skipped (`assert_invariants`).
    servers[1].api.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 1000)])).await;
    assert_eq!(servers[0].api.all_orders().await.len(), ids.len());
    // The group's offsets reach the end of every partition: each holder committed what
    // it settled, so the next holder resumes there.
    let env: BTreeMap<&str, String> = fleet.env.iter().cloned().collect();
    let (brokers, namespace) = (env["WASAGA_STREAM_BROKERS"].clone(), env["WASAGA_NAMESPACE"].clone());
    eventually(WAIT, "the committed offsets reach every partition's end", async || {
        let (brokers, namespace) = (brokers.clone(), namespace.clone());
        tokio::task::spawn_blocking(move || committed_to_the_end(&brokers, &namespace)).await.unwrap_or(false)
    })
    .await;
}

/// Hosts join the group one after another while orders flow: each join moves partitions
/// with messages fetched and not yet settled, and every event is still archived once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_joining_while_events_flow_archive_each_event_once() {
    let _shared = RABBIT.read().await;
    let fleet = StreamFleet::new().await;
    let start = |i: usize| fleet.start(i);
    let mut servers = vec![start(0)];
    servers[0].api.wait_ready().await;
    servers[0].api.stock_up("SKU-1", 1000).await;
    let hosts = Arc::new(parking_lot::Mutex::new(vec![servers[0].api.clone()]));
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Waves of 10 orders until told to stop: orders flow through every join.
    let placing = tokio::spawn({
        let (hosts, accepted, stop) = (hosts.clone(), accepted.clone(), stop.clone());
        async move {
            let mut ids = Vec::new();
            for wave in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                ids.extend(place_across(hosts.clone(), &format!("join{wave}"), 10, accepted.clone()).await);
            }
            ids
        }
    });
    let mut after = 0;
    for i in 1..3 {
        after += 50;
        eventually(WAIT, "orders flow before the next host joins", async || accepted.load(Ordering::Relaxed) >= after)
            .await;
        servers.push(start(i));
        servers[i].api.wait_ready().await;
        hosts.lock().push(servers[i].api.clone());
    }
    after = accepted.load(Ordering::Relaxed) + 50;
    eventually(WAIT, "orders flow after the last join", async || accepted.load(Ordering::Relaxed) >= after).await;
    stop.store(true, Ordering::Relaxed);
    let ids = placing.await.expect("every order placed");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "one order per key");
    shared_evenly(&servers).await;
    // Every event of every order archived once, none skipped (`assert_invariants`).
    servers[2].api.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 1000)])).await;
    for server in servers {
        server.kill();
    }
}

/// Whether the analytics group's committed offset is each partition's high watermark.
fn committed_to_the_end(brokers: &str, namespace: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = format!("{namespace}.events");
    let Ok(consumer) = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{namespace}.analytics"))
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..6 {
        list.add_partition(&topic, partition);
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(5)) else { return false };
    committed.elements().iter().all(|element| {
        let Ok((_, high)) = consumer.fetch_watermarks(&topic, element.partition(), Duration::from_secs(5)) else {
            return false;
        };
        high == 0 || element.offset() == rdkafka::Offset::Offset(high)
    })
}

/// Batches `consumer` handled on this host, from its metrics.
async fn batches(api: &Api, consumer: &str) -> u64 {
    metric(api, "wasaga_batch_deliveries_count", &format!("consumer=\"{consumer}\"")).await.unwrap_or(0)
}

/// Two hosts on RabbitMQ: the host ranked first on the payment queue handles all of it;
/// when its database goes away it stands aside and the other host takes the queue, so
/// orders keep completing; when its database is back it takes the queue again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_loses_its_database_hands_its_queue_to_the_fleet() {
    use wasaga_host::transport::RabbitSettings;
    let _shared = RABBIT.read().await;
    let namespace = format!("t{}", rand_id());
    let rank = |host: &str| {
        RabbitSettings {
            url: String::new(),
            namespace: namespace.clone(),
            retry_base: Duration::from_millis(10),
            retry_cap: Duration::from_secs(1),
            host_id: host.to_owned(),
        }
        .consumer_priority("payment")
    };
    // Name the hosts so that the one whose database is cut ranks first on payment.
    let (first, second) = ("fleet-first", "fleet-second");
    let (first, second) = if rank(first) > rank(second) { (first, second) } else { (second, first) };
    let url = fresh_pg_database().await;
    let proxy = Proxy::start(0, 5432).await;
    let database = url.rsplit('/').next().expect("database name").to_owned();
    let cut_url = format!("postgres://postgres@127.0.0.1:{}/{database}", proxy.port);
    let (_archive, archive) = shared_archive();
    let env = |host: &str| {
        let mut env = archive.clone();
        env.extend([
            ("WASAGA_TRANSPORT_URL", crate::brokers::amqp_url()),
            ("WASAGA_NAMESPACE", namespace.clone()),
            ("WASAGA_HOST_ID", host.to_owned()),
        ]);
        env
    };
    let dirs = host_dirs(2);
    let token = format!("t-{}", rand_id());
    let cut = Server::start_env(dirs[0].path(), Some(&cut_url), &token, &env(first));
    let kept = Server::start_env(dirs[1].path(), Some(&url), &token, &env(second));
    cut.api.wait_ready().await;
    kept.api.wait_ready().await;
    kept.api.stock_up("SKU-1", 100).await;
    let place = async |n: usize| {
        let ids: Vec<String> =
            futures::future::join_all((0..n).map(|_| kept.api.place(&[("SKU-1", 1)], "tok_ok"))).await;
        eventually(WAIT, &format!("{n} orders complete"), async || {
            for id in &ids {
                if kept.api.order(id).await["status"] != "completed" {
                    return false;
                }
            }
            true
        })
        .await;
    };
    place(5).await;
    assert!(batches(&cut.api, "payment").await > 0, "the host ranked first handles payment");
    assert_eq!(batches(&kept.api, "payment").await, 0, "the other host only stands by");
    proxy.set(Flow::Cut);
    eventually(WAIT, "the cut host is not ready", async || cut.api.get("/readyz").await.status() == 503).await;
    let before = batches(&kept.api, "payment").await;
    place(10).await;
    assert!(batches(&kept.api, "payment").await > before, "the other host took the queue");
    proxy.set(Flow::Open);
    eventually(WAIT, "the cut host is ready again", async || cut.api.get("/readyz").await.status() == 200).await;
    place(5).await;
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 100)]);
    kept.api.assert_invariants(&stocked).await;
    cut.kill();
    kept.kill();
}
