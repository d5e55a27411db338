//! The Kafka stream (rdkafka): an idempotent producer with `acks=all` writes each event
//! to one topic, keyed by order id (so an order's events stay in order on one
//! partition), with the kind in a `kind` header. Each consumer is a consumer group that
//! commits an offset only once every message before it in its partition is settled,
//! that is, after its store committed (and its archive writes succeeded). A rebalance or
//! a restart therefore redelivers, and the inbox absorbs what was already handled.
//!
//! Retries do not reorder the partition's commit: a message to retry waits in memory
//! (its offset stays uncommitted) while later messages go on; after a restart it simply
//! comes again.
//!
//! In a fleet, every host serving the consumer takes its share of the topic's partitions:
//! each partition of each group is leased in the host store (`stream.<consumer>.<n>`),
//! a host holds at most `ceil(partitions / live hosts serving it)` of them, and consumes
//! exactly the partitions it holds, assigned by hand (`incremental_assign`): no broker
//! rebalance is involved, so a broker that stalls rebalances (tansu 0.6 does, under load)
//! cannot stop the archive, and a move stops only the partitions that move (cooperative).
//! A host over its share (a host joined) lets its highest partitions go; a partition of a
//! host that died is taken once its lease ends and the host leaves the list of live hosts
//! (`MEMBER_TTL`). Offsets are committed to the group as before, so a partition's new
//! holder resumes where the last one settled; what was handed out and not settled comes
//! again, and the inbox absorbs it.

use super::EventStream;
use crate::event::StoredEvent;
use crate::event::wire;
use crate::transport::{Delivery, Settlement, Transport, TransportError};
use async_trait::async_trait;
use futures::FutureExt;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use super::KafkaSettings;

const BROKER: &str = "Kafka";
/// Partitions of a topic the stream creates: the most hosts that can share a group.
const PARTITIONS: i32 = 6;
/// Retries waiting in memory per consumer before fetching pauses until some are done.
const MAX_WAITING_RETRIES: usize = 1024;

/// Offsets handed out and not yet settled, per partition, and the next offset to read.
#[derive(Default)]
struct Book {
    pending: BTreeMap<i32, BTreeSet<i64>>,
    next: BTreeMap<i32, i64>,
    /// Our delivery tag → (partition, offset).
    tags: HashMap<i64, (i32, i64)>,
    /// Deliveries to hand out again, when due.
    retries: Vec<(Instant, Delivery)>,
}

impl Book {
    /// Drop what this host had of the partitions `gone` picks: their new holder resumes
    /// from the committed offset, and retries waiting here would only handle them twice.
    fn forget(&mut self, gone: impl Fn(i32) -> bool) {
        self.pending.retain(|partition, _| !gone(*partition));
        self.next.retain(|partition, _| !gone(*partition));
        let tags = &self.tags;
        self.retries.retain(|(_, delivery)| tags.get(&delivery.tag).is_none_or(|(p, _)| !gone(*p)));
        self.tags.retain(|_, (partition, _)| !gone(*partition));
    }

    fn take(&mut self, partition: i32, offset: i64, tag: i64) {
        self.pending.entry(partition).or_default().insert(offset);
        let next = self.next.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.tags.insert(tag, (partition, offset));
    }

    /// Settle `tag`; the partition's committable offset, if it moved.
    fn settle(&mut self, tag: i64) -> Option<(i32, i64)> {
        let (partition, offset) = self.tags.remove(&tag)?;
        // The same offset may be out twice after a rebalance: keep it pending while so.
        if self.tags.values().any(|&(p, o)| p == partition && o == offset) {
            return None;
        }
        let pending = self.pending.entry(partition).or_default();
        pending.remove(&offset);
        let committable = pending.first().copied().or_else(|| self.next.get(&partition).copied())?;
        Some((partition, committable))
    }
}

struct GroupConsumer {
    consumer: StreamConsumer,
    book: Mutex<Book>,
    /// The partitions this host holds the leases of, and consumes.
    owned: Mutex<BTreeSet<i32>>,
    /// When this host last renewed its partition leases.
    renewed: Mutex<Option<Instant>>,
}

/// How long a partition lease lasts, and how often its holder renews it.
const LEASE_TTL: Duration = Duration::from_secs(3);
const LEASE_RENEW: Duration = Duration::from_secs(1);
/// Longest the redrive waits to learn whether a group has settled the stream.
const CAUGHT_UP_WAIT: Duration = Duration::from_secs(10);
/// Hosts seen within this long count as live members (the fleet's list of hosts: a
/// host's heartbeat every 2 s, `saga::HOST_TTL`).
const MEMBER_TTL: Duration = Duration::from_secs(10);

