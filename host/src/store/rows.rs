//! The rows and records the store reads and writes, named so no caller maps columns by
//! position.

use crate::event::StoredEvent;

/// `sqlx::FromRow` by column name, for any database, as sqlx's derive writes it (its
/// macros are not built: see `migrations.rs`). Fields are `String`, `i64` or options of
/// them; a `defaulted` field may be missing from the query.
macro_rules! from_row {
    ($ty:ident { $($field:ident: $column:literal),* $(,)? } $(defaulted { $($dfield:ident: $dcolumn:literal),* $(,)? })?) => {
        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $ty
        where
            &'r str: sqlx::ColumnIndex<R>,
            String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                Ok($ty {
                    $($field: row.try_get($column)?,)*
                    $($($dfield: match row.try_get($dcolumn) {
                        Err(sqlx::Error::ColumnNotFound(_)) => Default::default(),
                        other => other?,
                    },)*)?
                })
            }
        }
    };
}

/// A new order, written with its idempotency key and its `order.placed` in one
/// transaction.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: String,
    pub customer_id: String,
    /// JSON array of line items.
    pub items: String,
    pub total_cents: i64,
    pub created_at_ms: i64,
    /// The client's key, if it sent one.
    pub idempotency: Option<Idempotency>,
    pub placed: StoredEvent,
}

/// An idempotency key and the digest of the body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub body_hash: String,
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
    pub order_id: String,
    pub event_id: String,
    pub kind: String,
    pub at_ms: i64,
    pub step: String,
    pub step_version: String,
    /// The attempt of the call that emitted it (unknown for events of older versions).
    pub attempt: Option<i64>,
}

/// An order with its timeline, oldest event first.
#[derive(Debug, Clone)]
pub struct OrderWithTimeline {
    pub order: OrderRow,
    pub timeline: Vec<TimelineRow>,
}

/// A page of the order list, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrderPage {
    pub status: Option<String>,
    pub limit: u32,
    /// Only orders older than this sequence number (the previous page's last).
    pub before_seq: Option<i64>,
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

/// A durable timer a batch writes: `event`, published `delay_ms` after the commit by the
/// store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRow {
    pub event: StoredEvent,
    pub delay_ms: i64,
}

/// A timer not fired yet, as order views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTimer {
    pub event_id: String,
    pub kind: String,
    pub order_id: String,
    /// The step that set it.
    pub step: String,
    /// When it fires, in milliseconds since the Unix epoch (the store's clock).
    pub due_at_ms: i64,
}

/// Everything a consumer's handled batch changes, committed in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BatchCommit {
    pub consumer: String,
    /// (event id, version of the consumer that handled it)
    pub inbox: Vec<(String, String)>,
    /// Inbox rows of other consumers that handled this batch's own events in the same
    /// commit, as (consumer, event id, version): the host's order logic, when it shares
    /// the store, acts on the events a step emits without a hop of its own.
    pub also_handled: Vec<(String, String, String)>,
    /// Step state: `Some` puts, `None` deletes.
    pub state: Vec<(String, Option<Vec<u8>>)>,
    /// Step state the batch's calls read from the store, with the version each saw
    /// (`None`: absent). The commit fails with [`StoreError::Conflict`] if any changed.
    pub state_reads: Vec<(String, Option<i64>)>,
    pub outbox: Vec<StoredEvent>,
    /// Events to publish later (durable timers): kept out of the outbox until due.
    pub timers: Vec<TimerRow>,
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

impl BatchCommit {
    /// Whether committing it would change nothing (the versions read alone guard no write).
    pub fn is_empty(&self) -> bool {
        // Every field named, so a new one must be decided on here.
        let BatchCommit {
            consumer: _,
            inbox,
            also_handled,
            state,
            state_reads: _,
            outbox,
            timers,
            transitions,
            stock,
            dead_letters,
            pins,
            overrides_used,
            recordings,
            queued,
            settled,
        } = self;
        inbox.is_empty()
            && also_handled.is_empty()
            && state.is_empty()
            && outbox.is_empty()
            && timers.is_empty()
            && transitions.is_empty()
            && stock.is_empty()
            && dead_letters.is_empty()
            && pins.is_empty()
            && overrides_used.is_empty()
            && recordings.is_empty()
            && queued.as_ref().is_none_or(Vec::is_empty)
            && settled.is_empty()
    }
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

/// A delivery handed back to wait until `due_at_ms`.
#[derive(Debug, Clone)]
pub struct RetryRow {
    pub id: i64,
    pub due_at_ms: i64,
    /// Why, shown with the delivery.
    pub error: String,
    /// Whether this delivery counts as an attempt (a failure of the consumer's), or not (an
    /// outage, a shutdown).
    pub counted: bool,
}

from_row!(OrderRow {
    seq: "seq",
    id: "id",
    customer_id: "customer_id",
    status: "status",
    cancel_reason: "cancel_reason",
    total_cents: "total_cents",
    items: "items",
    created_at_ms: "created_at_ms",
    updated_at_ms: "updated_at_ms",
});
from_row!(TimelineRow {
    order_id: "order_id",
    event_id: "event_id",
    kind: "kind",
    at_ms: "occurred_at_ms",
    step: "step",
    step_version: "step_version",
    attempt: "attempt",
});
from_row!(StockRow { sku: "sku", available: "available", reserved: "reserved", sold: "sold", seq: "seq" });
from_row!(DeliveryRow {
    id: "id",
    consumer: "consumer",
    event_id: "event_id",
    event: "event",
    attempts: "attempts",
    due_at_ms: "due_at_ms",
});
from_row!(DeadLetterRow {
    id: "id",
    consumer: "consumer",
    event_id: "event_id",
    event: "event",
    error: "error",
    attempts: "attempts",
    dead_lettered_at_ms: "dead_lettered_at_ms",
} defaulted { recording: "recording" });
from_row!(RecordingRow {
    id: "id",
    step: "step",
    event_id: "event_id",
    version: "version",
    outcome: "outcome",
    recorded_at_ms: "recorded_at_ms",
    recording: "recording",
});
from_row!(HistoryRow {
    name: "name",
    action: "action",
    digest: "digest",
    reason: "reason",
    host_id: "host_id",
    at_ms: "at_ms",
});
from_row!(HostRow {
    host_id: "host_id",
    http_addr: "http_addr",
    started_at_ms: "started_at_ms",
    seen_at_ms: "seen_at_ms",
    steps: "steps",
});
