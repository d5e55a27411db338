//! The saga on the real brokers: the machine's RabbitMQ, Kafka (a tansu per test) and
//! Azure Blob (an Azurite per test), every name under a namespace of its own; then the
//! faults: RabbitMQ stopped and started, tansu killed and restarted, Azurite down and
//! up, the host killed mid-traffic, and a poison message. After each, the invariants of
//! ARCHITECTURE.md hold, the archive included (read back through the archive API).
//!
//! `cargo xtask test` installs tansu and Azurite and names them in `WASAGA_TANSU_BIN`
//! and `WASAGA_AZURITE_BIN`; without them each test here fails, saying what to set: a
//! test that cannot run never passes.

use crate::crash::{Server, kill_mid_traffic};
use crate::helpers::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wasaga_host::config::Settings;

/// Tests that use RabbitMQ share the machine's server; the one that stops it takes this
/// exclusively so the others do not see their broker vanish.
pub(crate) static RABBIT: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub(crate) fn amqp_url() -> String {
    std::env::var("WASAGA_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn tool(variable: &str) -> Option<PathBuf> {
    std::env::var_os(variable).map(PathBuf::from).filter(|p| p.exists())
}

/// The binaries; a test that needs them fails without them.
fn tools() -> (PathBuf, PathBuf) {
    match (tool("WASAGA_TANSU_BIN"), tool("WASAGA_AZURITE_BIN")) {
        (Some(tansu), Some(azurite)) => (tansu, azurite),
        _ => panic!(
            "this test needs tansu and Azurite: set WASAGA_TANSU_BIN and WASAGA_AZURITE_BIN to their binaries \
             (`cargo xtask test` installs both and sets them)"
        ),
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// A child process on a port of its own, stopped with SIGKILL and started again as it was.
struct Service {
    name: &'static str,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn start(&mut self) {
        let child = (self.command)()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.name));
        self.child = Some(child);
        let port = self.port;
        eventually(Duration::from_secs(60), &format!("{} answers on {port}", self.name), async || answers(port).await)
            .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tansu broker; `durable` keeps its log in SQLite, so a restart keeps topics and offsets.
///
/// A test where a consumer resumes from a committed offset (a host killed and restarted,
/// a consumer handed to another host) needs `durable`: tansu 0.6.0's in-memory log
/// answers a fetch from an offset inside a record batch with the next batch, so the
/// rest of that batch is never delivered (its SQLite log fetches per record).
async fn tansu(bin: &Path, durable: bool) -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let (bin, cwd) = (bin.to_owned(), dir.path().to_owned());
    let storage = if durable { "sqlite://tansu.db" } else { "memory://tansu/" };
    let command = move || {
        let mut command = Command::new(&bin);
        let url = format!("tcp://127.0.0.1:{port}");
        command.current_dir(&cwd).args(["broker", "--listener-url", &url, "--advertised-listener-url", &url]);
        command.args(["--storage-engine", storage]);
        command
    };
    let mut service = Service { name: "tansu", command: Box::new(command), child: None, port, _dir: dir };
    service.start().await;
    service
}

/// An Azurite blob service keeping its data in a folder, so a restart keeps the blobs.
async fn azurite(bin: &Path) -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let (bin, location) = (bin.to_owned(), dir.path().to_owned());
    let command = move || {
        let mut command = Command::new(&bin);
        command.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--disableTelemetry", "--silent"]);
        command.arg("--location").arg(&location);
        command
    };
    let mut service = Service { name: "azurite", command: Box::new(command), child: None, port, _dir: dir };
    service.start().await;
    service
}

/// The real services of one test, under names of its own.
pub(crate) struct Brokers {
    tansu: Service,
    azurite: Service,
    namespace: String,
}

impl Brokers {
    pub(crate) async fn start(durable_kafka: bool) -> Brokers {
        let (tansu_bin, azurite_bin) = tools();
        remove_stale_names().await;
        let tansu = tansu(&tansu_bin, durable_kafka).await;
        let azurite = azurite(&azurite_bin).await;
        Brokers { tansu, azurite, namespace: format!("t{}", rand_id()) }
    }

