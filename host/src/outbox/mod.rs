//! The outbox relay: publishes a store's unrelayed events, in outbox order, then marks
//! them relayed. Each store has one relay loop per channel: the transport (the saga's
//! consumers) and, when configured, the event stream (Kafka). Each channel has its own
//! cursor in the outbox, so a stream that is down never holds up the saga, and catches
//! up when it is back. A crash between publishing and marking publishes them again; the
//! consumers' inboxes absorb the duplicates.
//!
//! In a fleet every host runs these loops, but only the holder of the store's lease for
//! a channel (`relay.<channel>` in the store's `leases` table) publishes: one relay per
//! store and channel at a time, so each order's events reach the broker in outbox
//! order. The lease lasts [`LEASE_TTL`] and is renewed every [`LEASE_RENEW`]; when its holder dies,
//! another host takes it within the TTL plus one [`LEASE_RETRY`].
//!
//! **Timers:** the transport's relay also fires the store's durable timers, every
//! [`TIMER_POLL`]: each due timer moves into the outbox in the transaction that deletes
//! it (`OutboxStore::fire_timers`), so it is published once, by whichever host relays,
//! and a host that was down fires what became due meanwhile.

use crate::backoff::Backoff;
use crate::event::now_ms;
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
/// How long a relay's lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the holder renews its lease: a round starts with at least 2.5 s of it left.
const LEASE_RENEW: Duration = Duration::from_millis(500);
/// How often a host without the lease tries to take it.
pub const LEASE_RETRY: Duration = Duration::from_secs(1);
/// How often the relay looks for due timers: a timer fires at most this late (plus a
/// relay round).
pub const TIMER_POLL: Duration = Duration::from_millis(200);

/// Wakes every store's relay loops when new events may be in an outbox.
pub struct Relay {
    wake: watch::Sender<u64>,
}

impl Default for Relay {
    fn default() -> Self {
        Relay { wake: watch::Sender::new(0) }
    }
}

/// One relay loop: a store's outbox to one target, on behalf of one host.
pub struct RelayLoop {
    pub store: Arc<dyn Store>,
    pub target: Arc<dyn Transport>,
    pub channel: Channel,
    /// Names this host in the lease.
    pub holder: String,
}

impl Relay {
    /// Tell the relays new events are in an outbox.
    pub fn notify(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Relay until `stopped`, while holding the lease.
    pub async fn run(self: Arc<Self>, relay: RelayLoop, stopped: crate::shutdown::Shutdown) {
        let RelayLoop { store, target, channel, holder } = relay;
        let lease = format!("relay.{}", channel.name());
        let mut woken = self.wake.subscribe();
        let mut backoff = Backoff::new(POLL, MAX_BACKOFF);
        let mut leader = false;
        // When this host last took or renewed the lease.
        let mut renewed = tokio::time::Instant::now();
        let mut timers_checked: Option<tokio::time::Instant> = None;
        loop {
            if stopped.is_stopping() {
                break;
            }
            woken.borrow_and_update();
            let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(3000);
            // A leader renews once per LEASE_RENEW, not every round: a round under load
            // then costs no extra write, and the lease still has most of its TTL left
            // when a round starts.
            let taken = if leader && renewed.elapsed() < LEASE_RENEW {
                Ok(true)
            } else {
                let now = tokio::time::Instant::now();
                let taken = store.try_lease(&lease, &holder, ttl).await;
                if matches!(taken, Ok(true)) {
                    renewed = now;
                }
                taken
            };
            match taken {
                Ok(true) => {
                    if !leader {
                        tracing::info!(
                            store = store.backend(),
                            channel = channel.name(),
                            "this host relays the outbox"
                        );
                    }
                    leader = true;
                }
                Ok(false) => {
                    if leader {
                        tracing::warn!(
                            store = store.backend(),
                            channel = channel.name(),
                            "another host took the relay"
                        );
                    }
                    leader = false;
                    if !stopped.pause(LEASE_RETRY).await {
                        break;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(store = store.backend(), channel = channel.name(), %error,
                        "cannot take the relay lease; retrying");
                    leader = false;
                    if !stopped.pause(backoff.failed()).await {
                        break;
                    }
                    continue;
                }
            }
            if channel == Channel::Transport && timers_checked.is_none_or(|at| at.elapsed() >= TIMER_POLL) {
                timers_checked = Some(tokio::time::Instant::now());
                match store.fire_timers(BATCH).await {
                    Ok(0) => {}
                    Ok(fired) => {
                        metrics::counter!("wasaga_timers_fired_total", "store" => store.backend())
                            .increment(fired as u64);
                        tracing::debug!(store = store.backend(), fired, "timers due moved to the outbox");
                    }
                    Err(error) => tracing::warn!(store = store.backend(), %error, "cannot fire due timers; retrying"),
                }
            }
            let relayed = match relay_once(&*target, &store, channel).await {
                Ok(n) => {
                    backoff.succeeded();
                    n
                }
                Err(error) => {
                    tracing::warn!(store = store.backend(), channel = channel.name(), to = target.name(), %error,
                        "outbox relay failed; retrying");
                    // Wake-ups do not help a broker that is down: wait out the backoff.
                    if !stopped.pause(backoff.failed()).await {
                        break;
                    }
                    continue;
                }
            };
            // After a round that relayed something, look again at once: a commit that found
            // events waiting for this round wrote its own behind them without waking the
            // relay (`relay_idle`), and they would wait for the next poll.
            if relayed == 0 {
                // Wait for news, but renew the lease well before it runs out (and look for
                // due timers in time, on the transport's channel).
                let poll = match channel {
                    Channel::Transport => POLL.min(TIMER_POLL),
                    Channel::Stream => POLL,
                };
                tokio::select! {
                    () = stopped.stopping() => break,
                    _ = woken.changed() => {}
                    () = tokio::time::sleep(poll.min(LEASE_TTL / 3)) => {}
                }
            }
        }
        if leader {
            // Hand over at once instead of making the next relay wait out the lease.
            let _ = store.release_lease(&lease, &holder).await;
        }
    }
}

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
}

async fn relay_once(target: &dyn Transport, store: &Arc<dyn Store>, channel: Channel) -> Result<usize, RelayError> {
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
    // With tracing on, each event's publish is a span of its order's trace.
    let spans: Vec<tracing::Span> = if crate::telemetry::tracing_enabled() {
        events
            .iter()
            .map(|event| {
                let span = tracing::info_span!("relay.publish", order_id = %event.order_id, kind = %event.kind,
                    channel = channel.name(), to = target.name());
                crate::telemetry::set_parent(&span, event.trace.as_deref());
                span
            })
            .collect()
    } else {
        Vec::new()
    };
    target.relay(store, channel, &seqs, &events).await?;
    drop(spans);
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
