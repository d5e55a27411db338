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

mod claims;
mod group;
mod lane;
mod mssql;
mod sql;

use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub use mssql::{MssqlStore, config_from_url as mssql_config};
pub use sql::{PgStore, SqliteStore};

pub use crate::event::StoredEvent;

/// A store operation failed. The variants say what a caller may do about it: an
/// unavailable store is waited out, a conflict re-runs the work on fresh state, and only
/// a refusal of the data itself counts against the event that carried it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url} is not supported: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to the store: {0}")]
    Connect(String),
    /// Another process owns the store (SQLite allows one): waiting will not help.
    #[error("{0}")]
    InUse(String),
    #[error("migrating the store failed: {0}")]
    Migrate(String),
    /// The store cannot answer now: connection lost, timeout, lock wait, pool exhausted.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store refused the data: a constraint or an encoding the same data fails again.
    #[error("the store refused the data: {0}")]
    Rejected(String),
    /// Another writer changed what this work read, or handled the same event first.
    #[error("a concurrent writer got there first: {0}")]
    Conflict(String),
    #[error("store query failed: {0}")]
    Query(String),
}

impl StoreError {
    /// Whether waiting and trying again, unchanged, can succeed: the store's fault, not
    /// the data's.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Connect(_) | StoreError::Conflict(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        classify_sqlx(error)
    }
}

/// Sort a driver error into what a caller can do about it.
fn classify_sqlx(error: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    let text = crate::redact::text(&error.to_string());
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if matches!(
                db.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            ) {
                return StoreError::Rejected(text);
            }
            classify_code(&code, text)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(text),
        sqlx::Error::Encode(_) => StoreError::Rejected(text),
        _ => StoreError::Query(text),
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes, by what they mean for a retry.
fn classify_code(code: &str, text: String) -> StoreError {
    let sqlite = code.parse::<i64>().ok().map(|n| n & 0xff);
    match code {
        // PostgreSQL: serialization failure, deadlock.
        "40001" | "40P01" => StoreError::Conflict(text),
        // PostgreSQL: statement timeout or cancel, lock timeout, object in use.
        "57014" | "55P03" | "55006" => StoreError::Unavailable(text),
        // PostgreSQL: connection, resources, operator intervention, system errors.
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c.starts_with("58") => {
            StoreError::Unavailable(text)
        }
        // PostgreSQL: data exceptions (a NUL in text, a bad encoding) and integrity.
        c if c.starts_with("22") || c.starts_with("23") => StoreError::Rejected(text),
        // SQLite: busy, locked, I/O error, disk full, cannot open.
        _ if matches!(sqlite, Some(5 | 6 | 10 | 13 | 14)) => StoreError::Unavailable(text),
        // SQLite: constraint, mismatch, too big.
        _ if matches!(sqlite, Some(18..=20)) => StoreError::Rejected(text),
        _ => StoreError::Query(text),
    }
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
    /// The attempt of the call that emitted it (unknown for events of older versions).
    pub attempt: Option<i64>,
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
    /// When it fell due; claims come back in (due, id) order.
    pub due_at_ms: i64,
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
    /// The recording of the last attempt, as JSON (`None` when listing).
    pub recording: Option<String>,
}

/// A delivery for the embedded transport: consumer, event id, the event on the wire.
pub type Queued = (String, String, String);

/// Everything a consumer's handled batch changes, committed in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BatchCommit {
    pub consumer: String,
    /// (event id, version of the consumer that handled it)
    pub inbox: Vec<(String, String)>,
    /// Step state: `Some` puts, `None` deletes.
    pub state: Vec<(String, Option<Vec<u8>>)>,
    /// Step state the batch's calls read from the store, with the version each saw
    /// (`None`: absent). The commit fails with [`StoreError::Conflict`] if any changed.
    pub state_reads: Vec<(String, Option<i64>)>,
    pub outbox: Vec<StoredEvent>,
    pub transitions: Vec<OrderTransition>,
    pub stock: Vec<StockRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    /// Orders whose first event this batch handled, with the version that did (pinning).
    pub pins: Vec<(String, String)>,
    /// Version overrides (replays on a chosen version) used up by this batch.
    pub overrides_used: Vec<String>,
    /// Sampled recordings of successful calls.
    pub recordings: Vec<RecordingRow>,
    /// Deliveries of this batch's events (its outbox and its transitions' events) for the
    /// embedded transport, queued in the same transaction; an event's deliveries only if
    /// the event is written. The events are then written as relayed on the transport
    /// channel. Only for a store that [`Store::queues_with_commit`].
    pub queued: Option<Vec<Queued>>,
    /// Deliveries of the embedded transport that this batch settles (handled, already
    /// handled, dead-lettered): deleted in the same transaction, so settling costs no
    /// transaction of its own and a committed batch is never delivered again.
    pub settled: Vec<i64>,
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

/// A value of a step's state and the version it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: i64,
}

