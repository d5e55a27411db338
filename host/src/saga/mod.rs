//! The saga: relays from each store's outbox, one consumer per step and one for the
//! host's own order logic, all run by one engine (`engine.rs`) that applies the
//! processing rule to batches of deliveries, and the maintenance jobs (heartbeat,
//! redrive of stalled orders, retention).
//!
//! The processing rule, per delivery: if the consumer's inbox has the event, ack and stop;
//! otherwise handle it (call the step in a fresh instance with its state bound to this
//! batch, or apply the host's order logic) and commit inbox row, state, emitted events
//! (to the outbox) and order transitions in one transaction; then ack. A crash before the
//! commit leaves nothing; after it, the redelivery finds the inbox row.

mod engine;
pub mod hooks;
pub mod maintenance;
mod memo;
pub mod ops;
pub mod orders;
pub mod query;
mod readahead;
pub mod shadow;
mod state;
mod step;

pub use crate::event::{HOST_CONSUMER, HOST_VERSION, new_event_id, now_ms};
pub use maintenance::HOST_TTL;

use crate::archive::Archive;
use crate::event::StoredEvent;
use crate::outbox::{Relay, RelayLoop};
use crate::registry::StepRegistry;
use crate::runtime::StepExecutor;
use crate::shutdown::Shutdown;
use crate::store::{Channel, Store, Stores};
use crate::stream::EventStream;
use crate::transport::Transport;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// The longest wait between a consumer's retries of one event.
pub const RETRY_CAP: Duration = Duration::from_secs(30);
/// Deliveries a consumer takes at once.
pub const BATCH_SIZE: u32 = 64;
/// The default wait after a batch that was neither one delivery nor full.
pub const BATCH_LINGER_MS: u64 = 2;

/// Steps that compensate unless configured otherwise.
pub const COMPENSATING_STEPS: [&str; 2] = ["payment", "inventory"];

/// Retry, batching and upkeep settings.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub batch_size: u32,
    /// The wait after a batch that was neither one delivery nor full (see `engine.rs`).
    pub batch_linger: Duration,
    /// Steps whose compensations are retried until they succeed.
    pub compensating: BTreeSet<String>,
    /// A pending order with no progress for this long has its events published again.
    pub redrive_after: Duration,
    /// An order still pending this long after it was placed is cancelled (`deadline`).
    pub order_deadline: Option<Duration>,
    /// Retention of handled rows: inbox, relayed outbox, idempotency keys.
    pub retain_inbox: Duration,
    pub retain_outbox: Duration,
    pub retain_idempotency: Duration,
    /// How often the maintenance jobs run.
    pub maintenance_every: Duration,
    /// Steps whose orders stay on the version that handled their first event.
    pub pinned: BTreeSet<String>,
    /// Per step: the share of successful calls whose recording is kept.
    pub record_sample: std::collections::BTreeMap<String, f64>,
    /// Per step: JSON pointers of payload fields redacted in its recordings.
    pub redact: std::collections::BTreeMap<String, Vec<String>>,
    /// When a new version is rolled back by the host itself.
    pub auto_rollback: crate::registry::AutoRollback,
    /// Bytes one call's recording may hold.
    pub recording_max_bytes: usize,
    /// How long an order's pins (and sampled recordings) are kept.
    pub retain_pins: Duration,
    /// Who may emit which kind.
    pub owners: crate::event::Owners,
    /// `(step, key prefix)` of per-order state retention may remove.
    pub order_state: Vec<(String, String)>,
}

/// What every consumer, the relays and the HTTP operations share.
pub struct SagaContext {
    pub(crate) stores: Arc<Stores>,
    pub(crate) transport: Arc<dyn Transport>,
    /// The event stream, when one is configured: observers (steps subscribed to `*`)
    /// consume it instead of the transport.
    pub(crate) stream: Option<Arc<dyn EventStream>>,
    pub(crate) registry: Arc<StepRegistry>,
    pub(crate) archive: Arc<dyn Archive>,
    pub(crate) config: SagaConfig,
    pub(crate) relay: Arc<Relay>,
    /// Runs step calls: the WebAssembly runtime.
    pub(crate) executor: Arc<dyn StepExecutor>,
    /// Shadow runs of rollout candidates.
    pub(crate) shadows: Arc<shadow::Shadows>,
    /// This host's name in the fleet (claims, leases, heartbeats, history).
    pub(crate) host_id: String,
    /// This process, among any that ever ran as `host_id`: the holder of the host id's
    /// lease (see [`maintenance::claim_host_id`]).
    pub(crate) instance: String,
    /// The address this host serves HTTP on, for the fleet's list of hosts.
    pub(crate) http_addr: String,
    pub(crate) started_at_ms: i64,
    /// Idempotency keys whose first request is being handled here.
    pub(crate) keys_in_flight: orders::KeysInFlight,
}

