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

/// Deliver a dead letter's event to its consumer again, with a fresh attempt count.
/// Reopen, queue, then remove: a crash or failure at any point leaves the dead letter
/// listed (a second replay is harmless: the inbox absorbs a duplicate).
pub async fn replay(ctx: &SagaContext, id: &str) -> Result<DeadLetterRow, OpError> {
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