/// An order the redrive looks at: its id, status and last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedOrder {
    pub id: String,
    pub status: String,
    pub updated_at_ms: i64,
}

/// Rows older than these are removed by [`Store::prune`].
#[derive(Debug, Clone, Default)]
pub struct Cutoffs {
    /// Inbox rows of handled events (never the marks of dead-lettered ones).
    pub inbox_before_ms: i64,
    /// Relayed (and streamed) outbox rows: the events behind order timelines.
    pub outbox_before_ms: i64,
    pub idempotency_before_ms: i64,
    /// Pins of orders and sampled recordings.
    pub pins_before_ms: i64,
    /// Whether the outbox also has a stream cursor that must have passed a row.
    pub stream: bool,
    /// Step state of orders that finished (completed or cancelled) before this: for
    /// each `(step, prefix)` in `order_state`, the step's keys `<prefix><order id>`,
    /// tombstones included. Only orders in the same store are seen, so a step whose
    /// state lives in a store of its own keeps it.
    pub finished_before_ms: i64,
    /// Steps that allow it, with the key prefix of their per-order state.
    pub order_state: Vec<(String, String)>,
    /// Plugin versions kept before this that nothing in this store names (a slot's
    /// serving, previous or rollout version, a pin, an override, a recording); `None`
    /// keeps every version (pins may live in other stores).
    pub versions_before_ms: Option<i64>,
    /// Host rows not seen since, and leases that ended before it.
    pub hosts_before_ms: i64,
}

/// How many rows a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub inbox: u64,
    pub outbox: u64,
    pub idempotency_keys: u64,
    pub step_state: u64,
    pub plugin_versions: u64,
    pub hosts: u64,
}

/// `prefix` as a LIKE pattern matching every key that starts with it (`\` escapes).
pub fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_' | '[') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A component version kept in the fleet's registry.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub name: String,
    /// The manifest's semantic version.
    pub version: String,
    pub subscribes: Vec<String>,
    pub bytes: Vec<u8>,
    pub created_at_ms: i64,
}

/// Which version of a step the fleet serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub name: String,
    pub current: String,
    pub previous: Option<String>,
    /// Bumped by every change: writers compare and set it.
    pub generation: i64,
    pub updated_at_ms: i64,
    /// A candidate being rolled out beside `current`.
    pub rollout: Option<RolloutRow>,
}

/// A rollout in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// `canary` or `shadow`.
    pub mode: String,
    pub digest: String,
    /// The share of orders a canary takes, 0–100 (0 for a shadow).
    pub percent: i64,
    pub started_at_ms: i64,
}

/// A recorded call kept for replay (a sampled success, or beside a dead letter).
#[derive(Debug, Clone)]
pub struct RecordingRow {
    pub id: String,
    pub step: String,
    pub event_id: String,
    pub version: String,
    /// `ok` or the failure's kind.
    pub outcome: String,
    pub recorded_at_ms: i64,
    /// The recording as JSON.
    pub recording: String,
}

/// One change of the fleet's registry, for the history.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub name: String,
    /// `install`, `rollback`, `refused`, …
    pub action: String,
    pub digest: String,
    pub reason: String,
    pub host_id: String,
    pub at_ms: i64,
}

