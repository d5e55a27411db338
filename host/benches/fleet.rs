//! `cargo xtask bench fleet`: orders per second and POST → completed latency with 1, 2
//! and 3 `wasaga serve` processes on one PostgreSQL database and one RabbitMQ namespace
//! (plus Kafka and Azure Blob when `cargo xtask services` runs them), the CPU each order
//! costs across the fleet, and the rate of batches re-run after a conflict, on one hot
//! SKU and on SKUs spread wide; then again with the embedded transport (PostgreSQL's
//! `SKIP LOCKED` claims instead of RabbitMQ). Per run it also reports what explains the
//! CPU: PostgreSQL's transactions, rows written and scans per order (from its statistics
//! of the run's own database) and how full each consumer's batches were. Writes markdown
//! and JSON under `WASAGA_BENCH_RESULTS`.

#![allow(clippy::unwrap_used)]

mod support;

use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Host {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// A host serving `steps` (their files in its plugins folder).
    fn start(components: &Path, store_url: &str, env: &[(String, String)], steps: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for name in steps {
            std::fs::copy(components.join(format!("{name}.wasm")), plugins.join(format!("{name}.wasm"))).unwrap();
        }
        // `WASAGA_BENCH_SERVER` names another build (another commit's, to alternate with).
        let bin =
            std::env::var_os("WASAGA_BENCH_SERVER").map_or_else(|| env!("CARGO_BIN_EXE_wasaga").into(), PathBuf::from);
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WASAGA_HTTP_ADDR", "127.0.0.1:0")
            .env("WASAGA_DATA_DIR", dir.path().join("data"))
            .env("WASAGA_PLUGINS_DIR", &plugins)
            .env("WASAGA_ADMIN_TOKEN", "bench")
            .env("WASAGA_STORE_URL", store_url)
            .env("RUST_LOG", "warn,wasaga_host::server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("wasaga is listening")
                    && let Some(addr) = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).unwrap();
        Host { child, base: format!("http://{addr}"), _dir: dir }
    }

    /// CPU seconds the process used so far (user + system).
    fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds(self.child.id())
    }

    /// The sum of a counter over the series whose labels contain `label`.
    async fn counter_with(&self, http: &reqwest::Client, name: &str, label: &str) -> f64 {
        let text = http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#') && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// What PostgreSQL did for one database: its own statistics (flushed by each backend
/// at most once a second while busy, and when it exits).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct PgWork {
    transactions: f64,
    rows_written: f64,
    scans: f64,
}

impl PgWork {
    async fn read(url: &str) -> PgWork {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let (transactions, rows_written): (i64, i64) = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::int8, (tup_inserted + tup_updated + tup_deleted)::int8 \
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let (scans,): (i64,) =
            sqlx::query_as("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::int8 FROM pg_stat_user_tables")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        // (This reading's own two transactions count too: a few per run, against thousands.)
        PgWork { transactions: transactions as f64, rows_written: rows_written as f64, scans: scans as f64 }
    }

