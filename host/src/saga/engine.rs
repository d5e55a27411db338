//! The consumer engine: one loop for every consumer, the steps' and the host's own.
//! It receives a batch, drops what the inbox already has, lets the handler turn the rest
//! into one commit, commits, then settles with the transport. Its rules hold for every
//! handler:
//! - **conflicts** (another host handled an event first, or changed state the batch read)
//!   re-run the batch on fresh state at once; no attempt is used;
//! - **outages** (the store or the archive unavailable, a lock timeout) hand the batch
//!   back and wait; nobody's attempts are used and nothing is dead-lettered;
//! - **refusals** (the store or the archive refused the data of the batch) split the batch into single
//!   deliveries; one refused [`STRIKES`] times alone is dead-lettered, so one bad event
//!   never blocks a queue.

use super::{HOST_CONSUMER, SagaContext};
use crate::archive::ArchiveError;
use crate::backoff::Backoff;
use crate::event::{new_event_id, now_ms, wire};
use crate::shutdown::Shutdown;
use crate::store::{BatchCommit, DeadLetterRow, Store, StoreError};
use crate::transport::{Delivery, Settlement, Transport, TransportError};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use wasaga_sdk::events::{StepDeadLettered, kinds};

/// How long a receive waits before checking for shutdown again.
const RECEIVE_WAIT: Duration = Duration::from_millis(500);
/// Refusals of one event, alone in its batch, before it is dead-lettered.
pub const STRIKES: u32 = 3;
/// Re-runs of a batch that keeps conflicting before it is handed back for later.
const CONFLICT_ROUNDS: usize = 8;
/// How soon a batch handed back comes again.
const RELEASE_DELAY: Duration = Duration::from_millis(200);

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub(super) enum BatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The step is not loaded on this host right now.
    #[error("step {0} is not loaded here")]
    NotLoaded(String),
}

impl BatchError {
    /// Whether the batch can only be refused by its data (counts a strike).
    fn is_refusal(&self) -> bool {
        match self {
            BatchError::Store(error) => !error.is_transient(),
            // A name or object the archive refuses fails its event alone, as a store refusal does.
            BatchError::Archive(error) => error.is_refusal(),
            _ => false,
        }
    }
}

/// What the engine runs: a step, or the host's order logic.
#[async_trait]
pub(super) trait Handler: Send + Sync {
    /// The consumer name: a step, or `host`.
    fn consumer(&self) -> &str;
    /// Where its deliveries come from.
    fn source(&self) -> Arc<dyn Transport>;
    /// The store its inbox and effects live in.
    fn store(&self) -> Arc<dyn Store>;
    /// The version named on a dead letter given up on without handling.
    fn version(&self) -> String;
    /// Turn the fresh deliveries of a batch into `commit`, and say how to settle each.
    async fn handle(&self, commit: &mut BatchCommit, deliveries: Vec<Delivery>) -> Result<Vec<Settlement>, BatchError>;
    /// The batch last handled committed (shadow runs start then).
    fn committed(&self) {}
}

