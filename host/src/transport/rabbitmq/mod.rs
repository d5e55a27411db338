//! The RabbitMQ transport (lapin).
//!
//! Topology, every name under the configured namespace `NS`:
//! - `NS.saga`: a durable topic exchange; events are published with the kind as routing key.
//! - `NS.<consumer>`: a durable (quorum) queue per consumer, bound to the kinds it
//!   subscribes to (`*` binds `#`), re-bound when a hot swap changes them.
//! - `NS.<consumer>.retry.<ms>ms`: delay queues, one per step of the backoff ladder; a
//!   message waits there for the queue's TTL, then dead-letters back to `NS.<consumer>`.
//! - `NS.<consumer>.dead`: a copy of every message the consumer gave up on, with the
//!   error and attempt count in headers. The admin API reads the consumer's store, which
//!   records the dead letter in the same transaction as the rest of the batch.
//!
//! Publishing uses publisher confirms: `publish` returns only when the broker has taken
//! responsibility for every message, so the outbox row is marked relayed only then.
//! Consumers ack manually, after their store committed. A lost connection is re-opened
//! with backoff by a supervisor task, which declares the topology again before the
//! transport reports itself ready; deliveries unacked at the loss come again, and the
//! consumers' inboxes absorb them.

mod link;
mod topology;

pub use topology::RabbitSettings;

use link::{Link, supervise};
use topology::declare_consumer;

use super::{Delivery, Settlement, Transport, TransportError};
use crate::event::{StoredEvent, subscribed, wire};
use crate::shutdown::Shutdown;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::BasicProperties;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

const BROKER: &str = "RabbitMQ";
/// Longest wait for the broker to confirm a round of publishes.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the broker to close a consumer's channel when it stands aside.
const STAND_ASIDE_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacked messages a consumer may hold: two of the saga's batches (64 deliveries), so
/// the next is on its way while one commits. In a fleet it is also how far the host
/// ranked first on a queue may fall behind before the next host takes the overflow
/// (`RabbitSettings::consumer_priority`).
const PREFETCH: u16 = 128;
const ATTEMPT_HEADER: &str = "x-wasaga-attempt";
const ERROR_HEADER: &str = "x-wasaga-error";
const ATTEMPTS_HEADER: &str = "x-wasaga-attempts";
const CONSUMER_HEADER: &str = "x-wasaga-consumer";

/// One consumer's subscription on the current link.
struct Subscription {
    generation: u64,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

struct Inner {
    settings: RabbitSettings,
    /// The current link; `None` while disconnected.
    link: watch::Sender<Option<Arc<Link>>>,
    /// What each consumer wants bound: its kinds, as declared.
    wanted: Mutex<HashMap<String, Vec<String>>>,
    /// Binding keys applied on the current link, per consumer.
    bound: Mutex<HashMap<String, BTreeSet<String>>>,
    subscriptions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Subscription>>>>>,
    /// Unsettled deliveries: our tag → the broker's delivery.
    unsettled: Mutex<HashMap<i64, AmqpDelivery>>,
    next_tag: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Woken when an operation saw the link fail, so the supervisor reconnects at once.
    broken: tokio::sync::Notify,
}

/// The RabbitMQ transport; dropping it closes the connection.
pub struct RabbitTransport {
    inner: Arc<Inner>,
    stop: Shutdown,
}

impl Drop for RabbitTransport {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

fn unavailable(error: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable { broker: BROKER, reason: error.to_string() }
}

impl RabbitTransport {
    /// Start connecting in the background; the transport reports itself unavailable
    /// until the connection is open and the topology declared.
    pub fn start(settings: RabbitSettings) -> Arc<RabbitTransport> {
        let inner = Arc::new(Inner {
            settings,
            link: watch::Sender::new(None),
            wanted: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            unsettled: Mutex::new(HashMap::new()),
            next_tag: AtomicI64::new(1),
            last_error: Mutex::new(Some("connecting".to_owned())),
            broken: tokio::sync::Notify::new(),
        });
        let stop = Shutdown::new();
        tokio::spawn(supervise(inner.clone(), stop.clone()));
        Arc::new(RabbitTransport { inner, stop })
    }

