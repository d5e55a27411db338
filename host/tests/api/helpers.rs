//! Test harness: the built components, runtimes with test limits, and `spawn_app()`
//! returning a running server on a random port with typed request helpers.

#![allow(dead_code)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use wasaga_host::config::Settings;
use wasaga_host::runtime::{
    Allocator, CallInput, Emitted, LoadedStep, MemoryState, Network, Origin, Runtime, RuntimeConfig,
};
use wasaga_host::server::App;

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let sink = match std::env::var_os("TEST_LOG") {
            Some(_) => wasaga_host::telemetry::Sink::Stderr,
            None => wasaga_host::telemetry::Sink::Quiet,
        };
        wasaga_host::telemetry::init("info", sink);
    });
}

/// The folder `cargo xtask test` builds the components into.
pub fn components_dir() -> PathBuf {
    match std::env::var_os("WASAGA_TEST_COMPONENTS") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "WASAGA_TEST_COMPONENTS is not set: run the tests with `cargo xtask test`, which builds the components first"
        ),
    }
}

/// The bytes of a built component (`inventory`, `hostile`, `echo-v2`, ...).
pub fn component(name: &str) -> Bytes {
    let path = components_dir().join(format!("{name}.wasm"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())))
}

/// Compiled code shared by the tests of one run, so each component compiles once.
fn shared_cache() -> PathBuf {
    components_dir().join(".compile-cache")
}

pub fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        deadline: Duration::from_millis(500),
        memory_mib: 32,
        concurrency: 8,
        cache_dir: Some(shared_cache()),
        allocator: Allocator::Pooling,
        ..RuntimeConfig::default()
    }
}

pub fn runtime() -> Arc<Runtime> {
    init_logging();
    Runtime::new(runtime_config()).expect("runtime starts")
}

pub async fn load(runtime: &Arc<Runtime>, name: &str) -> LoadedStep {
    load_as(runtime, name, name).await
}

pub async fn load_as(runtime: &Arc<Runtime>, file: &str, name: &str) -> LoadedStep {
    runtime.load(name, component(file)).await.unwrap_or_else(|e| panic!("{file} loads as {name}: {e}"))
}

/// An event for a call, from the host.
pub struct TestEvent {
    pub id: String,
    pub kind: String,
    pub order_id: String,
    pub occurred_at_ms: u64,
    pub payload: String,
    pub origin: Origin,
    pub attempt: u32,
}

impl TestEvent {
    pub fn new(kind: &str, order_id: &str, payload: serde_json::Value) -> TestEvent {
        TestEvent {
            id: format!("ev-{}", rand_id()),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: 1_764_115_200_000, // 2025-11-26T00:00:00Z
            payload: payload.to_string(),
            origin: Origin { step: "host".to_owned(), step_version: "test".to_owned() },
            attempt: 1,
        }
    }

    pub fn attempt(mut self, attempt: u32) -> TestEvent {
        self.attempt = attempt;
        self
    }

    pub fn input(&self) -> CallInput<'_> {
        CallInput {
            id: &self.id,
            kind: &self.kind,
            order_id: &self.order_id,
            occurred_at_ms: self.occurred_at_ms,
            payload: &self.payload,
            origin: &self.origin,
            attempt: self.attempt,
            network: Network::Live,
        }
    }
}

pub fn rand_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Call `step` with `event` on `state` and no archive.
pub async fn call(
    runtime: &Runtime,
    step: &LoadedStep,
    state: &Arc<MemoryState>,
    event: &TestEvent,
) -> Result<Vec<Emitted>, wasaga_host::runtime::CallError> {
    runtime.call(step, event.input(), state.clone(), None).await
}

pub fn payload(emit: &Emitted) -> serde_json::Value {
    serde_json::from_str(&emit.payload).expect("emitted payload is JSON")
}

