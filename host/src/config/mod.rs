//! Settings: defaults (one [`Default`]), then `wasaga.toml`, then `WASAGA_*` environment
//! variables (which win). `validate.rs` checks them, naming the setting; `modules.rs` maps
//! them to each module's own configuration and derives every path and URL, so no caller
//! formats one itself.

mod modules;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use sections::*;

use crate::saga::BATCH_LINGER_MS;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every setting of `wasaga serve`; see the README for the table of variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listen address; port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// SQLite file, local archive, compile cache, generated admin token.
    pub data_dir: PathBuf,
    /// `<step>.wasm` files, watched.
    pub plugins_dir: PathBuf,
    /// Bearer token for `/api/admin/*`; generated into the data folder when unset.
    pub admin_token: Option<SecretString>,
    /// `sqlite://…`, `postgres://…` or `mssql://…`; defaults to a file in the data folder.
    pub store_url: Option<String>,
    /// `embedded` or an `amqp://` URL.
    pub transport_url: String,
    /// Kafka bootstrap servers; unset keeps the stream embedded.
    pub stream_brokers: Option<String>,
    /// `file://…`, `az://…` or `s3://…`; defaults to a folder in the data folder.
    pub archive_url: Option<String>,
    /// Deliveries of one message to one step before it is dead-lettered.
    pub max_attempts: u32,
    /// Wall-clock budget of one step call.
    pub step_deadline_ms: u64,
    /// Linear memory cap of one step instance.
    pub step_memory_mib: u64,
    /// Step instances alive at once.
    pub step_concurrency: u32,
    /// Step instances one step may hold at once; unset: half of `step_concurrency`.
    pub step_concurrency_per_step: Option<u32>,
    /// First retry delay; each further retry doubles it (with jitter), up to 30 s.
    pub retry_base_ms: u64,
    /// Prefix of every broker name: RabbitMQ exchange and queues, the Kafka topic
    /// (`<namespace>.events`) and consumer groups.
    pub namespace: String,
    /// Names this host in the fleet; defaults to the host name and a digest of the data
    /// folder, stable across restarts.
    pub host_id: Option<String>,
    /// Longest a stop waits for batches in hand before abandoning them (they are
    /// delivered again after the restart).
    pub shutdown_timeout_ms: u64,
    /// Longest a request may take to be answered.
    pub request_timeout_ms: u64,
    /// Longest a request body may pause between two reads (a client that stops sending
    /// is cut off).
    pub body_timeout_ms: u64,
    /// SQLite durability: `full` (a 202 survives a power cut) or `normal`.
    pub sqlite_synchronous: crate::store::SqliteSync,
    /// Longest a store statement may run or wait for a lock.
    pub store_timeout_ms: u64,
    /// Largest component accepted by upload or from the plugins folder.
    pub max_component_mib: u64,
    /// Longest a component may take to compile.
    pub compile_timeout_ms: u64,
    /// Per call: bytes of state a step may write.
    pub step_max_state_bytes: u64,
    /// Per call: state keys a step may write or delete.
    pub step_max_state_keys: u64,
    /// Per call: state reads a step may make.
    pub step_max_state_reads: u64,
    /// Per call: bytes of state values a step may read.
    pub step_max_state_read_bytes: u64,
    /// Per call: archive objects a step may write.
    pub step_max_archive_objects: u64,
    /// Per call: archive bytes a step may write.
    pub step_max_archive_bytes: u64,
    /// Per call: log lines kept (more are dropped and counted).
    pub step_max_log_lines: u64,
    /// Per call: outbound HTTP requests a step may send.
    pub step_max_http_requests: u64,
    /// Per request: bytes of the body a step sends.
    pub step_max_http_request_bytes: u64,
    /// Per request: bytes of the body a step receives.
    pub step_max_http_response_bytes: u64,
    /// The longest delay a step may give a timer.
    pub step_max_timer_secs: u64,
    /// After a batch that was neither a single delivery nor full, a consumer waits this
    /// long before taking the next: under load, fewer and fuller batches; 0 turns it off.
    pub batch_linger_ms: u64,
    /// A pending order with no progress for this long has its events published again.
    pub redrive_after_ms: u64,
    /// An order not completed or cancelled this long after it was placed is cancelled
    /// with `cancel_reason: "deadline"` and compensated; 0 (the default) turns it off.
    pub order_deadline_secs: u64,
    /// How often the upkeep jobs (redrive, retention) run.
    pub maintenance_interval_ms: u64,
    /// How long handled events stay in the inbox (duplicates later than this are not
    /// recognised); dead-letter marks are never removed.
    pub retain_inbox_secs: u64,
    /// How long relayed events stay in the outbox (order timelines show them).
    pub retain_outbox_secs: u64,
    /// How long an Idempotency-Key is remembered.
    pub retain_idempotency_secs: u64,
    /// Automatic rollback: a version new within `auto_rollback_window_secs` (or a canary)
    /// whose failure rate exceeds this over at least `auto_rollback_min_calls` calls.
    pub auto_rollback_failure_rate: f64,
    pub auto_rollback_min_calls: u64,
    pub auto_rollback_window_secs: u64,
    /// Bytes one call's recording (kept with a dead letter) may hold.
    pub recording_max_bytes: u64,
    /// How long an order's pinned versions are kept.
    pub retain_pins_secs: u64,
    /// How long a console sign-in lasts.
    pub console_session_secs: u64,
    /// Replication factor of the Kafka topic the stream creates; unset: the broker's default.
    pub stream_replication: Option<i32>,
    /// Whether the console's cookie is `Secure`: `auto` (when a proxy in front says the
    /// request came over HTTPS, `X-Forwarded-Proto: https`), `always` or `never`.
    pub console_secure_cookie: SecureCookie,
    /// Failed bearer checks and console sign-ins one client address may make per minute
    /// (also the burst); more are answered 429 until the budget refills.
    pub auth_failures_per_minute: u32,
    /// Serve `/metrics` here instead of on `http_addr` (unset: on `http_addr`).
    pub metrics_addr: Option<SocketAddr>,
    /// Who may use the order API (`[clients.NAME] token = "env:VAR"`, `scopes = [...]`;
    /// in the TOML file only). With none, the order API is open, which is allowed only
    /// while `http_addr` is a loopback address.
    pub clients: BTreeMap<String, ClientSettings>,
    /// Named stores (`[stores.NAME] url = "…"`; in the TOML file only).
    pub stores: BTreeMap<String, StoreSettings>,
    /// Per consumer (a step, or `host` for the orders): `[steps.NAME] store = "NAME"`.
    /// A consumer not listed uses `WASAGA_STORE_URL`.
    pub steps: BTreeMap<String, StepSettings>,
}