    pub(crate) fn archive_url(&self) -> String {
        format!(
            "az://archive?endpoint=http://127.0.0.1:{}/devstoreaccount1&account_name=devstoreaccount1&access_key={}&azure_allow_http=true",
            self.azurite.port,
            AZURITE_KEY.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"),
        )
    }

    /// Settings pointing a test server at these services.
    fn settings(&self, dir: &tempfile::TempDir, store_url: Option<String>) -> Settings {
        Settings {
            transport_url: amqp_url(),
            stream_brokers: Some(format!("127.0.0.1:{}", self.tansu.port)),
            archive_url: Some(self.archive_url()),
            namespace: self.namespace.clone(),
            ..test_settings(dir, store_url)
        }
    }

    /// The same, as the environment of a `wasaga serve` process.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WASAGA_TRANSPORT_URL", amqp_url()),
            ("WASAGA_STREAM_BROKERS", format!("127.0.0.1:{}", self.tansu.port)),
            ("WASAGA_ARCHIVE_URL", self.archive_url()),
            ("WASAGA_NAMESPACE", self.namespace.clone()),
        ]
    }

    async fn spawn(&self, db: Db) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        install_saga_steps(&dir.path().join("plugins"));
        let settings = self.settings(&dir, store_url(db).await);
        let app = spawn_with(dir, settings).await;
        app.wait_ready().await;
        app
    }
}

