//! Operations the HTTP API and the CLI ask the saga for: dead letters (list, replay,
//! discard) and setting stock. Each does its own store work and wakes the relay, so a
//! handler never reaches into the saga's internals.

use super::SagaContext;
use crate::event::wire;
use crate::store::{DeadLetterRow, StoreError};
use crate::transport::TransportError;
use wasaga_sdk::events::{StockSet, kinds};

/// Why an operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no dead letter {0:?}")]
    NoDeadLetter(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker the event must go back to is down; try again later.
    #[error("cannot replay now: {0}")]
    Unavailable(TransportError),
    #[error(transparent)]
    Transport(TransportError),
    #[error("dead letter {id} is unreadable: {reason}")]
    Unreadable { id: String, reason: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Every dead letter of every store, oldest first.
pub async fn dead_letters(ctx: &SagaContext) -> Result<Vec<DeadLetterRow>, OpError> {
    let mut rows = Vec::new();
    for store in ctx.stores.all() {
        rows.extend(store.dead_letters().await?);
    }
    rows.sort_by(|a, b| (a.dead_lettered_at_ms, &a.id).cmp(&(b.dead_lettered_at_ms, &b.id)));
    Ok(rows)
}

/// Deliver a dead letter's event to its consumer again, with a fresh attempt count, on
/// `version` (a digest the fleet keeps) when one is given, else on the serving version.
/// Reopen, queue, then remove: a crash or failure at any point leaves the dead letter
/// listed (a second replay is harmless: the inbox absorbs a duplicate).
pub async fn replay(ctx: &SagaContext, id: &str, version: Option<&str>) -> Result<DeadLetterRow, OpError> {
    if let Some(digest) = version {
        let row = find(ctx, id).await?.ok_or_else(|| OpError::NoDeadLetter(id.to_owned()))?;
        // Refuse a version that is not kept before changing anything.
        ctx.registry.retained(&row.consumer, digest).await?;
        ctx.stores.for_consumer(&row.consumer).set_override(&row.consumer, &row.event_id, digest).await?;
    }
    // A dead letter lives in the store of the step that gave up.
    let mut found = None;
    for store in ctx.stores.all() {
        if let Some(row) = store.reopen_dead_letter(id).await? {
            found = Some((store.clone(), row));
            break;
        }
    }
    let Some((store, row)) = found else {
        return Err(OpError::NoDeadLetter(id.to_owned()));
    };
    let event =
        wire::decode(&row.event).map_err(|e| OpError::Unreadable { id: id.to_owned(), reason: e.to_string() })?;
    // The source the consumer reads: the transport, or the stream for an observer.
    ctx.source_for(&row.consumer).redeliver(&row.consumer, &event).await.map_err(|e| match e {
        TransportError::Unavailable { .. } => OpError::Unavailable(e),
        other => OpError::Transport(other),
    })?;
    store.take_dead_letter(id).await?;
    Ok(row)
}

/// A dead letter, from whichever store holds it.
async fn find(ctx: &SagaContext, id: &str) -> Result<Option<DeadLetterRow>, OpError> {
    for store in ctx.stores.all() {
        if let Some(row) = store.dead_letter(id).await? {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// The recording of a dead letter's last attempt, as JSON.
pub async fn recording(ctx: &SagaContext, id: &str) -> Result<Option<String>, OpError> {
    for store in ctx.stores.all() {
        if store.dead_letter(id).await?.is_some() {
            return Ok(store.dead_letter_recording(id).await?);
        }
    }
    Err(OpError::NoDeadLetter(id.to_owned()))
}

/// What a dry run did: nothing of it was committed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRun {
    /// `ok` or the failure's kind.
    pub outcome: String,
    /// The failure's message, if it failed.
    pub error: Option<String>,
    /// The digest that ran.
    pub version: String,
    pub emits: Vec<serde_json::Value>,
    /// State writes: `{"key","value"}`, value `null` for a delete.
    pub writes: Vec<serde_json::Value>,
    /// Why a run that did nothing did nothing, when the host can tell (the order ended).
    pub note: Option<String>,
}

/// Run a dead letter's event against live state on `version` (or the serving version)
/// and report what it would do; nothing is committed, written or published.
pub async fn dry_run(ctx: &SagaContext, id: &str, version: Option<&str>) -> Result<DryRun, OpError> {
    use crate::runtime::{CallInput, Origin, Recorder};
    let row = find(ctx, id).await?.ok_or_else(|| OpError::NoDeadLetter(id.to_owned()))?;
    let event =
        wire::decode(&row.event).map_err(|e| OpError::Unreadable { id: id.to_owned(), reason: e.to_string() })?;
    let step = match version {
        Some(digest) => ctx.registry.retained(&row.consumer, digest).await?,
        None => super::step::version_for(ctx, &row.consumer, &event).await?,
    };
    let store = ctx.stores.for_consumer(&row.consumer).clone();
    let state = super::state::BatchState::new(store, &row.consumer).call();
    // The archive records writes without making them.
    let archive = crate::archive::CallArchive::new(ctx.archive.clone());
    let origin = Origin::of(&event);
    let input = CallInput::of(&event, &origin, 1).network(crate::runtime::Network::Closed("a dry run never sends"));
    let recorder = Recorder::new(ctx.config.recording_max_bytes);
    let result = ctx.executor.call(&step, input, state, Some(archive), Some(recorder.clone())).await;
    let result = ctx.owned(&row.consumer, result);
    let (calls, _) = recorder.take();
    let writes: Vec<serde_json::Value> = super::shadow::writes_of(&calls)
        .into_iter()
        .map(|(key, value)| {
            let value = value.map(|v| {
                serde_json::from_slice(&v)
                    .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&v).into_owned()))
            });
            serde_json::json!({ "key": key, "value": value })
        })
        .collect();
    let (outcome, error, emits) = match result {
        Ok(emits) => (
            "ok".to_owned(),
            None,
            emits
                .into_iter()
                .map(|e| {
                    let payload: serde_json::Value =
                        serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::String(e.payload));
                    serde_json::json!({ "kind": e.kind, "payload": payload })
                })
                .collect(),
        ),
        Err(error) => (error.label().to_owned(), Some(error.to_string()), Vec::new()),
    };
    // "ok" with no effect is often a step ignoring an event of an order that ended.
    let mut note = None;
    if outcome == "ok" && emits.is_empty() && writes.is_empty() && !event.order_id.is_empty() {
        let order = ctx.host_store().order(&event.order_id).await?;
        if let Some(order) = order.filter(|o| o.status != super::orders::PENDING) {
            note = Some(format!("the order is already {}: the step did nothing", order.status));
        }
    }
    Ok(DryRun { outcome, error, version: step.digest.to_string(), emits, writes, note })
}

/// Remove a dead letter for good.
pub async fn discard(ctx: &SagaContext, id: &str) -> Result<DeadLetterRow, OpError> {
    for store in ctx.stores.all() {
        if let Some(row) = store.take_dead_letter(id).await? {
            return Ok(row);
        }
    }
    Err(OpError::NoDeadLetter(id.to_owned()))
}

/// Set a SKU's available stock: a `stock.set` event the inventory step applies like any.
pub async fn set_stock(ctx: &SagaContext, sku: &str, available: u64) -> Result<(), OpError> {
    let payload = StockSet { sku: sku.to_owned(), available };
    let event = SagaContext::host_event(kinds::STOCK_SET, "", serde_json::to_string(&payload).unwrap_or_default());
    ctx.host_store().emit(&event).await?;
    ctx.relay.notify();
    Ok(())
}