/// Every key of [`Settings`], as in `wasaga.toml` and (upper-cased, `WASAGA_`-prefixed)
/// in the environment.
const SETTING_KEYS: [&str; 51] = [
    "console_session_secs",
    "console_secure_cookie",
    "auth_failures_per_minute",
    "metrics_addr",
    "auto_rollback_failure_rate",
    "auto_rollback_min_calls",
    "auto_rollback_window_secs",
    "recording_max_bytes",
    "retain_pins_secs",
    "maintenance_interval_ms",
    "host_id",
    "shutdown_timeout_ms",
    "request_timeout_ms",
    "body_timeout_ms",
    "sqlite_synchronous",
    "store_timeout_ms",
    "max_component_mib",
    "compile_timeout_ms",
    "step_max_state_bytes",
    "step_max_state_keys",
    "step_max_state_reads",
    "step_max_state_read_bytes",
    "step_max_archive_objects",
    "step_max_archive_bytes",
    "step_max_log_lines",
    "step_max_http_requests",
    "step_max_http_request_bytes",
    "step_max_http_response_bytes",
    "step_max_timer_secs",
    "redrive_after_ms",
    "batch_linger_ms",
    "order_deadline_secs",
    "retain_inbox_secs",
    "retain_outbox_secs",
    "retain_idempotency_secs",
    "stream_replication",
    "step_concurrency_per_step",
    "http_addr",
    "data_dir",
    "plugins_dir",
    "admin_token",
    "store_url",
    "transport_url",
    "stream_brokers",
    "archive_url",
    "max_attempts",
    "step_deadline_ms",
    "step_memory_mib",
    "step_concurrency",
    "retry_base_ms",
    "namespace",
];

/// Settings that cannot be used, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings: {0}")]
    Load(String),
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            data_dir: PathBuf::from("./data"),
            plugins_dir: PathBuf::from("./dist/plugins"),
            admin_token: None,
            store_url: None,
            transport_url: "embedded".to_owned(),
            stream_brokers: None,
            archive_url: None,
            max_attempts: 5,
            step_deadline_ms: 1000,
            step_memory_mib: 64,
            step_concurrency: 32,
            retry_base_ms: 200,
            namespace: "wasaga".to_owned(),
            host_id: None,
            shutdown_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            body_timeout_ms: 10_000,
            sqlite_synchronous: crate::store::SqliteSync::Full,
            store_timeout_ms: 30_000,
            max_component_mib: 64,
            compile_timeout_ms: 120_000,
            step_max_state_bytes: 1024 * 1024,
            step_max_state_keys: 1000,
            step_max_state_reads: 10_000,
            step_max_state_read_bytes: 16 * 1024 * 1024,
            step_max_archive_objects: 100,
            step_max_archive_bytes: 8 * 1024 * 1024,
            step_max_log_lines: 100,
            step_max_http_requests: 8,
            step_max_http_request_bytes: 1024 * 1024,
            step_max_http_response_bytes: 4 * 1024 * 1024,
            step_max_timer_secs: 30 * 86_400,
            redrive_after_ms: 60_000,
            batch_linger_ms: BATCH_LINGER_MS,
            order_deadline_secs: 0,
            maintenance_interval_ms: 5_000,
            auto_rollback_failure_rate: 0.2,
            auto_rollback_min_calls: 20,
            auto_rollback_window_secs: 300,
            recording_max_bytes: 256 * 1024,
            retain_pins_secs: 30 * 24 * 3600,
            console_session_secs: 8 * 3600,
            retain_inbox_secs: 7 * 24 * 3600,
            retain_outbox_secs: 30 * 24 * 3600,
            retain_idempotency_secs: 7 * 24 * 3600,
            stream_replication: None,
            console_secure_cookie: SecureCookie::default(),
            auth_failures_per_minute: 10,
            metrics_addr: None,
            clients: BTreeMap::new(),
            step_concurrency_per_step: None,
            stores: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Load from `config` (if given; it must exist) and the environment.
    pub fn load(config: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = config {
            if !path.exists() {
                return Err(ConfigError::Load(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only the variables of settings: other WASAGA_* variables (the CLI's WASAGA_URL,
        // a CI's cache folder) are not mistakes in the server's settings.
        let env = Env::prefixed("WASAGA_").only(&SETTING_KEYS);
        let settings: Settings = figment.merge(env).extract().map_err(|e| ConfigError::Load(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }
}