impl Api {
    /// Wait for `/readyz` (the transport connected, its queues declared).
    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(60), "the server is ready", async || self.get("/readyz").await.status() == 200)
            .await;
    }

    /// Wait until the status of every order in `ids` satisfies `done`.
    async fn until_every(&self, ids: &[String], what: &str, done: impl Fn(&str) -> bool) {
        eventually(Duration::from_secs(60), what, async || {
            for id in ids {
                if !done(self.order(id).await["status"].as_str().unwrap_or_default()) {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Place `n` orders with the given tokens in turn, concurrently.
    async fn place_many(&self, n: usize, tokens: &[&str]) -> Vec<String> {
        let orders = (0..n).map(|i| async move {
            let lines = [("SKU-1", 1 + (i % 2) as u32), ("SKU-2", 1)];
            self.place(&lines, tokens[i % tokens.len()]).await
        });
        futures::future::join_all(orders).await
    }
}

/// Queues and exchanges of earlier runs' tests (`t<16 hex>.…`) are deleted once per run,
/// before any test of this run declares its own, so the shared broker does not fill up.
async fn remove_stale_names() {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CLEANED
        .get_or_init(|| async {
            let stale = |name: &str| {
                name.len() > 18
                    && name.starts_with('t')
                    && name[1..17].chars().all(|c| c.is_ascii_hexdigit())
                    && name[17..].starts_with('.')
            };
            let list = async |what: &str| {
                let output = tokio::process::Command::new("rabbitmqctl")
                    .args([what, "-q", "name"])
                    .output()
                    .await
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                output.lines().map(str::trim).filter(|n| stale(n)).map(str::to_owned).collect::<Vec<_>>()
            };
            let (queues, exchanges) = (list("list_queues").await, list("list_exchanges").await);
            let Ok(connection) = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
            else {
                return;
            };
            let Ok(channel) = connection.create_channel().await else { return };
            for queue in queues {
                let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
            }
            for exchange in exchanges {
                let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
            }
            let _ = connection.close(200, "cleaned".into()).await;
        })
        .await;
}

fn stocked() -> BTreeMap<String, u64> {
    BTreeMap::from([("SKU-1".to_owned(), 500), ("SKU-2".to_owned(), 400)])
}

const MIX: [&str; 6] = ["tok_ok", "tok_decline", "tok_ok", "tok_flaky_2", "tok_ok", "tok_trap"];

async fn rabbitmqctl(args: &[&str]) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// The whole saga on PostgreSQL + RabbitMQ + Kafka + Azure Blob: every card token, then
/// the invariants, the archive read back from Azurite through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_on_rabbitmq_kafka_and_azure_blob() {
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(false).await;
    let app = brokers.spawn(Db::Postgres).await;
    let ready: serde_json::Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["transport"], "rabbitmq", "{ready}");
    assert_eq!(ready["stream"]["topic"], format!("{}.events", brokers.namespace), "{ready}");
    let stocked = stocked();
    for (sku, n) in &stocked {
        app.stock_up(sku, *n).await;
    }
    let placed = app.place_many(60, &MIX).await;
    app.assert_invariants(&stocked).await;
    let orders = app.all_orders().await;
    let status = |id: &str| orders.iter().find(|o| o["order_id"] == id).map(|o| o["status"].clone());
    for (i, id) in placed.iter().enumerate() {
        let want = if matches!(MIX[i % MIX.len()], "tok_ok" | "tok_flaky_2") { "completed" } else { "cancelled" };
        assert_eq!(status(id), Some(want.into()), "order {i} ({})", MIX[i % MIX.len()]);
    }
    // Dead letters come from the consumers' stores, whichever transport carries them.
    let dead: Vec<serde_json::Value> = app.admin_get("/api/admin/dead-letters").await.json().await.expect("json");
    assert_eq!(dead.len(), 10, "one per tok_trap order");
    assert!(dead.iter().all(|d| d["step"] == "payment" && d["attempts"] == 5), "{dead:?}");
    app.stop().await;
}

/// The `i`th `order.placed` of a test that publishes to a broker directly.
fn placed(i: usize) -> wasaga_host::event::StoredEvent {
    wasaga_host::event::StoredEvent {
        id: format!("e{i}"),
        kind: "order.placed".to_owned(),
        order_id: format!("o{i}"),
        payload: "{}".to_owned(),
        step: "host".to_owned(),
        step_version: String::new(),
        occurred_at_ms: 1,
        attempt: 1,
        trace: None,
    }
}

/// Events the analytics group never handled though its offsets reached the stream's end
/// (a skip) are published again to the stream by the redrive, and handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_stream_group_skipped_are_published_again() {
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let url = store_url(Db::Postgres).await;
    let mut settings = brokers.settings(&dir, url.clone());
    settings.redrive_after_ms = 1000;
    settings.maintenance_interval_ms = 300;
    let app = spawn_with(dir, settings).await;
    app.wait_ready().await;
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 10)]);
    app.stock_up("SKU-1", 10).await;
    let id = app.place(&[("SKU-1", 1)], "tok_ok").await;
    app.assert_invariants(&stocked).await;
    // Analytics' inbox loses the order's rows: to the redrive, the group skipped them.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url.expect("PostgreSQL")).await.expect("connect");
    let inbox_rows = "SELECT count(*) FROM inbox WHERE consumer = 'analytics' \
                      AND event_id IN (SELECT event_id FROM outbox WHERE order_id = $1)";
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE order_id = $1")
        .bind(&id)
        .fetch_one(&mut conn)
        .await
        .expect("count");
    sqlx::query("DELETE FROM inbox WHERE consumer = 'analytics' AND event_id IN (SELECT event_id FROM outbox WHERE order_id = $1)")
        .bind(&id)
        .execute(&mut conn)
        .await
        .expect("delete");
    // The order was found complete; it is looked at again as if it had just changed.
    sqlx::query("UPDATE orders SET redrives = 0, next_redrive_at_ms = 0 WHERE id = $1")
        .bind(&id)
        .execute(&mut conn)
        .await
        .expect("reset");
    eventually(Duration::from_secs(60), "analytics handles every event of the order again", async || {
        let (handled,): (i64,) = sqlx::query_as(inbox_rows).bind(&id).fetch_one(&mut conn).await.expect("count");
        handled == events
    })
    .await;
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(metrics.lines().any(|l| l.starts_with("wasaga_redriven_events_total ")), "counted as redriven");
    app.assert_invariants(&stocked).await;
    app.stop().await;
}

