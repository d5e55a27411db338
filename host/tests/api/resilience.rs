//! Failure paths that must neither lose, stall nor wrongly dead-letter an event: a step
//! blocked in every call, a SIGTERM while it blocks, a step that is not loaded, a store
//! holding locks past its timeout, a message lost after it was relayed, poison in the
//! host's own consumer, an observer failing a compensation kind, a store down at start,
//! bad characters in every path and query, secrets in errors, and tables under retention.

use crate::crash::Server;
use crate::helpers::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use wasaga_host::event::StoredEvent;
use wasaga_host::saga::SagaContext;

const WAIT: Duration = Duration::from_secs(90);

fn hostile_event(kind: &str, order_id: &str) -> StoredEvent {
    SagaContext::host_event(kind, order_id, "{}".to_owned())
}

async fn dead_letters(api: &Api) -> Vec<Value> {
    let body: Value = api.admin_get("/api/admin/dead-letters").await.json().await.expect("dead letters are JSON");
    body.as_array().cloned().unwrap_or_else(|| panic!("a list of dead letters: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_blocked_in_every_call_is_dead_lettered_not_stuck() {
    let (app, store) = pg_app(&["hostile"], |_| {}).await;
    store.emit(&hostile_event("hostile.sleep", "o-sleep")).await.expect("emit");
    store.emit(&hostile_event("hostile.ok", "o-after")).await.expect("emit");
    eventually(WAIT, "the sleeping event is dead-lettered", async || !dead_letters(&app).await.is_empty()).await;
    let dead = dead_letters(&app).await;
    assert_eq!(dead[0]["event"]["kind"], "hostile.sleep");
    assert_eq!(dead[0]["attempts"], 5, "every attempt was made: {}", dead[0]);
    assert!(dead[0]["error"].as_str().unwrap_or_default().contains("deadline"), "{}", dead[0]);
    eventually(WAIT, "the next event is handled", async || {
        store.timelines(&["o-after".to_owned()]).await.expect("timeline").iter().any(|t| t.kind == "hostile.done")
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_host_whose_step_is_blocked_and_loses_nothing() {
    let url = fresh_pg_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    std::fs::write(dir.path().join("plugins/hostile.wasm"), component("hostile")).expect("copy");
    let token = format!("t-{}", rand_id());
    let env = [("WASAGA_STEP_DEADLINE_MS", "5000".to_owned()), ("WASAGA_SHUTDOWN_TIMEOUT_MS", "1000".to_owned())];
    let server = Server::start_env(dir.path(), Some(&url), &token, &env);
    let store = wasaga_host::store::open(&url, &Default::default()).await.expect("store");
    for i in 0..4 {
        store.emit(&hostile_event("hostile.sleep", &format!("o-{i}"))).await.expect("emit");
    }
    store.emit(&hostile_event("hostile.ok", "o-ok")).await.expect("emit");
    // Let the consumer get stuck in a call, then ask the host to stop.
    eventually(WAIT, "the host is calling the sleeping step", async || {
        let metrics = server.api.get("/metrics").await.text().await.unwrap_or_default();
        metrics.contains("wasaga_step_call_seconds") || metrics.contains("hostile")
    })
    .await;
    let mut server = server;
    let status = server.terminate_and_wait(Duration::from_secs(30));
    assert!(status.is_some(), "SIGTERM did not stop the host within 30 s");
    // Nothing is lost: a new host on the same store handles the rest.
    let server = Server::start_env(dir.path(), Some(&url), &token, &[]);
    eventually(WAIT, "the event after the sleeping ones is handled", async || {
        store.timelines(&["o-ok".to_owned()]).await.expect("timeline").iter().any(|t| t.kind == "hostile.done")
    })
    .await;
    server.kill();
}

/// Open a connection to `addr` and send the headers of a `PUT /api/stock/SKU-1` with a
/// 64-byte body, then half of it; returns once the server has started reading the body
/// (it answered `100 Continue`).
async fn half_sent_request(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /api/stock/SKU-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("100 Continue") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("100 Continue in time").expect("read");
        assert!(n > 0, "the server closed the connection: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    stream.write_all(br#"{"available": 1, "#).await.expect("half a body");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_half_sent_request_exits_within_the_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins folder");
    let token = format!("t-{}", rand_id());
    // The request and body timeouts are far away: only the shutdown bound can end this.
    let env = [
        ("WASAGA_SHUTDOWN_TIMEOUT_MS", "1500".to_owned()),
        ("WASAGA_REQUEST_TIMEOUT_MS", "600000".to_owned()),
        ("WASAGA_BODY_TIMEOUT_MS", "600000".to_owned()),
    ];
    let mut server = Server::start_env(dir.path(), None, &token, &env);
    let _stream = half_sent_request(server.api.addr, &token).await;
    let started = std::time::Instant::now();
    let status = server.terminate_and_wait(Duration::from_secs(10));
    let status = status.expect("SIGTERM did not stop the host within 10 s of a 1.5 s bound");
    assert!(status.success(), "the host exited with {status}");
    eprintln!("exited {} ms after SIGTERM", started.elapsed().as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_as_soon_as_the_host_says_it_listens_is_a_clean_stop() {
    // The handler must be in place before the line is written; a few starts give the
    // signal a chance to land in the gap there used to be.
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins folder");
        let mut server = Server::start_env(dir.path(), None, &format!("t-{}", rand_id()), &[]);
        let status = server.terminate_and_wait(Duration::from_secs(20)).expect("stops within 20 s");
        assert!(status.success(), "the host exited with {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_refused_after_the_request_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins folder");
    let mut settings = test_settings(&dir, None);
    settings.body_timeout_ms = 300;
    let app = spawn_with(dir, settings).await;
    let mut stream = half_sent_request(app.addr, &app.token).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().find(|l| l.starts_with("HTTP/1.1 4")).unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_for_a_step_that_is_not_loaded() {
    use wasaga_host::transport::{EmbeddedTransport, Transport};
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = wasaga_host::store::open(&url, &Default::default()).await.expect("store");
    let stores = wasaga_host::store::Stores::single(store.clone());
    let transport = EmbeddedTransport::new(stores.clone(), "host-a".to_owned()).await.expect("transport");
    transport.declare("payment", &["stock.reserved".to_owned()]).await.expect("declare");
    drop(transport);
    // A later process where payment is not loaded: the subscription was kept.
    let transport = EmbeddedTransport::new(stores, "host-b".to_owned()).await.expect("transport");
    let event = hostile_event("stock.reserved", "o-1");
    transport.publish(std::slice::from_ref(&event)).await.expect("publish");
    let waiting = transport.receive("payment", 10, Duration::from_millis(100)).await.expect("receive");
    assert_eq!(waiting.len(), 1, "the event waits for payment");
    assert_eq!(waiting[0].event.id, event.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_a_steps_file_still_completes_every_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let app = spawn_app_in(dir).await;
    app.stock_up("SKU-1", 50).await;
    let ids: Vec<String> = futures::future::join_all((0..10).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    let dir = app.stop().await;
    // The operator restarts without payment.wasm: the fleet's registry still has it.
    std::fs::remove_file(dir.path().join("plugins/payment.wasm")).expect("remove");
    let app = spawn_app_in(dir).await;
    for id in &ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_statement_timeout_fails_no_order() {
    let (app, _store) = pg_app(&[], |s| s.store_timeout_ms = 500).await;
    app.stock_up("SKU-1", 100).await;
    // The test's own connection, to hold the lock.
    let admin = pg_url_of(&app).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.expect("connect");
    let placing = {
        let api = app.api.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..20 {
                ids.push(api.place(&[("SKU-1", 1)], "tok_ok").await);
            }
            ids
        })
    };
    sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
    sqlx::query("LOCK TABLE step_state IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.expect("lock");
    // Hold it well past the statement timeout while orders flow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("ROLLBACK").execute(&mut conn).await.expect("rollback");
    let ids = placing.await.expect("orders placed");
    for id in &ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
    assert!(dead_letters(&app).await.is_empty(), "an outage dead-lettered a healthy event");
    app.stop().await;
}

/// The PostgreSQL URL a test app runs on.
async fn pg_url_of(app: &TestApp) -> String {
    app.store_url.clone().expect("a PostgreSQL app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_lost_after_the_relay_are_published_again() {
    let (app, _store) = pg_app(&[], |s| {
        s.redrive_after_ms = 1500;
        s.maintenance_interval_ms = 300;
    })
    .await;
    app.stock_up("SKU-1", 100).await;
    let admin = pg_url_of(&app).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.expect("connect");
    // Orders whose deliveries to payment vanish (a broker that lost them).
    sqlx::query("DELETE FROM subscriptions WHERE consumer = 'payment'").execute(&mut conn).await.expect("unsubscribe");
    let ids: Vec<String> = futures::future::join_all((0..5).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    eventually(WAIT, "inventory reserved them", async || {
        let mut reserved = 0;
        for id in &ids {
            let order = app.order(id).await;
            reserved += usize::from(
                order["timeline"].as_array().is_some_and(|t| t.iter().any(|e| e["kind"] == "stock.reserved")),
            );
        }
        reserved == ids.len()
    })
    .await;
    // Payment is subscribed again (a swap or restart re-declares it); the lost events
    // come back by the redrive alone.
    sqlx::query("INSERT INTO subscriptions (consumer, pattern) VALUES ('payment', 'stock.reserved'), ('payment', 'order.cancelled')")
        .execute(&mut conn)
        .await
        .expect("subscribe");
    for id in &ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 100)]);
    app.assert_invariants(&stocked).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_in_the_hosts_own_consumer_is_set_aside_alone() {
    let (app, store) = pg_app(&["hostile"], |settings| {
        settings.steps.entry("hostile".to_owned()).or_default().owns = vec!["stock.released".to_owned()];
    })
    .await;
    app.stock_up("SKU-1", 100).await;
    store.emit(&hostile_event("hostile.poison-stock", "o-poison")).await.expect("emit");
    let ids: Vec<String> = futures::future::join_all((0..10).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    for id in &ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
    eventually(WAIT, "the poison is dead-lettered by the host", async || {
        dead_letters(&app).await.iter().any(|d| d["step"] == "host" && d["event"]["kind"] == "stock.released")
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_failing_a_compensation_kind_is_dead_lettered_after_its_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    std::fs::write(dir.path().join("plugins/observer.wasm"), component("observer")).expect("copy");
    let app = spawn_app_in(dir).await;
    app.stock_up("SKU-1", 10).await;
    let id = app.place(&[("SKU-1", 1)], "tok_ok").await;
    eventually(WAIT, "the order completes", async || app.order(&id).await["status"] == "completed").await;
    eventually(WAIT, "the observer's failure is dead-lettered", async || {
        dead_letters(&app).await.iter().any(|d| d["step"] == "observer" && d["event"]["kind"] == "order.completed")
    })
    .await;
    let dead = dead_letters(&app).await;
    let observed = dead.iter().find(|d| d["step"] == "observer").expect("dead letter");
    assert_eq!(observed["attempts"], 5, "the normal attempts, not forever: {observed}");
    assert_eq!(app.order(&id).await["status"], "completed", "an observer's failure drives no order");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_start_leaves_the_host_up_and_not_ready_until_it_answers() {
    // A port where nothing listens yet; a proxy to PostgreSQL opens there later.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = parked.local_addr().expect("addr").port();
    drop(parked);
    let real = fresh_pg_database().await;
    let database = real.rsplit('/').next().expect("database name").to_owned();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{database}");
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let settings = test_settings(&dir, Some(url));
    let app = spawn_with(dir, settings).await;
    assert_eq!(app.get("/healthz").await.status(), 200, "the process is up");
    let not_ready = app.get("/readyz").await;
    assert_eq!(not_ready.status(), 503);
    let body: Value = not_ready.json().await.expect("problem json");
    assert!(body["detail"].as_str().unwrap_or_default().contains("store"), "names what it waits for: {body}");
    assert_eq!(app.post_json("/api/orders", &order_body(&[("SKU-1", 1)], "tok_ok")).await.status(), 503);
    // The store starts answering.
    let proxy = Proxy::start(port, 5432).await;
    eventually(WAIT, "ready once the store answers", async || app.get("/readyz").await.status() == 200).await;
    app.stock_up("SKU-1", 5).await;
    let id = app.place(&[("SKU-1", 1)], "tok_ok").await;
    eventually(WAIT, "the order completes", async || app.order(&id).await["status"] == "completed").await;
    app.stop().await;
    drop(proxy);
}

async fn every_route_refuses_control_characters(db: Db) {
    let app = spawn_saga(db).await;
    let paths = [
        ("GET", "/api/orders/abc%00def"),
        ("POST", "/api/orders/abc%00def/cancel"),
        ("GET", "/api/orders?status=pending%00"),
        ("GET", "/api/orders?after=1%00"),
        ("GET", "/api/orders?limit=%00"),
        ("GET", "/api/stock/SKU%00-1"),
        ("PUT", "/api/stock/SKU%00-1"),
        ("GET", "/api/admin/archive?order_id=o%00"),
        ("POST", "/api/admin/dead-letters/x%00y/replay"),
        ("DELETE", "/api/admin/dead-letters/x%00y"),
        ("PUT", "/api/admin/plugins/pay%00ment"),
        ("POST", "/api/admin/plugins/pay%00ment/rollback"),
        ("GET", "/api/orders/%01"),
    ];
    for (method, path) in paths {
        let request = app
            .http
            .request(method.parse().expect("method"), app.url(path))
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body("{\"available\": 1}");
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        assert_eq!(status, 400, "{db:?} {method} {path}: {status} {}", response.text().await.unwrap_or_default());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_control_characters_on_sqlite() {
    every_route_refuses_control_characters(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_control_characters_on_postgres() {
    every_route_refuses_control_characters(Db::Postgres).await;
}

#[tokio::test]
async fn secrets_never_reach_an_error_message() {
    let options = wasaga_host::store::StoreOptions { connect_timeout: Duration::from_secs(2), ..Default::default() };
    for url in [
        "postgres://app:hunter2-secret@127.0.0.1:1/db?bogus_option=1",
        "postgres://app:hunter2-secret@127.0.0.1:1/db",
        "mssql://sa:hunter2-secret@127.0.0.1:1/db?color=blue",
        "mysql://app:hunter2-secret@127.0.0.1/db",
    ] {
        let error = match wasaga_host::store::open(url, &options).await {
            Ok(_) => panic!("{url} opened"),
            Err(error) => error.to_string(),
        };
        assert!(!error.contains("hunter2"), "{url}: {error}");
    }
    for url in ["az://archive?access_key=hunter2-secret&bogus=1", "s3://b?secret_access_key=hunter2-secret&nope=2"] {
        let error = match wasaga_host::archive::ObjectArchive::from_url(url) {
            Ok(_) => panic!("{url} opened"),
            Err(error) => error.to_string(),
        };
        assert!(!error.contains("hunter2"), "{url}: {error}");
    }
}

/// Start `wasaga serve` with `env` and collect what it writes to stderr until `done`
/// says enough (or it exits); returns every line.
fn stderr_of_serve(dir: &std::path::Path, env: &[(&str, &str)], done: impl Fn(&[String]) -> bool) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(wasaga_bin())
        .arg("serve")
        .env("WASAGA_HTTP_ADDR", "127.0.0.1:0")
        .env("WASAGA_DATA_DIR", dir.join("data"))
        .env("WASAGA_PLUGINS_DIR", dir.join("plugins"))
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasaga starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while !done(&lines) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("waited 60 s; saw:\n{}", lines.join("\n")),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn a_password_with_url_delimiters_never_reaches_a_log_line() {
    let leaked = |lines: &[String], pieces: &[&str]| {
        lines.iter().find(|line| pieces.iter().any(|piece| line.contains(piece))).cloned()
    };
    // A URL parsers misread (host `guest`, port 12, the rest path and fragment): the
    // host takes it, cannot reach the broker, and says so, with the URL, again and again.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins folder");
    let transport = "amqp://guest:12/secretA#secretB?secretC@127.0.0.1:1/%2f";
    let lines = stderr_of_serve(dir.path(), &[("WASAGA_TRANSPORT_URL", transport)], |lines| {
        lines.iter().filter(|line| line.contains("RabbitMQ")).count() >= 2
            || lines.iter().any(|l| l.starts_with("error:"))
    });
    assert_eq!(leaked(&lines, &["secretA", "secretB", "secretC"]), None, "the password reached a log line");
    assert!(lines.iter().any(|line| line.contains("guest:***@")), "{}", lines.join("\n"));
    // One no parser takes: refused at start, without the password.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins folder");
    for (variable, url) in [
        ("WASAGA_TRANSPORT_URL", "amqp://guest:pa/ss#w?rd@127.0.0.1:1/%2f"),
        ("WASAGA_STORE_URL", "postgres://app:pa/ss#w?rd@127.0.0.1:1/db"),
    ] {
        let lines = stderr_of_serve(dir.path(), &[(variable, url)], |lines| {
            lines.iter().any(|line| line.contains("waiting for the store") || line.starts_with("error:"))
        });
        assert_eq!(
            leaked(&lines, &["pa/ss", "ss#w", "w?rd", "#w?"]),
            None,
            "{variable}: the password reached a log line"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_tables_bounded_under_sustained_traffic() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.retain_inbox_secs = 2;
    settings.retain_outbox_secs = 2;
    settings.retain_idempotency_secs = 2;
    settings.maintenance_interval_ms = 300;
    // The redrive looks only within half the inbox retention.
    settings.redrive_after_ms = 500;
    let db = dir.path().join("data/wasaga.db");
    let app = spawn_with(dir, settings).await;
    let stocked = 10_000u64;
    app.stock_up("SKU-1", stocked).await;
    let count = async |table: &str| -> i64 {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.expect("read the file");
        let sql = format!("SELECT COUNT(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.expect("count")
    };
    let mut completed = 0u64;
    let mut peaks = BTreeMap::new();
    for wave in 0..4 {
        let ids: Vec<String> = futures::future::join_all((0..40).map(|i| {
            let api = app.api.clone();
            async move {
                let key = format!("w{wave}-{i}");
                let response = api
                    .http
                    .post(api.url("/api/orders"))
                    .header("idempotency-key", key)
                    .json(&order_body(&[("SKU-1", 1)], "tok_ok"))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 202);
                response.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").to_owned()
            }
        }))
        .await;
        for id in &ids {
            eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
        }
        completed += ids.len() as u64;
        // Let retention pass over the wave before the next one.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        for table in ["inbox", "outbox", "idempotency_keys", "deliveries"] {
            let rows = count(table).await;
            let peak = peaks.entry(table).or_insert(0);
            *peak = (*peak).max(rows);
        }
    }
    // One wave makes about 40 × 6 inbox rows; four waves without retention would hold 4×.
    for (table, peak) in &peaks {
        assert!(*peak < 400, "{table} grew to {peak} rows");
    }
    // Dedupe held throughout: nothing was reserved or sold twice.
    let level = app.stock("SKU-1").await.expect("stock");
    assert_eq!(level["sold"], completed, "{level}");
    assert_eq!(level["available"], stocked - completed, "{level}");
    assert_eq!(level["reserved"], 0, "{level}");
    app.stop().await;
}

on_every_store!(retention_removes_what_nothing_can_need_any_more);

/// Retention removes the per-order state of finished orders (tombstones included) for
/// the steps that allow it, plugin versions nothing names, and hosts long gone; it keeps
/// what an open order, a rollback, a pin or a recent upload may still need.
async fn retention_removes_what_nothing_can_need_any_more(db: Db) {
    use wasaga_host::store::{BatchCommit, Cutoffs, HostRow, OrderTransition, SlotRow, VersionRow};
    let (store, _dir) = test_store(db).await;
    for id in ["o-done", "o-gone", "o-open"] {
        store
            .create_order(&new_order(id, stored_event(&format!("placed-{id}"), "order.placed", id)), None)
            .await
            .expect("placed");
    }
    for (id, to) in [("o-done", "completed"), ("o-gone", "cancelled")] {
        let transition = OrderTransition {
            order_id: id.to_owned(),
            from: &["pending"],
            to,
            reason: None,
            event: stored_event(&format!("{to}-{id}"), &format!("order.{to}"), id),
        };
        assert!(store.transition(&transition).await.expect("transition"), "{db:?}: {id} {to}");
    }
    let put = |key: &str| (key.to_owned(), Some(b"{}".to_vec()));
    let state =
        vec![put("order/o-done"), put("order/o-gone"), put("order/o-open"), put("sku/A"), put("order/o-unknown")];
    let reads = state.iter().map(|(key, _)| (key.clone(), None)).collect();
    let commit = BatchCommit { consumer: "inventory".to_owned(), state, state_reads: reads, ..BatchCommit::default() };
    store.commit_batch(&commit).await.expect("state written");
    let other = BatchCommit {
        consumer: "analytics".to_owned(),
        state: vec![put("order/o-done")],
        state_reads: vec![("order/o-done".to_owned(), None)],
        pins: vec![("o-open".to_owned(), "sha256:pinned".to_owned())],
        ..BatchCommit::default()
    };
    store.commit_batch(&other).await.expect("state written");

    let now = wasaga_host::event::now_ms();
    let version = |digest: &str, created_at_ms: i64| VersionRow {
        digest: digest.to_owned(),
        name: "inventory".to_owned(),
        version: "1.0.0".to_owned(),
        subscribes: vec![],
        bytes: vec![0],
        created_at_ms,
    };
    for (digest, at) in
        [("sha256:serving", 1), ("sha256:previous", 1), ("sha256:pinned", 1), ("sha256:old", 1), ("sha256:young", now)]
    {
        store.put_version(&version(digest, at)).await.expect("kept");
    }
    let slot = SlotRow {
        name: "inventory".to_owned(),
        current: "sha256:serving".to_owned(),
        previous: Some("sha256:previous".to_owned()),
        generation: 1,
        updated_at_ms: 1,
        rollout: None,
    };
    assert!(store.set_slot(&slot, 0).await.expect("slot"), "{db:?}");
    let host = |id: &str, seen_at_ms: i64| HostRow {
        host_id: id.to_owned(),
        http_addr: "127.0.0.1:1".to_owned(),
        started_at_ms: 1,
        seen_at_ms,
        steps: "{}".to_owned(),
    };
    store.heartbeat(&host("gone", 1)).await.expect("heartbeat");
    store.heartbeat(&host("alive", now)).await.expect("heartbeat");

    let cutoffs = Cutoffs {
        finished_before_ms: 1_000,
        order_state: vec![("inventory".to_owned(), "order/".to_owned())],
        versions_before_ms: Some(now - 60_000),
        hosts_before_ms: now - 60_000,
        ..Cutoffs::default()
    };
    let pruned = store.prune(&cutoffs, 100).await.expect("pruned");
    assert_eq!((pruned.step_state, pruned.plugin_versions, pruned.hosts), (2, 1, 1), "{db:?}: {pruned:?}");
    let present = async |step: &str, key: &str| store.state_get(step, key).await.expect("reads").is_some();
    assert!(!present("inventory", "order/o-done").await, "{db:?}: a completed order's state stays");
    assert!(!present("inventory", "order/o-gone").await, "{db:?}: a cancelled order's tombstone stays");
    assert!(present("inventory", "order/o-open").await, "{db:?}: an open order's state is gone");
    assert!(present("inventory", "sku/A").await, "{db:?}: state of no order is gone");
    assert!(present("inventory", "order/o-unknown").await, "{db:?}: state of an unknown order is gone");
    assert!(present("analytics", "order/o-done").await, "{db:?}: a step that did not allow it lost state");
    let mut kept = store.version_digests("inventory").await.expect("digests");
    kept.sort();
    assert_eq!(kept, ["sha256:pinned", "sha256:previous", "sha256:serving", "sha256:young"], "{db:?}");
    let hosts: Vec<String> = store.hosts(0).await.expect("hosts").into_iter().map(|h| h.host_id).collect();
    assert_eq!(hosts, ["alive"], "{db:?}");
    // A second pass finds nothing more.
    let again = store.prune(&cutoffs, 100).await.expect("pruned");
    assert_eq!((again.step_state, again.plugin_versions, again.hosts), (0, 0, 0), "{db:?}: {again:?}");
}
