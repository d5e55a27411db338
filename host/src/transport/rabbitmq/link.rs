//! The connection to RabbitMQ: a supervisor keeps one open, declares the topology before
//! the transport reports itself ready, and reconnects with backoff when it fails.

use super::Inner;
use super::topology::declare_consumer;
use crate::shutdown::Shutdown;
use futures::StreamExt;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection with its publishing channel (in confirm mode).
pub(super) struct Link {
    pub(super) generation: u64,
    pub(super) connection: Connection,
    pub(super) publisher: Channel,
}

/// Keep a connection open: connect, declare, wait for the connection to fail, repeat.
pub(super) async fn supervise(inner: Arc<Inner>, stop: Shutdown) {
    let mut generation = 0u64;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        generation += 1;
        let attempt = tokio::select! {
            () = stop.stopping() => return,
            attempt = connect(&inner, generation) => attempt,
        };
        match attempt {
            Ok(link) => {
                backoff.succeeded();
                tracing::info!(url = %inner.settings.redacted_url(), "connected to RabbitMQ");
                let mut events = link.connection.events_listener();
                *inner.last_error.lock() = None;
                inner.link.send_replace(Some(link.clone()));
                let reason = loop {
                    tokio::select! {
                        () = stop.stopping() => {
                            inner.link.send_replace(None);
                            let _ = link.connection.close(200, ShortString::from("shutting down")).await;
                            return;
                        }
                        event = events.next() => match event {
                            Some(lapin::Event::Error(error)) => break crate::redact::text(&error.to_string()),
                            Some(_) => {}
                            None => break "the connection closed".to_owned(),
                        },
                        () = inner.broken.notified() => {
                            if !link.connection.status().connected() || !link.publisher.status().connected() {
                                break "the connection was lost".to_owned();
                            }
                        }
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            if !link.connection.status().connected() || !link.publisher.status().connected() {
                                break "the connection was lost".to_owned();
                            }
                        }
                    }
                };
                tracing::warn!(%reason, "RabbitMQ connection lost; reconnecting");
                *inner.last_error.lock() = Some(reason);
                inner.link.send_replace(None);
                inner.bound.lock().clear();
                let _ = link.connection.close(200, ShortString::from("reconnecting")).await;
            }
            Err(error) => {
                // The client's message may quote the URL it was given.
                let error = crate::redact::text(&error.to_string());
                tracing::warn!(url = %inner.settings.redacted_url(), %error, retry_in_ms = backoff.peek().as_millis() as u64,
                    "cannot reach RabbitMQ");
                *inner.last_error.lock() = Some(error);
            }
        }
        if !stop.pause(backoff.failed()).await {
            return;
        }
    }
}

/// Open a connection and declare everything wanted so far.
async fn connect(inner: &Inner, generation: u64) -> Result<Arc<Link>, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from("wasaga"));
    // Bounded: a broker that accepts the socket and never answers must not hang us.
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&inner.settings.url, properties))
        .await
        .map_err(|_| {
            lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting timed out",
            ))))
        })??;
    let publisher = connection.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    publisher
        .exchange_declare(
            ShortString::from(inner.settings.exchange()),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await?;
    let link = Arc::new(Link { generation, connection, publisher });
    let wanted: Vec<(String, Vec<String>)> = inner.wanted.lock().iter().map(|(c, k)| (c.clone(), k.clone())).collect();
    for (consumer, kinds) in wanted {
        declare_consumer(inner, &link, &consumer, &kinds).await?;
    }
    Ok(link)
}
