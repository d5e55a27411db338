//! A step's consumer: receives batches of deliveries and applies the processing rule to
//! each, committing the whole batch in one transaction (group commit) before acking.

use super::state::BatchState;
use super::{SagaContext, new_event_id, now_ms, retry, wire};
use crate::archive::{ArchiveWrite, CallArchive};
use crate::runtime::{CallError, CallInput, LoadedStep, Origin};
use crate::store::{BatchCommit, DeadLetterRow, StoredEvent};
use crate::transport::{Delivery, Settlement, Transport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;
use wasaga_sdk::events::{StepDeadLettered, kinds};

/// How long a receive waits before checking for shutdown again.
const RECEIVE_WAIT: Duration = Duration::from_millis(500);

/// Commit failures of one event, alone in its batch, before it is dead-lettered.
const COMMIT_STRIKES: u32 = 3;

pub async fn run_step_consumer(ctx: Arc<SagaContext>, step: String, mut stopped: watch::Receiver<bool>) {
    tracing::info!(%step, "consumer started");
    // After a batch fails to commit, its deliveries are taken one at a time, so one
    // event the store refuses cannot hold up the others; that event is dead-lettered
    // after a few strikes.
    let mut one_at_a_time = 0usize;
    let mut strikes: HashMap<String, u32> = HashMap::new();
    loop {
        if *stopped.borrow() {
            break;
        }
        let max = if one_at_a_time > 0 { 1 } else { ctx.config.batch_size };
        let source = ctx.source_for(&step);
        let deliveries = tokio::select! {
            _ = stopped.changed() => break,
            received = source.receive(&step, max, RECEIVE_WAIT) => received,
        };
        let deliveries = match deliveries {
            Ok(deliveries) if deliveries.is_empty() => continue,
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::warn!(%step, source = source.name(), %error, "receiving failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // The batch is finished even when shutdown is asked for meanwhile: nothing half-done.
        let kept = deliveries.clone();
        let single = (deliveries.len() == 1).then(|| deliveries[0].clone());
        let count = deliveries.len();
        match handle_batch(&ctx, &*source, &step, deliveries).await {
            Ok(()) => {
                one_at_a_time = one_at_a_time.saturating_sub(1);
                if let Some(delivery) = &single {
                    strikes.remove(&delivery.event.id);
                }
            }
            Err(BatchFailure::Archive(error)) => {
                // Storage being down is nobody's fault in the batch: try it all again later.
                tracing::warn!(%step, %error, "archive writes failed; the batch will be tried again");
                release(&*source, &step, kept, &error.to_string()).await;
            }
            Err(BatchFailure::Store(error)) => {
                tracing::warn!(%step, %error, "batch not committed; its deliveries will come again");
                let mut kept = kept;
                match single {
                    None => one_at_a_time = count,
                    Some(delivery) => {
                        let n = strikes.entry(delivery.event.id.clone()).or_default();
                        *n += 1;
                        if *n >= COMMIT_STRIKES {
                            strikes.remove(&delivery.event.id);
                            let reason = format!("the store refused this event's changes: {error}");
                            match give_up(&ctx, &*source, &step, delivery, &reason).await {
                                Ok(()) => kept.clear(),
                                Err(error) => {
                                    tracing::error!(%step, %error, "cannot dead-letter an event the store refuses")
                                }
                            }
                        }
                    }
                }
                release(&*source, &step, kept, &error.to_string()).await;
            }
        }
    }
    tracing::info!(%step, "consumer stopped");
}

/// Why a batch did not commit.
enum BatchFailure {
    /// Archive writes failed: retried as a whole, never counted against an event.
    Archive(crate::archive::ArchiveError),
    /// The store (or the transport) failed.
    Store(Box<dyn std::error::Error + Send + Sync>),
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for BatchFailure {
    fn from(error: E) -> Self {
        BatchFailure::Store(error.into())
    }
}

/// Hand back deliveries of a batch that did not commit: due again after a short wait,
/// without using up an attempt. (A broker would otherwise hold them unacked.)
pub(super) async fn release(source: &dyn Transport, consumer: &str, deliveries: Vec<Delivery>, error: &str) {
    if deliveries.is_empty() {
        return;
    }
    let delay = Duration::from_millis(200);
    let error = error.replace('\0', "\u{fffd}");
    let retries = deliveries
        .into_iter()
        .map(|delivery| Settlement::Retry { delivery, delay, error: error.clone(), counted: false })
        .collect();
    if let Err(error) = source.settle(consumer, retries).await {
        tracing::warn!(%consumer, %error, "cannot hand deliveries back; they come again when the broker notices");
    }
}

/// Dead-letter a delivery without running the step (its changes cannot be stored).
async fn give_up(
    ctx: &SagaContext,
    source: &dyn Transport,
    step_name: &str,
    delivery: Delivery,
    reason: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let version = ctx.registry.current(step_name).map(|s| s.digest.to_string()).unwrap_or_default();
    let mut commit = BatchCommit { consumer: step_name.to_owned(), ..BatchCommit::default() };
    dead_letter(&mut commit, step_name, &version, &delivery, reason);
    ctx.stores.for_consumer(step_name).commit_batch(&commit).await?;
    let error = reason.to_owned();
    source.settle(step_name, vec![Settlement::DeadLetter { delivery, error }]).await?;
    ctx.relay.notify();
    Ok(())
}

/// Apply the processing rule to a batch.
async fn handle_batch(
    ctx: &SagaContext,
    source: &dyn Transport,
    step_name: &str,
    deliveries: Vec<Delivery>,
) -> Result<(), BatchFailure> {
    let Some(step) = ctx.registry.current(step_name) else {
        return Err(format!("step {step_name} is not loaded").into());
    };
    let ids: Vec<String> = deliveries.iter().map(|d| d.event.id.clone()).collect();
    let store = ctx.stores.for_consumer(step_name);
    let mut seen = store.handled(step_name, &ids).await?;
    let state = BatchState::new(store.clone(), step_name);
    let mut commit = BatchCommit { consumer: step_name.to_owned(), ..BatchCommit::default() };
    let mut settlements = Vec::with_capacity(deliveries.len());
    let mut archive_writes = Vec::new();
    for delivery in deliveries {
        if !seen.insert(delivery.event.id.clone()) {
            // Handled before (a redelivery), or twice in this batch: ack, no effect.
            settlements.push(Settlement::Ack(delivery));
            continue;
        }
        let span = tracing::info_span!(
            "handle",
            order_id = %delivery.event.order_id,
            event_id = %delivery.event.id,
            kind = %delivery.event.kind,
            step = %step_name,
            step_version = %step.digest,
            attempt = delivery.attempt,
        );
        let settlement =
            handle_one(ctx, &step, &state, &mut commit, &mut archive_writes, delivery).instrument(span).await;
        settlements.push(settlement);
    }
    // The archive first: the inbox rows must not say "handled" before the objects exist.
    CallArchive::write_all(&ctx.archive, archive_writes).await.map_err(BatchFailure::Archive)?;
    commit.state = state.take();
    let wrote_events = !commit.outbox.is_empty();
    store.commit_batch(&commit).await?;
    source.settle(step_name, settlements).await?;
    if wrote_events {
        ctx.relay.notify();
    }
    Ok(())
}

async fn handle_one(
    ctx: &SagaContext,
    step: &LoadedStep,
    state: &Arc<BatchState>,
    commit: &mut BatchCommit,
    archive_writes: &mut Vec<ArchiveWrite>,
    delivery: Delivery,
) -> Settlement {
    let event = &delivery.event;
    let origin = Origin { step: event.step.clone(), step_version: event.step_version.clone() };
    let input = CallInput {
        id: &event.id,
        kind: &event.kind,
        order_id: &event.order_id,
        occurred_at_ms: u64::try_from(event.occurred_at_ms).unwrap_or(0),
        payload: &event.payload,
        origin: &origin,
        attempt: delivery.attempt,
    };
    let call_state = state.call();
    let call_archive = CallArchive::new(ctx.archive.clone());
    match ctx.executor.call(step, input, call_state.clone(), Some(call_archive.clone())).await {
        Ok(emits) => {
            state.keep(&call_state);
            archive_writes.extend(call_archive.take());
            commit.inbox.push((event.id.clone(), step.digest.to_string()));
            let now = now_ms();
            commit.outbox.extend(emits.into_iter().map(|emit| StoredEvent {
                id: new_event_id(),
                kind: emit.kind,
                order_id: event.order_id.clone(),
                payload: emit.payload,
                step: step.name.to_string(),
                step_version: step.digest.to_string(),
                occurred_at_ms: now,
            }));
            Settlement::Ack(delivery)
        }
        Err(CallError::Host(reason)) => {
            // The store failed, not the step: try again without using up an attempt.
            let delay = retry::backoff(1, ctx.config.retry_base, ctx.config.retry_cap);
            tracing::warn!(%reason, "host failed during the call; will retry");
            Settlement::Retry { error: reason.replace('\0', "\u{fffd}"), delivery, delay, counted: false }
        }
        Err(error)
            if error.is_retryable() && (delivery.attempt < ctx.config.max_attempts || is_compensation(event)) =>
        {
            let delay = retry::backoff(delivery.attempt, ctx.config.retry_base, ctx.config.retry_cap);
            tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "step failed; will retry");
            metrics::counter!("wasaga_retries_total", "step" => step.name.to_string()).increment(1);
            Settlement::Retry { error: error.to_string().replace('\0', "\u{fffd}"), delivery, delay, counted: true }
        }
        Err(error) => {
            tracing::warn!(%error, "step gave up; dead-lettering the event");
            metrics::counter!("wasaga_dead_letters_total", "step" => step.name.to_string()).increment(1);
            let error = error.to_string();
            dead_letter(commit, &step.name, &step.digest, &delivery, &error);
            Settlement::DeadLetter { delivery, error }
        }
    }
}

/// Whether `event` finishes or undoes an order's effects (`order.completed` commits a
/// reservation, `order.cancelled` releases stock and refunds). Abandoning one would
/// leave stock reserved or a charge unrefunded, so a retryable failure of a compensation
/// is retried for as long as it takes (backoff capped at 30 s); only `fatal` gives up.
fn is_compensation(event: &StoredEvent) -> bool {
    event.kind == kinds::ORDER_CANCELLED || event.kind == kinds::ORDER_COMPLETED
}

/// Marks an inbox row of an event that was dead-lettered rather than handled: a
/// redelivery is then a no-op, and a replay removes the row first.
pub const DEAD_LETTERED_PREFIX: &str = "dead-lettered:";

/// Record a dead letter and the `step.dead-lettered` event that lets the saga compensate.
pub(super) fn dead_letter(commit: &mut BatchCommit, consumer: &str, version: &str, delivery: &Delivery, error: &str) {
    let event = &delivery.event;
    // PostgreSQL text cannot hold NUL; a step's message may.
    let error = &error.replace('\0', "\u{fffd}");
    commit.inbox.push((event.id.clone(), format!("{DEAD_LETTERED_PREFIX}{version}")));
    commit.dead_letters.push(DeadLetterRow {
        id: new_event_id(),
        consumer: consumer.to_owned(),
        event_id: event.id.clone(),
        event: wire::encode(event),
        error: error.to_owned(),
        attempts: i64::from(delivery.attempt),
        dead_lettered_at_ms: now_ms(),
    });
    if event.kind == kinds::STEP_DEAD_LETTERED {
        // Never announce the failure to handle an announcement: that would loop.
        return;
    }
    let payload = StepDeadLettered {
        step: consumer.to_owned(),
        event_id: event.id.clone(),
        event_kind: event.kind.clone(),
        error: error.to_owned(),
    };
    let payload = serde_json::to_string(&payload).unwrap_or_default();
    commit.outbox.push(SagaContext::host_event(kinds::STEP_DEAD_LETTERED, &event.order_id, payload));
}