/// Poll `check` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// A running server on a random port with a fresh data and plugins folder.
pub struct TestApp {
    pub api: Api,
    pub dir: tempfile::TempDir,
    /// The store URL it runs on (`None`: SQLite in its data folder).
    pub store_url: Option<String>,
    registry: Option<Arc<wasaga_host::registry::StepRegistry>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Typed requests to a server, in this process or another.
#[derive(Clone)]
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub http: reqwest::Client,
    /// The server's data folder (for the local archive).
    pub data_dir: PathBuf,
}

impl TestApp {
    /// The app's step registry (it must have started).
    pub fn registry(&self) -> &wasaga_host::registry::StepRegistry {
        self.registry.as_deref().expect("the app started (its store answered at once)")
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Stop the server, wait for it to finish, and hand back its folder.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task ends cleanly");
        }
        self.dir
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request is sent")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(&self.token).send().await.expect("request is sent")
    }

    pub async fn plugins(&self) -> Vec<serde_json::Value> {
        let response = self.admin_get("/api/admin/plugins").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("plugins list is JSON")
    }

    pub async fn plugin(&self, name: &str) -> Option<serde_json::Value> {
        self.plugins().await.into_iter().find(|p| p["name"] == name)
    }

    pub async fn upload(&self, name: &str, bytes: Bytes) -> reqwest::Response {
        self.upload_rollout(name, "", bytes).await
    }

    /// Upload `bytes` as a new version of `name` with `query` (`rollout=shadow`, …).
    pub async fn upload_rollout(&self, name: &str, query: &str, bytes: Bytes) -> reqwest::Response {
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        self.http
            .put(self.url(&format!("/api/admin/plugins/{name}{query}")))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("request is sent")
    }

    pub async fn rollback(&self, name: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/admin/plugins/{name}/rollback")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request is sent")
    }
}

/// Copy the saga's three steps into `dir`.
pub fn install_saga_steps(dir: &Path) {
    std::fs::create_dir_all(dir).expect("plugins folder");
    for name in ["inventory", "payment", "analytics"] {
        std::fs::write(dir.join(format!("{name}.wasm")), component(name)).expect("copy component");
    }
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    spawn_app_in(dir).await
}

/// Start a server on `dir` (its `plugins` and `data` subfolders), e.g. again after a stop.
pub async fn spawn_app_in(dir: tempfile::TempDir) -> TestApp {
    let settings = test_settings(&dir, None);
    spawn_with(dir, settings).await
}

/// Settings for a test server in `dir`, on `store_url` (SQLite in `dir` if `None`).
pub fn test_settings(dir: &tempfile::TempDir, store_url: Option<String>) -> Settings {
    Settings {
        admin_token: Some(format!("test-token-{}", rand_id()).into()),
        http_addr: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().join("data"),
        plugins_dir: dir.path().join("plugins"),
        step_deadline_ms: 500,
        step_memory_mib: 32,
        step_concurrency: 8,
        retry_base_ms: 10,
        store_url,
        ..Settings::default()
    }
}

/// Start a server with `settings`, keeping `dir` alive as long as the server.
pub async fn spawn_with(dir: tempfile::TempDir, settings: Settings) -> TestApp {
    init_logging();
    let token =
        settings.admin_token.as_ref().map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned()).unwrap_or_default();
    let store_url = settings.store_url.clone();
    let app = App::build(settings).await.expect("app builds");
    let addr = app.local_addr();
    let registry = app.registry();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    let api = Api { addr, token, http: reqwest::Client::new(), data_dir: dir.path().join("data") };
    TestApp { api, dir, store_url, registry, shutdown: Some(tx), server: Some(server) }
}

