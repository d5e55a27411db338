//! The event stream: every event of the saga, in order per order id, for observers such
//! as the analytics step. Kafka when `WASAGA_STREAM_BROKERS` is set; otherwise observers
//! receive events through the transport like any other step.
//!
//! A stream delivers to consumer groups: each consumer sees every event, whatever it
//! subscribed to, and settles deliveries as on a transport. Its own outbox cursor
//! (`streamed_at_ms`) keeps it independent: the saga goes on while the stream is down,
//! and the stream catches up when it is back.

#[cfg(feature = "kafka")]
mod kafka;

#[cfg(feature = "kafka")]
pub use kafka::KafkaStream;

use crate::transport::{Transport, TransportError};
use std::sync::Arc;

/// A transport that carries every event to every consumer group, with a topic name.
#[async_trait::async_trait]
pub trait EventStream: Transport {
    /// Where the events go.
    fn topic(&self) -> &str;
    /// Whether `consumer`'s group has settled every message on the stream (its committed
    /// offsets are at the end): an event it has not handled by then was skipped, and is
    /// not still on its way.
    async fn caught_up(&self, consumer: &str) -> Result<bool, TransportError>;
}

/// How to reach the brokers and name things there.
#[derive(Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic; `wasaga.events` by default.
    pub topic: String,
    /// Prefix of consumer group ids.
    pub namespace: String,
    /// This host's id, naming it in the consumer lease.
    pub instance: String,
    /// The store holding the consumer leases (every host of a fleet shares it); `None`:
    /// this process consumes without one.
    pub leases: Option<Arc<dyn crate::store::FleetStore>>,
    /// Replication factor of a topic the stream creates; `None`: the broker's default.
    pub replication: Option<i32>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("namespace", &self.namespace)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Open the Kafka stream `settings` describe.
#[cfg(feature = "kafka")]
pub fn open(settings: KafkaSettings) -> Result<Arc<dyn EventStream>, TransportError> {
    Ok(KafkaStream::new(settings)?)
}

/// Kafka is not built into this binary: say so, and how to get it.
#[cfg(not(feature = "kafka"))]
pub fn open(settings: KafkaSettings) -> Result<Arc<dyn EventStream>, TransportError> {
    Err(TransportError::NotBuilt(crate::features::missing(
        &format!("WASAGA_STREAM_BROKERS={:?} (Kafka)", settings.brokers),
        "kafka",
    )))
}
