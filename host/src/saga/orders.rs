//! The order, a native part of the host: placing and cancelling (commands from HTTP),
//! and the host's consumer that moves orders along as the steps report back and keeps
//! the stock read model from the inventory step's events.
//!
//! State machine (every change is a conditional update, so a race resolves to one winner):
//! ```text
//! pending ──payment.captured──────────────────────────▶ completed (emits order.completed)
//! pending ──payment.declined | stock.unavailable
//!           | step.dead-lettered | cancel API─────────▶ cancelled (emits order.cancelled)
//! completed ──cancel API──────────────────────────────▶ cancelled (emits order.cancelled:
//!                                                        payment refunds, inventory restocks)
//! cancelled ──anything─────────────────────────────────▶ cancelled (no effect; a late capture
//!                                                        is refunded by payment on order.cancelled)
//! ```

use super::engine::{BatchError, Handler};
use super::{HOST_CONSUMER, HOST_VERSION, SagaContext};
use crate::event::StoredEvent;
use crate::store::{BatchCommit, Created, Idempotency, NewOrder, OrderTransition, StockRow, Store, StoreError};
use crate::transport::{Delivery, Settlement, Transport};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasaga_sdk::events::{self, kinds};

pub const PENDING: &str = "pending";
pub const COMPLETED: &str = "completed";
pub const CANCELLED: &str = "cancelled";

/// Kinds the host consumes.
pub const HOST_KINDS: [&str; 8] = [
    kinds::PAYMENT_CAPTURED,
    kinds::PAYMENT_DECLINED,
    kinds::STOCK_UNAVAILABLE,
    kinds::STEP_DEAD_LETTERED,
    kinds::STOCK_UPDATED,
    kinds::STOCK_RESERVED,
    kinds::STOCK_COMMITTED,
    kinds::STOCK_RELEASED,
];

/// An order accepted through the API.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub items: Vec<events::LineItem>,
    pub card_token: String,
}

/// What placing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    New(String),
    /// The idempotency key was seen before with this body: the same order.
    Replayed(String),
    /// The idempotency key was seen before with another body.
    KeyReused,
    /// A request with the same idempotency key is being handled now.
    InFlight,
}

/// Idempotency keys whose first request is being handled on this host: a second request
/// with the same key is told to try again rather than racing the first to the store.
#[derive(Debug, Default)]
pub struct KeysInFlight(parking_lot::Mutex<std::collections::HashSet<String>>);

/// A key held while its request runs, released when dropped.
struct Held<'a> {
    keys: &'a KeysInFlight,
    key: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.keys.0.lock().remove(&self.key);
    }
}

impl KeysInFlight {
    fn hold(&self, key: &str) -> Option<Held<'_>> {
        self.0.lock().insert(key.to_owned()).then(|| Held { keys: self, key: key.to_owned() })
    }
}

/// Insert a new order and its `order.placed` in one transaction.
pub async fn place(
    ctx: &SagaContext,
    order: PlaceOrder,
    idempotency: Option<(&str, &str)>,
) -> Result<Placed, StoreError> {
    let _held = match idempotency {
        Some((key, _)) => match ctx.keys_in_flight.hold(key) {
            Some(held) => Some(held),
            None => return Ok(Placed::InFlight),
        },
        None => None,
    };
    let order_id = uuid::Uuid::now_v7().to_string();
    let total_cents: i64 = order.items.iter().map(|i| i.unit_price_cents.saturating_mul(i64::from(i.quantity))).sum();
    let placed = events::OrderPlaced {
        customer_id: order.customer_id.clone(),
        items: order.items.clone(),
        total_cents,
        payment: events::PaymentInfo { card_token: order.card_token },
    };
    // The root of the order's trace: every later event of the order descends from it.
    let span = tracing::info_span!("order.place", host = %ctx.host_id, order_id = %order_id);
    let event = span.in_scope(|| {
        SagaContext::host_event(kinds::ORDER_PLACED, &order_id, serde_json::to_string(&placed).unwrap_or_default())
    });
    let new_order = NewOrder {
        id: order_id.clone(),
        customer_id: order.customer_id,
        items: serde_json::to_string(&order.items).unwrap_or_default(),
        total_cents,
        created_at_ms: event.occurred_at_ms,
        idempotency: idempotency.map(|(key, hash)| Idempotency { key: key.to_owned(), body_hash: hash.to_owned() }),
        placed: event,
    };
    // Queued with the order when the transport can (the embedded one); else relayed.
    let queued = ctx.transport.route_with(ctx.host_store(), &[&new_order.placed]).await.ok().flatten();
    let _queue_spans = match &queued {
        Some(_) => super::engine::queue_spans(ctx, std::iter::once(&new_order.placed)),
        None => Vec::new(),
    };
    let outcome = match ctx.host_store().create_order(&new_order, queued.as_deref()).await? {
        Created::New => Placed::New(order_id),
        Created::Existing { order_id, body_hash } if Some(body_hash.as_str()) == idempotency.map(|i| i.1) => {
            Placed::Replayed(order_id)
        }
        Created::Existing { .. } => Placed::KeyReused,
    };
    if matches!(outcome, Placed::New(_)) {
        metrics::counter!("wasaga_orders_total", "status" => PENDING).increment(1);
        if let Some(queued) = &queued {
            ctx.transport.queued(queued);
        }
        // Queued with the order, it needs no relay, unless a stream relays it too.
        if queued.is_none() || ctx.stream.is_some() {
            ctx.relay.notify();
        }
    }
    Ok(outcome)
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Done,
    AlreadyCancelled,
    NotFound,
}