/// Which store a saga test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
    /// Runs only where `WASAGA_TEST_MSSQL_URL` names a SQL Server.
    Mssql,
}

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("WASAGA_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty PostgreSQL database; databases of earlier runs are dropped first.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    CLEANED
        .get_or_init(|| async {
            let stale: Vec<(String,)> =
                sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'wasaga_t_%'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
            for (name,) in stale {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
            }
        })
        .await;
    let name = format!("wasaga_t_{}", rand_id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap_or(admin);
    format!("{base}/{name}")
}

pub async fn store_url(db: Db) -> Option<String> {
    match db {
        Db::Sqlite => None,
        Db::Postgres => Some(fresh_pg_database().await),
        Db::Mssql => match mssql_admin_url() {
            Some(admin) => Some(fresh_mssql_database(&admin).await),
            None => None,
        },
    }
}

/// A store for the concurrency tests: SQLite in a folder, a fresh PostgreSQL database, or
/// a fresh database on the SQL Server of `WASAGA_TEST_MSSQL_URL`.
pub async fn test_store(db: Db) -> (std::sync::Arc<dyn wasaga_host::store::Store>, Option<tempfile::TempDir>) {
    let (url, dir) = match store_url(db).await {
        Some(url) => (url, None),
        None if db == Db::Mssql => {
            panic!("set WASAGA_TEST_MSSQL_URL=mssql://sa:…@host:1433/master?trust_server_certificate=true")
        }
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            (format!("sqlite://{}", dir.path().join("c.db").display()), Some(dir))
        }
    };
    (wasaga_host::store::open(&url, &Default::default()).await.expect("store"), dir)
}

/// An event for the store tests: `kind` of `order_id`, written by the host.
pub fn stored_event(id: &str, kind: &str, order_id: &str) -> wasaga_host::store::StoredEvent {
    wasaga_host::store::StoredEvent {
        id: id.to_owned(),
        kind: kind.to_owned(),
        order_id: order_id.to_owned(),
        payload: "{}".to_owned(),
        step: "host".to_owned(),
        step_version: "1".to_owned(),
        occurred_at_ms: 1,
        attempt: 1,
        trace: None,
    }
}

/// A one-cent order `id` for the store tests, placed by `placed`.
pub fn new_order(id: &str, placed: wasaga_host::event::StoredEvent) -> wasaga_host::store::NewOrder {
    wasaga_host::store::NewOrder {
        id: id.to_owned(),
        customer_id: "c".to_owned(),
        items: "[]".to_owned(),
        total_cents: 1,
        created_at_ms: 1,
        idempotency: None,
        placed,
    }
}

/// One test per store: `mod sqlite`, `mod postgres`, and `mod mssql`, ignored unless
/// asked for (`cargo xtask test` runs it with `--include-ignored` when
/// `WASAGA_TEST_MSSQL_URL` names a SQL Server, and says once that it did not run when not).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Db::Postgres).await })*
        }
        mod mssql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a SQL Server: set WASAGA_TEST_MSSQL_URL"]
            async fn $name() {
                assert!(
                    crate::helpers::mssql_admin_url().is_some(),
                    "set WASAGA_TEST_MSSQL_URL=mssql://sa:…@host:1433/master?trust_server_certificate=true"
                );
                super::$name(crate::helpers::Db::Mssql).await
            })*
        }
    };
}
pub(crate) use on_every_store;

/// A server with the saga steps on a fresh store of kind `db`.
pub async fn spawn_saga(db: Db) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let settings = test_settings(&dir, store_url(db).await);
    spawn_with(dir, settings).await
}

pub fn order_body(lines: &[(&str, u32)], token: &str) -> serde_json::Value {
    let items: Vec<serde_json::Value> = lines
        .iter()
        .map(|(sku, quantity)| serde_json::json!({"sku": sku, "quantity": quantity, "unit_price_cents": 1250}))
        .collect();
    serde_json::json!({"customer_id": "c-1", "items": items, "payment": {"card_token": token}})
}