/// The redrive takes a stream reader's unhandled event for lost only once its group has
/// settled the whole stream. A group that lags (messages not yet read, or read and not
/// settled) is not caught up, so nothing it has still to handle is published twice;
/// once its holder settles the last message, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_stream_group_is_not_taken_for_one_that_skipped() {
    use wasaga_host::stream::{EventStream, KafkaSettings, KafkaStream};
    use wasaga_host::transport::{Settlement, Transport};
    let brokers = Brokers::start(false).await;
    let stream = KafkaStream::new(KafkaSettings {
        brokers: format!("127.0.0.1:{}", brokers.tansu.port),
        topic: format!("{}.events", brokers.namespace),
        namespace: brokers.namespace.clone(),
        instance: "h1".to_owned(),
        leases: None,
        replication: None,
    })
    .expect("stream");
    stream.publish(&(0..3).map(placed).collect::<Vec<_>>()).await.expect("publish");
    let caught_up = async || stream.caught_up("analytics").await.expect("the group's offsets");
    assert!(!caught_up().await, "nothing read yet");
    let mut deliveries = Vec::new();
    eventually(Duration::from_secs(60), "the three messages are read", async || {
        deliveries.extend(stream.receive("analytics", 64, Duration::from_millis(500)).await.unwrap_or_default());
        deliveries.len() >= 3
    })
    .await;
    let last = deliveries.pop().expect("a delivery");
    stream.settle("analytics", deliveries.into_iter().map(Settlement::Ack).collect()).await.expect("settle");
    // The settled offsets are committed asynchronously; the one still out holds its
    // partition's below the end whatever arrives.
    assert!(!caught_up().await, "a message read and not settled");
    stream.settle("analytics", vec![Settlement::Ack(last)]).await.expect("settle");
    eventually(Duration::from_secs(60), "settled to the end", async || caught_up().await).await;
}