/// Cancel at the customer's request: a pending or completed order becomes cancelled.
pub async fn cancel(ctx: &SagaContext, order_id: &str) -> Result<Cancelled, StoreError> {
    let span = tracing::info_span!("order.cancel", host = %ctx.host_id, order_id = %order_id);
    let transition = span.in_scope(|| cancel_transition(order_id, "customer_request", &[PENDING, COMPLETED]));
    if ctx.host_store().transition(&transition).await? {
        metrics::counter!("wasaga_orders_total", "status" => CANCELLED).increment(1);
        ctx.relay.notify();
        return Ok(Cancelled::Done);
    }
    Ok(match ctx.host_store().order(order_id).await? {
        None => Cancelled::NotFound,
        Some(_) => Cancelled::AlreadyCancelled,
    })
}

/// Cancel an order past its deadline: only a pending one, so a completion that lands at
/// the same moment wins or loses the same compare-and-set, never both. `true` if this
/// call cancelled it.
pub async fn cancel_overdue(ctx: &SagaContext, order_id: &str) -> Result<bool, StoreError> {
    let span = tracing::info_span!("order.deadline", host = %ctx.host_id, order_id = %order_id);
    let transition = span.in_scope(|| cancel_transition(order_id, DEADLINE, &[PENDING]));
    let cancelled = ctx.host_store().transition(&transition).await?;
    if cancelled {
        metrics::counter!("wasaga_orders_total", "status" => CANCELLED).increment(1);
        metrics::counter!("wasaga_order_deadlines_total").increment(1);
        span.in_scope(|| tracing::info!("the order passed its deadline; cancelled"));
        ctx.relay.notify();
    }
    Ok(cancelled)
}

/// The cancel reason of an order that passed `order_deadline_secs`.
pub const DEADLINE: &str = "deadline";

fn cancel_transition(order_id: &str, reason: &str, from: &'static [&'static str]) -> OrderTransition {
    let payload = serde_json::to_string(&events::OrderCancelled { reason: reason.to_owned() }).unwrap_or_default();
    OrderTransition {
        order_id: order_id.to_owned(),
        from,
        to: CANCELLED,
        reason: Some(reason.to_owned()),
        event: SagaContext::host_event(kinds::ORDER_CANCELLED, order_id, payload),
    }
}

fn complete_transition(order_id: &str) -> OrderTransition {
    OrderTransition {
        order_id: order_id.to_owned(),
        from: &[PENDING],
        to: COMPLETED,
        reason: None,
        event: SagaContext::host_event(kinds::ORDER_COMPLETED, order_id, "{}".to_owned()),
    }
}

/// The host's own consumer: order transitions and the stock read model. Every
/// transition is conditional and every stock level carries the inventory step's sequence
/// number, so hosts applying events concurrently or out of order agree.
pub(super) struct HostHandler {
    ctx: Arc<SagaContext>,
}

impl HostHandler {
    pub(super) fn new(ctx: Arc<SagaContext>) -> HostHandler {
        HostHandler { ctx }
    }
}

#[async_trait]
impl Handler for HostHandler {
    fn consumer(&self) -> &str {
        HOST_CONSUMER
    }

    fn source(&self) -> Arc<dyn Transport> {
        self.ctx.transport.clone()
    }

    fn store(&self) -> Arc<dyn Store> {
        self.ctx.host_store().clone()
    }

    fn version(&self) -> String {
        HOST_VERSION.to_owned()
    }

    async fn handle(&self, commit: &mut BatchCommit, deliveries: Vec<Delivery>) -> Result<Vec<Settlement>, BatchError> {
        let mut stock: BTreeMap<String, StockRow> = BTreeMap::new();
        let mut settlements = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            apply(&self.ctx, &delivery.event, &mut commit.transitions, &mut stock);
            commit.inbox.push((delivery.event.id.clone(), HOST_VERSION.to_owned()));
            settlements.push(Settlement::Ack(delivery));
        }
        commit.stock = stock.into_values().collect();
        Ok(settlements)
    }
}