impl Api {
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http.post(self.url(path)).json(body).send().await.expect("request is sent")
    }

    /// Place an order; returns its id.
    pub async fn place(&self, lines: &[(&str, u32)], token: &str) -> String {
        let response = self.post_json("/api/orders", &order_body(lines, token)).await;
        assert_eq!(response.status(), 202, "placing an order");
        let body: serde_json::Value = response.json().await.expect("json");
        body["order_id"].as_str().expect("order id").to_owned()
    }

    pub async fn order(&self, id: &str) -> serde_json::Value {
        let response = self.get(&format!("/api/orders/{id}")).await;
        assert_eq!(response.status(), 200, "order {id}");
        response.json().await.expect("json")
    }

    pub async fn cancel(&self, id: &str) -> reqwest::StatusCode {
        self.http.post(self.url(&format!("/api/orders/{id}/cancel"))).send().await.expect("sent").status()
    }

    /// Set stock through the API and wait until the read model shows it.
    pub async fn stock_up(&self, sku: &str, available: u64) {
        let response = self
            .http
            .put(self.url(&format!("/api/stock/{sku}")))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"available": available}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 202);
        eventually(Duration::from_secs(30), "stock applied", async || {
            self.stock(sku).await.is_some_and(|s| s["available"] == available)
        })
        .await;
    }

    pub async fn stock(&self, sku: &str) -> Option<serde_json::Value> {
        let response = self.get(&format!("/api/stock/{sku}")).await;
        if response.status() == 404 {
            return None;
        }
        Some(response.json().await.expect("json"))
    }

    /// Every order, following the cursor.
    pub async fn all_orders(&self) -> Vec<serde_json::Value> {
        let mut orders = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(cursor) => format!("/api/orders?limit=500&after={cursor}"),
                None => "/api/orders?limit=500".to_owned(),
            };
            // The cross-customer list is the admin's.
            let page: serde_json::Value = self.admin_get(&path).await.json().await.expect("json");
            orders.extend(page["orders"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(cursor) => after = Some(cursor.to_owned()),
                None => return orders,
            }
        }
    }

    /// Wait until every order is terminal and the saga's invariants (ARCHITECTURE.md) hold, then
    /// assert them (with details) once more.
    pub async fn assert_invariants(&self, stocked: &std::collections::BTreeMap<String, u64>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let problems = self.invariant_problems(stocked).await;
            if problems.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("invariants do not hold once quiet:\n{}", problems.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn invariant_problems(&self, stocked: &std::collections::BTreeMap<String, u64>) -> Vec<String> {
        use std::collections::{BTreeMap, HashSet};
        let mut problems = Vec::new();
        let orders = self.all_orders().await;
        let mut sold: BTreeMap<String, u64> = BTreeMap::new();
        for order in &orders {
            let id = order["order_id"].as_str().unwrap_or_default();
            let status = order["status"].as_str().unwrap_or_default();
            let timeline = order["timeline"].as_array().cloned().unwrap_or_default();
            let count = |kind: &str| timeline.iter().filter(|t| t["kind"] == kind).count();
            let ids: HashSet<&str> = timeline.iter().filter_map(|t| t["event_id"].as_str()).collect();
            if ids.len() != timeline.len() {
                problems.push(format!("{id}: an event id appears twice in the timeline"));
            }
            for kind in ["stock.reserved", "stock.committed", "stock.released", "payment.captured", "payment.refunded"]
            {
                if count(kind) > 1 {
                    problems.push(format!("{id}: {kind} {} times (a step handled an event twice)", count(kind)));
                }
            }
            match status {
                "completed" => {
                    if count("payment.captured") != 1 || count("payment.refunded") != 0 {
                        problems.push(format!(
                            "{id}: completed with {} captures and {} refunds",
                            count("payment.captured"),
                            count("payment.refunded")
                        ));
                    }
                    if count("stock.committed") != 1 {
                        problems.push(format!("{id}: completed but its stock is not committed yet"));
                    }
                    for item in order["items"].as_array().cloned().unwrap_or_default() {
                        let sku = item["sku"].as_str().unwrap_or_default().to_owned();
                        *sold.entry(sku).or_default() += item["quantity"].as_u64().unwrap_or(0);
                    }
                }
                "cancelled" => {
                    if count("payment.captured") != count("payment.refunded") {
                        problems.push(format!(
                            "{id}: cancelled with {} captures and {} refunds",
                            count("payment.captured"),
                            count("payment.refunded")
                        ));
                    }
                }
                other => problems.push(format!("{id}: still {other}")),
            }
        }
        for (sku, total) in stocked {
            let Some(level) = self.stock(sku).await else {
                problems.push(format!("{sku}: no stock level"));
                continue;
            };
            let (a, r, s) = (
                level["available"].as_u64().unwrap_or(0),
                level["reserved"].as_u64().unwrap_or(0),
                level["sold"].as_u64().unwrap_or(0),
            );
            if a + r + s != *total {
                problems.push(format!("{sku}: available {a} + reserved {r} + sold {s} != stocked {total}"));
            }
            if r != 0 {
                problems.push(format!("{sku}: {r} still reserved"));
            }
            if s != sold.get(sku).copied().unwrap_or(0) {
                problems
                    .push(format!("{sku}: sold {s}, completed orders hold {}", sold.get(sku).copied().unwrap_or(0)));
            }
        }
        problems.extend(self.archive_problems(&orders).await);
        problems
    }

    /// Every event of every order is in the archive once, under its event id, as the
    /// archive API lists it (read back from the archive itself, whatever its backend).
    async fn archive_problems(&self, orders: &[serde_json::Value]) -> Vec<String> {
        let mut problems = Vec::new();
        for order in orders {
            let id = order["order_id"].as_str().unwrap_or_default();
            let response = self.admin_get(&format!("/api/admin/archive?order_id={id}")).await;
            if response.status() != 200 {
                problems.push(format!("{id}: the archive API answered {}", response.status()));
                continue;
            }
            let listing: serde_json::Value = response.json().await.unwrap_or_default();
            let event_ids = |items: &serde_json::Value| -> Vec<String> {
                let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
                items.iter().filter_map(|item| item["event_id"].as_str().map(str::to_owned)).collect()
            };
            let mut got = event_ids(&listing["objects"]);
            let mut expected = event_ids(&order["timeline"]);
            expected.sort();
            got.sort();
            if expected != got {
                let extra: Vec<&String> = got.iter().filter(|g| !expected.contains(g)).collect();
                let missing: Vec<&String> = expected.iter().filter(|e| !got.contains(e)).collect();
                problems.push(format!(
                    "{id}: archive has {} of {} events (extra {extra:?}, missing {missing:?})",
                    got.len(),
                    expected.len()
                ));
                problems.extend(self.dead_letters_of(&missing).await);
            }
        }
        problems
    }

    /// The dead letters of these events, if any, as lines naming the step and its error:
    /// why an event never reached the archive.
    async fn dead_letters_of(&self, event_ids: &[&String]) -> Vec<String> {
        let response = self.admin_get("/api/admin/dead-letters").await;
        let letters: serde_json::Value = response.json().await.unwrap_or_default();
        let letters = letters.as_array().map(Vec::as_slice).unwrap_or_default();
        letters
            .iter()
            .filter(|letter| event_ids.iter().any(|id| letter["event"]["id"].as_str() == Some(id.as_str())))
            .map(|letter| {
                format!(
                    "  dead letter of {} at {}: {} ({} attempts)",
                    letter["event"]["id"], letter["step"], letter["error"], letter["attempts"]
                )
            })
            .collect()
    }
}

/// The SQL Server the SQL Server variant of the store tests runs against, if any. None
/// can run on this project's own machines; set it where one can.
pub fn mssql_admin_url() -> Option<String> {
    std::env::var("WASAGA_TEST_MSSQL_URL").ok().filter(|url| !url.is_empty())
}

/// A fresh database on the SQL Server of `WASAGA_TEST_MSSQL_URL`.
pub async fn fresh_mssql_database(admin: &str) -> String {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    // One CREATE DATABASE at a time: Babelfish fails concurrent ones ("tuple concurrently
    // updated"), and SQL Server serializes them anyway.
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = CREATING.lock().await;
    let config = wasaga_host::store::mssql_config(admin).expect("WASAGA_TEST_MSSQL_URL is a valid mssql:// URL");
    let tcp = tokio::net::TcpStream::connect(config.get_addr()).await.expect("SQL Server answers");
    let mut client = tiberius::Client::connect(config, tcp.compat_write()).await.expect("SQL Server login");
    let name = format!("wasaga_t_{}", rand_id());
    client
        .simple_query(format!("CREATE DATABASE [{name}]"))
        .await
        .expect("create test database")
        .into_results()
        .await
        .expect("create test database");
    let mut url = url::Url::parse(admin).expect("valid URL");
    url.set_path(&name);
    url.to_string()
}

/// The `wasaga` binary the process tests run: `WASAGA_TEST_BIN` if set (worktrees that
/// share one target folder overwrite each other's `target/debug/wasaga`), else Cargo's.
/// Run the `wasaga` CLI with `args`; its exit code and what it printed.
pub fn wasaga_cli(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wasaga")).args(args).output().expect("wasaga runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

pub fn wasaga_bin() -> std::ffi::OsString {
    std::env::var_os("WASAGA_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_wasaga").into())
}

/// A PostgreSQL-backed server with the saga steps and `extra` fixtures, plus a second
/// handle on its store for the test to write into.
pub async fn pg_app(
    extra: &[&str],
    tune: impl FnOnce(&mut Settings),
) -> (TestApp, std::sync::Arc<dyn wasaga_host::store::Store>) {
    let url = fresh_pg_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    for name in extra {
        std::fs::write(dir.path().join(format!("plugins/{name}.wasm")), component(name)).expect("copy");
    }
    let mut settings = test_settings(&dir, Some(url.clone()));
    tune(&mut settings);
    let app = spawn_with(dir, settings).await;
    let store = wasaga_host::store::open(&url, &Default::default()).await.expect("store");
    (app, store)
}

/// `n` hosts' folders, each with the saga steps in its plugins folder.
pub fn host_dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n)
        .map(|_| {
            let dir = tempfile::tempdir().expect("temp dir");
            install_saga_steps(&dir.path().join("plugins"));
            dir
        })
        .collect()
}