    /// Wait until connected and declared, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut link = self.inner.link.subscribe();
        tokio::time::timeout(timeout, link.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok())
    }
}

impl Inner {
    fn current(&self) -> Result<Arc<Link>, TransportError> {
        match &*self.link.borrow() {
            Some(link) => Ok(link.clone()),
            None => Err(unavailable(self.last_error.lock().clone().unwrap_or_else(|| "not connected".to_owned()))),
        }
    }

    /// Report a failed operation; the supervisor checks the link at once.
    fn failed(&self, error: lapin::Error) -> TransportError {
        self.broken.notify_one();
        unavailable(error)
    }

    fn subscription(&self, consumer: &str) -> Arc<tokio::sync::Mutex<Option<Subscription>>> {
        self.subscriptions.lock().entry(consumer.to_owned()).or_default().clone()
    }

    /// Publish with confirms to `exchange`/`routing_key`, waiting for every confirm. A
    /// message marked mandatory that no queue takes (a queue deleted under us) comes
    /// back: the publish fails, so its outbox row stays unrelayed, and the topology is
    /// declared again for the next try.
    async fn publish_confirmed(&self, messages: Vec<Message>) -> Result<(), TransportError> {
        let link = self.current()?;
        let mut confirms = Vec::with_capacity(messages.len());
        for (exchange, routing_key, body, properties, mandatory) in messages {
            let options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
            let confirm = link
                .publisher
                .basic_publish(ShortString::from(exchange), ShortString::from(routing_key), options, &body, properties)
                .await
                .map_err(|e| self.failed(e))?;
            confirms.push(confirm);
        }
        let mut returned = Vec::new();
        let mut refused = false;
        // Bounded: a broker that stops confirming is treated as gone, and the rows stay
        // in the outbox for the next round.
        let confirmed =
            tokio::time::timeout(CONFIRM_TIMEOUT, futures::future::join_all(confirms)).await.map_err(|_| {
                self.broken.notify_one();
                unavailable("the broker did not confirm within 30 s")
            })?;
        for confirm in confirmed {
            let confirmation = confirm.map_err(|e| self.failed(e))?;
            refused |= confirmation.is_nack();
            if let Some(message) = confirmation.take_message() {
                returned.push(message.delivery.routing_key.to_string());
            }
        }
        if !returned.is_empty() {
            returned.sort();
            returned.dedup();
            metrics::counter!("wasaga_unroutable_total").increment(returned.len() as u64);
            tracing::warn!(routing_keys = ?returned, "RabbitMQ returned messages no queue took; declaring the topology again");
            self.redeclare(&link).await;
            return Err(TransportError::Refused {
                broker: BROKER,
                reason: format!("no queue took {}: the topology was declared again", returned.join(", ")),
            });
        }
        if refused {
            return Err(TransportError::Refused { broker: BROKER, reason: "publisher confirm nack".to_owned() });
        }
        Ok(())
    }

    /// Declare every wanted consumer again on `link`, as if newly connected.
    async fn redeclare(&self, link: &Link) {
        self.bound.lock().clear();
        let wanted: Vec<(String, Vec<String>)> =
            self.wanted.lock().iter().map(|(c, k)| (c.clone(), k.clone())).collect();
        for (consumer, kinds) in wanted {
            if let Err(error) = declare_consumer(self, link, &consumer, &kinds).await {
                tracing::warn!(%consumer, %error, "cannot declare the consumer's queues again");
            }
        }
    }

    /// Whether some consumer receives events of `kind`: only those must reach a queue.
    fn routed(&self, kind: &str) -> bool {
        self.wanted.lock().values().any(|kinds| subscribed(kinds, kind))
    }
}

/// One message to publish: exchange, routing key, body, properties, mandatory.
type Message = (String, String, Vec<u8>, BasicProperties, bool);

fn properties(event: &StoredEvent, mut headers: FieldTable) -> BasicProperties {
    if let Some(trace) = &event.trace {
        headers.insert(ShortString::from("traceparent"), AMQPValue::LongString(LongString::from(trace.clone())));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(event.id.clone()))
        .with_type(ShortString::from(event.kind.clone()))
        .with_headers(headers)
}

fn headers(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert(ShortString::from(*key), value.clone());
    }
    table
}

