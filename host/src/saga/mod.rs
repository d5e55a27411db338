//! The saga: the relay from outbox to transport, one consumer per step and one for the
//! host's own order logic, each applying the processing rule to batches of deliveries.
//!
//! The processing rule, per delivery: if the consumer's inbox has the event, ack and stop;
//! otherwise call the step in a fresh instance with its state bound to this batch, and
//! commit inbox row, state, emitted events (to the outbox) and order transitions in one
//! transaction; then ack. A crash before the commit leaves nothing; after it, the
//! redelivery finds the inbox row.

mod consumer;
pub mod orders;
mod retry;
mod state;
pub mod wire;

use crate::archive::Archive;
use crate::outbox::Relay;
use crate::registry::StepRegistry;
use crate::runtime::StepExecutor;
use crate::store::{Channel, Store, StoredEvent, Stores};
use crate::stream::EventStream;
use crate::transport::Transport;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A new, time-ordered event id.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The version the host's own events carry.
pub const HOST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The consumer name of the host's order logic.
pub const HOST_CONSUMER: &str = "host";

/// Retry and batching settings.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub batch_size: u32,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            max_attempts: 5,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(30),
            batch_size: 64,
        }
    }
}

/// What every consumer and the relay share.
pub struct SagaContext {
    pub stores: Arc<Stores>,
    pub transport: Arc<dyn Transport>,
    /// The event stream, when one is configured: observers (steps subscribed to `*`)
    /// consume it instead of the transport.
    pub stream: Option<Arc<dyn EventStream>>,
    pub registry: Arc<StepRegistry>,
    pub archive: Arc<dyn Archive>,
    pub config: SagaConfig,
    pub relay: Arc<Relay>,
    /// Runs step calls: the WebAssembly runtime.
    pub executor: Arc<dyn StepExecutor>,
}

impl SagaContext {
    /// The store holding the orders.
    pub fn host_store(&self) -> &Arc<dyn Store> {
        self.stores.host()
    }

    /// Whether `step` consumes the stream rather than the transport.
    pub fn reads_stream(&self, step: &str) -> bool {
        self.stream.is_some() && self.registry.current(step).is_some_and(|s| s.observes_all())
    }

    /// Where `consumer` receives its deliveries.
    pub fn source_for(&self, consumer: &str) -> Arc<dyn Transport> {
        match &self.stream {
            Some(stream) if self.reads_stream(consumer) => stream.clone(),
            _ => self.transport.clone(),
        }
    }

    /// An event emitted by the host itself.
    pub fn host_event(kind: &str, order_id: &str, payload: String) -> StoredEvent {
        StoredEvent {
            id: new_event_id(),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            payload,
            step: HOST_CONSUMER.to_owned(),
            step_version: HOST_VERSION.to_owned(),
            occurred_at_ms: now_ms(),
        }
    }
}

/// The running saga: stops its tasks when `stop` is called.
pub struct Saga {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Saga {
    /// Start the relay, the host consumer, and a consumer for every step, including
    /// steps added later.
    pub async fn start(ctx: Arc<SagaContext>) -> Saga {
        // Queues are bound before anything is relayed, or a broker would drop the events.
        declare_steps(&ctx).await;
        let (shutdown, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for store in ctx.stores.all() {
            tasks.spawn(ctx.relay.clone().run(ctx.clone(), store.clone(), Channel::Transport, stopped.clone()));
            if ctx.stream.is_some() {
                tasks.spawn(ctx.relay.clone().run(ctx.clone(), store.clone(), Channel::Stream, stopped.clone()));
            }
        }
        tasks.spawn(orders::run_host_consumer(ctx.clone(), stopped.clone()));
        tasks.spawn(supervise_steps(ctx, stopped));
        Saga { shutdown, tasks }
    }

    /// Let every consumer finish its current batch, then stop.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Bind every consumer to the kinds it receives on the transport: the host to its own,
/// each step to its manifest's (none for a step that reads the stream). Done before any
/// event is relayed, and again whenever a step is added or swapped.
pub async fn declare_steps(ctx: &SagaContext) {
    let host_kinds: Vec<String> = orders::HOST_KINDS.iter().map(|k| (*k).to_owned()).collect();
    let mut wanted = vec![(HOST_CONSUMER.to_owned(), host_kinds)];
    for (name, step) in ctx.registry.snapshot().iter() {
        let kinds = if ctx.reads_stream(name) { Vec::new() } else { step.current.subscribes.clone() };
        wanted.push((name.clone(), kinds));
    }
    for (consumer, kinds) in wanted {
        if let Err(error) = ctx.transport.declare(&consumer, &kinds).await {
            tracing::warn!(%consumer, %error, "cannot bind the consumer yet; it is bound on reconnecting");
        }
    }
}

/// Start a consumer for each step in the registry, now and whenever one is added.
async fn supervise_steps(ctx: Arc<SagaContext>, mut stopped: watch::Receiver<bool>) {
    let mut running: HashSet<String> = HashSet::new();
    let mut consumers = JoinSet::new();
    let mut changes = ctx.registry.watch();
    loop {
        changes.borrow_and_update();
        declare_steps(&ctx).await;
        for name in ctx.registry.snapshot().keys() {
            if running.insert(name.clone()) {
                consumers.spawn(consumer::run_step_consumer(ctx.clone(), name.clone(), stopped.clone()));
            }
        }
        tokio::select! {
            _ = stopped.changed() => break,
            _ = changes.changed() => {}
        }
    }
    while consumers.join_next().await.is_some() {}
}