/// A live host of the fleet.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub host_id: String,
    pub http_addr: String,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
    /// JSON object: step → digest it serves.
    pub steps: String,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// A short name of the backend, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Whether this store queues [`BatchCommit::queued`] deliveries with the events.
    fn queues_with_commit(&self) -> bool {
        false
    }

    /// Insert the order, its idempotency key and its `order.placed` event atomically.
    /// With `queued`, `placed`'s deliveries are queued in the same transaction (see
    /// [`BatchCommit::queued`]).
    async fn create_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        placed: &StoredEvent,
        queued: Option<&[Queued]>,
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

    /// Replace the kinds `consumer` receives on the embedded transport. Kept in the
    /// consumer's store, so events for a step that is not loaded wait for it.
    async fn set_subscriptions(&self, consumer: &str, patterns: &[String]) -> Result<(), StoreError>;
    /// Every (consumer, pattern) of this store.
    async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Queue `(consumer, event id, wire JSON)` deliveries; one already queued is kept.
    /// With `relayed`, the outbox rows they came from are marked relayed on that
    /// channel in the same transaction.
    async fn enqueue(
        &self,
        deliveries: &[(String, String, String)],
        now_ms: i64,
        relayed: Option<(Channel, &[i64])>,
    ) -> Result<(), StoreError>;
    /// Claim up to `limit` deliveries of `consumer` due by `now_ms` for `holder`, for
    /// `lease_ms`; a delivery claimed by someone else is skipped until its claim expires.
    /// Claims start and expire by the store's clock, so hosts whose clocks disagree
    /// agree on them. Returned in queue order.
    async fn claim(
        &self,
        consumer: &str,
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Drop every claim of `holder` (at its start: the claims of its previous run).
    async fn release_claims(&self, holder: &str) -> Result<(), StoreError>;
    /// Extend every claim of `holder` to `lease_ms` from now (store clock): a batch
    /// that runs longer than a lease keeps its deliveries.
    async fn renew_claims(&self, holder: &str, lease_ms: i64) -> Result<(), StoreError>;
    /// When the next delivery of `consumer` falls due (or its claim expires).
    async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError>;
    /// Remove acknowledged deliveries and reschedule failed ones
    /// `(id, due at, error, whether the attempt counts)`, dropping their claims. Only
    /// deliveries `holder` still claims are touched: one whose claim passed to another
    /// host is that host's to settle.
    async fn settle(&self, holder: &str, acked: &[i64], retries: &[(i64, i64, String, bool)])
    -> Result<(), StoreError>;

    /// Which of `event_ids` `consumer` has already handled.
    async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError>;
    async fn state_get(&self, step: &str, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Commit a handled batch: inbox, state, outbox, order transitions, stock, dead
    /// letters. [`StoreError::Conflict`] when another writer handled one of its events or
    /// changed state it read: nothing is committed, and the batch is run again.
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

    /// Take or renew the lease `name` for `holder` for `ttl_ms`, by the store's clock
    /// (hosts' clocks may disagree); true if held.
    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Whether one process owns this store (SQLite's lock file), so no other host can
    /// share it.
    fn exclusive(&self) -> bool {
        false
    }
    /// Give the lease up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// The versions that handled the first event of each of `order_ids` for `step`.
    async fn pins(&self, step: &str, order_ids: &[String]) -> Result<HashMap<String, String>, StoreError>;
    /// Version overrides (a dead letter replayed on a chosen version) of `event_ids`.
    async fn overrides(&self, consumer: &str, event_ids: &[String]) -> Result<HashMap<String, String>, StoreError>;
    async fn set_override(&self, consumer: &str, event_id: &str, digest: &str) -> Result<(), StoreError>;
    /// The recording kept with a dead letter.
    async fn dead_letter_recording(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// A dead letter (without its recording).
    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
    /// The newest `limit` sampled recordings of `step`.
    async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError>;

    /// Orders of any status unchanged for `stall_ms` but changed since `since_ms` whose
    /// check is due and that were not found complete since their last change; each
    /// returned order's next check is pushed back by `stall_ms` × its checks.
    async fn stalled_orders(
        &self,
        now_ms: i64,
        stall_ms: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CheckedOrder>, StoreError>;
    /// The relayed events of `order_ids` that occurred since `since_ms`, for the redrive
    /// to compare with its consumers' inboxes.
    async fn events_of(&self, order_ids: &[String], since_ms: i64) -> Result<Vec<StoredEvent>, StoreError>;
    /// Record that every event of these ended orders was handled or dead-lettered by all
    /// its consumers: no more checks until the order changes again.
    async fn mark_checked(&self, orders: &[CheckedOrder]) -> Result<(), StoreError>;
    /// Remove rows older than the cutoffs, at most `limit` of each kind per call.
    async fn prune(&self, cutoffs: &Cutoffs, limit: u32) -> Result<Pruned, StoreError>;

    /// Keep a component version (a version already kept is left as it is).
    async fn put_version(&self, version: &VersionRow) -> Result<(), StoreError>;
    async fn version(&self, digest: &str) -> Result<Option<VersionRow>, StoreError>;
    /// Digests of every kept version of `name`.
    async fn version_digests(&self, name: &str) -> Result<Vec<String>, StoreError>;
    async fn slots(&self) -> Result<Vec<SlotRow>, StoreError>;
    /// Set `slot` if the stored generation is `expected` (0: no slot yet); true if set.
    async fn set_slot(&self, slot: &SlotRow, expected: i64) -> Result<bool, StoreError>;
    async fn add_history(&self, entry: &HistoryRow) -> Result<(), StoreError>;
    /// The newest `limit` history entries of `name`, newest first.
    async fn history(&self, name: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError>;

    /// Record that `host` is alive.
    async fn heartbeat(&self, host: &HostRow) -> Result<(), StoreError>;
    /// Hosts seen at or after `seen_after_ms`.
    async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError>;
    /// Remove a host's row (at a clean stop).
    async fn remove_host(&self, host_id: &str) -> Result<(), StoreError>;
}

/// How durable SQLite commits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Every commit reaches the disk before it returns: a 202 survives a power cut.
    Full,
    /// Commits reach the disk at checkpoints: faster; a power cut may lose the last ones
    /// (a crash of the process loses nothing).
    Normal,
}

/// Settings every backend applies when it opens.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub sqlite_synchronous: SqliteSync,
    /// Longest a statement may run or wait for a lock before the store gives up on it
    /// (the work is then retried, not counted against an event).
    pub statement_timeout: std::time::Duration,
    /// Longest wait for a connection.
    pub connect_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_synchronous: SqliteSync::Full,
            statement_timeout: std::time::Duration::from_secs(30),
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Open and migrate the store at `url`: `sqlite://path`, `postgres://…` or `mssql://…`.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(url, options).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::open(url, options).await?));
    }
    if url.starts_with("mssql://") || url.starts_with("sqlserver://") {
        return Ok(Arc::new(MssqlStore::open(url, options).await?));
    }
    Err(StoreError::Url {
        url: crate::redact::url(url),
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
        options: &StoreOptions,
    ) -> Result<Arc<Stores>, StoreError> {
        for (consumer, name) in &routes {
            if !named.contains_key(name) {
                return Err(StoreError::Url {
                    url: name.clone(),
                    reason: format!("step {consumer:?} uses store {name:?}, which no [stores.{name}] defines"),
                });
            }
        }
        let default = open(default_url, options).await?;
        let mut by_url: std::collections::BTreeMap<&str, Arc<dyn Store>> = Default::default();
        by_url.insert(default_url, default.clone());
        let mut opened = std::collections::BTreeMap::new();
        for (name, url) in named {
            let store = match by_url.get(url.as_str()) {
                Some(store) => store.clone(),
                None => {
                    let store = open(url, options).await?;
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
        self.for_consumer(crate::event::HOST_CONSUMER)
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