/// The host's consumer, run in the commit of a step's batch on the events the batch
/// emits: their transitions and stock levels join that commit, with the host's inbox
/// rows, so an order does not wait for a commit of the host's own per hop. Only for a
/// consumer whose store is the host's (`commit` goes to that store). Returns the ids of
/// the events handled, whose deliveries to the host need not be queued.
pub(super) fn handle_in_commit(ctx: &SagaContext, commit: &mut BatchCommit) -> std::collections::HashSet<String> {
    let mut handled = std::collections::HashSet::new();
    let mut stock: BTreeMap<String, StockRow> = BTreeMap::new();
    let events: Vec<_> = commit.outbox.iter().filter(|e| HOST_KINDS.contains(&e.kind.as_str())).cloned().collect();
    for event in &events {
        apply(ctx, event, &mut commit.transitions, &mut stock);
        commit.also_handled.push((HOST_CONSUMER.to_owned(), event.id.clone(), HOST_VERSION.to_owned()));
        handled.insert(event.id.clone());
    }
    for row in stock.into_values() {
        match commit.stock.iter_mut().find(|known| known.sku == row.sku) {
            Some(known) if known.seq < row.seq => *known = row,
            Some(_) => {}
            None => commit.stock.push(row),
        }
    }
    handled
}

/// What the host does with one event: a transition of its order and the stock levels it
/// reports (the newest per SKU kept in `stock`).
fn apply(
    ctx: &SagaContext,
    event: &StoredEvent,
    transitions: &mut Vec<OrderTransition>,
    stock: &mut BTreeMap<String, StockRow>,
) {
    let order_id = event.order_id.as_str();
    let span = tracing::info_span!("order.transition", host = %ctx.host_id, order_id = %order_id,
        kind = %event.kind, step = "host");
    crate::telemetry::set_parent(&span, event.trace.as_deref());
    let _entered = span.enter();
    if !ctx.config.owners.owns(&event.step, &event.kind) {
        // Whoever published it (a step, another program on the broker) does not own the
        // kind: acting on it would let anyone complete orders or set stock.
        tracing::warn!(emitter = %event.step, owner = %ctx.config.owners.owner(&event.kind),
            "ignoring an event of a kind its emitter does not own");
        metrics::counter!("wasaga_foreign_events_total", "kind" => event.kind.clone()).increment(1);
        return;
    }
    match event.kind.as_str() {
        kinds::PAYMENT_CAPTURED => transitions.push(complete_transition(order_id)),
        kinds::PAYMENT_DECLINED => transitions.push(cancel_transition(order_id, "payment_declined", &[PENDING])),
        kinds::STOCK_UNAVAILABLE => transitions.push(cancel_transition(order_id, "out_of_stock", &[PENDING])),
        kinds::STEP_DEAD_LETTERED if failed_step_drives_orders(ctx, &event.payload) => {
            transitions.push(cancel_transition(order_id, "step_failed", &[PENDING]))
        }
        _ => {}
    }
    // Only the stock owner's events carry levels for the read model.
    let levels = if event.kind.starts_with("stock.") { levels_of(&event.payload) } else { Vec::new() };
    for level in levels {
        let row = StockRow {
            sku: level.sku.clone(),
            available: i64::try_from(level.available).unwrap_or(i64::MAX),
            reserved: i64::try_from(level.reserved).unwrap_or(i64::MAX),
            sold: i64::try_from(level.sold).unwrap_or(i64::MAX),
            seq: i64::try_from(level.seq).unwrap_or(i64::MAX),
        };
        // Keep the newest level per SKU; the store also ignores older ones.
        if stock.get(&row.sku).is_none_or(|known| known.seq < row.seq) {
            stock.insert(row.sku.clone(), row);
        }
    }
}

/// Whether a dead letter should cancel its order. A step that subscribes to every kind
/// (`*`, like analytics) observes the saga and drives no order, so its failures leave
/// orders alone; any other step's failure stops the order so it is compensated.
fn failed_step_drives_orders(ctx: &SagaContext, payload: &str) -> bool {
    let Ok(dead) = serde_json::from_str::<events::StepDeadLettered>(payload) else {
        return true;
    };
    match ctx.registry.current(&dead.step) {
        Some(step) => !step.observes_all(),
        None => true,
    }
}

/// The stock levels an inventory event reports, if any.
fn levels_of(payload: &str) -> Vec<events::StockLevel> {
    #[derive(serde::Deserialize)]
    struct Levels {
        #[serde(default)]
        levels: Vec<events::StockLevel>,
    }
    serde_json::from_str::<Levels>(payload).map(|l| l.levels).unwrap_or_default()
}
