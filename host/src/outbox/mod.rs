//! The outbox relay: publishes every store's unrelayed events, in outbox order, to the
//! transport, then marks them relayed. A crash between the two publishes them again;
//! consumers' inboxes absorb the duplicates.

use crate::saga::{SagaContext, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How many events one relay round publishes.
const BATCH: u32 = 512;
/// How often the relay looks when nobody wakes it.
const POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct Relay {
    wake: Notify,
}

impl Relay {
    /// Tell the relay new events are in the outbox.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    pub async fn run(self: Arc<Self>, ctx: Arc<SagaContext>, mut stopped: watch::Receiver<bool>) {
        loop {
            if *stopped.borrow() {
                return;
            }
            let relayed = match self.relay_once(&ctx).await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; retrying");
                    0
                }
            };
            if relayed < BATCH as usize {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    async fn relay_once(&self, ctx: &SagaContext) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let rows = ctx.store.unrelayed(BATCH).await?;
        if rows.is_empty() {
            metrics::gauge!("wasaga_outbox_lag_seconds", "store" => ctx.store.backend()).set(0.0);
            return Ok(0);
        }
        let oldest = rows.first().map(|(_, e)| e.occurred_at_ms).unwrap_or_else(now_ms);
        let (seqs, events): (Vec<i64>, Vec<_>) = rows.into_iter().unzip();
        ctx.transport.publish(&events).await?;
        ctx.store.mark_relayed(&seqs, now_ms()).await?;
        let lag = (now_ms() - oldest).max(0) as f64 / 1000.0;
        metrics::gauge!("wasaga_outbox_lag_seconds", "store" => ctx.store.backend()).set(lag);
        metrics::histogram!("wasaga_outbox_relay_lag_seconds").record(lag);
        for event in &events {
            metrics::counter!("wasaga_events_total", "kind" => event.kind.clone(), "step" => event.step.clone())
                .increment(1);
        }
        Ok(events.len())
    }
}