fn attempt_of(delivery: &AmqpDelivery) -> u32 {
    let value = delivery.properties.headers().as_ref().and_then(|h| h.inner().get(ATTEMPT_HEADER).cloned());
    match value {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(1).max(1),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(1).max(1),
        Some(AMQPValue::LongUInt(n)) => n.max(1),
        _ => 1,
    }
}

#[async_trait]
impl Transport for RabbitTransport {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn unavailable(&self) -> Option<String> {
        match self.inner.current() {
            Ok(_) => None,
            Err(error) => Some(error.to_string()),
        }
    }

    async fn declare(&self, consumer: &str, kinds: &[String]) -> Result<(), TransportError> {
        // Every registry change declares every consumer: only a change reaches the broker.
        let unchanged = self.inner.wanted.lock().insert(consumer.to_owned(), kinds.to_vec()).as_deref() == Some(kinds);
        if unchanged && self.inner.bound.lock().contains_key(consumer) {
            return Ok(());
        }
        // Declared now if connected; otherwise on connecting, before the link is used.
        match self.inner.current() {
            Ok(link) => declare_consumer(&self.inner, &link, consumer, kinds).await.map_err(|e| self.inner.failed(e)),
            Err(_) => Ok(()),
        }
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), TransportError> {
        let exchange = self.inner.settings.exchange();
        let messages = events
            .iter()
            .map(|event| {
                let props = properties(event, headers(&[(ATTEMPT_HEADER, AMQPValue::LongLongInt(1))]));
                let mandatory = self.inner.routed(&event.kind);
                (exchange.clone(), event.kind.clone(), wire::encode(event).into_bytes(), props, mandatory)
            })
            .collect();
        self.inner.publish_confirmed(messages).await
    }

    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError> {
        let link = match self.inner.current() {
            Ok(link) => link,
            Err(error) => {
                // Nothing can arrive while disconnected; wait for the link rather than spin.
                let mut watched = self.inner.link.subscribe();
                let _ = tokio::time::timeout(wait, watched.wait_for(Option::is_some)).await;
                return Err(error);
            }
        };
        let slot = self.inner.subscription(consumer);
        let mut slot = slot.lock().await;
        if slot.as_ref().is_none_or(|s| s.generation != link.generation) {
            *slot = None;
            let channel = link.connection.create_channel().await.map_err(|e| self.inner.failed(e))?;
            channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| self.inner.failed(e))?;
            let priority = self.inner.settings.consumer_priority(consumer);
            let amqp_consumer = channel
                .basic_consume(
                    ShortString::from(self.inner.settings.queue(consumer)),
                    ShortString::from(format!("wasaga-{consumer}")),
                    BasicConsumeOptions::default(),
                    headers(&[("x-priority", AMQPValue::LongInt(priority))]),
                )
                .await
                .map_err(|e| self.inner.failed(e))?;
            tracing::debug!(%consumer, priority, "consuming the queue");
            *slot = Some(Subscription { generation: link.generation, channel, consumer: amqp_consumer });
        }
        let Some(subscription) = slot.as_mut() else {
            return Ok(Vec::new());
        };
        let mut received = Vec::new();
        match tokio::time::timeout(wait, subscription.consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                // The broker cancelled the consumer (its queue was deleted, say): declare
                // the queue again before subscribing anew.
                *slot = None;
                self.inner.redeclare(&link).await;
                self.inner.broken.notify_one();
                return Err(unavailable("the consumer was cancelled"));
            }
            Ok(Some(first)) => received.push(first),
        }
        while received.len() < max as usize {
            match subscription.consumer.next().now_or_never() {
                Some(Some(next)) => received.push(next),
                _ => break,
            }
        }
        let wanted = self.inner.wanted.lock().get(consumer).cloned().unwrap_or_default();
        let mut deliveries = Vec::with_capacity(received.len());
        for item in received {
            let amqp = match item {
                Ok(amqp) => amqp,
                Err(error) => {
                    *slot = None;
                    return Err(self.inner.failed(error));
                }
            };
            let event = match std::str::from_utf8(&amqp.data)
                .map_err(|e| e.to_string())
                .and_then(|text| wire::decode(text).map_err(|e| e.to_string()))
            {
                Ok(event) => event,
                Err(error) => {
                    // Not an event of ours: park it in the dead-letter queue, keep going.
                    tracing::error!(%consumer, %error, "dead-lettering an unreadable message");
                    self.park_unreadable(consumer, &amqp, &error).await;
                    continue;
                }
            };
            if !subscribed(&wanted, &event.kind) {
                // A binding left from a version that subscribed to this kind.
                let _ = amqp.ack(BasicAckOptions::default()).await;
                continue;
            }
            let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
            let attempt = attempt_of(&amqp);
            self.inner.unsettled.lock().insert(tag, amqp);
            deliveries.push(Delivery { tag, event, attempt });
        }
        Ok(deliveries)
    }

    async fn settle(&self, consumer: &str, settlements: Vec<Settlement>) -> Result<(), TransportError> {
        let settings = &self.inner.settings;
        let mut acks = Vec::new();
        let mut copies = Vec::new();
        for settlement in settlements {
            let (delivery, copy) = match settlement {
                Settlement::Ack(delivery) => (delivery, None),
                Settlement::Retry { delivery, delay, counted, .. } => {
                    let attempt = if counted { delivery.attempt.saturating_add(1) } else { delivery.attempt };
                    let props = properties(
                        &delivery.event,
                        headers(&[(ATTEMPT_HEADER, AMQPValue::LongLongInt(i64::from(attempt)))]),
                    );
                    let queue = settings.delay_queue(consumer, settings.rung(delay));
                    let copy = (String::new(), queue, wire::encode(&delivery.event).into_bytes(), props, true);
                    (delivery, Some(copy))
                }
                Settlement::DeadLetter { delivery, error } => {
                    let props = properties(
                        &delivery.event,
                        headers(&[
                            (ERROR_HEADER, AMQPValue::LongString(LongString::from(error))),
                            (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(delivery.attempt))),
                            (CONSUMER_HEADER, AMQPValue::LongString(LongString::from(consumer))),
                        ]),
                    );
                    let copy = (
                        String::new(),
                        settings.dead_queue(consumer),
                        wire::encode(&delivery.event).into_bytes(),
                        props,
                        true,
                    );
                    (delivery, Some(copy))
                }
            };
            let Some(amqp) = self.inner.unsettled.lock().remove(&delivery.tag) else {
                continue;
            };
            if let Some(copy) = copy {
                copies.push(copy);
            }
            acks.push(amqp);
        }
        // The copies (delayed retries, dead letters) are safe with the broker before the
        // originals go; if that fails the originals are returned to the queue.
        if !copies.is_empty()
            && let Err(error) = self.inner.publish_confirmed(copies).await
        {
            for amqp in acks {
                let _ = amqp.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
            }
            return Err(error);
        }
        for amqp in acks {
            // A failed ack (or one refused because the channel closed meanwhile) means the
            // channel is gone; the broker redelivers and the inbox absorbs the duplicate.
            match amqp.ack(BasicAckOptions::default()).await {
                Ok(true) => {}
                Ok(false) => tracing::debug!(%consumer, "not acked: its channel closed; the message will come again"),
                Err(error) => tracing::debug!(%consumer, %error, "ack failed; the message will come again"),
            }
        }
        Ok(())
    }

    async fn stand_aside(&self, consumer: &str) {
        let slot = self.inner.subscription(consumer);
        let Some(subscription) = slot.lock().await.take() else { return };
        // Closing the channel returns what it holds unacknowledged to the queue, for the
        // host ranked next; the next receive subscribes again. Bounded: a broker that
        // never answers must not hold the consumer past its backoff and shutdown check.
        let closing = subscription.channel.close(200, ShortString::from("standing aside"));
        match tokio::time::timeout(STAND_ASIDE_TIMEOUT, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%consumer, %error, "closing the consumer's channel failed; the link is going anyway");
            }
            Err(_) => {
                tracing::warn!(%consumer, "RabbitMQ did not close the consumer's channel within 5 s");
                self.inner.broken.notify_one();
            }
        }
        tracing::info!(%consumer, "standing aside: other hosts take the queue until this host can commit again");
    }

    async fn redeliver(&self, consumer: &str, event: &StoredEvent) -> Result<(), TransportError> {
        let props = properties(event, headers(&[(ATTEMPT_HEADER, AMQPValue::LongLongInt(1))]));
        let queue = self.inner.settings.queue(consumer);
        self.inner.publish_confirmed(vec![(String::new(), queue, wire::encode(event).into_bytes(), props, true)]).await
    }
}

