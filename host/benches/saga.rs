//! `cargo xtask bench saga`: orders completed per second and latency from POST to
//! `completed`, on SQLite and on PostgreSQL, with the WASM steps and with the same step
//! logic native (a benchmark-only executor), next to what the store alone allows for
//! transactions of the same shape. Writes markdown and JSON under `WASAGA_BENCH_RESULTS`.

#![allow(clippy::unwrap_used)]

#[path = "saga/external.rs"]
mod external;
mod support;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasaga_host::archive::Archive;
use wasaga_host::config::Settings;
use wasaga_host::runtime::{CallError, CallInput, Emitted, LoadedStep, StepExecutor, StepState};
use wasaga_host::server::App;
use wasaga_sdk::{Context, Event, Level, Origin};

/// A step's logic, called natively.
type HandleFn = fn(&mut dyn wasaga_sdk::Host, &Context, &Event) -> Result<Vec<wasaga_sdk::Emit>, wasaga_sdk::StepError>;

/// Runs the steps' Rust logic in the host instead of their components, through the same
/// state and archive the components would use: the WASM-vs-native ratio isolates the
/// sandbox's cost.
struct NativeSteps;

struct SyncHost<'a> {
    state: &'a Arc<dyn StepState>,
    archive: Option<&'a Arc<dyn Archive>>,
    origin: Origin,
    runtime: tokio::runtime::Handle,
    failed: Option<String>,
}

impl wasaga_sdk::Host for SyncHost<'_> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(self.state.get(key)).ok().flatten()
    }
    fn put(&mut self, key: &str, value: &[u8]) {
        if let Err(e) = self.runtime.block_on(self.state.put(key, value.to_vec())) {
            self.failed = Some(e.to_string());
        }
    }
    fn delete(&mut self, key: &str) {
        if let Err(e) = self.runtime.block_on(self.state.delete(key)) {
            self.failed = Some(e.to_string());
        }
    }
    fn log(&self, _level: Level, _message: &str) {}
    fn archive_put(&mut self, name: &str, body: &[u8], content_type: &str) -> Result<(), String> {
        let archive = self.archive.ok_or("no archive")?;
        self.runtime
            .block_on(archive.put_once(name, bytes::Bytes::copy_from_slice(body), content_type))
            .map_err(|e| e.to_string())
    }
    fn origin(&self) -> Origin {
        self.origin.clone()
    }
}

#[async_trait]
impl StepExecutor for NativeSteps {
    async fn call(
        &self,
        step: &LoadedStep,
        input: CallInput<'_>,
        state: Arc<dyn StepState>,
        archive: Option<Arc<dyn Archive>>,
        _recorder: Option<Arc<wasaga_host::runtime::Recorder>>,
    ) -> Result<Vec<Emitted>, CallError> {
        let handle: HandleFn = match &*step.name {
            "inventory" => <inventory::Inventory as wasaga_sdk::Step>::handle,
            "payment" => <payment::Payment as wasaga_sdk::Step>::handle,
            _ => <analytics::Analytics as wasaga_sdk::Step>::handle,
        };
        let event = Event {
            id: input.id.to_owned(),
            kind: input.kind.to_owned(),
            order_id: input.order_id.to_owned(),
            occurred_at_ms: input.occurred_at_ms,
            payload: input.payload.to_owned(),
        };
        let origin = Origin { step: input.origin.step.clone(), step_version: input.origin.step_version.clone() };
        let ctx = Context { attempt: input.attempt };
        let runtime = tokio::runtime::Handle::current();
        // The SDK's host is synchronous; the state behind it is async.
        let result = tokio::task::block_in_place(|| {
            let mut host = SyncHost { state: &state, archive: archive.as_ref(), origin, runtime, failed: None };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&mut host, &ctx, &event)));
            (result, host.failed)
        });
        match result {
            (_, Some(failed)) => Err(CallError::Host(failed)),
            (Err(_), None) => Err(CallError::Trap("panicked".to_owned())),
            (Ok(Err(wasaga_sdk::StepError::Retryable(e))), None) => Err(CallError::Retryable(e)),
            (Ok(Err(wasaga_sdk::StepError::Fatal(e))), None) => Err(CallError::Fatal(e)),
            (Ok(Ok(emits)), None) => Ok(emits
                .into_iter()
                .map(|e| Emitted { kind: e.kind, payload: e.payload, delay_ms: e.delay_ms })
                .collect()),
        }
    }
}

