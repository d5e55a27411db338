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
use crate::store::{Channel, Store, StoredEvent, Stores};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a claimed delivery stays with the host that claimed it.
const CLAIM_LEASE: Duration = Duration::from_secs(30);

pub struct EmbeddedTransport {
    /// Each consumer's deliveries live in that consumer's store.
    stores: Arc<Stores>,
    /// Names this host on its claims.
    holder: String,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl EmbeddedTransport {
    /// A transport over `stores`, claiming as `holder`; the claims `holder` left in an
    /// earlier run are dropped first, so a restarted host takes its work back at once.
    pub async fn new(stores: Arc<Stores>, holder: String) -> Result<EmbeddedTransport, TransportError> {
        for store in stores.all() {
            store.release_claims(&holder).await?;
        }
        Ok(EmbeddedTransport { stores, holder, wakers: Mutex::new(HashMap::new()) })
    }

    fn waker(&self, consumer: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock();
        wakers.entry(consumer.to_owned()).or_default().clone()
    }

    /// The deliveries of `events`, one row per subscribed consumer, grouped by the store
    /// that keeps that consumer's queue.
    async fn route(&self, events: &[StoredEvent]) -> Result<Vec<(Arc<dyn Store>, Vec<Row>)>, TransportError> {
        let mut subscriptions: HashMap<String, Vec<String>> = HashMap::new();
        for store in self.stores.all() {
            for (consumer, pattern) in store.subscriptions().await? {
                // A consumer's subscriptions count only in its own store.
                if Arc::ptr_eq(self.stores.for_consumer(&consumer), store) {
                    subscriptions.entry(consumer).or_default().push(pattern);
                }
            }
        }
        let mut routed: Vec<(Arc<dyn Store>, Vec<Row>)> = Vec::new();
        for event in events {
            let body = wire::encode(event);
            for (consumer, patterns) in &subscriptions {
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

    /// Wake the consumers that have new deliveries.
    fn wake(&self, routed: &[(Arc<dyn Store>, Vec<Row>)]) {
        let mut consumers: Vec<&String> = routed.iter().flat_map(|(_, rows)| rows.iter().map(|(c, _, _)| c)).collect();
        consumers.sort();
        consumers.dedup();
        for consumer in consumers {
            self.waker(consumer).notify_one();
        }
    }
}

/// A delivery to queue: consumer, event id, event.
type Row = (String, String, String);

#[async_trait]
impl Transport for EmbeddedTransport {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn declare(&self, consumer: &str, kinds: &[String]) -> Result<(), TransportError> {
        self.stores.for_consumer(consumer).set_subscriptions(consumer, kinds).await?;
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

    fn settles_in(&self, consumer: &str, store: &Arc<dyn Store>) -> bool {
        Arc::ptr_eq(self.stores.for_consumer(consumer), store)
    }

    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError> {
        let waker = self.waker(consumer);
        let deadline = tokio::time::Instant::now() + wait;
        let lease_ms = i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(30_000);
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let notified = waker.notified();
            let now = now_ms();
            let store = self.stores.for_consumer(consumer);
            let rows = store.claim(consumer, &self.holder, now, lease_ms, max).await?;
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
                            store.settle(&[row.id], &[]).await?;
                        }
                    }
                }
                if !deliveries.is_empty() {
                    return Ok(deliveries);
                }
                continue;
            }
            // Another host may publish into this store: look again at the latest when `wait` ends.
            let until_due = match store.next_due_at(consumer).await? {
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
                    retries.push((delivery.tag, due, error, counted));
                }
            }
        }
        self.stores.for_consumer(consumer).settle(&acked, &retries).await?;
        if !retries.is_empty() {
            // A retry due at once (a batch handed back) must not wait for the next poll.
            self.waker(consumer).notify_one();
        }
        Ok(())
    }

    async fn redeliver(&self, consumer: &str, event: &StoredEvent) -> Result<(), TransportError> {
        self.stores.for_consumer(consumer).requeue(consumer, &event.id, &wire::encode(event), now_ms()).await?;
        self.waker(consumer).notify_one();
        Ok(())
    }
}