/// Run `handler` until `stopped`.
pub(super) async fn run(handler: Arc<dyn Handler>, ctx: Arc<SagaContext>, stopped: Shutdown) {
    let consumer = handler.consumer().to_owned();
    tracing::info!(%consumer, "consumer started");
    // After a batch is refused, its deliveries are taken one at a time, so one event the
    // store refuses cannot hold up the others.
    let mut one_at_a_time = 0usize;
    let mut strikes: HashMap<String, u32> = HashMap::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    // One handle for the consumer's life: recording then costs no key lookup per batch.
    let batch_sizes = metrics::histogram!("wasaga_batch_deliveries", "consumer" => consumer.clone());
    loop {
        if stopped.is_stopping() {
            break;
        }
        let max = if one_at_a_time > 0 { 1 } else { ctx.config.batch_size };
        let source = handler.source();
        let received = tokio::select! {
            () = stopped.stopping() => break,
            received = source.receive(&consumer, max, RECEIVE_WAIT) => received,
        };
        let deliveries = match received {
            Ok(deliveries) if deliveries.is_empty() => continue,
            Ok(deliveries) => deliveries,
            Err(error) => {
                let wait = backoff.failed();
                tracing::warn!(%consumer, source = source.name(), %error, "receiving failed; retrying");
                stopped.pause(wait).await;
                continue;
            }
        };
        // The batch is finished even when shutdown is asked for meanwhile: nothing half-done.
        let kept = deliveries.clone();
        let single = (deliveries.len() == 1).then(|| deliveries[0].event.id.clone());
        let count = deliveries.len();
        batch_sizes.record(count as f64);
        let error = match handle_batch(&*handler, &ctx, &*source, deliveries).await {
            Ok(()) => {
                backoff.succeeded();
                one_at_a_time = one_at_a_time.saturating_sub(1);
                if let Some(id) = &single {
                    strikes.remove(id);
                }
                if lingers(count, max, ctx.config.batch_linger) {
                    stopped.pause(ctx.config.batch_linger).await;
                }
                continue;
            }
            Err(error) => error,
        };
        if let BatchError::Transport(error) = &error {
            // Committed, but not settled: the transport delivers again and the inbox
            // absorbs it.
            tracing::warn!(%consumer, %error, "batch committed but not acknowledged; it will come again");
            stopped.pause(backoff.failed()).await;
            continue;
        }
        let mut kept = kept;
        if error.is_refusal() {
            tracing::warn!(%consumer, %error, "a batch was refused (by the store or the archive); its deliveries go one at a time");
            match single {
                None => one_at_a_time = count,
                Some(id) => {
                    let n = strikes.entry(id.clone()).or_default();
                    *n += 1;
                    if *n >= STRIKES {
                        strikes.remove(&id);
                        let reason = format!("this event's changes were refused {STRIKES} times: {error}");
                        let delivery = kept.remove(0);
                        if let Err(give_up_error) = give_up(&*handler, &ctx, &*source, delivery.clone(), &reason).await
                        {
                            tracing::error!(%consumer, error = %give_up_error, "cannot dead-letter an event the store refuses");
                            kept.push(delivery);
                        }
                    }
                }
            }
            release(&*source, &consumer, kept, &error.to_string()).await;
        } else {
            // An outage: nobody's fault in the batch. Hand it back and wait.
            let wait = backoff.failed();
            tracing::warn!(%consumer, %error, retry_in_ms = wait.as_millis() as u64,
                "batch not committed; it will be tried again");
            release(&*source, &consumer, kept, &error.to_string()).await;
            // Other hosts may be able to commit: let them take the queue meanwhile.
            source.stand_aside(&consumer).await;
            stopped.pause(wait).await;
        }
    }
    tracing::info!(%consumer, "consumer stopped");
}

/// Whether to wait before taking the next batch. A batch of several deliveries that was
/// not full means deliveries arrive while the consumer works, but slower than it takes
/// them: waiting a moment lets the next batch fill, so the fixed cost of a batch (inbox
/// and overrides read, one commit, one acknowledgement) is paid for more deliveries. A
/// fleet splits each queue between its hosts, so without this each takes small batches.
/// A single delivery means the consumer is idle between events: no wait, no latency.
fn lingers(count: usize, max: u32, linger: Duration) -> bool {
    !linger.is_zero() && count > 1 && count < max as usize
}