impl SagaContext {
    /// The store holding the orders.
    pub fn host_store(&self) -> &Arc<dyn Store> {
        self.stores.host()
    }

    /// Reads for the API, the console and the CLI.
    pub fn query(&self) -> query::Query {
        query::Query::new(self.stores.clone())
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

    /// A call's emissions, refused as invalid output when one is of a kind `step` does not own.
    pub(crate) fn owned(
        &self,
        step: &str,
        result: Result<Vec<crate::runtime::Emitted>, crate::runtime::CallError>,
    ) -> Result<Vec<crate::runtime::Emitted>, crate::runtime::CallError> {
        let emits = result?;
        match emits.iter().find(|e| !self.config.owners.owns(step, &e.kind)) {
            Some(foreign) => Err(crate::runtime::CallError::NotOwner {
                kind: foreign.kind.clone(),
                owner: self.config.owners.owner(&foreign.kind).to_string(),
            }),
            None => Ok(emits),
        }
    }

    /// Whether `step`'s retryable failures of compensation kinds are retried forever.
    pub fn compensates(&self, step: &str) -> bool {
        self.config.compensating.contains(step)
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
            attempt: 1,
            trace: crate::telemetry::current_traceparent(),
        }
    }
}

/// The running saga: stops its tasks when `stop` is called.
pub struct Saga {
    shutdown: Shutdown,
    tasks: JoinSet<()>,
}

impl Saga {
    /// Start the relays, the host consumer, a consumer for every step (including steps
    /// added later), the fleet sync and the maintenance jobs.
    pub async fn start(ctx: Arc<SagaContext>) -> Saga {
        // Consumers are bound before anything is relayed, or a broker would drop the events.
        declare_steps(&ctx).await;
        let shutdown = Shutdown::new();
        let stopped = shutdown.clone();
        let mut tasks = JoinSet::new();
        for store in ctx.stores.all() {
            let mut channels = vec![(Channel::Transport, ctx.transport.clone())];
            if let Some(stream) = &ctx.stream {
                channels.push((Channel::Stream, stream.clone()));
            }
            for (channel, target) in channels {
                let relay = RelayLoop { store: store.clone(), target, channel, holder: ctx.host_id.clone() };
                tasks.spawn(ctx.relay.clone().run(relay, stopped.clone()));
            }
        }
        tasks.spawn(engine::run(Arc::new(orders::HostHandler::new(ctx.clone())), ctx.clone(), stopped.clone()));
        tasks.spawn(supervise_steps(ctx.clone(), stopped.clone()));
        tasks.spawn(crate::registry::Fleet::run_sync(ctx.registry.clone(), stopped.clone()));
        tasks.spawn(maintenance::run(ctx, stopped));
        Saga { shutdown, tasks }
    }

    /// Let every consumer finish its current batch, then stop. Whatever is not done
    /// within `bound` is abandoned: its deliveries were not settled, so they come again.
    pub async fn stop(mut self, bound: Duration) {
        self.shutdown.stop();
        let drained = tokio::time::timeout(bound, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(bound_ms = bound.as_millis() as u64, "stopping without waiting longer for batches in hand");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
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
async fn supervise_steps(ctx: Arc<SagaContext>, stopped: Shutdown) {
    let mut running: HashSet<String> = HashSet::new();
    let mut consumers = JoinSet::new();
    let mut changes = ctx.registry.watch();
    loop {
        changes.borrow_and_update();
        declare_steps(&ctx).await;
        for name in ctx.registry.snapshot().keys() {
            if running.insert(name.clone()) {
                let handler = Arc::new(step::StepHandler::new(ctx.clone(), name.clone()));
                consumers.spawn(engine::run(handler, ctx.clone(), stopped.clone()));
            }
        }
        tokio::select! {
            () = stopped.stopping() => break,
            _ = changes.changed() => {}
        }
    }
    while consumers.join_next().await.is_some() {}
}
