//! The outbox relay: publishes a store's unrelayed events, in outbox order, to the
//! transport, then marks them relayed. Each store has its own relay loop. A crash
//! between the two publishes them again; consumers' inboxes absorb the duplicates.

use crate::saga::{SagaContext, now_ms};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many events one relay round publishes.
const BATCH: u32 = 512;
/// How often a relay looks when nobody wakes it.
const POLL: Duration = Duration::from_millis(250);

/// Wakes every store's relay loop when new events may be in an outbox.
pub struct Relay {
    wake: watch::Sender<u64>,
}

impl Default for Relay {
    fn default() -> Self {
        Relay { wake: watch::Sender::new(0) }
    }
}

impl Relay {
    /// Tell the relays new events are in an outbox.
    pub fn notify(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Relay `store`'s outbox until `stopped`.
    pub async fn run(
        self: Arc<Self>,
        ctx: Arc<SagaContext>,
        store: Arc<dyn Store>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut woken = self.wake.subscribe();
        loop {
            if *stopped.borrow() {
                return;
            }
            woken.borrow_and_update();
            let relayed = match relay_once(&ctx, &store).await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(store = store.backend(), %error, "outbox relay failed; retrying");
                    0
                }
            };
            if relayed < BATCH as usize {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = woken.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }
}

async fn relay_once(
    ctx: &SagaContext,
    store: &Arc<dyn Store>,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let rows = store.unrelayed(BATCH).await?;
    if rows.is_empty() {
        metrics::gauge!("wasaga_outbox_lag_seconds", "store" => store.backend()).set(0.0);
        return Ok(0);
    }
    let oldest = rows.first().map(|(_, e)| e.occurred_at_ms).unwrap_or_else(now_ms);
    let (seqs, events): (Vec<i64>, Vec<_>) = rows.into_iter().unzip();
    ctx.transport.publish(&events).await?;
    store.mark_relayed(&seqs, now_ms()).await?;
    let lag = (now_ms() - oldest).max(0) as f64 / 1000.0;
    metrics::gauge!("wasaga_outbox_lag_seconds", "store" => store.backend()).set(lag);
    metrics::histogram!("wasaga_outbox_relay_lag_seconds").record(lag);
    for event in &events {
        metrics::counter!("wasaga_events_total", "kind" => event.kind.clone(), "step" => event.step.clone())
            .increment(1);
    }
    Ok(events.len())
}