/// Two hosts consuming one queue: the host ranked first on it takes every message while
/// it has room (128 unsettled), the other takes only the overflow, and takes over while
/// the first stands aside (its store down) and when it goes. A burst is not split
/// between hosts into small batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_goes_to_one_host_while_it_keeps_up_and_overflows_to_the_next() {
    use wasaga_host::transport::{Delivery, RabbitSettings, RabbitTransport, Settlement, Transport};
    let _shared = RABBIT.read().await;
    remove_stale_names().await;
    let namespace = format!("t{}", rand_id());
    let settings = |host: &str| RabbitSettings {
        url: amqp_url(),
        namespace: namespace.clone(),
        retry_base: Duration::from_millis(200),
        retry_cap: Duration::from_secs(1),
        host_id: host.to_owned(),
    };
    let (one, two) = (settings("host-one"), settings("host-two"));
    let (first, second) = if one.consumer_priority("payment") > two.consumer_priority("payment") {
        (RabbitTransport::start(one), RabbitTransport::start(two))
    } else {
        (RabbitTransport::start(two), RabbitTransport::start(one))
    };
    let kinds = ["order.placed".to_owned()];
    for host in [&first, &second] {
        assert!(host.wait_ready(Duration::from_secs(30)).await, "connected to RabbitMQ");
        host.declare("payment", &kinds).await.expect("declare");
        // The first receive subscribes.
        assert!(host.receive("payment", 64, Duration::from_millis(100)).await.expect("receive").is_empty());
    }
    let publish = async |range: std::ops::Range<usize>| {
        first.publish(&range.map(placed).collect::<Vec<_>>()).await.expect("publish");
    };
    // Takes what has come to `host` until `held` holds `want` in all.
    let take = async |host: &RabbitTransport, held: &mut Vec<Delivery>, want: usize| {
        eventually(Duration::from_secs(30), &format!("{want} deliveries held"), async || {
            held.extend(host.receive("payment", 64, Duration::from_millis(50)).await.expect("receive"));
            held.len() >= want
        })
        .await;
    };
    let (mut at_first, mut at_second) = (Vec::new(), Vec::new());
    publish(0..40).await;
    take(&first, &mut at_first, 40).await;
    assert_eq!(at_first.len(), 40, "the whole burst went to the host ranked first");
    // 40 held unsettled: 88 more fill the first host's prefetch, the rest overflow.
    publish(40..240).await;
    take(&first, &mut at_first, 128).await;
    take(&second, &mut at_second, 112).await;
    assert_eq!((at_first.len(), at_second.len()), (128, 112), "the overflow beyond 128 went to the next host");
    let settle = async |host: &RabbitTransport, held: &mut Vec<Delivery>| {
        host.settle("payment", held.drain(..).map(Settlement::Ack).collect()).await.expect("settle");
    };
    settle(&first, &mut at_first).await;
    settle(&second, &mut at_second).await;
    publish(240..250).await;
    take(&first, &mut at_first, 10).await;
    settle(&first, &mut at_first).await;
    let ids = |held: &[Delivery]| {
        let mut ids: Vec<String> = held.iter().map(|d| d.event.id.clone()).collect();
        ids.sort();
        ids
    };
    let expected = |range: std::ops::Range<usize>| {
        let mut ids: Vec<String> = range.map(|i| format!("e{i}")).collect();
        ids.sort();
        ids
    };
    // Takes what comes to `host` until `held` holds every message of `range`, and returns
    // those. A message settled just before its channel closed may come once more (its ack
    // was still on the way, the broker returned it): the inbox absorbs such a copy, so
    // only `range` counts.
    let take_range = async |host: &RabbitTransport, held: &mut Vec<Delivery>, range: std::ops::Range<usize>| {
        let wanted = expected(range.clone());
        eventually(Duration::from_secs(30), &format!("deliveries {range:?} held"), async || {
            held.extend(host.receive("payment", 64, Duration::from_millis(50)).await.expect("receive"));
            let have: std::collections::HashSet<&str> = held.iter().map(|d| d.event.id.as_str()).collect();
            wanted.iter().all(|id| have.contains(id.as_str()))
        })
        .await;
        ids(&held[..]).into_iter().filter(|id| wanted.contains(id)).collect::<Vec<_>>()
    };
    // The first host stands aside: the next takes the queue until the first receives again.
    first.stand_aside("payment").await;
    publish(250..260).await;
    let got = take_range(&second, &mut at_second, 250..260).await;
    assert_eq!(got, expected(250..260), "each once, to the host ranked next");
    settle(&second, &mut at_second).await;
    assert!(first.receive("payment", 64, Duration::from_millis(100)).await.expect("receive").is_empty());
    publish(260..270).await;
    let got = take_range(&first, &mut at_first, 260..270).await;
    assert_eq!(got, expected(260..270), "the first host takes its queue back");
    settle(&first, &mut at_first).await;
    // The first host goes: the next in rank takes the queue at once.
    drop(first);
    let publisher = RabbitTransport::start(settings("host-three"));
    assert!(publisher.wait_ready(Duration::from_secs(30)).await, "connected to RabbitMQ");
    publisher.publish(&(270..280).map(placed).collect::<Vec<_>>()).await.expect("publish");
    let got = take_range(&second, &mut at_second, 270..280).await;
    assert_eq!(got, expected(270..280), "each once");
}

/// A broker that stops answering (the connection stays open, nothing comes back) while a
/// host stands aside does not hold that host's consumer: standing aside gives up within
/// its bound, so the consumer goes on to its backoff and its shutdown check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_aside_from_a_broker_that_never_answers_returns() {
    use wasaga_host::transport::{RabbitSettings, RabbitTransport, Transport};
    let _shared = RABBIT.read().await;
    remove_stale_names().await;
    let proxy = Proxy::start(0, 5672).await;
    let host = RabbitTransport::start(RabbitSettings {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port),
        namespace: format!("t{}", rand_id()),
        retry_base: Duration::from_millis(200),
        retry_cap: Duration::from_secs(1),
        host_id: "host-one".to_owned(),
    });
    assert!(host.wait_ready(Duration::from_secs(30)).await, "connected to RabbitMQ through the proxy");
    host.declare("payment", &["order.placed".to_owned()]).await.expect("declare");
    // The first receive subscribes.
    assert!(host.receive("payment", 64, Duration::from_millis(100)).await.expect("receive").is_empty());
    proxy.set(Flow::Frozen);
    let returned = tokio::time::timeout(Duration::from_secs(30), host.stand_aside("payment")).await;
    assert!(returned.is_ok(), "standing aside waited on a broker that never answers");
}