/// Apply the processing rule to a batch, re-running it on fresh state while it conflicts.
async fn handle_batch(
    handler: &dyn Handler,
    ctx: &SagaContext,
    source: &dyn Transport,
    deliveries: Vec<Delivery>,
) -> Result<(), BatchError> {
    let consumer = handler.consumer();
    let store = handler.store();
    let settles_here = source.settles_in(consumer, &store);
    // The host's order logic joins the commit of the events it consumes when both live in
    // one store: a completion is then written with the capture. Not after the store
    // refused such a commit: the host's consumer then gets the events and sets aside
    // alone the one it cannot store, and the step's own changes go in.
    let mut with_host = consumer != HOST_CONSUMER && Arc::ptr_eq(&store, ctx.host_store());
    for round in 1..=CONFLICT_ROUNDS {
        let ids: Vec<String> = deliveries.iter().map(|d| d.event.id.clone()).collect();
        let mut seen = store.handled(consumer, &ids).await?;
        let mut settlements = Vec::with_capacity(deliveries.len());
        let mut fresh = Vec::with_capacity(deliveries.len());
        for delivery in deliveries.iter().cloned() {
            if seen.insert(delivery.event.id.clone()) {
                fresh.push(delivery);
            } else {
                // Handled before (a redelivery), or twice in this batch: ack, no effect.
                settlements.push(Settlement::Ack(delivery));
            }
        }
        let mut commit = BatchCommit { consumer: consumer.to_owned(), ..BatchCommit::default() };
        if !fresh.is_empty() {
            settlements.extend(handler.handle(&mut commit, fresh).await?);
        }
        let host_handled = if with_host { super::orders::handle_in_commit(ctx, &mut commit) } else { HashSet::new() };
        commit.queued = queue_with_commit(ctx, &store, &commit).await;
        if let Some(queued) = &mut commit.queued {
            queued.retain(|(to, event_id, _)| to != HOST_CONSUMER || !host_handled.contains(event_id));
        }
        // The hop of each queued event, in its order's trace, until the commit is done.
        let _queue_spans = match &commit.queued {
            Some(_) => queue_spans(ctx, commit.outbox.iter().chain(commit.transitions.iter().map(|t| &t.event))),
            None => Vec::new(),
        };
        if settles_here {
            // Handled and dead-lettered deliveries go with the commit; retries stay.
            let (settled, rest): (Vec<_>, Vec<_>) =
                settlements.into_iter().partition(|s| !matches!(s, Settlement::Retry { .. }));
            commit.settled = settled.iter().map(|s| s.delivery().tag).collect();
            settlements = rest;
        }
        // Nothing to write (every delivery already handled, settled by the broker): no
        // transaction.
        let written = if commit.is_empty() { Ok(()) } else { store.commit_batch(&commit).await };
        match written {
            Ok(()) => {}
            Err(StoreError::Conflict(reason)) => {
                metrics::counter!("wasaga_batch_conflicts_total", "consumer" => consumer.to_owned()).increment(1);
                tracing::debug!(%consumer, round, %reason, "batch conflicted; running it again on fresh state");
                continue;
            }
            Err(error) if !error.is_transient() && !host_handled.is_empty() => {
                tracing::warn!(%consumer, %error, "the store refused a batch with the host's changes; running it again without them");
                with_host = false;
                continue;
            }
            Err(error) => return Err(error.into()),
        }
        let wrote_events = !commit.outbox.is_empty() || !commit.transitions.is_empty();
        if let Some(queued) = &commit.queued {
            ctx.transport.queued(queued);
        }
        handler.committed();
        if !(settles_here && settlements.is_empty()) {
            source.settle(consumer, settlements).await?;
        }
        // Events queued with the commit need no relay, unless a stream relays them too.
        if wrote_events && (commit.queued.is_none() || ctx.stream.is_some()) {
            ctx.relay.notify();
        }
        return Ok(());
    }
    Err(StoreError::Conflict(format!("still conflicting after {CONFLICT_ROUNDS} runs")).into())
}

/// The deliveries of the events `commit` writes, when the saga's transport can queue
/// them in the same transaction (the embedded transport on one store): a hop without
/// the relay. `None` leaves them to the relay, as does any failure to route.
async fn queue_with_commit(
    ctx: &SagaContext,
    store: &Arc<dyn Store>,
    commit: &BatchCommit,
) -> Option<Vec<crate::store::Queued>> {
    let events: Vec<&crate::store::StoredEvent> =
        commit.outbox.iter().chain(commit.transitions.iter().map(|t| &t.event)).collect();
    if events.is_empty() {
        return None;
    }
    match ctx.transport.route_with(store, &events).await {
        Ok(queued) => queued,
        Err(error) => {
            tracing::debug!(%error, "cannot route with the commit; the relay publishes these events");
            None
        }
    }
}

