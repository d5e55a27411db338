//! A step's handler for the consumer engine. For each fresh delivery it picks the
//! version that handles it (a replay's chosen version, the order's pinned version, the
//! canary's share, or the serving version), runs it in a fresh instance with its state
//! bound to the batch and every host call recorded, and turns the outcome into inbox row,
//! state writes, emitted events, pins, a retry or a dead letter (with its recording).
//! After the batch commits, a shadow candidate gets the same events.

use super::engine::{BatchError, Handler, dead_letter};
use super::memo::Memo;
use super::readahead::ReadAhead;
use super::shadow::{LiveResult, ShadowJob, reads_of, writes_of};
use super::state::BatchState;
use super::{SagaContext, new_event_id, now_ms};
use crate::archive::CallArchive;
use crate::backoff;
use crate::event::StoredEvent;
use crate::runtime::{CallError, CallInput, LoadedStep, Network, Origin, Recorder};
use crate::store::{BatchCommit, RecordingRow, Store};
use crate::transport::{Delivery, Settlement, Transport};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;
use wasaga_sdk::events::kinds;
use wasaga_sdk::recording::{self, HostCall, Outcome, RecordedEmit, RecordedEvent, RecordedOrigin, Recording};

pub(super) struct StepHandler {
    ctx: Arc<SagaContext>,
    step: String,
    /// Shadow jobs of the batch in hand, sent once it commits.
    shadow_jobs: Mutex<Vec<ShadowJob>>,
    /// Calls a re-run of the batch after a conflict need not make again.
    memo: Memo,
    /// The keys of its orders a batch reads before its calls run.
    ahead: ReadAhead,
}

impl StepHandler {
    pub(super) fn new(ctx: Arc<SagaContext>, step: String) -> StepHandler {
        StepHandler {
            ctx,
            step,
            shadow_jobs: Mutex::new(Vec::new()),
            memo: Memo::default(),
            ahead: ReadAhead::default(),
        }
    }
}

/// What one batch needs to choose versions.
struct Routing {
    pins: HashMap<String, String>,
    overrides: HashMap<String, String>,
    pinned: bool,
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
        if self.ctx.registry.current(&self.step).is_none() {
            return Err(BatchError::NotLoaded(self.step.clone()));
        }
        self.shadow_jobs.lock().clear();
        self.memo.start();
        let store = self.store();
        let pinned = self.ctx.config.pinned.contains(&self.step);
        let mut order_ids: Vec<String> =
            deliveries.iter().map(|d| d.event.order_id.clone()).filter(|id| !id.is_empty()).collect();
        order_ids.sort();
        order_ids.dedup();
        let event_ids: Vec<String> = deliveries.iter().map(|d| d.event.id.clone()).collect();
        let mut routing = Routing {
            pins: if pinned { store.pins(&self.step, &order_ids).await? } else { HashMap::new() },
            overrides: store.overrides(&self.step, &event_ids).await?,
            pinned,
        };
        let state = BatchState::new(store, &self.step);
        // A re-run after a conflict reads again what its calls read; keys the calls
        // will likely read are read in the same round trip's stead.
        state.prefetch(&self.memo.keys_read(event_ids.iter().map(String::as_str))).await?;
        state
            .read_ahead(&self.ahead.keys(deliveries.iter().map(|d| (d.event.kind.as_str(), d.event.order_id.as_str()))))
            .await?;
        let mut archive_writes = Vec::new();
        let mut settlements = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let Some(step) = self.choose(&delivery.event, &mut routing, commit).await else {
                return Err(BatchError::NotLoaded(self.step.clone()));
            };
            let span = tracing::info_span!(
                "step.call",
                host = %self.ctx.host_id,
                order_id = %delivery.event.order_id,
                event_id = %delivery.event.id,
                kind = %delivery.event.kind,
                step = %self.step,
                step_version = %step.digest,
                attempt = delivery.attempt,
                outcome = tracing::field::Empty,
                trace_id = %crate::telemetry::trace_id(delivery.event.trace.as_deref()),
            );
            crate::telemetry::set_parent(&span, delivery.event.trace.as_deref());
            let call = self.call_one(&step, &state, commit, &mut archive_writes, delivery).instrument(span);
            settlements.push(call.await);
        }
        self.ahead.finish();
        let (read, unused) = state.ahead_used();
        if read + unused > 0 {
            let counter = |outcome: &'static str| metrics::counter!("wasaga_state_read_ahead_total", "step" => self.step.clone(), "outcome" => outcome);
            counter("read").increment(read as u64);
            counter("unused").increment(unused as u64);
        }
        // The archive first: the inbox rows must not say "handled" before the objects exist.
        CallArchive::write_all(&self.ctx.archive, archive_writes).await?;
        commit.state = state.take_writes();
        commit.state_reads = state.reads();
        Ok(settlements)
    }

    fn committed(&self) {
        let jobs = std::mem::take(&mut *self.shadow_jobs.lock());
        for job in jobs {
            self.ctx.shadows.submit(job);
        }
    }
}