impl RabbitTransport {
    async fn park_unreadable(&self, consumer: &str, amqp: &AmqpDelivery, error: &str) {
        let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers(&[
            (ERROR_HEADER, AMQPValue::LongString(LongString::from(error))),
            (CONSUMER_HEADER, AMQPValue::LongString(LongString::from(consumer))),
        ]));
        let copy = (String::new(), self.inner.settings.dead_queue(consumer), amqp.data.clone(), props, true);
        match self.inner.publish_confirmed(vec![copy]).await {
            Ok(()) => {
                let _ = amqp.ack(BasicAckOptions::default()).await;
            }
            Err(error) => tracing::warn!(%consumer, %error, "cannot park an unreadable message; it stays queued"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base_ms: u64) -> RabbitSettings {
        RabbitSettings {
            url: "amqp://guest:secret@127.0.0.1:5672/%2f".to_owned(),
            namespace: "t1".to_owned(),
            retry_base: Duration::from_millis(base_ms),
            retry_cap: Duration::from_secs(30),
            host_id: "h1".to_owned(),
        }
    }

    #[test]
    fn the_ladder_doubles_up_to_the_cap_and_delays_round_down_to_a_rung() {
        let s = settings(200);
        let ladder: Vec<u128> = s.ladder().iter().map(Duration::as_millis).collect();
        assert_eq!(ladder, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]);
        assert_eq!(s.rung(Duration::from_millis(150)).as_millis(), 200);
        assert_eq!(s.rung(Duration::from_millis(500)).as_millis(), 400);
        assert_eq!(s.rung(Duration::from_secs(90)).as_millis(), 30000);
        assert_eq!(s.delay_queue("payment", Duration::from_millis(400)), "t1.payment.retry.400ms");
    }

    #[test]
    fn hosts_rank_differently_per_queue_and_the_same_on_every_restart() {
        let host = |id: &str| RabbitSettings { host_id: id.to_owned(), ..settings(200) };
        let (a, b) = (host("a"), host("b"));
        assert_eq!(a.consumer_priority("payment"), host("a").consumer_priority("payment"));
        assert_ne!(a.consumer_priority("payment"), b.consumer_priority("payment"));
        let ranks = |consumer: &str| a.consumer_priority(consumer) > b.consumer_priority(consumer);
        let firsts: Vec<bool> = ["host", "payment", "inventory", "analytics", "shipping", "fraud"].map(ranks).into();
        assert!(firsts.contains(&true) && firsts.contains(&false), "queues spread between hosts: {firsts:?}");
        for consumer in ["host", "payment"] {
            assert!((1..=65_536).contains(&a.consumer_priority(consumer)));
        }
    }

    #[test]
    fn logged_urls_hide_the_password() {
        let url = settings(1).redacted_url();
        assert!(!url.contains("secret"), "{url}");
        assert!(url.contains("guest"), "{url}");
    }
}