struct Env {
    components: PathBuf,
    results: PathBuf,
    orders: usize,
    pg_admin: String,
}

#[derive(Debug, Clone, Default)]
struct Run {
    orders_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    completed: usize,
    /// On the brokers: p99 of commit → broker confirm, per channel, and of commit →
    /// archived (analytics handled the event), in ms.
    outbox_lag_p99_ms: Option<f64>,
    stream_lag_p99_ms: Option<f64>,
    archive_lag_p99_ms: Option<f64>,
}

/// The brokers of `cargo xtask bench saga --services`, from the environment it sets.
#[derive(Debug, Clone)]
struct Brokers {
    transport_url: String,
    stream_brokers: String,
    archive_url: String,
}

impl Brokers {
    fn from_env() -> Option<Brokers> {
        std::env::var_os("WASAGA_BENCH_SERVICES")?;
        Some(Brokers {
            transport_url: std::env::var("WASAGA_TRANSPORT_URL").ok()?,
            stream_brokers: std::env::var("WASAGA_STREAM_BROKERS").ok()?,
            archive_url: std::env::var("WASAGA_ARCHIVE_URL").ok()?,
        })
    }
}

/// The single value `statement` (a p99 in ms) returns on the database at `url`.
async fn pg_p99(url: &str, statement: &'static str) -> Option<f64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let row: (Option<f64>,) = sqlx::query_as(statement).fetch_one(&mut conn).await.ok()?;
    row.0
}

use support::{drop_pg, fresh_pg, percentile};