/// `rabbitmqctl delete_queue <ns>.payment` while orders flow: publishes that no queue
/// takes come back (mandatory) and fail, the topology is declared again, messages lost
/// with the queue are redriven, and every order still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_while_orders_flow_loses_no_order() {
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(false).await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = brokers.settings(&dir, store_url(Db::Postgres).await);
    settings.redrive_after_ms = 3000;
    settings.maintenance_interval_ms = 500;
    let app = spawn_with(dir, settings).await;
    app.wait_ready().await;
    let stocked = stocked();
    for (sku, n) in &stocked {
        app.stock_up(sku, *n).await;
    }
    let first = app.place_many(30, &["tok_ok"]).await;
    rabbitmqctl(&["delete_queue", &format!("{}.payment", brokers.namespace)]).await;
    let second = app.place_many(30, &["tok_ok"]).await;
    app.until_every(&first, "the orders before the deletion complete", |s| s == "completed").await;
    app.until_every(&second, "the orders after the deletion complete", |s| s == "completed").await;
    app.assert_invariants(&stocked).await;
    app.stop().await;
}

/// `rabbitmqctl stop_app` during traffic: `/readyz` says 503 while it is down, orders are
/// still accepted (the outbox keeps them), and everything completes once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_and_started_during_traffic_loses_nothing() {
    let _alone = RABBIT.write().await;
    let brokers = Brokers::start(false).await;
    let app = brokers.spawn(Db::Sqlite).await;
    let stocked = stocked();
    for (sku, n) in &stocked {
        app.stock_up(sku, *n).await;
    }
    let before = app.place_many(20, &MIX).await;
    rabbitmqctl(&["stop_app"]).await;
    let restarted = async {
        eventually(Duration::from_secs(30), "/readyz reports the broker down", async || {
            app.get("/readyz").await.status() == 503
        })
        .await;
        let during = app.place_many(20, &MIX).await;
        rabbitmqctl(&["start_app"]).await;
        during
    };
    // Whatever happens above, the broker is started again for the other tests.
    let during = match tokio::time::timeout(Duration::from_secs(120), restarted).await {
        Ok(during) => during,
        Err(_) => {
            rabbitmqctl(&["start_app"]).await;
            panic!("the outage part of the test timed out");
        }
    };
    app.wait_ready().await;
    app.assert_invariants(&stocked).await;
    assert_eq!(app.all_orders().await.len(), before.len() + during.len());
    app.stop().await;
}

/// tansu killed while orders flow: the saga goes on (orders complete without Kafka),
/// and once tansu is back the analytics group catches up: every event archived once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_killed_and_restarted_the_saga_goes_on_and_the_archive_catches_up() {
    let _shared = RABBIT.read().await;
    let mut brokers = Brokers::start(true).await;
    let app = brokers.spawn(Db::Postgres).await;
    let stocked = stocked();
    for (sku, n) in &stocked {
        app.stock_up(sku, *n).await;
    }
    app.place_many(20, &MIX).await;
    brokers.tansu.kill();
    let during = app.place_many(12, &["tok_ok"]).await;
    app.until_every(&during, "orders complete while Kafka is down", |status| status == "completed").await;
    brokers.tansu.start().await;
    app.assert_invariants(&stocked).await;
    app.stop().await;
}

