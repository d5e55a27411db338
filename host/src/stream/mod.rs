//! The event stream: every event of the saga, in order per order id, for observers such
//! as the analytics step. Kafka when `WASAGA_STREAM_BROKERS` is set; otherwise observers
//! receive events through the transport like any other step.
//!
//! A stream delivers to consumer groups: each consumer sees every event, whatever it
//! subscribed to, and settles deliveries as on a transport. Its own outbox cursor
//! (`streamed_at_ms`) keeps it independent: the saga goes on while the stream is down,
//! and the stream catches up when it is back.

mod kafka;

pub use kafka::{KafkaSettings, KafkaStream};

use crate::transport::Transport;

/// A transport that carries every event to every consumer group, with a topic name.
pub trait EventStream: Transport {
    /// Where the events go.
    fn topic(&self) -> &str;
}
