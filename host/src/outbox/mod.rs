//! The outbox relay: publishes a store's unrelayed events, in outbox order, then marks
//! them relayed. Each store has one relay loop per channel: the transport (the saga's
//! consumers) and, when configured, the event stream (Kafka). Each channel has its own
//! cursor in the outbox, so a stream that is down never holds up the saga, and catches
//! up when it is back. A crash between publishing and marking publishes them again; the
//! consumers' inboxes absorb the duplicates.

use crate::saga::{SagaContext, now_ms};
use crate::store::{Channel, Store};
use crate::transport::Transport;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many events one relay round publishes.
const BATCH: u32 = 512;
/// How often a relay looks when nobody wakes it.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait after a failed round (the broker is down): doubled from POLL.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Wakes every store's relay loops when new events may be in an outbox.
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

    /// Relay `store`'s outbox to `channel` until `stopped`.
    pub async fn run(
        self: Arc<Self>,
        ctx: Arc<SagaContext>,
        store: Arc<dyn Store>,
        channel: Channel,
        mut stopped: watch::Receiver<bool>,
    ) {
        let target: Arc<dyn Transport> = match channel {
            Channel::Transport => ctx.transport.clone(),
            Channel::Stream => match &ctx.stream {
                Some(stream) => stream.clone(),
                None => return,
            },
        };
        let mut woken = self.wake.subscribe();
        let mut backoff = POLL;
        loop {
            if *stopped.borrow() {
                return;
            }
            woken.borrow_and_update();
            let relayed = match relay_once(&*target, &store, channel).await {
                Ok(n) => {
                    backoff = POLL;
                    n
                }
                Err(error) => {
                    tracing::warn!(store = store.backend(), channel = channel.name(), to = target.name(), %error,
                        "outbox relay failed; retrying");
                    // Wake-ups do not help a broker that is down: wait out the backoff.
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
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
    target: &dyn Transport,
    store: &Arc<dyn Store>,
    channel: Channel,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let labels = [("store", store.backend()), ("channel", channel.name())];
    let rows = store.unrelayed(channel, BATCH).await?;
    if rows.is_empty() {
        metrics::gauge!("wasaga_outbox_lag_seconds", &labels).set(0.0);
        metrics::gauge!("wasaga_outbox_pending", &labels).set(0.0);
        return Ok(0);
    }
    let oldest = rows.first().map(|(_, e)| e.occurred_at_ms).unwrap_or_else(now_ms);
    metrics::gauge!("wasaga_outbox_lag_seconds", &labels).set((now_ms() - oldest).max(0) as f64 / 1000.0);
    let (seqs, events): (Vec<i64>, Vec<_>) = rows.into_iter().unzip();
    target.publish(&events).await?;
    store.mark_relayed(channel, &seqs, now_ms()).await?;
    let now = now_ms();
    for event in &events {
        // Per event: from its commit to the broker's confirm.
        let lag = (now - event.occurred_at_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("wasaga_outbox_relay_lag_seconds", &labels).record(lag);
        if channel == Channel::Transport {
            metrics::counter!("wasaga_events_total", "kind" => event.kind.clone(), "step" => event.step.clone())
                .increment(1);
        }
    }
    Ok(events.len())
}