    /// Once the hosts are gone: read until the figures stop moving (their backends flush
    /// on exit), for at most 15 s.
    async fn settled(url: &str) -> PgWork {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = PgWork::read(url).await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = PgWork::read(url).await;
            // Our own reads write nothing and scan only catalogs.
            let moved = now.rows_written != last.rows_written || now.scans != last.scans;
            if !moved || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    fn per_order(self, before: PgWork, orders: usize) -> PgWork {
        let n = orders as f64;
        PgWork {
            transactions: (self.transactions - before.transactions) / n,
            rows_written: (self.rows_written - before.rows_written) / n,
            scans: (self.scans - before.scans) / n,
        }
    }
}

/// The sum of a counter over the fleet (the series whose labels contain `label`).
async fn fleet_sum(fleet: &[Host], http: &reqwest::Client, name: &str, label: &str) -> f64 {
    let mut n = 0.0;
    for host in fleet {
        n += host.counter_with(http, name, label).await;
    }
    n
}

/// Per consumer of [`CONSUMERS`], the fleet's sum of a counter.
async fn per_consumer(fleet: &[Host], http: &reqwest::Client, name: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for consumer in CONSUMERS {
        out.push(fleet_sum(fleet, http, name, &format!("consumer=\"{consumer}\"")).await);
    }
    out
}

/// Wait until no consumer of the fleet has handled a batch for a second (at most 10
/// minutes). Returns each host's CPU seconds when the last batch was seen: the second
/// of waiting (idle hosts answering this wait's own polls) is not the orders' work.
async fn quiet(fleet: &[Host], http: &reqwest::Client) -> Vec<f64> {
    let handled = async || fleet_sum(fleet, http, "wasaga_batch_deliveries_count", "").await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut last, mut since) = (handled().await, Instant::now());
    let mut cpu: Vec<f64> = fleet.iter().map(Host::cpu_seconds).collect();
    while since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = handled().await;
        if now != last {
            (last, since) = (now, Instant::now());
            cpu = fleet.iter().map(Host::cpu_seconds).collect();
        }
    }
    cpu
}

/// The steps every host serves.
const STEPS: [&str; 3] = ["inventory", "payment", "analytics"];

/// Consumers whose batch sizes and re-runs the report shows.
const CONSUMERS: [&str; 4] = ["host", "inventory", "payment", "analytics"];

/// What the fleet's consumers did so far: per consumer, deliveries and batches (the
/// `wasaga_batch_deliveries` sum and count) and batches re-run after a conflict.
#[derive(Debug, Clone)]
struct Batches {
    deliveries: Vec<f64>,
    batches: Vec<f64>,
    reruns: Vec<f64>,
}

impl Batches {
    async fn read(fleet: &[Host], http: &reqwest::Client) -> Batches {
        Batches {
            deliveries: per_consumer(fleet, http, "wasaga_batch_deliveries_sum").await,
            batches: per_consumer(fleet, http, "wasaga_batch_deliveries_count").await,
            reruns: per_consumer(fleet, http, "wasaga_batch_conflicts_total").await,
        }
    }

    /// Per consumer: deliveries per batch since `before` (none if it had no batch).
    fn sizes_since(&self, before: &Batches) -> Vec<Option<f64>> {
        (0..CONSUMERS.len())
            .map(|i| {
                let batches = self.batches[i] - before.batches[i];
                (batches > 0.0).then(|| (self.deliveries[i] - before.deliveries[i]) / batches)
            })
            .collect()
    }

    /// Per consumer: re-runs since `before`.
    fn reruns_since(&self, before: &Batches) -> Vec<f64> {
        self.reruns.iter().zip(&before.reruns).map(|(n, n0)| n - n0).collect()
    }
}

use support::{drop_pg, fresh_pg, percentile};

impl Run {
    /// The SKUs column: one hot SKU, or how many the orders spread over.
    fn skus_label(&self) -> String {
        if self.skus == 1 { "1 (hot)".to_owned() } else { self.skus.to_string() }
    }
}

#[derive(Debug, Default, Clone)]
struct Run {
    transport: &'static str,
    hosts: usize,
    skus: usize,
    orders_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms_per_order: f64,
    conflict_rate: f64,
    /// Each host's CPU per order, in ms.
    cpu_per_host: Vec<f64>,
    pg: PgWork,
    /// Per consumer of [`CONSUMERS`]: deliveries per batch during the run.
    batch_sizes: Vec<Option<f64>>,
    /// Per consumer of [`CONSUMERS`]: batches re-run after a conflict.
    reruns: Vec<f64>,
    /// Step calls a re-run took from its last run instead of running them again.
    reused: f64,
    /// With Kafka: events the analytics step handled per second, from the first order
    /// until it had handled every event, and each host's share of them.
    analytics_per_sec: Option<f64>,
    analytics_shares: Vec<f64>,
    /// With Kafka: events analytics had not handled when the wait ended.
    unarchived: Option<i64>,
}