/// With tracing on, a `transport.queue` span per event queued with its commit: the hop
/// that `relay.publish` is for relayed events.
pub(super) fn queue_spans<'e>(
    ctx: &SagaContext,
    events: impl Iterator<Item = &'e crate::store::StoredEvent>,
) -> Vec<tracing::Span> {
    if !crate::telemetry::tracing_enabled() {
        return Vec::new();
    }
    events
        .map(|event| {
            let span = tracing::info_span!("transport.queue", host = %ctx.host_id, order_id = %event.order_id,
                kind = %event.kind, to = ctx.transport.name());
            crate::telemetry::set_parent(&span, event.trace.as_deref());
            span
        })
        .collect()
}

/// Hand back deliveries of a batch that did not commit: due again after a short wait,
/// without using up an attempt. (A broker would otherwise hold them unacked.)
pub(super) async fn release(source: &dyn Transport, consumer: &str, deliveries: Vec<Delivery>, error: &str) {
    if deliveries.is_empty() {
        return;
    }
    let error = crate::event::storable(error);
    let retries = deliveries
        .into_iter()
        .map(|delivery| Settlement::Retry { delivery, delay: RELEASE_DELAY, error: error.clone(), counted: false })
        .collect();
    if let Err(error) = source.settle(consumer, retries).await {
        tracing::warn!(%consumer, %error, "cannot hand deliveries back; they come again when the broker notices");
    }
}

/// Dead-letter a delivery without handling it (its changes cannot be stored).
async fn give_up(
    handler: &dyn Handler,
    ctx: &SagaContext,
    source: &dyn Transport,
    delivery: Delivery,
    reason: &str,
) -> Result<(), BatchError> {
    let consumer = handler.consumer();
    let mut commit = BatchCommit { consumer: consumer.to_owned(), ..BatchCommit::default() };
    dead_letter(&mut commit, consumer, &handler.version(), &delivery, reason, None);
    handler.store().commit_batch(&commit).await?;
    source.settle(consumer, vec![Settlement::DeadLetter { delivery, error: reason.to_owned() }]).await?;
    ctx.relay.notify();
    Ok(())
}

/// Marks an inbox row of an event that was dead-lettered rather than handled: a
/// redelivery is then a no-op, and a replay removes the row first.
pub const DEAD_LETTERED_PREFIX: &str = "dead-lettered:";

/// Record a dead letter (with the recording of its last attempt, when there is one) and
/// the `step.dead-lettered` event that lets the saga compensate.
pub(super) fn dead_letter(
    commit: &mut BatchCommit,
    consumer: &str,
    version: &str,
    delivery: &Delivery,
    error: &str,
    recording: Option<String>,
) {
    let event = &delivery.event;
    let error = &crate::event::storable(error);
    metrics::counter!("wasaga_dead_letters_total", "step" => consumer.to_owned()).increment(1);
    commit.inbox.push((event.id.clone(), format!("{DEAD_LETTERED_PREFIX}{version}")));
    commit.dead_letters.push(DeadLetterRow {
        id: new_event_id(),
        consumer: consumer.to_owned(),
        event_id: event.id.clone(),
        event: wire::encode(event),
        error: error.to_owned(),
        attempts: i64::from(delivery.attempt),
        dead_lettered_at_ms: now_ms(),
        recording,
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

#[cfg(test)]
mod tests {
    use super::lingers;
    use std::time::Duration;

    #[test]
    fn a_consumer_waits_only_after_a_batch_that_was_neither_one_delivery_nor_full() {
        let linger = Duration::from_millis(2);
        // Idle between events: an order at 10/s pays no wait.
        assert!(!lingers(1, 64, linger));
        // Events arrive while it works, slower than it takes them: let the next batch fill.
        assert!(lingers(2, 64, linger));
        assert!(lingers(63, 64, linger));
        // A full batch means more is waiting now: take it at once.
        assert!(!lingers(64, 64, linger));
        // Turned off.
        assert!(!lingers(12, 64, Duration::ZERO));
        // One at a time after a refusal: never.
        assert!(!lingers(1, 1, linger));
    }
}
