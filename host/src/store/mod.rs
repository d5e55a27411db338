//! The store: orders, the outbox, the inbox, step state, the embedded transport's
//! deliveries and dead letters, behind one trait with a SQLite and a PostgreSQL backend.
//!
//! **Architecture Invariant:** the saga code names only [`Store`]; a backend is chosen by
//! URL in [`open`].
//!
//! Every write that must be atomic with another is one method here, so a backend holds
//! the whole transaction: an order and its `order.placed` (`create_order`), a handled
//! batch of deliveries with its inbox rows, state, emitted events and order transitions
//! (`commit_batch`).

mod mssql;
mod sql;

use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::Arc;

pub use mssql::{MssqlStore, config_from_url as mssql_config};
pub use sql::{PgStore, SqliteStore};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url:?} is not supported: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to the store: {0}")]
    Connect(String),
    #[error("migrating the store failed: {0}")]
    Migrate(String),
    #[error("store query failed: {0}")]
    Query(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Query(error.to_string())
    }
}

/// An event as stored in the outbox and carried by every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub kind: String,
    /// Empty for events of no order (`stock.set`).
    pub order_id: String,
    /// JSON text.
    pub payload: String,
    /// The emitter: a step name or `host`.
    pub step: String,
    pub step_version: String,
    pub occurred_at_ms: i64,
}

/// A new order.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: String,
    pub customer_id: String,
    /// JSON array of line items.
    pub items: String,
    pub total_cents: i64,
    pub created_at_ms: i64,
}

/// An order row.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub seq: i64,
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub cancel_reason: Option<String>,
    pub total_cents: i64,
    pub items: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One entry of an order's timeline: an event of that order.
#[derive(Debug, Clone)]
pub struct TimelineRow {
    pub event_id: String,
    pub kind: String,
    pub at_ms: i64,
    pub step: String,
    pub step_version: String,
}

/// What `create_order` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New,
    /// The idempotency key was used before, for this order, with this body hash.
    Existing {
        order_id: String,
        body_hash: String,
    },
}

/// A change of an order's status, applied only if the order is in one of `from`; the
/// event is written to the outbox only if the change was applied.
#[derive(Debug, Clone)]
pub struct OrderTransition {
    pub order_id: String,
    pub from: &'static [&'static str],
    pub to: &'static str,
    pub reason: Option<String>,
    pub event: StoredEvent,
}

/// A SKU's levels in the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub seq: i64,
}

/// A message waiting for a consumer in the embedded transport.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub consumer: String,
    pub event_id: String,
    /// The event as wire JSON.
    pub event: String,
    /// Deliveries so far (0 before the first).
    pub attempts: i64,
}

/// A message a consumer gave up on.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub id: String,
    pub consumer: String,
    pub event_id: String,
    /// The event as wire JSON.
    pub event: String,
    pub error: String,
    pub attempts: i64,
    pub dead_lettered_at_ms: i64,
}

/// Everything a consumer's handled batch changes, committed in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BatchCommit {
    pub consumer: String,
    /// (event id, version of the consumer that handled it)
    pub inbox: Vec<(String, String)>,
    /// Step state: `Some` puts, `None` deletes.
    pub state: Vec<(String, Option<Vec<u8>>)>,
    pub outbox: Vec<StoredEvent>,
    pub transitions: Vec<OrderTransition>,
    pub stock: Vec<StockRow>,
    pub dead_letters: Vec<DeadLetterRow>,
}

/// Where a relay sends outbox rows; each keeps its own cursor in the outbox, so one
/// being down never holds up the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The saga's transport (embedded or RabbitMQ).
    Transport,
    /// The event stream (Kafka), when one is configured.
    Stream,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Transport => "transport",
            Channel::Stream => "stream",
        }
    }
}

