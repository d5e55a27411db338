//! The embedded transport: a delivery table in the store. Publishing inserts one row per
//! subscribed consumer (a row already there is kept, so a relay that publishes twice
//! after a crash queues once); receiving claims due rows for this host for a lease;
//! settling deletes or reschedules them.
//!
//! Subscriptions are kept in each consumer's store (`declare` writes them), so an event
//! for a step that is not loaded right now (a restart without its file) is queued for it
//! and waits, like a message in a durable broker queue. Claims let several hosts share a
//! PostgreSQL store: a claimed delivery is skipped by the others until its claim expires
//! (its host died), and the inbox absorbs the rare delivery handled twice.

use super::{Delivery, Settlement, Transport, TransportError};
use crate::event::{now_ms, subscribed, wire};
use crate::store::{Channel, Queued, RetryRow, Store, StoredEvent, Stores};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a claimed delivery stays with the host that claimed it, unless renewed.
const CLAIM_LEASE: Duration = Duration::from_secs(30);
/// How often a host renews its claims while their batches run: well within a lease, so
/// a slow batch (a long deadline, a store that stalls) keeps its deliveries.
const CLAIM_RENEW: Duration = Duration::from_secs(10);
/// Least wait after a claim that found nothing although something looked due: what
/// looked due by this host's clock may still be claimed by the store's.
const EMPTY_CLAIM_PAUSE: Duration = Duration::from_millis(50);

pub struct EmbeddedTransport {
    /// Each consumer's deliveries live in that consumer's store.
    stores: Arc<Stores>,
    /// Names this host on its claims.
    holder: String,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    subscriptions: Mutex<SubscriptionCache>,
    /// Renews this host's claims every [`CLAIM_RENEW`]; stopped on drop.
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for EmbeddedTransport {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// A consumer's queue as this host sees it.
#[derive(Default)]
struct Queue {
    /// Woken by a publish (or a retry) for the consumer on this host.
    notify: Notify,
    /// The last claim took every due delivery.
    drained: AtomicBool,
}

/// Each consumer's subscription patterns.
type Subscriptions = HashMap<String, Vec<String>>;

/// How long this host routes with the subscriptions it read last. Its own `declare`
/// refreshes them at once; another host's new subscription (a fleet on one store)
/// applies here within this time, as a new binding applies from when a broker has it.
const SUBSCRIPTIONS_TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct SubscriptionCache {
    read: Option<(std::time::Instant, Arc<Subscriptions>)>,
    /// Bumped by every declare, so a read that overlapped one is not kept.
    generation: u64,
}

impl EmbeddedTransport {
    /// A transport over `stores`, claiming as `holder`; the claims `holder` left in an
    /// earlier run are dropped first, so a restarted host takes its work back at once.
    pub async fn new(stores: Arc<Stores>, holder: String) -> Result<EmbeddedTransport, TransportError> {
        for store in stores.all() {
            store.release_claims(&holder).await?;
        }
        let renewer = tokio::spawn(renew_claims(stores.clone(), holder.clone()));
        Ok(EmbeddedTransport {
            stores,
            holder,
            queues: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(SubscriptionCache::default()),
            renewer,
        })
    }

    fn queue(&self, consumer: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock();
        queues.entry(consumer.to_owned()).or_default().clone()
    }

    /// The deliveries of `events`, one row per subscribed consumer, grouped by the store
    /// that keeps that consumer's queue.
    async fn route<'e>(
        &self,
        events: impl IntoIterator<Item = &'e StoredEvent>,
    ) -> Result<Vec<(Arc<dyn Store>, Vec<Queued>)>, TransportError> {
        let subscriptions = self.subscriptions().await?;
        let mut routed: Vec<(Arc<dyn Store>, Vec<Queued>)> = Vec::new();
        for event in events {
            let body = wire::encode(event);
            for (consumer, patterns) in subscriptions.iter() {
                if !subscribed(patterns, &event.kind) {
                    continue;
                }
                let store = self.stores.for_consumer(consumer);
                let row = (consumer.clone(), event.id.clone(), body.clone());
                match routed.iter_mut().find(|(s, _)| Arc::ptr_eq(s, store)) {
                    Some((_, rows)) => rows.push(row),
                    None => routed.push((store.clone(), vec![row])),
                }
            }
        }
        Ok(routed)
    }

    /// Every consumer's subscriptions, as last read (see [`SUBSCRIPTIONS_TTL`]).
    async fn subscriptions(&self) -> Result<Arc<Subscriptions>, TransportError> {
        let generation = {
            let cache = self.subscriptions.lock();
            if let Some((read_at, subscriptions)) = &cache.read
                && read_at.elapsed() < SUBSCRIPTIONS_TTL
            {
                return Ok(subscriptions.clone());
            }
            cache.generation
        };
        let mut subscriptions = Subscriptions::new();
        for store in self.stores.all() {
            for (consumer, pattern) in store.subscriptions().await? {
                // A consumer's subscriptions count only in its own store.
                if Arc::ptr_eq(self.stores.for_consumer(&consumer), store) {
                    subscriptions.entry(consumer).or_default().push(pattern);
                }
            }
        }
        let subscriptions = Arc::new(subscriptions);
        let mut cache = self.subscriptions.lock();
        // A declare meanwhile made this read stale: use it once, keep nothing.
        if cache.generation == generation {
            cache.read = Some((std::time::Instant::now(), subscriptions.clone()));
        }
        Ok(subscriptions)
    }

    /// Wake the consumers that have new deliveries.
    fn wake(&self, routed: &[(Arc<dyn Store>, Vec<Queued>)]) {
        for (_, rows) in routed {
            self.queued(rows);
        }
    }
}

#[async_trait]
impl Transport for EmbeddedTransport {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn declare(&self, consumer: &str, kinds: &[String]) -> Result<(), TransportError> {
        self.stores.for_consumer(consumer).set_subscriptions(consumer, kinds).await?;
        let mut cache = self.subscriptions.lock();
        cache.generation += 1;
        cache.read = None;
        Ok(())
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), TransportError> {
        let routed = self.route(events).await?;
        let now = now_ms();
        for (store, rows) in &routed {
            store.enqueue(rows, now, None).await?;
        }
        self.wake(&routed);
        Ok(())
    }