impl StepHandler {
    /// The version that handles `event`: a replay's chosen version, the version the
    /// order is pinned to, or the canary's or serving version (pinning the order to it
    /// when the step is pinned).
    async fn choose(
        &self,
        event: &StoredEvent,
        routing: &mut Routing,
        commit: &mut BatchCommit,
    ) -> Option<Arc<LoadedStep>> {
        let registry = &self.ctx.registry;
        let fallback = || registry.route(&self.step, &event.order_id).or_else(|| registry.current(&self.step));
        if let Some(digest) = routing.overrides.get(&event.id).cloned() {
            commit.overrides_used.push(event.id.clone());
            match registry.retained(&self.step, &digest).await {
                Ok(step) => return Some(step),
                Err(error) => {
                    tracing::warn!(step = %self.step, %error, "the chosen version is gone; using the serving one")
                }
            }
        }
        if routing.pinned && !event.order_id.is_empty() {
            if let Some(digest) = routing.pins.get(&event.order_id).cloned() {
                if registry.is_rejected(&digest) {
                    // Retrying on a version that was rolled back or aborted would go on
                    // failing: the order's later events run on the serving version.
                    metrics::counter!("wasaga_pins_released_total", "step" => self.step.clone()).increment(1);
                    tracing::warn!(step = %self.step, order_id = %event.order_id, step_version = %digest,
                        "the order's pinned version was rejected; using the serving one");
                    return fallback();
                }
                match registry.retained(&self.step, &digest).await {
                    Ok(step) => return Some(step),
                    Err(error) => {
                        metrics::counter!("wasaga_pin_fallbacks_total", "step" => self.step.clone()).increment(1);
                        tracing::warn!(step = %self.step, order_id = %event.order_id, %error,
                            "the order's pinned version is gone; using the serving one");
                    }
                }
            } else if let Some(step) = fallback() {
                routing.pins.insert(event.order_id.clone(), step.digest.to_string());
                commit.pins.push((event.order_id.clone(), step.digest.to_string()));
                return Some(step);
            }
        }
        fallback()
    }