/// Outbox rows not yet relayed.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxLag {
    pub pending: i64,
    pub oldest_at_ms: Option<i64>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// A short name of the backend, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Insert the order, its idempotency key and its `order.placed` event atomically.
    async fn create_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        placed: &StoredEvent,
    ) -> Result<Created, StoreError>;
    async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError>;
    async fn orders(
        &self,
        status: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<Vec<OrderRow>, StoreError>;
    async fn timeline(&self, order_id: &str) -> Result<Vec<TimelineRow>, StoreError>;
    /// Apply one transition (an API cancel); true if it applied.
    async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError>;

    /// Write one event of the host (e.g. `stock.set`) to the outbox.
    async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError>;
    async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError>;

    /// Outbox rows not yet relayed to `channel`, oldest first.
    async fn unrelayed(&self, channel: Channel, limit: u32) -> Result<Vec<(i64, StoredEvent)>, StoreError>;
    async fn mark_relayed(&self, channel: Channel, seqs: &[i64], now_ms: i64) -> Result<(), StoreError>;
    async fn outbox_lag(&self, channel: Channel) -> Result<OutboxLag, StoreError>;

    /// Queue `(consumer, event id, wire JSON)` deliveries; one already queued is kept.
    async fn enqueue(&self, deliveries: &[(String, String, String)], now_ms: i64) -> Result<(), StoreError>;
    /// Deliveries of `consumer` due by `now_ms`, in queue order.
    async fn due(&self, consumer: &str, now_ms: i64, limit: u32) -> Result<Vec<DeliveryRow>, StoreError>;
    /// When the next delivery of `consumer` falls due.
    async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError>;
    /// Remove acknowledged deliveries and reschedule failed ones
    /// `(id, due at, error, whether the attempt counts)`.
    async fn settle(&self, acked: &[i64], retries: &[(i64, i64, String, bool)]) -> Result<(), StoreError>;

    /// Which of `event_ids` `consumer` has already handled.
    async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError>;
    async fn state_get(&self, step: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Commit a handled batch: inbox, state, outbox, order transitions, stock, dead letters.
    async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError>;

    async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError>;
    /// Remove a dead letter and return it (for replay or discard).
    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
    /// Make a dead letter's event deliverable again: remove the consumer's inbox mark
    /// for it and return the dead letter, which stays listed until `take_dead_letter`.
    async fn reopen_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
    /// Queue `event` for `consumer` with a fresh attempt count, replacing a queued one.
    async fn requeue(&self, consumer: &str, event_id: &str, event: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Orders per status, for metrics.
    async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Open and migrate the store at `url`: `sqlite://path`, `postgres://…` or `mssql://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::open(url).await?));
    }
    if url.starts_with("mssql://") || url.starts_with("sqlserver://") {
        return Ok(Arc::new(MssqlStore::open(url).await?));
    }
    Err(StoreError::Url {
        url: url.split('@').next_back().unwrap_or(url).to_owned(),
        reason: "expected sqlite://…, postgres://… or mssql://…".to_owned(),
    })
}

/// The stores of one deployment: a default store and named stores that consumers (steps,
/// or `host` for the orders) are mapped to. Each store carries its own inbox, outbox,
/// state, deliveries and dead letters; events cross stores only through the transport.
pub struct Stores {
    default: Arc<dyn Store>,
    named: std::collections::BTreeMap<String, Arc<dyn Store>>,
    /// consumer → store name
    routes: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("named", &self.named.keys()).field("routes", &self.routes).finish()
    }
}

impl Stores {
    /// Everything in one store.
    pub fn single(store: Arc<dyn Store>) -> Arc<Stores> {
        Arc::new(Stores { default: store, named: Default::default(), routes: Default::default() })
    }

    /// Open the default store and every named one (a URL used twice is opened once), and
    /// map consumers to them. A consumer mapped to an unknown name is an error.
    pub async fn open(
        default_url: &str,
        named: &std::collections::BTreeMap<String, String>,
        routes: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<Stores>, StoreError> {
        for (consumer, name) in &routes {
            if !named.contains_key(name) {
                return Err(StoreError::Url {
                    url: name.clone(),
                    reason: format!("step {consumer:?} uses store {name:?}, which no [stores.{name}] defines"),
                });
            }
        }
        let default = open(default_url).await?;
        let mut by_url: std::collections::BTreeMap<&str, Arc<dyn Store>> = Default::default();
        by_url.insert(default_url, default.clone());
        let mut opened = std::collections::BTreeMap::new();
        for (name, url) in named {
            let store = match by_url.get(url.as_str()) {
                Some(store) => store.clone(),
                None => {
                    let store = open(url).await?;
                    by_url.insert(url, store.clone());
                    store
                }
            };
            opened.insert(name.clone(), store);
        }
        Ok(Arc::new(Stores { default, named: opened, routes }))
    }

    /// The store of `consumer` (a step name, or `host`).
    pub fn for_consumer(&self, consumer: &str) -> &Arc<dyn Store> {
        self.routes.get(consumer).and_then(|name| self.named.get(name)).unwrap_or(&self.default)
    }

    /// The store holding the orders.
    pub fn host(&self) -> &Arc<dyn Store> {
        self.for_consumer(crate::saga::HOST_CONSUMER)
    }

    /// Every distinct store, the default first.
    pub fn all(&self) -> Vec<&Arc<dyn Store>> {
        let mut all: Vec<&Arc<dyn Store>> = vec![&self.default];
        for store in self.named.values() {
            if !all.iter().any(|known| Arc::ptr_eq(known, store)) {
                all.push(store);
            }
        }
        all
    }

    /// An order's events from every store, oldest first.
    pub async fn timeline(&self, order_id: &str) -> Result<Vec<TimelineRow>, StoreError> {
        let mut rows = Vec::new();
        for store in self.all() {
            rows.extend(store.timeline(order_id).await?);
        }
        // Event ids are time-ordered (UUIDv7), which breaks ties within a millisecond.
        rows.sort_by(|a, b| (a.at_ms, &a.event_id).cmp(&(b.at_ms, &b.event_id)));
        Ok(rows)
    }
}
