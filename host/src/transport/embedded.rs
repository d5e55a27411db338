//! The embedded transport: a delivery table in the store. Publishing inserts one row per
//! subscribed consumer (a row already there is kept, so a relay that publishes twice
//! after a crash queues once); settling deletes or reschedules rows. Consumers in this
//! process are woken at once; the store makes it durable across restarts.

use super::{Delivery, Settlement, Transport, TransportError};
use crate::saga::{now_ms, wire};
use crate::store::{StoredEvent, Stores};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Which consumers receive a kind.
pub type Routes = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

pub struct EmbeddedTransport {
    /// Each consumer's deliveries live in that consumer's store.
    stores: Arc<Stores>,
    routes: Routes,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl EmbeddedTransport {
    pub fn new(stores: Arc<Stores>, routes: Routes) -> EmbeddedTransport {
        EmbeddedTransport { stores, routes, wakers: Mutex::new(HashMap::new()) }
    }

    fn waker(&self, consumer: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wakers.entry(consumer.to_owned()).or_default().clone()
    }
}

#[async_trait]
impl Transport for EmbeddedTransport {
    fn name(&self) -> &'static str {
        "embedded"
    }

    /// Routes are looked up at publish time, so there is nothing to declare.
    async fn declare(&self, _consumer: &str, _kinds: &[String]) -> Result<(), TransportError> {
        Ok(())
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), TransportError> {
        let mut rows = Vec::new();
        for event in events {
            let body = wire::encode(event);
            for consumer in (self.routes)(&event.kind) {
                rows.push((consumer, event.id.clone(), body.clone()));
            }
        }
        let now = now_ms();
        for store in self.stores.all() {
            let mine: Vec<(String, String, String)> = rows
                .iter()
                .filter(|(consumer, _, _)| std::sync::Arc::ptr_eq(self.stores.for_consumer(consumer), store))
                .cloned()
                .collect();
            if !mine.is_empty() {
                store.enqueue(&mine, now).await?;
            }
        }
        let mut consumers: Vec<&String> = rows.iter().map(|(c, _, _)| c).collect();
        consumers.sort();
        consumers.dedup();
        for consumer in consumers {
            self.waker(consumer).notify_one();
        }
        Ok(())
    }

    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError> {
        let waker = self.waker(consumer);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let notified = waker.notified();
            let now = now_ms();
            let store = self.stores.for_consumer(consumer);
            let rows = store.due(consumer, now, max).await?;
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
                            // Only this process writes these rows; an unreadable one is
                            // dropped rather than blocking the queue forever.
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
        Ok(())
    }

    async fn redeliver(&self, consumer: &str, event: &StoredEvent) -> Result<(), TransportError> {
        self.stores.for_consumer(consumer).requeue(consumer, &event.id, &wire::encode(event), now_ms()).await?;
        self.waker(consumer).notify_one();
        Ok(())
    }
}
