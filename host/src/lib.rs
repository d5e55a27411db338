//! # wasaga host
//!
//! Runs the business steps of an order saga as sandboxed WebAssembly components and
//! owns every side effect around them.
//!
//! # Layout
//! Read in this order, which follows the data:
//! - [`event`]: the leaf every layer shares: the event, its wire JSON, ids, the clock,
//!   step names, the subscription matcher.
//! - [`config`]: typed settings from defaults, `wasaga.toml` and `WASAGA_*`.
//! - [`server`]: builds everything and serves; `main` and tests share it.
//! - [`http`]: the HTTP API and problem+json errors.
//! - [`saga`]: the processing rule, the step and host consumers, the order state machine.
//! - [`store`]: orders, outbox, inbox, step state, deliveries, dead letters (SQLite,
//!   PostgreSQL, SQL Server).
//! - [`outbox`]: the relays from the outbox to the transport and to the stream.
//! - [`transport`]: how events reach consumers (embedded: durable through the store;
//!   RabbitMQ).
//! - [`stream`]: every event to consumer groups (Kafka), for observers such as analytics.
//! - [`registry`]: which version of each step serves; hot swap, rollback, the folder watcher.
//! - [`runtime`]: wasmtime: validation, compile cache, a fresh sandboxed instance per call.
//! - [`archive`]: create-only object storage for the archive (folder, Azure Blob, S3).
//! - [`telemetry`]: logs and metrics.
//! - [`backoff`], [`redact`], [`fsutil`]: one rule each for retry delays, secrets in
//!   messages, and files written whole.
//! - [`features`]: the optional backends this binary was built with.
//! - [`cli`]: the `wasaga` subcommands that talk to a running server.

pub mod archive;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod event;
pub mod features;
pub mod fsutil;
pub mod http;
pub mod outbox;
pub mod redact;
pub mod registry;
pub mod runtime;
pub mod saga;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod transport;

#[cfg(test)]
mod layering;
