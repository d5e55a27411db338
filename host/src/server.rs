//! The server: build everything from [`Settings`], bind the listener, then serve until
//! the shutdown future resolves. `main` and the tests share this one path.

use crate::archive::{ArchiveError, ObjectArchive};
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::outbox::Relay;
use crate::registry::{PluginWatcher, StepRegistry, WatchError};
use crate::runtime::{Allocator, Runtime, RuntimeConfig, RuntimeError, StepExecutor};
use crate::saga::orders::HOST_KINDS;
use crate::saga::{HOST_CONSUMER, Saga, SagaConfig, SagaContext};
use crate::store::{StoreError, Stores};
use crate::stream::{EventStream, KafkaSettings, KafkaStream};
use crate::transport::{EmbeddedTransport, RabbitSettings, RabbitTransport, Transport, TransportError};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The steps of the saga; `/readyz` waits for them.
pub const SAGA_STEPS: [&str; 3] = ["inventory", "payment", "analytics"];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
}

/// A built server, listening but not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    saga: Saga,
    _watcher: PluginWatcher,
}

impl App {
    /// Start the runtime, load the plugins folder, watch it, and bind the listener.
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        App::build_with(settings, None).await
    }

    /// [`App::build`] with another step executor (benchmarks run the steps natively).
    pub async fn build_with(settings: Settings, executor: Option<Arc<dyn StepExecutor>>) -> Result<App, StartError> {
        let data_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| StartError::DataDir { path, source }
        };
        std::fs::create_dir_all(&settings.data_dir).map_err(data_error(&settings.data_dir))?;
        // Install the metrics recorder before anything records: earlier samples would be lost.
        crate::telemetry::metrics();
        let token = admin_token(&settings).map_err(data_error(&settings.admin_token_file()))?;
        let runtime = Runtime::new(RuntimeConfig {
            deadline: settings.step_deadline(),
            memory_mib: settings.step_memory_mib,
            concurrency: settings.step_concurrency,
            cache_dir: Some(settings.compile_cache_dir()),
            allocator: Allocator::Pooling,
            ..RuntimeConfig::default()
        })?;
        let registry = StepRegistry::new(runtime, Some(settings.plugins_dir.clone()));
        for (name, error) in registry.load_dir(&settings.plugins_dir).await {
            tracing::error!(step = %name, %error, "step not loaded");
        }
        let watcher = PluginWatcher::start(&settings.plugins_dir, registry.clone())?;
        let named: std::collections::BTreeMap<String, String> =
            settings.stores.iter().map(|(name, s)| (name.clone(), s.url.clone())).collect();
        let routes = settings.steps.iter().map(|(step, s)| (step.clone(), s.store.clone())).collect();
        let stores = Stores::open(&settings.store_url(), &named, routes).await?;
        let archive = Arc::new(ObjectArchive::from_url(&settings.archive_url())?);
        tokio::spawn({
            let archive = archive.clone();
            async move { archive.prepare().await }
        });
        let stream: Option<Arc<dyn EventStream>> = match &settings.stream_brokers {
            Some(brokers) => Some(KafkaStream::new(KafkaSettings {
                brokers: brokers.clone(),
                topic: settings.stream_topic(),
                namespace: settings.namespace.clone(),
            })?),
            None => None,
        };
        let retry_base = std::time::Duration::from_millis(settings.retry_base_ms);
        let saga_config = SagaConfig { max_attempts: settings.max_attempts, retry_base, ..SagaConfig::default() };
        let transport: Arc<dyn Transport> = if settings.transport_url == "embedded" {
            let has_stream = stream.is_some();
            let registry = registry.clone();
            let routes = Arc::new(move |kind: &str| {
                let mut consumers: Vec<String> = registry
                    .subscribers(kind)
                    .iter()
                    // With a stream, observers read it instead.
                    .filter(|step| !(has_stream && step.observes_all()))
                    .map(|step| step.name.to_string())
                    .collect();
                if HOST_KINDS.contains(&kind) {
                    consumers.push(HOST_CONSUMER.to_owned());
                }
                consumers
            });
            Arc::new(EmbeddedTransport::new(stores.clone(), routes))
        } else {
            RabbitTransport::start(RabbitSettings {
                url: settings.transport_url.clone(),
                namespace: settings.namespace.clone(),
                retry_base,
                retry_cap: saga_config.retry_cap,
            })
        };
        let saga_ctx = Arc::new(SagaContext {
            stores,
            transport,
            stream,
            registry: registry.clone(),
            archive,
            config: saga_config,
            relay: Arc::new(Relay::default()),
            executor: executor.unwrap_or_else(|| registry.runtime().clone()),
        });
        let saga = Saga::start(saga_ctx.clone()).await;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| StartError::Bind { addr: settings.http_addr, source })?;
        let state = AppState {
            registry,
            admin_token_digest: Sha256::digest(token.expose_secret().as_bytes()).to_vec().into(),
            required_steps: SAGA_STEPS.iter().map(|s| (*s).to_owned()).collect(),
            saga: saga_ctx,
            in_flight: Arc::default(),
        };
        Ok(App { listener, state, saga, _watcher: watcher })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn registry(&self) -> Arc<StepRegistry> {
        self.state.registry.clone()
    }

    /// Serve until `shutdown` resolves; requests in flight finish first.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let steps: Vec<String> = self.state.registry.snapshot().keys().cloned().collect();
        tracing::info!(addr = %self.local_addr(), ?steps, "wasaga is listening");
        let router = http::router(self.state);
        let served = axum::serve(self.listener, router).with_graceful_shutdown(shutdown).await;
        // Consumers finish the batch in hand; undelivered messages wait in the store.
        self.saga.stop().await;
        served.map_err(StartError::Serve)?;
        tracing::info!("wasaga stopped");
        Ok(())
    }
}

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