/// The Kafka stream.
pub struct KafkaStream {
    settings: KafkaSettings,
    producer: FutureProducer,
    topic_ready: AtomicBool,
    groups: Mutex<HashMap<String, Arc<GroupConsumer>>>,
    next_tag: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// The topic's partition count and when it was read.
    partitions: Mutex<Option<(i32, Instant)>>,
}

fn unavailable(error: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable { broker: BROKER, reason: error.to_string() }
}

impl KafkaStream {
    /// A stream over `settings.brokers`; nothing is contacted until first used.
    pub fn new(settings: KafkaSettings) -> Result<Arc<KafkaStream>, TransportError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // A relay round gives up after this and tries again; rows stay in the outbox.
            .set("message.timeout.ms", "10000")
            .set("log_level", "3")
            .create()
            .map_err(|e| TransportError::Unsupported(format!("Kafka brokers {:?}: {e}", settings.brokers)))?;
        Ok(Arc::new(KafkaStream {
            settings,
            producer,
            topic_ready: AtomicBool::new(false),
            groups: Mutex::new(HashMap::new()),
            next_tag: AtomicI64::new(1),
            last_error: Mutex::new(None),
            partitions: Mutex::new(None),
        }))
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.settings.brokers).set("log_level", "3");
        config
    }

    /// Create the topic with several partitions unless it exists.
    async fn ensure_topic(&self) -> Result<(), TransportError> {
        if self.topic_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().map_err(unavailable)?;
        // -1 asks the broker for its default replication factor; a broker too old to
        // understand that gets 1, said in the log.
        let wanted = self.settings.replication.unwrap_or(-1);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let mut replication = wanted;
        loop {
            let topic = NewTopic::new(&self.settings.topic, PARTITIONS, TopicReplication::Fixed(replication));
            let results = admin.create_topics([&topic], &options).await.map_err(|e| self.failed(e))?;
            match results.into_iter().next() {
                None | Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => break,
                Some(Err((_, RDKafkaErrorCode::InvalidReplicationFactor))) if replication == -1 => {
                    tracing::warn!(topic = %self.settings.topic,
                        "the broker has no default replication factor; creating the topic with 1");
                    replication = 1;
                }
                Some(Err((topic, code))) => return Err(self.failed(format!("cannot create topic {topic}: {code}"))),
            }
        }
        self.topic_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn failed(&self, error: impl std::fmt::Display) -> TransportError {
        let error = unavailable(error);
        *self.last_error.lock() = Some(error.to_string());
        error
    }

    fn group(&self, consumer: &str) -> Result<Arc<GroupConsumer>, TransportError> {
        if let Some(group) = self.groups.lock().get(consumer) {
            return Ok(group.clone());
        }
        let group_id = format!("{}.{consumer}", self.settings.namespace);
        // No subscription: the partitions are assigned by hand from the leases this host
        // holds (`claim`); the group id only keeps the committed offsets.
        let kafka: StreamConsumer = self
            .client_config()
            .set("group.id", &group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // A broker may hold a fetch for the whole wait even with records ready (tansu
            // does); the default 500 ms then caps a consumer at a batch per half second.
            .set("fetch.wait.max.ms", "20")
            .create()
            .map_err(|e| self.failed(e))?;
        let group = Arc::new(GroupConsumer {
            consumer: kafka,
            book: Mutex::new(Book::default()),
            owned: Mutex::new(BTreeSet::new()),
            renewed: Mutex::new(None),
        });
        self.groups.lock().insert(consumer.to_owned(), group.clone());
        tracing::info!(group = %group_id, topic = %self.settings.topic, "consuming the stream");
        Ok(group)
    }

    /// The topic's partition count, from the brokers (read again every 30 s: partitions
    /// may be added).
    async fn partitions(&self) -> Result<i32, TransportError> {
        if let Some((count, at)) = *self.partitions.lock()
            && at.elapsed() < Duration::from_secs(30)
        {
            return Ok(count);
        }
        let producer = self.producer.clone();
        let topic = self.settings.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map(|m| m.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len()))
        })
        .await
        .map_err(|e| self.failed(e))?
        .map_err(|e| self.failed(e))?;
        let count = i32::try_from(metadata).unwrap_or(PARTITIONS).max(1);
        *self.partitions.lock() = Some((count, Instant::now()));
        Ok(count)
    }

    /// Renew this host's partition leases of `consumer` (once per [`LEASE_RENEW`]), take
    /// free ones up to its share, let go of those past it, and assign what it holds.
    async fn claim(&self, consumer: &str, group: &GroupConsumer) -> Result<(), TransportError> {
        if group.renewed.lock().is_some_and(|at| at.elapsed() < LEASE_RENEW) {
            return Ok(());
        }
        let partitions = self.partitions().await?;
        let owned = group.owned.lock().clone();
        let wanted: BTreeSet<i32> = match &self.settings.leases {
            None => (0..partitions).collect(),
            Some(store) => self.leased(store, consumer, partitions, &owned).await,
        };
        *group.renewed.lock() = Some(Instant::now());
        if wanted == owned {
            return Ok(());
        }
        let list = |set: &mut dyn Iterator<Item = &i32>| {
            let mut list = TopicPartitionList::new();
            for partition in set {
                // Where the group's committed offset says (the topic's start if none).
                let _ = list.add_partition_offset(&self.settings.topic, *partition, Offset::Stored);
            }
            list
        };
        let gone = list(&mut owned.difference(&wanted));
        let new = list(&mut wanted.difference(&owned));
        if gone.count() > 0 {
            group.consumer.incremental_unassign(&gone).map_err(|e| self.failed(e))?;
            group.book.lock().forget(|partition| !wanted.contains(&partition));
        }
        if new.count() > 0 {
            // A partition taken (again) starts at the committed offset: nothing this host
            // noted of it before may move that offset (a next offset from an earlier
            // holding would commit past messages nobody handled).
            let added: BTreeSet<i32> = wanted.difference(&owned).copied().collect();
            group.book.lock().forget(|partition| added.contains(&partition));
            group.consumer.incremental_assign(&new).map_err(|e| self.failed(e))?;
        }
        *group.owned.lock() = wanted.clone();
        metrics::gauge!("wasaga_stream_partitions", "consumer" => consumer.to_owned()).set(wanted.len() as f64);
        tracing::info!(%consumer, partitions = ?wanted, of = partitions, "stream partitions this host consumes");
        Ok(())
    }

    /// The partitions of `consumer` this host holds the leases of after one round: its
    /// own renewed, free ones taken up to its share, the highest past it released.
    async fn leased(
        &self,
        store: &Arc<dyn crate::store::FleetStore>,
        consumer: &str,
        partitions: i32,
        owned: &BTreeSet<i32>,
    ) -> BTreeSet<i32> {
        let instance = &self.settings.instance;
        let seen_after = crate::event::now_ms() - i64::try_from(MEMBER_TTL.as_millis()).unwrap_or(10_000);
        let members = match store.hosts(seen_after).await {
            Ok(hosts) => hosts
                .iter()
                .filter(|h| {
                    h.host_id == *instance
                        || serde_json::from_str::<serde_json::Value>(&h.steps).is_ok_and(|s| s.get(consumer).is_some())
                })
                .count()
                .max(1),
            // Unknown: keep what is held, take nothing new.
            Err(_) => owned.len().max(1),
        };
        let share = usize::try_from(partitions).unwrap_or(1).div_ceil(members);
        let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(3000);
        let lease = |partition: i32| format!("stream.{consumer}.{partition}");
        let mut held = BTreeSet::new();
        for partition in owned.iter().copied().filter(|p| *p < partitions) {
            if store.try_lease(&lease(partition), instance, ttl).await.unwrap_or(false) {
                held.insert(partition);
            }
        }
        while held.len() > share {
            let Some(extra) = held.pop_last() else { break };
            let _ = store.release_lease(&lease(extra), instance).await;
        }
        for partition in 0..partitions {
            if held.len() >= share {
                break;
            }
            if !held.contains(&partition) && store.try_lease(&lease(partition), instance, ttl).await.unwrap_or(false) {
                held.insert(partition);
            }
        }
        held
    }

    fn commit(&self, group: &GroupConsumer, offsets: BTreeMap<i32, i64>) {
        // Only for partitions this host still holds: another host resumes the others.
        let owned = group.owned.lock().clone();
        let offsets: BTreeMap<i32, i64> = offsets.into_iter().filter(|(p, _)| owned.contains(p)).collect();
        if offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            if list.add_partition_offset(&self.settings.topic, partition, Offset::Offset(offset)).is_err() {
                return;
            }
        }
        // Asynchronous: a lost commit only means a redelivery, which the inbox absorbs.
        if let Err(error) = group.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(%error, "offset commit failed; the messages may come again");
        }
    }
}