/// Start a server, stock it, push `orders` orders through it (closed loop with
/// `concurrency` in flight, or open loop at `rate` per second), and measure.
#[allow(clippy::too_many_arguments)]
async fn run(
    env: &Env,
    store_url: Option<String>,
    native: bool,
    concurrency: usize,
    rate: Option<f64>,
    brokers: Option<&Brokers>,
    sqlite_synchronous: wasaga_host::store::SqliteSync,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["inventory", "payment", "analytics"] {
        std::fs::copy(env.components.join(format!("{name}.wasm")), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let settings = Settings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        plugins_dir: plugins,
        admin_token: Some("bench".to_owned().into()),
        store_url: store_url.clone(),
        sqlite_synchronous,
        ..Settings::default()
    };
    let settings = match brokers {
        None => settings,
        Some(b) => Settings {
            transport_url: b.transport_url.clone(),
            stream_brokers: Some(b.stream_brokers.clone()),
            archive_url: Some(b.archive_url.clone()),
            namespace: format!("bench{:x}", rand::random::<u32>()),
            ..settings
        },
    };
    let executor: Option<Arc<dyn StepExecutor>> = if native { Some(Arc::new(NativeSteps)) } else { None };
    let app = App::build_with(settings, executor).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    for i in 0..10 {
        http.put(format!("{base}/api/stock/SKU-{i}"))
            .bearer_auth("bench")
            .json(&json!({"available": 10_000_000}))
            .send()
            .await
            .unwrap();
    }
    // Wait for the stock to be applied.
    for i in 0..10 {
        while http.get(format!("{base}/api/stock/SKU-{i}")).send().await.unwrap().status() != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let body = |i: usize| json!({"customer_id": "c", "items": [{"sku": format!("SKU-{}", i % 10), "quantity": 1, "unit_price_cents": 100}], "payment": {"card_token": "tok_ok"}});
    let started = Instant::now();
    match rate {
        None => {
            futures::stream::iter(0..env.orders)
                .map(|i| {
                    let (http, base) = (http.clone(), base.clone());
                    async move { http.post(format!("{base}/api/orders")).json(&body(i)).send().await.unwrap() }
                })
                .buffer_unordered(concurrency)
                .for_each(|_| async {})
                .await;
        }
        Some(per_sec) => {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
            let mut sends = Vec::new();
            for i in 0..env.orders {
                ticker.tick().await;
                let (http, base) = (http.clone(), base.clone());
                sends.push(tokio::spawn(async move {
                    http.post(format!("{base}/api/orders")).json(&body(i)).send().await.unwrap()
                }));
            }
            for s in sends {
                s.await.unwrap();
            }
        }
    }
    support::drain(&http, &base).await;
    let wall = started.elapsed();
    // Latency from the server's own timeline: order.placed → order.completed.
    let latencies = support::latencies(&http, &base).await;
    let mut lags = (None, None, None);
    if let (Some(_), Some(url)) = (brokers, &store_url) {
        // The archive lags the saga: wait until analytics handled every event.
        let all_archived = async {
            while support::unarchived_events(url).await > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(300), all_archived).await;
        lags = (
            pg_p99(
                url,
                "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY relayed_at_ms - occurred_at_ms)::float8 FROM outbox",
            )
            .await,
            pg_p99(
                url,
                "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY streamed_at_ms - occurred_at_ms)::float8 FROM outbox",
            )
            .await,
            pg_p99(
                url,
                "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY i.handled_at_ms - o.occurred_at_ms)::float8 \
                 FROM inbox i JOIN outbox o ON o.event_id = i.event_id WHERE i.consumer = 'analytics'",
            )
            .await,
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Some(url) = &store_url {
        drop_pg(&env.pg_admin, url).await;
    }
    external::spent(dir);
    Run {
        orders_per_sec: env.orders as f64 / wall.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        completed: latencies.len(),
        outbox_lag_p99_ms: lags.0,
        stream_lag_p99_ms: lags.1,
        archive_lag_p99_ms: lags.2,
    }
}

/// What the store alone allows: an order's six transactions (placing it, and the four
/// consumers' and the relay's writes) as plain statements, one order at a time per
/// connection, without wasaga.
async fn store_limit(store_url: &str, orders: usize) -> f64 {
    let store = wasaga_host::store::open(store_url, &Default::default()).await.unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let workers = 4;
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..orders).step_by(workers) {
                let order_id = format!("o-{w}-{i}");
                let event = |kind: &str| wasaga_host::store::StoredEvent {
                    id: format!("{order_id}-{kind}"),
                    kind: kind.to_owned(),
                    order_id: order_id.clone(),
                    payload: "{}".to_owned(),
                    step: "bench".to_owned(),
                    step_version: "1".to_owned(),
                    occurred_at_ms: 0,
                    attempt: 1,
                    trace: None,
                };
                let order = wasaga_host::store::NewOrder {
                    id: order_id.clone(),
                    customer_id: "c".to_owned(),
                    items: "[]".to_owned(),
                    total_cents: 100,
                    created_at_ms: 0,
                    idempotency: None,
                    placed: event("order.placed"),
                };
                store.create_order(&order, None).await.unwrap();
                for (consumer, kind) in [
                    ("inventory", "stock.reserved"),
                    ("payment", "payment.captured"),
                    ("host", "order.completed"),
                    ("analytics", "x"),
                ] {
                    let batch = wasaga_host::store::BatchCommit {
                        consumer: consumer.to_owned(),
                        inbox: vec![(format!("{order_id}-{consumer}"), "1".to_owned())],
                        state: vec![(format!("order/{order_id}"), Some(b"{}".to_vec()))],
                        outbox: vec![event(kind)],
                        ..Default::default()
                    };
                    store.commit_batch(&batch).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    orders as f64 / started.elapsed().as_secs_f64()
}

/// PostgreSQL's own limit for orders of wasaga's shape: pgbench running
/// `pgbench-order.sql` (one order's six transactions) on `clients` connections for
/// `seconds`, against a fresh database with wasaga's schema. `None` without pgbench.
async fn pgbench_limit(admin: &str, clients: u32, seconds: u32) -> Option<f64> {
    let pgbench = ["pgbench", "/usr/lib/postgresql/15/bin/pgbench"]
        .into_iter()
        .find(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))?;
    let url = fresh_pg(admin).await;
    drop(wasaga_host::store::open(&url, &Default::default()).await.unwrap());
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), include_str!("pgbench-order.sql")).unwrap();
    let output = std::process::Command::new(pgbench)
        .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string(), "-M", "prepared", "-f"])
        .arg(script.path())
        .arg(&url)
        .output()
        .ok()?;
    drop_pg(admin, &url).await;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next()?.parse().ok())
}