/// What a [`Proxy`] does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Forwards both ways.
    Open,
    /// Keeps every connection open and forwards nothing: a peer that never answers.
    Frozen,
    /// Drops every connection and refuses new ones: a peer that went away.
    Cut,
}

/// A TCP proxy from 127.0.0.1:`from` (0: any free port) to 127.0.0.1:`to`, whose flow a
/// test sets: one host's database or broker going away, or going silent, while the
/// others keep theirs.
pub struct Proxy {
    pub port: u16,
    flow: tokio::sync::watch::Sender<Flow>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(from: u16, to: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", from)).await.expect("proxy port");
        let port = listener.local_addr().expect("proxy addr").port();
        let flow = tokio::sync::watch::Sender::new(Flow::Open);
        let watched = flow.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut flow = watched.subscribe();
                if *flow.borrow() == Flow::Cut {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                    if *flow.borrow() == Flow::Open {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = flow.wait_for(|f| *f != Flow::Open) => {}
                        }
                    }
                    // Frozen: hold both ends, forward nothing, until cut.
                    let _ = flow.wait_for(|f| *f == Flow::Cut).await;
                });
            }
        });
        Proxy { port, flow, task }
    }

    pub fn set(&self, flow: Flow) {
        self.flow.send_replace(flow);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Connections end with the proxy.
        self.flow.send_replace(Flow::Cut);
    }
}