/// The event a message carries.
fn event_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Result<StoredEvent, String> {
    let payload = message.payload().ok_or("an empty message")?;
    let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
    wire::decode(text).map_err(|e| e.to_string())
}

#[async_trait]
impl Transport for KafkaStream {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn unavailable(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// A consumer group sees every event; joining happens at the first receive.
    async fn declare(&self, _consumer: &str, _kinds: &[String]) -> Result<(), TransportError> {
        Ok(())
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), TransportError> {
        self.ensure_topic().await?;
        let mut futures = Vec::with_capacity(events.len());
        for event in events {
            let body = wire::encode(event);
            let mut headers = OwnedHeaders::new().insert(Header { key: "kind", value: Some(event.kind.as_str()) });
            if let Some(trace) = &event.trace {
                headers = headers.insert(Header { key: "traceparent", value: Some(trace.as_str()) });
            }
            let record = FutureRecord::to(&self.settings.topic).key(&event.order_id).payload(&body).headers(headers);
            match self.producer.send_result(record) {
                Ok(future) => futures.push(future),
                Err((error, _)) => return Err(self.failed(error)),
            }
        }
        for delivered in futures::future::join_all(futures).await {
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(self.failed(error)),
                Err(_) => return Err(self.failed("the producer was dropped")),
            }
        }
        *self.last_error.lock() = None;
        Ok(())
    }

    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError> {
        if let Err(error) = self.ensure_topic().await {
            tokio::time::sleep(wait).await;
            return Err(error);
        }
        let group = self.group(consumer)?;
        self.claim(consumer, &group).await?;
        if group.owned.lock().is_empty() {
            // Other hosts hold every partition; look again later.
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let mut deliveries = Vec::new();
        {
            let mut book = group.book.lock();
            let now = Instant::now();
            let mut i = 0;
            while i < book.retries.len() && deliveries.len() < max as usize {
                if book.retries[i].0 <= now {
                    deliveries.push(book.retries.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
        }
        if !deliveries.is_empty() {
            return Ok(deliveries);
        }
        let (next_retry, waiting) = {
            let book = group.book.lock();
            (book.retries.iter().map(|(due, _)| *due).min(), book.retries.len())
        };
        let deadline = next_retry.map_or(Instant::now() + wait, |due| due.min(Instant::now() + wait));
        if waiting >= MAX_WAITING_RETRIES {
            // Too many retries wait in memory: hand those out before fetching more, so a
            // step failing on everything cannot make this process hold the whole topic.
            tokio::time::sleep_until(deadline).await;
            return Ok(Vec::new());
        }
        let mut committable = BTreeMap::new();
        // Wake for the next lease round even when nothing comes.
        let deadline = deadline.min(Instant::now() + LEASE_RENEW);
        let first = match tokio::time::timeout_at(deadline, group.consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(error)) => {
                // A consumer error may never clear: start afresh at the next receive
                // (leases are kept and renewed). What was not settled is not committed,
                // so it comes again; the inbox absorbs what was handled.
                self.groups.lock().remove(consumer);
                return Err(self.failed(error));
            }
            Ok(Ok(message)) => message,
        };
        let mut messages = vec![first];
        while messages.len() < max as usize {
            match group.consumer.recv().now_or_never() {
                Some(Ok(message)) => messages.push(message),
                _ => break,
            }
        }
        let owned = group.owned.lock().clone();
        let mut book = group.book.lock();
        for message in messages {
            if !owned.contains(&message.partition()) {
                // Fetched before its partition was let go: its new holder resumes from
                // the committed offset. Taken here, it would leave this host's book
                // with a next offset past what the partition's next holder has read.
                continue;
            }
            let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
            book.take(message.partition(), message.offset(), tag);
            match event_of(&message) {
                Ok(event) => deliveries.push(Delivery { tag, event, attempt: 1 }),
                Err(error) => {
                    // Not an event of ours; skip it so the partition goes on.
                    tracing::error!(partition = message.partition(), offset = message.offset(), %error,
                        "skipping an unreadable message on the stream");
                    if let Some((partition, offset)) = book.settle(tag) {
                        committable.insert(partition, offset);
                    }
                }
            }
        }
        drop(book);
        self.commit(&group, committable);
        Ok(deliveries)
    }

    async fn settle(&self, consumer: &str, settlements: Vec<Settlement>) -> Result<(), TransportError> {
        let Some(group) = self.groups.lock().get(consumer).cloned() else {
            return Ok(());
        };
        let mut committable = BTreeMap::new();
        {
            let mut book = group.book.lock();
            for settlement in settlements {
                match settlement {
                    Settlement::Ack(delivery) | Settlement::DeadLetter { delivery, .. } => {
                        if let Some((partition, offset)) = book.settle(delivery.tag) {
                            committable.insert(partition, offset);
                        }
                    }
                    Settlement::Retry { mut delivery, delay, counted, .. } => {
                        if counted {
                            delivery.attempt = delivery.attempt.saturating_add(1);
                        }
                        book.retries.push((Instant::now() + delay, delivery));
                    }
                }
            }
        }
        self.commit(&group, committable);
        Ok(())
    }

    /// A replayed dead letter goes on the stream again; other groups' inboxes skip it.
    async fn redeliver(&self, _consumer: &str, event: &StoredEvent) -> Result<(), TransportError> {
        self.publish(std::slice::from_ref(event)).await
    }
}

#[async_trait]
impl EventStream for KafkaStream {
    fn topic(&self) -> &str {
        &self.settings.topic
    }

    async fn caught_up(&self, consumer: &str) -> Result<bool, TransportError> {
        self.ensure_topic().await?;
        let partitions = self.partitions().await?;
        let topic = self.settings.topic.clone();
        let mut config = self.client_config();
        // A client of its own that joins nothing: it only reads the group's offsets.
        config.set("group.id", format!("{}.{consumer}", self.settings.namespace)).set("enable.auto.commit", "false");
        let checked = tokio::task::spawn_blocking(move || -> Result<bool, rdkafka::error::KafkaError> {
            // Each call gives up after 5 s; the whole check after `CAUGHT_UP_WAIT` (below).
            let client: BaseConsumer = config.create()?;
            let mut list = TopicPartitionList::new();
            for partition in 0..partitions {
                list.add_partition(&topic, partition);
            }
            let committed = client.committed_offsets(list, Duration::from_secs(5))?;
            for element in committed.elements() {
                let (low, high) = client.fetch_watermarks(&topic, element.partition(), Duration::from_secs(5))?;
                let settled = match element.offset() {
                    Offset::Offset(offset) => offset >= high,
                    // Nothing committed: settled only if the partition holds nothing.
                    _ => low >= high,
                };
                if !settled {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        // A broker that never answers holds the maintenance round no longer than this; an
        // auxiliary check does not mark the stream down either (`unavailable`, not `failed`).
        match tokio::time::timeout(CAUGHT_UP_WAIT, checked).await {
            Ok(Ok(checked)) => checked.map_err(unavailable),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(unavailable(format!("the group's offsets did not come within {CAUGHT_UP_WAIT:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_waits_for_the_oldest_unsettled_offset() {
        let mut book = Book::default();
        book.take(0, 10, 1);
        book.take(0, 11, 2);
        book.take(0, 12, 3);
        book.take(1, 5, 4);
        assert_eq!(book.settle(2), Some((0, 10)), "offset 10 is still out");
        assert_eq!(book.settle(4), Some((1, 6)));
        assert_eq!(book.settle(1), Some((0, 12)));
        assert_eq!(book.settle(3), Some((0, 13)));
        assert_eq!(book.settle(3), None, "settled twice");
    }

    #[test]
    fn a_partition_taken_again_commits_nothing_past_what_was_read_since() {
        let mut book = Book::default();
        // Held before: offsets up to 200 were taken, 150 still out, then it was let go.
        book.take(0, 150, 1);
        book.take(0, 200, 2);
        book.forget(|p| p == 0);
        assert_eq!(book.settle(1), None, "a delivery of the earlier holding commits nothing");
        // Taken again from the committed offset, 100.
        book.forget(|p| p == 0);
        book.take(0, 100, 3);
        assert_eq!(book.settle(3), Some((0, 101)), "not past 101: 101..200 are unread");
        assert_eq!(book.settle(2), None);
    }

    #[test]
    fn an_offset_out_twice_stays_pending_until_both_settle() {
        let mut book = Book::default();
        book.take(0, 7, 1);
        book.take(0, 7, 2);
        assert_eq!(book.settle(1), None);
        assert_eq!(book.settle(2), Some((0, 8)));
    }
}