    async fn call_one(
        &self,
        step: &Arc<LoadedStep>,
        state: &Arc<BatchState>,
        commit: &mut BatchCommit,
        archive_writes: &mut Vec<crate::archive::ArchiveWrite>,
        delivery: Delivery,
    ) -> Settlement {
        let ctx = &self.ctx;
        let event = &delivery.event;
        let origin = Origin::of(event);
        let input = CallInput::of(event, &origin, delivery.attempt).live();
        let call_archive = CallArchive::new(ctx.archive.clone());
        let version = (&*step.digest, delivery.attempt);
        let (call_state, result, (calls, truncated), settings) = match self.memo.replay(&event.id, version, state).await
        {
            Some((view, kept)) => {
                metrics::counter!("wasaga_calls_reused_total", "step" => self.step.clone()).increment(1);
                (view, Ok(kept.emits), (kept.calls, false), kept.settings)
            }
            None => {
                let call_state = state.call();
                let recorder = Recorder::new(ctx.config.recording_max_bytes);
                let started = std::time::Instant::now();
                let result = ctx
                    .executor
                    .call(step, input, call_state.clone(), Some(call_archive.clone()), Some(recorder.clone()))
                    .await;
                let result = ctx.owned(&self.step, result);
                let took = started.elapsed();
                let record = recorder.take();
                if let Ok(emits) = &result {
                    self.memo.keep(&event.id, version, (&record.0, record.1), emits, recorder.settings());
                }
                self.ahead.learn(&event.kind, &event.order_id, &record.0);
                self.observe(step, &result, took, event, delivery.attempt, &record.0).await;
                (call_state, result, record, recorder.settings())
            }
        };
        let span = tracing::Span::current();
        span.record("outcome", result.as_ref().map_or_else(|e| e.label(), |_| "ok"));
        // Events this call emits continue the order's trace from this span.
        let trace = crate::telemetry::traceparent_of(&span);
        let outcome = match &result {
            Ok(emits) => Outcome::Ok {
                emits: emits
                    .iter()
                    .map(|e| RecordedEmit { kind: e.kind.clone(), payload: e.payload.clone(), delay_ms: e.delay_ms })
                    .collect(),
            },
            Err(error) => Outcome::Failed { kind: error.label().to_owned(), message: error.to_string() },
        };
        if let Some(candidate) = ctx.registry.shadow(&self.step)
            && candidate.digest != step.digest
        {
            let emits = match &outcome {
                Outcome::Ok { emits } => emits.iter().map(|e| (e.kind.clone(), e.payload.clone())).collect(),
                Outcome::Failed { .. } => Vec::new(),
            };
            self.shadow_jobs.lock().push(ShadowJob {
                candidate,
                event: event.clone(),
                attempt: delivery.attempt,
                reads: reads_of(&calls),
                exchanges: calls.iter().filter(|c| matches!(c, HostCall::Http { .. })).cloned().collect(),
                live: LiveResult { outcome: outcome.label().to_owned(), emits, writes: writes_of(&calls) },
            });
        }
        let redact = ctx.config.redact.get(&self.step).map_or(&[][..], Vec::as_slice);
        let recording = |calls: Vec<HostCall>| {
            let mut recording = Recording {
                format: recording::FORMAT,
                step: step.name.to_string(),
                version: step.digest.to_string(),
                attempt: delivery.attempt,
                event: RecordedEvent {
                    id: event.id.clone(),
                    kind: event.kind.clone(),
                    order_id: event.order_id.clone(),
                    occurred_at_ms: u64::try_from(event.occurred_at_ms).unwrap_or(0),
                    payload: event.payload.clone(),
                },
                origin: RecordedOrigin { step: event.step.clone(), step_version: event.step_version.clone() },
                calls,
                outcome: outcome.clone(),
                truncated,
                redacted: Vec::new(),
                settings: settings.clone(),
            };
            crate::runtime::redact_recording(&mut recording, redact);
            recording
        };
        match result {
            Ok(emits) => {
                state.keep(&call_state);
                archive_writes.extend(call_archive.take());
                commit.inbox.push((event.id.clone(), step.digest.to_string()));
                if ctx.config.record_sample.get(&self.step).is_some_and(|rate| rand::random::<f64>() < *rate) {
                    let recorded = recording(calls);
                    commit.recordings.push(RecordingRow {
                        id: new_event_id(),
                        step: self.step.clone(),
                        event_id: event.id.clone(),
                        version: step.digest.to_string(),
                        outcome: "ok".to_owned(),
                        recorded_at_ms: now_ms(),
                        recording: serde_json::to_string(&recorded).unwrap_or_default(),
                    });
                }
                let now = now_ms();
                for emit in emits {
                    let emitted = StoredEvent {
                        id: new_event_id(),
                        kind: emit.kind,
                        order_id: event.order_id.clone(),
                        payload: emit.payload,
                        step: step.name.to_string(),
                        step_version: step.digest.to_string(),
                        occurred_at_ms: now,
                        attempt: delivery.attempt,
                        trace: trace.clone(),
                    };
                    match emit.delay_ms {
                        // A timer waits outside the outbox until due (`OutboxStore::fire_timers`).
                        Some(delay) => commit.timers.push(crate::store::TimerRow {
                            event: emitted,
                            delay_ms: i64::try_from(delay).unwrap_or(i64::MAX),
                        }),
                        None => commit.outbox.push(emitted),
                    }
                }
                Settlement::Ack(delivery)
            }
            Err(CallError::Host(reason)) => {
                // The host failed, not the step: try again without using up an attempt.
                let delay = backoff::jittered(1, ctx.config.retry_base, ctx.config.retry_cap);
                tracing::warn!(%reason, "host failed during the call; will retry");
                Settlement::Retry { error: crate::event::storable(&reason), delivery, delay, counted: false }
            }
            Err(ref error)
                if error.is_retryable()
                    && (delivery.attempt < ctx.config.max_attempts || self.retries_forever(event)) =>
            {
                let delay = backoff::jittered(delivery.attempt, ctx.config.retry_base, ctx.config.retry_cap);
                tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "step failed; will retry");
                metrics::counter!("wasaga_retries_total", "step" => step.name.to_string()).increment(1);
                Settlement::Retry { error: crate::event::storable(&error.to_string()), delivery, delay, counted: true }
            }
            Err(ref error) => {
                tracing::warn!(%error, "step gave up; dead-lettering the event");
                let message = error.to_string();
                let recorded = serde_json::to_string(&recording(calls)).ok();
                dead_letter(commit, &step.name, &step.digest, &delivery, &message, recorded);
                Settlement::DeadLetter { delivery, error: message }
            }
        }
    }

    /// Count a call run (not one taken again) in its version's health, which rollouts
    /// and automatic rollback judge.
    async fn observe(
        &self,
        step: &Arc<LoadedStep>,
        result: &Result<Vec<crate::runtime::Emitted>, CallError>,
        took: std::time::Duration,
        event: &StoredEvent,
        attempt: u32,
        calls: &[HostCall],
    ) {
        if matches!(result, Err(CallError::Host(_))) {
            return;
        }
        let config = &self.ctx.config.auto_rollback;
        let failed_by_step = failed_by_step(result);
        // A failure counts against a new version only if the version it is judged
        // against handles the same event (effects discarded): an input that fails on
        // every version rolls nothing back.
        let regressed = match self.ctx.registry.baseline(step, config) {
            Some(baseline) if failed_by_step => self.baseline_handles(&baseline, event, attempt, calls).await,
            _ => false,
        };
        self.ctx.registry.observe(step, failed_by_step, regressed, took, config);
    }

    /// Whether `baseline` handles `event` without failing by its own fault, run on live
    /// state with every effect discarded, as a dry run; its HTTP requests get the answers
    /// the failed call got (`calls`), and a request that call did not make is not sent.
    async fn baseline_handles(
        &self,
        baseline: &Arc<LoadedStep>,
        event: &StoredEvent,
        attempt: u32,
        calls: &[HostCall],
    ) -> bool {
        let origin = Origin::of(event);
        let input = CallInput::of(event, &origin, attempt).network(Network::Recorded { calls, settings: None });
        let state = BatchState::new(self.store(), &self.step).call();
        let archive = CallArchive::new(self.ctx.archive.clone());
        let result = self.ctx.executor.call(baseline, input, state, Some(archive), None).await;
        let result = self.ctx.owned(&self.step, result);
        tracing::info!(baseline = %baseline.digest, outcome = result.as_ref().map_or_else(|e| e.label(), |_| "ok"),
            "the version judged against ran the failed event");
        !failed_by_step(&result)
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

/// Whether a call failed by the step's own fault: not a `retryable` answer (a business
/// outcome) and not the host's failure.
fn failed_by_step(result: &Result<Vec<crate::runtime::Emitted>, CallError>) -> bool {
    matches!(result, Err(e) if !matches!(e, CallError::Host(_) | CallError::Retryable(_)))
}

/// The version a delivery of `event` to `step` runs on now, chosen as the handler does
/// without a replay's version: the order's pin (unless that version was rejected), the
/// canary's share, or the serving version. A dry run uses it to run what a replay would.
pub(super) async fn version_for(
    ctx: &SagaContext,
    step: &str,
    event: &StoredEvent,
) -> Result<Arc<LoadedStep>, super::ops::OpError> {
    let registry = &ctx.registry;
    if ctx.config.pinned.contains(step) && !event.order_id.is_empty() {
        let store = ctx.stores.for_consumer(step);
        let pins = store.pins(step, std::slice::from_ref(&event.order_id)).await?;
        if let Some(digest) = pins.get(&event.order_id).filter(|d| !registry.is_rejected(d))
            && let Ok(pinned) = registry.retained(step, digest).await
        {
            return Ok(pinned);
        }
    }
    registry
        .route(step, &event.order_id)
        .ok_or_else(|| crate::registry::RegistryError::UnknownStep(step.to_owned()).into())
}