    async fn relay(
        &self,
        store: &Arc<dyn Store>,
        channel: Channel,
        seqs: &[i64],
        events: &[StoredEvent],
    ) -> Result<(), TransportError> {
        let routed = self.route(events).await?;
        let now = now_ms();
        match routed.as_slice() {
            // Every delivery goes into the outbox's own store: queue them and mark the
            // rows relayed in one transaction.
            [] => store.enqueue(&[], now, Some((channel, seqs))).await?,
            [(only, rows)] if Arc::ptr_eq(only, store) => store.enqueue(rows, now, Some((channel, seqs))).await?,
            _ => {
                for (store, rows) in &routed {
                    store.enqueue(rows, now, None).await?;
                }
                store.mark_relayed(channel, seqs, now).await?;
            }
        }
        self.wake(&routed);
        Ok(())
    }

    async fn route_with(
        &self,
        store: &Arc<dyn Store>,
        events: &[&StoredEvent],
    ) -> Result<Option<Vec<Queued>>, TransportError> {
        if !store.queues_with_commit() {
            return Ok(None);
        }
        let mut routed = self.route(events.iter().copied()).await?;
        match routed.len() {
            0 => Ok(Some(Vec::new())),
            1 if Arc::ptr_eq(&routed[0].0, store) => Ok(routed.pop().map(|(_, rows)| rows)),
            _ => Ok(None),
        }
    }

    fn queued(&self, deliveries: &[Queued]) {
        let mut consumers: Vec<&String> = deliveries.iter().map(|(c, _, _)| c).collect();
        consumers.sort();
        consumers.dedup();
        for consumer in consumers {
            self.queue(consumer).notify.notify_one();
        }
    }

