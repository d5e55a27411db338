//! The transport carries events from the outbox relay to each consumer (a step, or the
//! host's own order logic) and redelivers what a consumer could not handle yet.
//!
//! **Architecture Invariant:** the saga names only [`Transport`]; `embedded` (durable
//! through the store) is the default, RabbitMQ is chosen by an `amqp://` URL.

mod embedded;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

pub use embedded::EmbeddedTransport;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitSettings, RabbitTransport};

use crate::event::{StoredEvent, now_ms};
use crate::store::{Channel, Queued, Store, StoreError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("transport URL {0:?} is not supported: use `embedded` or `amqp://…`")]
    Unsupported(String),
    /// The URL names a backend this binary was built without.
    #[error("{0}")]
    NotBuilt(String),
    /// The broker cannot be reached right now; the caller tries again later.
    #[error("{broker} is unavailable: {reason}")]
    Unavailable { broker: &'static str, reason: String },
    /// The broker refused a message (a publisher-confirm nack).
    #[error("{broker} refused a message: {reason}")]
    Refused { broker: &'static str, reason: String },
}

/// What opening a transport needs besides its URL.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Prefix of every exchange and queue name (RabbitMQ).
    pub namespace: String,
    /// The backoff ladder of redeliveries: the first delay, doubled up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// This host: the holder of its claims (embedded), its consumers' rank (RabbitMQ).
    pub host_id: String,
}

/// Open the transport at `url`: `embedded` (deliveries in the stores) or `amqp://…`.
pub async fn open(
    url: &str,
    options: TransportOptions,
    stores: Arc<crate::store::Stores>,
) -> Result<Arc<dyn Transport>, TransportError> {
    if url == "embedded" {
        return Ok(Arc::new(EmbeddedTransport::new(stores, options.host_id).await?));
    }
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        #[cfg(feature = "rabbitmq")]
        return Ok(RabbitTransport::start(RabbitSettings {
            url: url.to_owned(),
            namespace: options.namespace,
            retry_base: options.retry_base,
            retry_cap: options.retry_cap,
            host_id: options.host_id,
        }));
        #[cfg(not(feature = "rabbitmq"))]
        return Err(TransportError::NotBuilt(crate::features::missing(
            &format!("WASAGA_TRANSPORT_URL={} (RabbitMQ)", crate::redact::url(url)),
            "rabbitmq",
        )));
    }
    Err(TransportError::Unsupported(crate::redact::url(url)))
}

/// One message for one consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The transport's handle for settling it.
    pub tag: i64,
    pub event: StoredEvent,
    /// 1 on the first delivery.
    pub attempt: u32,
}

/// How a consumer is done with a delivery.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Handled (or a duplicate): remove it.
    Ack(Delivery),
    /// Deliver again after `delay`; `counted` is false when the host, not the step,
    /// failed (a store error), so the attempt does not count against the step.
    Retry { delivery: Delivery, delay: Duration, error: String, counted: bool },
    /// Given up on: the consumer's store already holds the dead letter; a broker may
    /// also keep a copy where operators look for one.
    DeadLetter { delivery: Delivery, error: String },
}

impl Settlement {
    /// The delivery settled.
    pub fn delivery(&self) -> &Delivery {
        match self {
            Settlement::Ack(delivery)
            | Settlement::Retry { delivery, .. }
            | Settlement::DeadLetter { delivery, .. } => delivery,
        }
    }
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// Short name for logs and readiness messages.
    fn name(&self) -> &'static str;
    /// Why the transport cannot carry messages right now, if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Make sure `consumer` receives the events of `kinds` (`*` for every kind) from now
    /// on, and no other kinds. Called again when a step's subscriptions change.
    async fn declare(&self, consumer: &str, kinds: &[String]) -> Result<(), TransportError>;
    /// Route events to every consumer subscribed to their kinds.
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), TransportError>;
    /// Publish outbox rows of `store` (`seqs`, `events`) and mark them relayed on
    /// `channel`. A transport whose queues are rows of that same store does both in one
    /// transaction.
    async fn relay(
        &self,
        store: &Arc<dyn Store>,
        channel: Channel,
        seqs: &[i64],
        events: &[StoredEvent],
    ) -> Result<(), TransportError> {
        self.publish(events).await?;
        store.mark_relayed(channel, seqs, now_ms()).await?;
        Ok(())
    }
    /// The deliveries of `events`, to be queued by the transaction that writes them to
    /// `store` ([`crate::store::BatchCommit::queued`]), when this transport keeps every
    /// subscribed consumer's queue in `store`; `None`: the relay publishes them.
    async fn route_with(
        &self,
        _store: &Arc<dyn Store>,
        _events: &[&StoredEvent],
    ) -> Result<Option<Vec<Queued>>, TransportError> {
        Ok(None)
    }
    /// Deliveries from [`Transport::route_with`] were committed: wake their consumers.
    fn queued(&self, _deliveries: &[Queued]) {}
    /// Whether `consumer`'s deliveries are rows of `store`, so that its batch commit can
    /// settle them (`BatchCommit::settled`) instead of a separate [`Transport::settle`].
    fn settles_in(&self, _consumer: &str, _store: &Arc<dyn Store>) -> bool {
        false
    }
    /// Up to `max` deliveries due for `consumer`, waiting up to `wait` for the first.
    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError>;
    /// Settle deliveries of `consumer`; call only after the consumer's store committed.
    async fn settle(&self, consumer: &str, settlements: Vec<Settlement>) -> Result<(), TransportError>;
    /// This host cannot handle `consumer`'s deliveries for now (its store is down): let
    /// other hosts take them until its next [`Transport::receive`]. A transport that
    /// prefers one host per queue (RabbitMQ's consumer priorities) would otherwise keep
    /// handing the queue to the one host that cannot commit.
    async fn stand_aside(&self, _consumer: &str) {}
    /// Deliver `event` to `consumer` again with a fresh attempt count (dead-letter replay).
    async fn redeliver(&self, consumer: &str, event: &StoredEvent) -> Result<(), TransportError>;
}
