//! The server: build everything from [`Settings`], bind the listener, then serve until
//! the shutdown future resolves. `main` and the tests share this one path.
//!
//! A store that does not answer at start does not stop the process: it listens at once,
//! answers `/healthz`, reports what it waits for on `/readyz` (503) and every other path,
//! and starts the rest as soon as the store answers.

use crate::archive::ArchiveError;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::outbox::Relay;
use crate::registry::{Fleet, StepRegistry, StepWatcher, WatchError};
use crate::runtime::{Runtime, RuntimeError, StepExecutor};
use crate::saga::{Saga, SagaContext};
use crate::store::{StoreError, Stores};
use crate::stream::EventStream;
use crate::transport::TransportError;
use arc_swap::ArcSwapOption;
use axum::Router;
use parking_lot::Mutex;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The steps of the saga; `/readyz` waits for them.
pub const SAGA_STEPS: [&str; 3] = ["inventory", "payment", "analytics"];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot prepare the data folder {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Identity(#[from] crate::saga::maintenance::IdentityError),
}

impl StartError {
    /// Whether the cause may go away by itself (a store not answering yet): then the
    /// process stays up, not ready, and tries again.
    fn is_waitable(&self) -> bool {
        match self {
            StartError::Store(error) => error.is_transient(),
            StartError::Transport(TransportError::Store(error)) => error.is_transient(),
            StartError::Identity(crate::saga::maintenance::IdentityError::Store(error)) => error.is_transient(),
            _ => false,
        }
    }
}

/// Everything that runs once the stores answer.
struct Started {
    state: AppState,
    saga: Saga,
    watcher: StepWatcher,
}

/// A built server, listening but not yet serving.
pub struct App {
    listener: TcpListener,
    settings: Settings,
    executor: Option<Arc<dyn StepExecutor>>,
    token: SecretString,
    /// `WASAGA_METRICS_ADDR`, bound.
    metrics_listener: Option<TcpListener>,
    started: Option<Started>,
    /// Why the server is not started yet.
    waiting: String,
}

impl App {
    /// Bind the listener and start everything; a store that does not answer yet leaves
    /// the app listening and not ready (see the module documentation).
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        App::build_with(settings, None).await
    }

    /// [`App::build`] with another step executor (benchmarks run the steps natively).
    pub async fn build_with(settings: Settings, executor: Option<Arc<dyn StepExecutor>>) -> Result<App, StartError> {
        settings.validate()?;
        let data_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| StartError::DataDir { path, source }
        };
        std::fs::create_dir_all(&settings.data_dir).map_err(data_error(&settings.data_dir))?;
        // Install the metrics recorder before anything records: earlier samples would be lost.
        crate::telemetry::metrics();
        let token = admin_token(&settings).map_err(data_error(&settings.admin_token_file()))?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| StartError::Bind { addr: settings.http_addr, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: settings.http_addr, source })?;
        let metrics_listener = match settings.metrics_addr {
            Some(metrics_addr) => Some(
                TcpListener::bind(metrics_addr)
                    .await
                    .map_err(|source| StartError::Bind { addr: metrics_addr, source })?,
            ),
            None => None,
        };
        let (started, waiting) = match start(&settings, executor.clone(), &token, addr).await {
            Ok(started) => (Some(started), String::new()),
            Err(error) if error.is_waitable() => {
                tracing::warn!(%error, "not ready: waiting for the store; listening meanwhile");
                (None, error.to_string())
            }
            Err(error) => return Err(error),
        };
        Ok(App { listener, settings, executor, token, metrics_listener, started, waiting })
    }

    /// The address `/metrics` is served on when it has one of its own (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The step registry, once started.
    pub fn registry(&self) -> Option<Arc<StepRegistry>> {
        self.started.as_ref().map(|s| s.state.registry.clone())
    }

    /// Serve until `shutdown` resolves; requests in flight finish first, then consumers
    /// finish the batch in hand, all within `WASAGA_SHUTDOWN_TIMEOUT_MS` of the signal:
    /// what is still open at that bound is abandoned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let addr = self.local_addr();
        let bound = Duration::from_millis(self.settings.shutdown_timeout_ms);
        let slot: Arc<Mutex<Option<Started>>> = Arc::new(Mutex::new(None));
        let metrics_state: Arc<ArcSwapOption<AppState>> = Arc::new(ArcSwapOption::empty());
        let router = match self.started {
            Some(started) => {
                let steps: Vec<String> = started.state.registry.snapshot().keys().cloned().collect();
                tracing::info!(%addr, ?steps, "wasaga is listening");
                let router = http::router(started.state.clone());
                metrics_state.store(Some(Arc::new(started.state.clone())));
                *slot.lock() = Some(started);
                router
            }
            None => {
                tracing::info!(%addr, "wasaga is listening, not ready");
                let gate = Gate::new(self.waiting.clone());
                tokio::spawn(keep_starting(
                    self.settings.clone(),
                    self.executor.clone(),
                    self.token.clone(),
                    addr,
                    gate.clone(),
                    slot.clone(),
                    metrics_state.clone(),
                ));
                gate.router()
            }
        };
        let metrics_server = self.metrics_listener.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics on its own address");
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, http::metrics_router(metrics_state)).await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            })
        });
        // The bound counts from the signal and covers everything after it: open
        // connections may use all of it, the saga gets what they leave.
        let (signalled, signal) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
        let graceful = async move {
            shutdown.await;
            let _ = signalled.send(Some(tokio::time::Instant::now() + bound));
        };
        // The peer address keys the budget of failed credentials.
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let mut serve = Box::pin(axum::serve(self.listener, service).with_graceful_shutdown(graceful).into_future());
        let mut at_bound = signal.clone();
        let bounded = async move {
            let deadline = at_bound.wait_for(Option::is_some).await.ok().and_then(|deadline| *deadline);
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let served = tokio::select! {
            served = &mut serve => served,
            () = bounded => {
                tracing::warn!(bound_ms = bound.as_millis() as u64, "closing connections still open at the shutdown bound");
                Ok(())
            }
        };
        // Dropping the server closes its listener; connections still open end with the
        // process (or with their request and body timeouts).
        drop(serve);
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        let deadline = (*signal.borrow()).unwrap_or_else(|| tokio::time::Instant::now() + bound);
        let started = slot.lock().take();
        if let Some(started) = started {
            let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left(), started.watcher.stop()).await.is_err() {
                tracing::warn!("stopping without waiting longer for the step folder watcher");
            }
            started.saga.stop(left()).await;
        }
        served.map_err(StartError::Serve)?;
        tracing::info!("wasaga stopped");
        Ok(())
    }
}

