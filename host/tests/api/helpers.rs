//! Test harness: the built components, runtimes with test limits, and `spawn_app()`
//! returning a running server on a random port with typed request helpers.

#![allow(dead_code)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use wasaga_host::config::Settings;
use wasaga_host::runtime::{Allocator, CallInput, Emitted, LoadedStep, MemoryState, Origin, Runtime, RuntimeConfig};
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
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub registry: Arc<wasaga_host::registry::StepRegistry>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

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
        self.http
            .put(self.url(&format!("/api/admin/plugins/{name}")))
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
    init_logging();
    let token = format!("test-token-{}", rand_id());
    let settings = Settings {
        http_addr: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().join("data"),
        plugins_dir: dir.path().join("plugins"),
        admin_token: Some(token.clone().into()),
        step_deadline_ms: 500,
        step_memory_mib: 32,
        step_concurrency: 8,
        ..Settings::default()
    };
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
    TestApp { addr, token, http: reqwest::Client::new(), dir, registry, shutdown: Some(tx), server: Some(server) }
}
