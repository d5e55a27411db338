//! The transport carries events from the outbox relay to each consumer (a step, or the
//! host's own order logic) and redelivers what a consumer could not handle yet.
//!
//! **Architecture Invariant:** the saga names only [`Transport`]; `embedded` (durable
//! through the store) is the default.

mod embedded;

pub use embedded::EmbeddedTransport;

use crate::store::{StoreError, StoredEvent};
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("transport URL {0:?} is not supported: use `embedded`")]
    Unsupported(String),
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
    /// Handled (or a duplicate, or dead-lettered by the consumer): remove it.
    Ack(Delivery),
    /// Deliver again after `delay`; `counted` is false when the host, not the step,
    /// failed (a store error), so the attempt does not count against the step.
    Retry { delivery: Delivery, delay: Duration, error: String, counted: bool },
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// Route events to every consumer subscribed to their kinds.
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), TransportError>;
    /// Up to `max` deliveries due for `consumer`, waiting up to `wait` for the first.
    async fn receive(&self, consumer: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, TransportError>;
    /// Settle deliveries of `consumer`; call only after the consumer's store committed.
    async fn settle(&self, consumer: &str, settlements: Vec<Settlement>) -> Result<(), TransportError>;
    /// Deliver `event` to `consumer` again with a fresh attempt count (dead-letter replay).
    async fn redeliver(&self, consumer: &str, event: &StoredEvent) -> Result<(), TransportError>;
}