/// Wait until analytics has handled every event of the store at `url` (at most 10
/// minutes); what it has not handled then.
async fn archived(url: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = support::unarchived_events(url).await;
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Analytics calls (`ok`) on each host.
async fn analytics_calls(fleet: &[Host], http: &reqwest::Client) -> Vec<f64> {
    let mut calls = Vec::new();
    for host in fleet {
        calls
            .push(host.counter_with(http, "wasaga_step_call_seconds_count", "step=\"analytics\",outcome=\"ok\"").await);
    }
    calls
}

/// `hosts` hosts serving `steps` on the database `url`, each ready, and `skus` SKUs in
/// stock.
async fn start_fleet(
    components: &Path,
    url: &str,
    env: &[(String, String)],
    hosts: usize,
    steps: &[&str],
    skus: usize,
    http: &reqwest::Client,
) -> Vec<Host> {
    let ready = async |base: &str| {
        while http.get(format!("{base}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The first host migrates the database; the others start once it is ready.
    let mut fleet = vec![Host::start(components, url, env, steps)];
    ready(&fleet[0].base).await;
    for _ in 1..hosts {
        fleet.push(Host::start(components, url, env, steps));
    }
    for host in &fleet {
        ready(&host.base).await;
    }
    let base0 = &fleet[0].base;
    for i in 0..skus {
        http.put(format!("{base0}/api/stock/SKU-{i}"))
            .bearer_auth("bench")
            .json(&json!({"available": 10_000_000}))
            .send()
            .await
            .unwrap();
    }
    for i in 0..skus {
        while http.get(format!("{base0}/api/stock/SKU-{i}")).send().await.unwrap().status() != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fleet
}

/// Place `orders` orders, 64 in flight, spread over the hosts and over `skus` SKUs.
async fn place(fleet: &[Host], http: &reqwest::Client, orders: usize, skus: usize) {
    let bases: Vec<String> = fleet.iter().map(|h| h.base.clone()).collect();
    let body = |i: usize| json!({"customer_id": "c", "items": [{"sku": format!("SKU-{}", i % skus), "quantity": 1, "unit_price_cents": 100}], "payment": {"card_token": "tok_ok"}});
    futures::stream::iter(0..orders)
        .map(|i| {
            let (http, base) = (http.clone(), bases[i % bases.len()].clone());
            async move { http.post(format!("{base}/api/orders")).json(&body(i)).send().await.unwrap() }
        })
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;
}

async fn run(
    components: &Path,
    admin: &str,
    (transport, env): (&'static str, &[(String, String)]),
    hosts: usize,
    skus: usize,
    orders: usize,
) -> Run {
    let url = fresh_pg(admin).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let fleet = start_fleet(components, &url, env, hosts, &STEPS, skus, &http).await;
    let base0 = fleet[0].base.clone();
    // Each host under `perf` until it exits, when asked (`cargo xtask bench fleet --profile`).
    let perf: Vec<Child> = match std::env::var_os("WASAGA_BENCH_PERF_DIR") {
        Some(dir) if skus > 1 => fleet
            .iter()
            .enumerate()
            .filter_map(|(i, host)| {
                let out = Path::new(&dir).join(format!("{}-{hosts}hosts-host{}.data", transport.to_lowercase(), i + 1));
                Command::new("perf")
                    .args([
                        "record",
                        "-F",
                        "99",
                        "--call-graph",
                        "dwarf,16384",
                        "-p",
                        &host.child.id().to_string(),
                        "-o",
                    ])
                    .arg(out)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect(),
        _ => Vec::new(),
    };
    let cpu_before: Vec<f64> = fleet.iter().map(Host::cpu_seconds).collect();
    let batches_before = Batches::read(&fleet, &http).await;
    let pg_before = PgWork::read(&url).await;
    let batches_run_before = fleet_sum(&fleet, &http, "wasaga_batch_deliveries_count", "").await;
    let conflicts_before = fleet_sum(&fleet, &http, "wasaga_batch_conflicts_total", "").await;
    let reused_before = fleet_sum(&fleet, &http, "wasaga_calls_reused_total", "").await;
    let kafka = env.iter().any(|(k, _)| k == "WASAGA_STREAM_BROKERS");
    let analytics_before = analytics_calls(&fleet, &http).await;
    let events_before = fleet_sum(&fleet, &http, "wasaga_events_total", "").await;
    let started = Instant::now();
    place(&fleet, &http, orders, skus).await;
    support::drain(&http, &base0).await;
    let wall = started.elapsed();
    // Steps go on after the last order completes (stock committed, events archived):
    // their CPU is the orders' too.
    let cpu_after = quiet(&fleet, &http).await;
    let cpu_per_host: Vec<f64> =
        cpu_after.iter().zip(&cpu_before).map(|(after, before)| (after - before) * 1000.0 / orders as f64).collect();
    let cpu: f64 = cpu_per_host.iter().sum::<f64>() / 1000.0 * orders as f64;
    let batches_after = Batches::read(&fleet, &http).await;
    let batch_sizes = batches_after.sizes_since(&batches_before);
    let reruns = batches_after.reruns_since(&batches_before);
    let batches_run = fleet_sum(&fleet, &http, "wasaga_batch_deliveries_count", "").await - batches_run_before;
    let conflicts = fleet_sum(&fleet, &http, "wasaga_batch_conflicts_total", "").await - conflicts_before;
    let reused = fleet_sum(&fleet, &http, "wasaga_calls_reused_total", "").await - reused_before;
    let latencies = support::latencies(&http, &base0).await;
    // The stream is read behind the saga: wait until analytics' inbox holds every event
    // of the run, by the store's own count (the hosts' call counts include batches run
    // again, so they can reach the number of events early), for 10 minutes at most.
    let (analytics_per_sec, analytics_shares, unarchived) = if kafka {
        let left = archived(&url).await;
        let elapsed = started.elapsed().as_secs_f64();
        let now: Vec<f64> = analytics_calls(&fleet, &http).await;
        let handled: Vec<f64> = now.iter().zip(&analytics_before).map(|(n, b)| n - b).collect();
        let total: f64 = handled.iter().sum();
        let shares = handled.iter().map(|h| if total > 0.0 { h / total } else { 0.0 }).collect();
        let events = fleet_sum(&fleet, &http, "wasaga_events_total", "").await - events_before;
        (Some((events - left as f64) / elapsed), shares, Some(left))
    } else {
        (None, Vec::new(), None)
    };
    drop(fleet);
    for mut perf in perf {
        let _ = perf.wait();
    }
    let pg = PgWork::settled(&url).await.per_order(pg_before, orders);
    drop_pg(admin, &url).await;
    Run {
        transport,
        hosts,
        skus,
        orders_per_sec: orders as f64 / wall.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        cpu_ms_per_order: cpu * 1000.0 / orders as f64,
        conflict_rate: if batches_run > 0.0 { conflicts / batches_run } else { 0.0 },
        cpu_per_host,
        pg,
        batch_sizes,
        reruns,
        reused,
        analytics_per_sec,
        analytics_shares,
        unarchived,
    }
}

/// The analytics group on a backlog, with `hosts` hosts.
#[derive(Debug, Clone)]
struct GroupRun {
    hosts: usize,
    /// Events the group had to handle again.
    events: i64,
    /// From the first of them handled until the last.
    secs: f64,
    /// The hosts' CPU over those seconds, per event, in ms.
    cpu_ms_per_event: f64,
    /// Each host's share of the analytics calls.
    shares: Vec<f64>,
    /// Events still not handled when the wait (10 minutes) ended.
    left: i64,
}

/// How fast the analytics group archives a backlog, apart from the saga's own pace:
/// one host runs `orders` orders (analytics archiving as it goes); then, with every host
/// gone, the group's offsets go back to the topic's start and analytics' inbox rows are
/// deleted, so every event is a backlog; then `hosts` hosts start and the clock runs from
/// the first event they handle until the store holds every event as handled again. In a
/// namespace of its own, so the group and the topic hold this run's events only.
async fn group_backlog(
    components: &Path,
    admin: &str,
    env: &[(String, String)],
    namespace: &str,
    hosts: usize,
    orders: usize,
) -> GroupRun {
    let url = fresh_pg(admin).await;
    let namespace = format!("{namespace}g{hosts}");
    let mut env = env.to_vec();
    env.retain(|(k, _)| k != "WASAGA_NAMESPACE");
    env.push(("WASAGA_NAMESPACE".to_owned(), namespace.clone()));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    {
        let fleet = start_fleet(components, &url, &env, 1, &STEPS, 100, &http).await;
        place(&fleet, &http, orders, 100).await;
        support::drain(&http, &fleet[0].base).await;
        archived(&url).await;
        quiet(&fleet, &http).await;
    }
    let brokers = env.iter().find(|(k, _)| k == "WASAGA_STREAM_BROKERS").map(|(_, v)| v.clone()).unwrap();
    rewind(&brokers, &format!("{namespace}.analytics"), &format!("{namespace}.events"));
    let events = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        // The gone host's partition leases and its place in the list of live hosts (which
        // would count it a member for 10 s more) go too.
        sqlx::query("DELETE FROM leases WHERE name LIKE 'stream.%'").execute(&mut conn).await.unwrap();
        sqlx::query("DELETE FROM hosts").execute(&mut conn).await.unwrap();
        sqlx::query("DELETE FROM inbox WHERE consumer = 'analytics'").execute(&mut conn).await.unwrap().rows_affected()
            as i64
    };
    let mut fleet = Vec::new();
    for _ in 0..hosts {
        fleet.push(Host::start(components, &url, &env, &STEPS));
    }
    let cpu_before: Vec<f64> = fleet.iter().map(Host::cpu_seconds).collect();
    // From the first event handled: the hosts' start (compiling the steps) is not the group's work.
    let deadline = Instant::now() + Duration::from_secs(600);
    while support::unarchived_events(&url).await >= events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let left = archived(&url).await;
    let secs = started.elapsed().as_secs_f64();
    let cpu: f64 = fleet.iter().map(Host::cpu_seconds).zip(&cpu_before).map(|(after, before)| after - before).sum();
    let calls: Vec<f64> = analytics_calls(&fleet, &http).await;
    let total: f64 = calls.iter().sum();
    let shares = calls.iter().map(|c| if total > 0.0 { c / total } else { 0.0 }).collect();
    drop(fleet);
    drop_pg(admin, &url).await;
    GroupRun { hosts, events, secs, cpu_ms_per_event: cpu * 1000.0 / events.max(1) as f64, shares, left }
}

/// Commit offset 0 of every partition of `topic` for the consumer group `group` (its
/// members gone), so the group reads the topic again from its start.
fn rewind(brokers: &str, group: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, i32::try_from(partition).unwrap(), rdkafka::Offset::Offset(0)).unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).unwrap();
}

/// The median of a few ratios.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `cargo xtask bench fleet`"));
    let components = PathBuf::from(var("WASAGA_BENCH_COMPONENTS"));
    let results = PathBuf::from(var("WASAGA_BENCH_RESULTS"));
    let orders: usize = std::env::var("WASAGA_BENCH_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let admin =
        std::env::var("WASAGA_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut env: Vec<(String, String)> = vec![(
        "WASAGA_TRANSPORT_URL".to_owned(),
        std::env::var("WASAGA_TRANSPORT_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
    )];
    let mut with = "PostgreSQL + RabbitMQ".to_owned();
    for name in ["WASAGA_STREAM_BROKERS", "WASAGA_ARCHIVE_URL", "AZURE_STORAGE_USE_EMULATOR"] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_owned(), value));
        }
    }
    if env.iter().any(|(k, _)| k == "WASAGA_STREAM_BROKERS") {
        with.push_str(" + Kafka (tansu) + Azure Blob (Azurite)");
    } else {
        // Hosts on one machine share a local archive folder.
        let archive = tempfile::tempdir().unwrap().keep();
        env.push(("WASAGA_ARCHIVE_URL".to_owned(), format!("file://{}", archive.display())));
    }
    let namespace = format!("benchfleet{:x}", rand::random::<u32>());
    env.push(("WASAGA_NAMESPACE".to_owned(), namespace.clone()));
    // Rounds of one host then three, alternated, on each transport: this machine's speed
    // drifts between runs, so the 3 ÷ 1 ratio is the median of adjacent pairs.
    let rounds: usize = std::env::var("WASAGA_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let embedded: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "WASAGA_TRANSPORT_URL").cloned().collect();
    if std::env::var_os("WASAGA_BENCH_GROUP_ONLY").is_some() {
        // Only the analytics group on a backlog, one host then three per round: the
        // archive (Azurite) slows as it fills, so rounds alternate. Printed, not written.
        assert!(env.iter().any(|(k, _)| k == "WASAGA_STREAM_BROKERS"), "the group needs Kafka: add --services");
        for round in 1..=rounds {
            for hosts in [1, 3] {
                let g = group_backlog(&components, &admin, &env, &format!("{namespace}r{round}"), hosts, orders).await;
                let shares: Vec<String> = g.shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
                println!(
                    "| {round} | {hosts} | {} | {:.1} | {:.0} | {:.2} | {} | {} |",
                    g.events,
                    g.secs,
                    g.events as f64 / g.secs,
                    g.cpu_ms_per_event,
                    shares.join(", "),
                    g.left
                );
            }
        }
        return;
    }
    let mut runs = Vec::new();
    for hosts in 1..=3 {
        runs.push(run(&components, &admin, ("RabbitMQ", &env), hosts, 100, orders).await);
        println!("RabbitMQ, {hosts} host(s), spread SKUs: {:.0} orders/s", runs.last().unwrap().orders_per_sec);
    }
    let hot = run(&components, &admin, ("RabbitMQ", &env), 3, 1, orders).await;
    let mut claims = Vec::new();
    for hosts in [1, 3] {
        claims.push(run(&components, &admin, ("embedded", &embedded), hosts, 100, orders).await);
        println!("embedded, {hosts} host(s), spread SKUs: {:.0} orders/s", claims.last().unwrap().orders_per_sec);
    }
    // (one host, three hosts) per round: the runs above are the first round.
    let mut paired =
        vec![("RabbitMQ", (runs[0].clone(), runs[2].clone())), ("embedded", (claims[0].clone(), claims[1].clone()))];
    for round in 2..=rounds {
        for (transport, env) in [("RabbitMQ", &env), ("embedded", &embedded)] {
            let one = run(&components, &admin, (transport, env), 1, 100, orders).await;
            let three = run(&components, &admin, (transport, env), 3, 100, orders).await;
            println!(
                "round {round}, {transport}: CPU ms per order {:.2} with 1 host, {:.2} with 3",
                one.cpu_ms_per_order, three.cpu_ms_per_order
            );
            paired.push((transport, (one, three)));
        }
    }
    let ratios = |transport: &str| -> Vec<f64> {
        paired
            .iter()
            .filter(|(t, _)| *t == transport)
            .map(|(_, (one, three))| three.cpu_ms_per_order / one.cpu_ms_per_order)
            .collect()
    };
    let group = if env.iter().any(|(k, _)| k == "WASAGA_STREAM_BROKERS") {
        let mut group = Vec::new();
        for hosts in [1, 3] {
            group.push(group_backlog(&components, &admin, &env, &namespace, hosts, orders).await);
            let g = group.last().unwrap();
            println!("analytics group on a backlog, {hosts} host(s): {:.0} events/s", g.events as f64 / g.secs);
        }
        group
    } else {
        Vec::new()
    };
    let mut md = format!(
        "# Fleet benchmark\n\n{orders} orders per run, `tok_ok`, one unit per order, 64 in flight spread over the hosts; \
         {with}; every host is a `wasaga serve` process on the same 2 cores as the load generator. \
         Latency is the server's own timeline (`order.placed` → `order.completed`). CPU is the hosts' user + system time \
         from the first order until the last batch any consumer handled (stock committed, every event archived; \
         read every 100 ms). \
         The transport is RabbitMQ, or the embedded one (deliveries are rows in PostgreSQL, claimed with `SKIP LOCKED`).\n\n\
         | transport | hosts | SKUs | orders/s | p50 ms | p99 ms | CPU ms per order | CPU ms per order, each host | batches re-run after a conflict |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut report = json!({"orders_per_run": orders, "with": with, "runs": []});
    let all: Vec<&Run> = runs.iter().chain(std::iter::once(&hot)).chain(claims.iter()).collect();
    for r in &all {
        let each: Vec<String> = r.cpu_per_host.iter().map(|c| format!("{c:.2}")).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {:.2}% |\n",
            r.transport,
            r.hosts,
            r.skus_label(),
            r.orders_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.cpu_ms_per_order,
            each.join(" + "),
            r.conflict_rate * 100.0
        ));
    }
    md.push_str(&format!(
        "\nWhat each order cost PostgreSQL (its statistics of the run's database: transactions, rows inserted, \
         updated or deleted, and index or sequential scans, the reads of every statement), and deliveries per \
         batch for each consumer ({}), over the fleet:\n\n\
         | transport | hosts | SKUs | transactions per order | rows written per order | scans per order | deliveries per batch | batches re-run after a conflict | calls taken again in re-runs |\n|---|---|---|---|---|---|---|---|---|\n",
        CONSUMERS.join(" / ")
    ));
    for r in &all {
        let sizes: Vec<String> =
            r.batch_sizes.iter().map(|s| s.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".to_owned())).collect();
        let reruns: Vec<String> = r.reruns.iter().map(|n| format!("{n:.0}")).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} |\n",
            r.transport,
            r.hosts,
            r.skus_label(),
            r.pg.transactions,
            r.pg.rows_written,
            r.pg.scans,
            sizes.join(" / "),
            reruns.join(" / "),
            r.reused
        ));
        report["runs"].as_array_mut().unwrap().push(json!({
            "transport": r.transport, "hosts": r.hosts, "skus": r.skus, "orders_per_sec": r.orders_per_sec,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_ms_per_order": r.cpu_ms_per_order,
            "cpu_ms_per_order_per_host": r.cpu_per_host, "conflict_rate": r.conflict_rate,
            "pg_transactions_per_order": r.pg.transactions, "pg_rows_written_per_order": r.pg.rows_written,
            "pg_scans_per_order": r.pg.scans,
            "events_not_archived": r.unarchived,
            "deliveries_per_batch": CONSUMERS.iter().zip(&r.batch_sizes).map(|(c, s)| (c.to_string(), json!(s)))
                .collect::<serde_json::Map<_, _>>(),
            "calls_taken_again": r.reused,
            "reruns_after_conflict": CONSUMERS.iter().zip(&r.reruns).map(|(c, n)| (c.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        }));
    }
    let one = runs[0].orders_per_sec;
    md.push_str(&format!(
        "\n3 hosts / 1 host on RabbitMQ, throughput on this machine: {:.2}, CPU per order: {:.2}; 2 hosts / 1 host: \
         {:.2} and {:.2}. With the embedded transport, 3 hosts / 1 host: {:.2} and {:.2}. On two cores more hosts \
         add no CPU: the throughput ratio shows what coordination costs, and CPU per order is what would scale out.\n",
        runs[2].orders_per_sec / one,
        runs[2].cpu_ms_per_order / runs[0].cpu_ms_per_order,
        runs[1].orders_per_sec / one,
        runs[1].cpu_ms_per_order / runs[0].cpu_ms_per_order,
        claims[1].orders_per_sec / claims[0].orders_per_sec,
        claims[1].cpu_ms_per_order / claims[0].cpu_ms_per_order,
    ));
    md.push_str(
        "\nRounds of one host then three, alternated (100 SKUs; round 1 is the runs above), CPU ms per order:\n\n\
         | round | transport | 1 host | 3 hosts | 3 ÷ 1 | throughput 3 ÷ 1 |\n|---|---|---|---|---|---|\n",
    );
    for (i, (transport, (one, three))) in paired.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {transport} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            i / 2 + 1,
            one.cpu_ms_per_order,
            three.cpu_ms_per_order,
            three.cpu_ms_per_order / one.cpu_ms_per_order,
            three.orders_per_sec / one.orders_per_sec
        ));
    }
    let (rabbit, claimed) = (ratios("RabbitMQ"), ratios("embedded"));
    md.push_str(&format!(
        "\nMedian 3 ÷ 1 CPU per order over {rounds} round(s): RabbitMQ {:.2}, embedded {:.2}.\n",
        median(rabbit.clone()),
        median(claimed.clone())
    ));
    report["three_over_one"] = json!(runs[2].orders_per_sec / one);
    report["cpu_three_over_one"] = json!(median(rabbit.clone()));
    report["cpu_three_over_one_rounds"] = json!(rabbit);
    report["embedded_cpu_three_over_one"] = json!(median(claimed.clone()));
    report["embedded_cpu_three_over_one_rounds"] = json!(claimed);
    if let [one, three] = group.as_slice() {
        let rate = |g: &GroupRun| g.events as f64 / g.secs;
        let shares: Vec<String> = three.shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
        md.push_str(
            "\nThe analytics group on a backlog (one host runs the orders; then the group's offsets go back to the \
             topic's start and analytics' inbox is emptied, and a fleet starts; from the first event it handles until \
             the store holds every event as handled again):\n\n\
             | hosts | events | seconds | events/s | CPU ms per event | shares | not handled after 10 min |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for g in [one, three] {
            let shares: Vec<String> = g.shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
            md.push_str(&format!(
                "| {} | {} | {:.1} | {:.0} | {:.2} | {} | {} |\n",
                g.hosts,
                g.events,
                g.secs,
                rate(g),
                g.cpu_ms_per_event,
                shares.join(", "),
                g.left
            ));
        }
        md.push_str(&format!(
            "\n3 hosts archive the backlog at {:.2}× one host's rate; each of the three handled {}.\n",
            rate(three) / rate(one),
            shares.join(", ")
        ));
        report["analytics_backlog"] = json!(
            [one, three]
                .iter()
                .map(|g| json!({
                    "hosts": g.hosts, "events": g.events, "secs": g.secs, "events_per_sec": rate(g),
                    "cpu_ms_per_event": g.cpu_ms_per_event, "shares": g.shares, "not_handled": g.left,
                }))
                .collect::<Vec<_>>()
        );
    }
    if let (Some(one), Some(three)) = (runs[0].analytics_per_sec, runs[2].analytics_per_sec) {
        let shares: Vec<String> = runs[2].analytics_shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
        md.push_str(&format!(
            "\nAnalytics (the Kafka consumer group), events archived per second from the first order until the \
             last event was handled: 1 host {one:.0}, 3 hosts {three:.0} ({:.2}×); with 3 hosts each handled \
             {} of the events.\n",
            three / one,
            shares.join(", ")
        ));
        report["analytics"] = json!({"one_host_per_sec": one, "three_hosts_per_sec": three,
            "three_host_shares": runs[2].analytics_shares});
        // Each run waits at most 10 minutes for the group: an event still not handled
        // then is one the group skipped or is stuck on.
        let left: Vec<String> = all
            .iter()
            .filter_map(|r| {
                r.unarchived.map(|n| format!("{} {} host(s), {} SKUs: {n}", r.transport, r.hosts, r.skus_label()))
            })
            .collect();
        md.push_str(&format!(
            "\nEvents the analytics group had not handled when its wait ended (every event handled, or 10 \
             minutes): {}.\n",
            left.join("; ")
        ));
    }
    let stamp = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    md.push_str(&format!("\nMeasured {stamp}.\n"));
    report["at"] = Value::String(stamp);
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("fleet.md"), &md).unwrap();
    std::fs::write(results.join("fleet.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{md}");
}