/// Serves the full API once started, and "not ready" until then.
#[derive(Clone)]
struct Gate {
    inner: Arc<ArcSwapOption<Router>>,
    waiting: Arc<Mutex<String>>,
}

impl Gate {
    fn new(waiting: String) -> Gate {
        Gate { inner: Arc::new(ArcSwapOption::empty()), waiting: Arc::new(Mutex::new(waiting)) }
    }

    fn router(&self) -> Router {
        let gate = self.clone();
        Router::new().fallback(move |request: axum::extract::Request| {
            let gate = gate.clone();
            async move {
                use axum::response::IntoResponse;
                use tower::ServiceExt;
                if let Some(router) = gate.inner.load_full() {
                    return match Router::clone(&router).oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                }
                if request.uri().path() == "/healthz" {
                    return axum::Json(serde_json::json!({ "status": "ok", "ready": false })).into_response();
                }
                let reason = gate.waiting.lock().clone();
                http::problem::ApiError::Unavailable(format!("starting: {reason}")).into_response()
            }
        })
    }
}

/// Try to start until it works, then open the gate.
async fn keep_starting(
    settings: Settings,
    executor: Option<Arc<dyn StepExecutor>>,
    token: SecretString,
    addr: SocketAddr,
    gate: Gate,
    slot: Arc<Mutex<Option<Started>>>,
    metrics_state: Arc<ArcSwapOption<AppState>>,
) {
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        tokio::time::sleep(backoff.failed()).await;
        match start(&settings, executor.clone(), &token, addr).await {
            Ok(started) => {
                tracing::info!("the store answers: wasaga is starting to serve");
                gate.inner.store(Some(Arc::new(http::router(started.state.clone()))));
                metrics_state.store(Some(Arc::new(started.state.clone())));
                *slot.lock() = Some(started);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "still waiting to start");
                *gate.waiting.lock() = error.to_string();
            }
        }
    }
}