    fn settles_in(&self, consumer: &str, store: &Arc<dyn Store>) -> bool {
        Arc::ptr_eq(self.stores.for_consumer(consumer), store)
    }

    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError> {
        let queue = self.queue(consumer);
        let deadline = tokio::time::Instant::now() + wait;
        let lease_ms = i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(30_000);
        loop {
            // Registered before looking, so a publish from here on is not missed; a
            // publish since the last look left a permit, which this takes.
            let mut notified = std::pin::pin!(queue.notify.notified());
            let news = futures::FutureExt::now_or_never(notified.as_mut()).is_some();
            let now = now_ms();
            let store = self.stores.for_consumer(consumer);
            // A claim is a write. Once the queue was found empty, only news or a due time
            // that passed (a retry, another host's publish) is worth one: look first.
            let look = !news && queue.drained.load(Ordering::Relaxed);
            let mut next_due = if look { store.next_due_at(consumer).await? } else { None };
            if !look || next_due.is_some_and(|due| due <= now) {
                let rows = store.claim(consumer, &self.holder, now, lease_ms, max).await?;
                queue.drained.store(rows.len() < max as usize, Ordering::Relaxed);
                if !rows.is_empty() {
                    let mut deliveries = Vec::with_capacity(rows.len());
                    for row in rows {
                        match wire::decode(&row.event) {
                            Ok(event) => deliveries.push(Delivery {
                                tag: row.id,
                                event,
                                attempt: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
                            }),
                            Err(error) => {
                                // Only hosts write these rows; an unreadable one is dropped
                                // rather than blocking the queue forever.
                                tracing::error!(%consumer, delivery = row.id, %error, "dropping an unreadable delivery");
                                store.settle(&self.holder, &[row.id], &[]).await?;
                            }
                        }
                    }
                    if !deliveries.is_empty() {
                        return Ok(deliveries);
                    }
                    continue;
                }
                next_due = store.next_due_at(consumer).await?;
                if next_due.is_some_and(|due| due <= now) {
                    next_due = Some(now + i64::try_from(EMPTY_CLAIM_PAUSE.as_millis()).unwrap_or(50));
                }
            }
            if news {
                // The permit is taken and the queue looked at: wait on a fresh registration.
                continue;
            }
            // Another host may publish into this store: look again at the latest when `wait` ends.
            let until_due = match next_due {
                Some(due) => Duration::from_millis(u64::try_from(due - now).unwrap_or(0).max(1)),
                None => wait,
            };
            let sleep_until = deadline.min(tokio::time::Instant::now() + until_due);
            if tokio::time::timeout_at(sleep_until, notified).await.is_err() && tokio::time::Instant::now() >= deadline
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn settle(&self, consumer: &str, settlements: Vec<Settlement>) -> Result<(), TransportError> {
        let mut acked = Vec::new();
        let mut retries = Vec::new();
        let now = now_ms();
        for settlement in settlements {
            match settlement {
                Settlement::Ack(delivery) | Settlement::DeadLetter { delivery, .. } => acked.push(delivery.tag),
                Settlement::Retry { delivery, delay, error, counted } => {
                    let due = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    retries.push(RetryRow { id: delivery.tag, due_at_ms: due, error, counted });
                }
            }
        }
        self.stores.for_consumer(consumer).settle(&self.holder, &acked, &retries).await?;
        if !retries.is_empty() {
            // A retry due at once (a batch handed back) must not wait for the next poll.
            self.queue(consumer).notify.notify_one();
        }
        Ok(())
    }

    async fn redeliver(&self, consumer: &str, event: &StoredEvent) -> Result<(), TransportError> {
        self.stores.for_consumer(consumer).requeue(consumer, &event.id, &wire::encode(event), now_ms()).await?;
        self.queue(consumer).notify.notify_one();
        Ok(())
    }
}

/// Keep this host's claims alive while their batches run: a claim that lapsed mid-batch
/// would let another host take the same deliveries.
async fn renew_claims(stores: Arc<Stores>, holder: String) {
    let lease_ms = i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(30_000);
    let mut every = tokio::time::interval(CLAIM_RENEW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for store in stores.all() {
            if let Err(error) = store.renew_claims(&holder, lease_ms).await {
                tracing::warn!(%error, "cannot renew this host's claims; they lapse if this lasts");
            }
        }
    }
}