/// The durable default; the report also shows `normal` on SQLite.
const FULL: wasaga_host::store::SqliteSync = wasaga_host::store::SqliteSync::Full;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let var = |name: &str| {
        std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set: run `cargo xtask bench saga`"))
    };
    let env = Env {
        components: PathBuf::from(var("WASAGA_BENCH_COMPONENTS")),
        results: PathBuf::from(var("WASAGA_BENCH_RESULTS")),
        orders: std::env::var("WASAGA_BENCH_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        pg_admin: std::env::var("WASAGA_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
    };
    let mut head = String::from("# Saga benchmark\n\n");
    let mut report = json!({"orders_per_run": env.orders, "runs": []});
    // Cargo builds the binary beside the benchmark, with the same profile and features;
    // `WASAGA_BENCH_SERVER` names another (another commit's build, to alternate with).
    let bin = std::env::var_os("WASAGA_BENCH_SERVER")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wasaga")), PathBuf::from);
    if let Some(wrk) = external::find_wrk() {
        let limit_dir = tempfile::tempdir().unwrap();
        let alone = store_limit(&format!("sqlite://{}", limit_dir.path().join("limit.db").display()), env.orders).await;
        let rig = external::Rig { bin, wrk, components: env.components.clone() };
        let (md, json) = external::report(&rig, alone).await;
        println!("{md}");
        head.push_str(&md);
        head.push('\n');
        report["external"] = json;
    }
    if std::env::var_os("WASAGA_BENCH_EXTERNAL_ONLY").is_some() {
        write_report(&env, head, report);
        external::remove_spent();
        return;
    }
    let mut md = format!(
        "{head}## In process: WASM against native steps\n\n{} orders per run, `tok_ok`, one SKU of ten per order; the load generator runs in the same process on the same 2 cores. Latency is the server's own timeline: `order.placed` → `order.completed`. SQLite runs durable (`synchronous=FULL`, the default) unless a row says otherwise.\n\n| store | steps | orders/s | p50 ms | p99 ms | completed |\n|---|---|---|---|---|---|\n",
        env.orders
    );
    for store in ["sqlite", "postgres"] {
        let url = || async {
            match store {
                "sqlite" => None,
                _ => Some(fresh_pg(&env.pg_admin).await),
            }
        };
        let wasm = run(&env, url().await, false, 64, None, None, FULL).await;
        let native = run(&env, url().await, true, 64, None, None, FULL).await;
        let half = run(&env, url().await, false, 64, Some((wasm.orders_per_sec / 2.0).max(1.0)), None, FULL).await;
        let normal = match store {
            "sqlite" => Some(run(&env, None, false, 64, None, None, wasaga_host::store::SqliteSync::Normal).await),
            _ => None,
        };
        let limit_url = match store {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap().keep();
                format!("sqlite://{}", dir.join("limit.db").display())
            }
            _ => fresh_pg(&env.pg_admin).await,
        };
        let limit = store_limit(&limit_url, env.orders).await;
        if store == "postgres" {
            drop_pg(&env.pg_admin, &limit_url).await;
        }
        let mut rows = vec![("wasm", &wasm), ("native", &native), ("wasm at half rate", &half)];
        if let Some(normal) = &normal {
            rows.push(("wasm, synchronous=NORMAL (not durable)", normal));
        }
        for (label, r) in rows {
            md.push_str(&format!(
                "| {store} | {label} | {:.0} | {:.1} | {:.1} | {} |\n",
                r.orders_per_sec, r.p50_ms, r.p99_ms, r.completed
            ));
            report["runs"].as_array_mut().unwrap().push(json!({"store": store, "steps": label, "orders_per_sec": r.orders_per_sec, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "completed": r.completed}));
        }
        md.push_str(&format!(
            "| {store} | store alone (6 tx per order via sqlx, 4 connections) | {limit:.0} | | | |\n"
        ));
        report[store] = json!({"wasm_over_native": wasm.orders_per_sec / native.orders_per_sec, "wasm_over_store_limit": wasm.orders_per_sec / limit, "store_limit_orders_per_sec": limit});
        if store == "postgres"
            && let Some(tps) = pgbench_limit(&env.pg_admin, 4, 10).await
        {
            md.push_str(&format!(
                "| {store} | store alone (pgbench, same 6 tx / 27 statements, prepared, 4 clients) | {tps:.0} | | | |\n"
            ));
            report[store]["pgbench_orders_per_sec"] = json!(tps);
            report[store]["wasm_over_pgbench"] = json!(wasm.orders_per_sec / tps);
        }
        println!(
            "{store}: wasm {:.0}/s, native {:.0}/s, store alone {limit:.0}/s",
            wasm.orders_per_sec, native.orders_per_sec
        );
    }
    md.push_str("\n| store | WASM / native throughput | wasaga / store alone |\n|---|---|---|\n");
    for store in ["sqlite", "postgres"] {
        md.push_str(&format!(
            "| {store} | {:.2} | {:.2} |\n",
            report[store]["wasm_over_native"].as_f64().unwrap_or(f64::NAN),
            report[store]["wasm_over_store_limit"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    if let Some(brokers) = Brokers::from_env() {
        md.push_str(
            "\n## On the brokers: PostgreSQL + RabbitMQ (publisher confirms) + Kafka (tansu, `acks=all`) + Azure Blob (Azurite)\n\n\
             Outbox lag: commit → broker confirm, per event. Archive lag: commit → analytics handled it (archived).\n\n\
             | run | orders/s | p50 ms | p99 ms | completed | outbox→RabbitMQ p99 ms | outbox→Kafka p99 ms | archive p99 ms |\n|---|---|---|---|---|---|---|---|\n",
        );
        let embedded = run(&env, Some(fresh_pg(&env.pg_admin).await), false, 64, None, None, FULL).await;
        let real = run(&env, Some(fresh_pg(&env.pg_admin).await), false, 64, None, Some(&brokers), FULL).await;
        let half_rate = Some((real.orders_per_sec / 2.0).max(1.0));
        let half = run(&env, Some(fresh_pg(&env.pg_admin).await), false, 64, half_rate, Some(&brokers), FULL).await;
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        for (label, r) in
            [("PostgreSQL, embedded transport", &embedded), ("brokers", &real), ("brokers at half rate", &half)]
        {
            md.push_str(&format!(
                "| {label} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
                r.orders_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.completed,
                ms(r.outbox_lag_p99_ms),
                ms(r.stream_lag_p99_ms),
                ms(r.archive_lag_p99_ms)
            ));
            report["broker_runs"][label] = json!({"orders_per_sec": r.orders_per_sec, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "completed": r.completed, "outbox_lag_p99_ms": r.outbox_lag_p99_ms, "stream_lag_p99_ms": r.stream_lag_p99_ms, "archive_lag_p99_ms": r.archive_lag_p99_ms});
        }
        md.push_str(&format!(
            "\nbrokers / embedded (same PostgreSQL, same run): {:.2}\n",
            real.orders_per_sec / embedded.orders_per_sec
        ));
        println!("brokers: {:.0}/s against {:.0}/s embedded", real.orders_per_sec, embedded.orders_per_sec);
    }
    write_report(&env, md, report);
    external::remove_spent();
}

fn write_report(env: &Env, mut md: String, mut report: Value) {
    let stamp = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    md.push_str(&format!("\nMeasured {stamp}.\n"));
    report["at"] = Value::String(stamp);
    std::fs::create_dir_all(&env.results).unwrap();
    std::fs::write(env.results.join("saga.md"), &md).unwrap();
    std::fs::write(env.results.join("saga.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{md}");
}