/// Open the stores, load the steps, start the saga.
async fn start(
    settings: &Settings,
    executor: Option<Arc<dyn StepExecutor>>,
    token: &SecretString,
    addr: SocketAddr,
) -> Result<Started, StartError> {
    let (named, routes) = settings.store_routes();
    let stores = Stores::open(&settings.store_url(), &named, routes, &settings.store_options()).await?;
    let host_id = settings.host_id();
    // Before anything acts as this host (its claims are released below).
    let instance = crate::saga::maintenance::claim_host_id(stores.host(), &host_id).await?;
    let runtime = Runtime::new(settings.runtime_config())?;
    let fleet = Fleet::new(stores.host().clone(), host_id.clone());
    let registry = StepRegistry::with_fleet(runtime, fleet);
    for (name, error) in registry.load_dir(&settings.plugins_dir).await {
        tracing::error!(step = %name, %error, "step not loaded");
    }
    let watcher = StepWatcher::start(&settings.plugins_dir, registry.clone())?;
    // A local archive is as durable as the store: flushed per batch unless SQLite
    // runs `synchronous=NORMAL`.
    let durable = settings.sqlite_synchronous == crate::store::SqliteSync::Full;
    let archive = crate::archive::open(&settings.archive_url(), durable)?;
    let stream: Option<Arc<dyn EventStream>> = match settings.kafka_settings(&host_id, stores.host().clone()) {
        Some(kafka) => Some(crate::stream::open(kafka)?),
        None => None,
    };
    let saga_config = settings.saga_config()?;
    let transport =
        crate::transport::open(&settings.transport_url, settings.transport_options(&host_id), stores.clone()).await?;
    let executor = executor.unwrap_or_else(|| registry.runtime().clone());
    let saga_ctx = Arc::new(SagaContext {
        stores,
        transport,
        stream,
        registry: registry.clone(),
        archive,
        config: saga_config,
        relay: Arc::new(Relay::default()),
        shadows: crate::saga::shadow::Shadows::start(executor.clone()),
        executor,
        host_id,
        instance,
        http_addr: addr.to_string(),
        started_at_ms: crate::event::now_ms(),
        keys_in_flight: Default::default(),
    });
    let saga = Saga::start(saga_ctx.clone()).await;
    // Digested as a presented token is, so the two compare the same way.
    let token_digest = http::access::token_digest(token.expose_secret()).to_vec();
    let session_ms = i64::try_from(settings.console_session_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let access = http::access::Access::new(
        &settings.client_keys()?,
        settings.auth_failures_per_minute,
        settings.console_secure_cookie,
    );
    let state = AppState {
        registry,
        sessions: crate::http::ui::Sessions::new(&token_digest, session_ms),
        charts: Arc::default(),
        access: Arc::new(access),
        metrics_on_api: settings.metrics_addr.is_none(),
        admin_token_digest: token_digest.into(),
        required_steps: SAGA_STEPS.iter().map(|s| (*s).to_owned()).collect(),
        saga: saga_ctx,
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
        body_timeout: Duration::from_millis(settings.body_timeout_ms),
        hooks: Arc::new(settings.hooks()?),
    };
    Ok(Started { state, saga, watcher })
}

/// Every step name the settings mention or that compensates by default.
/// The configured admin token, or the one kept in the data folder, or a new one written
/// there readable by the owner only.
fn admin_token(settings: &Settings) -> std::io::Result<SecretString> {
    if let Some(token) = &settings.admin_token {
        return Ok(token.clone());
    }
    let path = settings.admin_token_file();
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.trim().is_empty()
    {
        return Ok(SecretString::from(existing.trim().to_owned()));
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    write_private(&path, &token)?;
    tracing::info!(path = %path.display(), "generated an admin token");
    Ok(SecretString::from(token))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}
