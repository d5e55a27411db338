//! A step's handler for the consumer engine: each fresh delivery runs in a fresh
//! instance of the step's serving version, with its state bound to the batch; the
//! outcome becomes inbox row, state writes and emitted events, a retry or a dead letter.

use super::engine::{BatchError, Handler, dead_letter};
use super::state::BatchState;
use super::{SagaContext, new_event_id, now_ms};
use crate::archive::CallArchive;
use crate::backoff;
use crate::event::StoredEvent;
use crate::runtime::{CallError, CallInput, LoadedStep, Origin};
use crate::store::{BatchCommit, Store};
use crate::transport::{Delivery, Settlement, Transport};
use async_trait::async_trait;
use std::sync::Arc;
use tracing::Instrument;
use wasaga_sdk::events::kinds;

pub(super) struct StepHandler {
    ctx: Arc<SagaContext>,
    step: String,
}

impl StepHandler {
    pub(super) fn new(ctx: Arc<SagaContext>, step: String) -> StepHandler {
        StepHandler { ctx, step }
    }
}

#[async_trait]
impl Handler for StepHandler {
    fn consumer(&self) -> &str {
        &self.step
    }

    fn source(&self) -> Arc<dyn Transport> {
        self.ctx.source_for(&self.step)
    }

    fn store(&self) -> Arc<dyn Store> {
        self.ctx.stores.for_consumer(&self.step).clone()
    }

    fn version(&self) -> String {
        self.ctx.registry.current(&self.step).map(|s| s.digest.to_string()).unwrap_or_default()
    }

    async fn handle(&self, commit: &mut BatchCommit, deliveries: Vec<Delivery>) -> Result<Vec<Settlement>, BatchError> {
        let Some(step) = self.ctx.registry.current(&self.step) else {
            return Err(BatchError::NotLoaded(self.step.clone()));
        };
        let state = BatchState::new(self.store(), &self.step);
        let mut archive_writes = Vec::new();
        let mut settlements = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let span = tracing::info_span!(
                "handle",
                order_id = %delivery.event.order_id,
                event_id = %delivery.event.id,
                kind = %delivery.event.kind,
                step = %self.step,
                step_version = %step.digest,
                attempt = delivery.attempt,
            );
            let call = self.call_one(&step, &state, commit, &mut archive_writes, delivery).instrument(span);
            settlements.push(call.await);
        }
        // The archive first: the inbox rows must not say "handled" before the objects exist.
        CallArchive::write_all(&self.ctx.archive, archive_writes).await?;
        commit.state = state.take_writes();
        commit.state_reads = state.reads();
        Ok(settlements)
    }
}

impl StepHandler {
    async fn call_one(
        &self,
        step: &LoadedStep,
        state: &Arc<BatchState>,
        commit: &mut BatchCommit,
        archive_writes: &mut Vec<crate::archive::ArchiveWrite>,
        delivery: Delivery,
    ) -> Settlement {
        let ctx = &self.ctx;
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
                // The host failed, not the step: try again without using up an attempt.
                let delay = backoff::jittered(1, ctx.config.retry_base, ctx.config.retry_cap);
                tracing::warn!(%reason, "host failed during the call; will retry");
                Settlement::Retry { error: reason.replace('\0', "\u{fffd}"), delivery, delay, counted: false }
            }
            Err(error)
                if error.is_retryable()
                    && (delivery.attempt < ctx.config.max_attempts || self.retries_forever(event)) =>
            {
                let delay = backoff::jittered(delivery.attempt, ctx.config.retry_base, ctx.config.retry_cap);
                tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "step failed; will retry");
                metrics::counter!("wasaga_retries_total", "step" => step.name.to_string()).increment(1);
                Settlement::Retry { error: error.to_string().replace('\0', "\u{fffd}"), delivery, delay, counted: true }
            }
            Err(error) => {
                tracing::warn!(%error, "step gave up; dead-lettering the event");
                let error = error.to_string();
                dead_letter(commit, &step.name, &step.digest, &delivery, &error);
                Settlement::DeadLetter { delivery, error }
            }
        }
    }

    /// Whether `event` finishes or undoes an order's effects (`order.completed` commits a
    /// reservation, `order.cancelled` releases stock and refunds) for a step that
    /// compensates: abandoning it would leave stock reserved or a charge unrefunded, so a
    /// retryable failure is retried for as long as it takes (backoff capped); only `fatal`
    /// gives up. Every other step's failures follow the normal attempts.
    fn retries_forever(&self, event: &StoredEvent) -> bool {
        let compensation = event.kind == kinds::ORDER_CANCELLED || event.kind == kinds::ORDER_COMPLETED;
        compensation && self.ctx.compensates(&self.step)
    }
}