/// Azurite down while orders flow: archiving fails and is retried without using up the
/// step's attempts (nothing is dead-lettered); once it is back the archive catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_down_then_up_the_archive_lags_and_catches_up() {
    let _shared = RABBIT.read().await;
    let mut brokers = Brokers::start(false).await;
    let app = brokers.spawn(Db::Sqlite).await;
    let stocked = stocked();
    for (sku, n) in &stocked {
        app.stock_up(sku, *n).await;
    }
    brokers.azurite.kill();
    let placed = app.place_many(20, &["tok_ok", "tok_decline"]).await;
    app.until_every(&placed, "orders finish while the archive is down", |status| status != "pending").await;
    let listing = app.admin_get(&format!("/api/admin/archive?order_id={}", placed[0])).await;
    assert_eq!(listing.status(), 503, "the archive cannot be listed while down");
    brokers.azurite.start().await;
    app.assert_invariants(&stocked).await;
    let dead: Vec<serde_json::Value> = app.admin_get("/api/admin/dead-letters").await.json().await.expect("json");
    assert!(dead.is_empty(), "an archive outage dead-letters nothing: {dead:?}");
    app.stop().await;
}

/// The `wasaga` binary killed with SIGKILL mid-traffic, three times, on the brokers:
/// whatever was published but not marked relayed goes again, and the inboxes absorb it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_killed_mid_traffic_on_the_brokers_handles_nothing_twice() {
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(true).await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let url = fresh_pg_database().await;
    let token = format!("t-{}", rand_id());
    let env = brokers.env();
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 400), ("SKU-2".to_owned(), 300)]);
    let start = || Server::start_env(dir.path(), Some(&url), &token, &env);
    let server = kill_mid_traffic(start, &stocked, &[10, 50]).await;
    server.api.wait_ready().await;
    server.api.assert_invariants(&stocked).await;
    server.kill();
}

/// A message no consumer can read, and a payment that traps every time: each ends in a
/// dead-letter queue while the orders behind them complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_without_blocking_its_queue() {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(false).await;
    let app = brokers.spawn(Db::Sqlite).await;
    app.stock_up("SKU-1", 100).await;
    app.stock_up("SKU-2", 100).await;
    let connection =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("connects");
    let channel = connection.create_channel().await.expect("channel");
    let queue = format!("{}.payment", brokers.namespace);
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"\x00 not an event",
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let trapped = app.place(&[("SKU-1", 1)], "tok_trap").await;
    let fine = app.place_many(10, &["tok_ok"]).await;
    app.until_every(&fine, "the good orders complete", |status| status == "completed").await;
    eventually(Duration::from_secs(60), "the trapping order is cancelled", async || {
        app.order(&trapped).await["status"] == "cancelled"
    })
    .await;
    // Both the unreadable message and the trapped event sit in payment's dead-letter queue.
    let dead = channel
        .queue_declare(
            format!("{}.payment.dead", brokers.namespace).as_str().into(),
            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    assert_eq!(dead.message_count(), 2, "the unreadable message and the trapped event");
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

/// A step added while the host runs gets its queue, bound to the kinds its manifest
/// subscribes to, before it is reported loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_added_at_run_time_gets_a_queue_bound_to_its_subscriptions() {
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(false).await;
    let app = brokers.spawn(Db::Sqlite).await;
    let bindings = async || {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["list_bindings", "-q", "source_name", "destination_name", "routing_key"])
            .output()
            .await
            .expect("rabbitmqctl runs");
        let exchange = format!("{}.saga", brokers.namespace);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.starts_with(&format!("{exchange}\t")))
            .map(|line| line.split('\t').skip(1).collect::<Vec<_>>().join(" "))
            .collect::<Vec<String>>()
    };
    let before = bindings().await;
    let ns = &brokers.namespace;
    assert!(before.contains(&format!("{ns}.payment stock.reserved")), "{before:?}");
    assert!(!before.contains(&format!("{ns}.analytics #")), "analytics reads Kafka, not a queue: {before:?}");
    assert_eq!(app.upload("echo", component("echo-v1")).await.status(), 200);
    eventually(Duration::from_secs(30), "echo's queue is bound to echo.#", async || {
        bindings().await.contains(&format!("{ns}.echo echo.#"))
    })
    .await;
    app.stop().await;
}
