//! The RabbitMQ topology: every name under the namespace, the backoff ladder of delay
//! queues, and declaring a consumer's queues and bindings.

use super::Inner;
use super::link::Link;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::collections::BTreeSet;
use std::time::Duration;

/// How to reach the broker and name things there.
#[derive(Debug, Clone)]
pub struct RabbitSettings {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub namespace: String,
    /// The backoff ladder: the first retry delay, doubled up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// This host's name in the fleet: it ranks this host's consumers against other
    /// hosts' on each queue ([`RabbitSettings::consumer_priority`]).
    pub host_id: String,
}

impl RabbitSettings {
    pub(super) fn exchange(&self) -> String {
        format!("{}.saga", self.namespace)
    }

    pub(super) fn queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.namespace)
    }

    pub(super) fn dead_queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}.dead", self.namespace)
    }

    pub(super) fn delay_queue(&self, consumer: &str, delay: Duration) -> String {
        format!("{}.{consumer}.retry.{}ms", self.namespace, delay.as_millis())
    }

    /// The delays of the delay queues: base, 2×base, … up to the cap.
    pub(super) fn ladder(&self) -> Vec<Duration> {
        let mut delays = Vec::new();
        let mut delay = self.retry_base.max(Duration::from_millis(1));
        while delay < self.retry_cap {
            delays.push(delay);
            delay = delay.saturating_mul(2);
        }
        delays.push(self.retry_cap);
        delays
    }

    /// The longest ladder delay not above `wanted` (the shortest if all are).
    pub(super) fn rung(&self, wanted: Duration) -> Duration {
        let ladder = self.ladder();
        ladder.iter().rev().find(|d| **d <= wanted).copied().unwrap_or(ladder[0])
    }

    /// This host's consumer priority on `consumer`'s queue: a digest of the host and the
    /// queue (rendezvous hashing), the same on every restart, different between hosts.
    /// RabbitMQ gives a queue's messages to its highest-priority consumer while that one
    /// has room in its prefetch, and to the next only beyond: one host takes a queue's
    /// bursts whole while it keeps up (large batches, no two hosts' batches conflicting
    /// on that queue), the others take the overflow, and the next in rank takes over at
    /// once when its holder goes. Queues rank hosts differently, so they spread.
    pub fn consumer_priority(&self, consumer: &str) -> i32 {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(self.namespace.as_bytes())
            .chain_update([0])
            .chain_update(consumer.as_bytes())
            .chain_update([0])
            .chain_update(self.host_id.as_bytes())
            .finalize();
        // 1..=65,536: a tie between two hosts (1 in 65,536) only shares the queue.
        i32::from(u16::from_be_bytes([digest[0], digest[1]])) + 1
    }

    /// The URL without its password, for logs and errors.
    pub(super) fn redacted_url(&self) -> String {
        crate::redact::url(&self.url)
    }
}

/// The topic binding for a subscription: `*` and `payment.*` become `#` and `payment.#`;
/// a prefix that is not whole words binds `#`, and receiving filters the rest out.
fn binding_key(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        None => pattern.to_owned(),
        Some(prefix) if prefix.is_empty() || prefix.ends_with('.') => format!("{prefix}#"),
        Some(_) => "#".to_owned(),
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
    args
}

/// Declare a consumer's queues and make its bindings match `kinds`.
pub(super) async fn declare_consumer(
    inner: &Inner,
    link: &Link,
    consumer: &str,
    kinds: &[String],
) -> Result<(), lapin::Error> {
    let settings = &inner.settings;
    if kinds.is_empty() && inner.bound.lock().get(consumer).is_none_or(BTreeSet::is_empty) {
        // Receives nothing here (an observer reading the stream): no queues to show.
        return Ok(());
    }
    let channel = link.connection.create_channel().await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let queue = settings.queue(consumer);
    channel.queue_declare(ShortString::from(queue.clone()), durable, quorum()).await?;
    channel.queue_declare(ShortString::from(settings.dead_queue(consumer)), durable, quorum()).await?;
    for delay in settings.ladder() {
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-message-ttl"), AMQPValue::LongLongInt(delay.as_millis() as i64));
        args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString(LongString::from("")));
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(queue.clone())),
        );
        channel.queue_declare(ShortString::from(settings.delay_queue(consumer, delay)), durable, args).await?;
    }
    let keys: BTreeSet<String> = kinds.iter().map(|k| binding_key(k)).collect();
    let before = inner.bound.lock().get(consumer).cloned().unwrap_or_default();
    for key in keys.difference(&before) {
        channel
            .queue_bind(
                ShortString::from(queue.clone()),
                ShortString::from(settings.exchange()),
                ShortString::from(key.clone()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for key in before.difference(&keys) {
        channel
            .queue_unbind(
                ShortString::from(queue.clone()),
                ShortString::from(settings.exchange()),
                ShortString::from(key.clone()),
                FieldTable::default(),
            )
            .await?;
    }
    inner.bound.lock().insert(consumer.to_owned(), keys);
    let _ = channel.close(200, ShortString::from("declared")).await;
    Ok(())
}
