//! Settings: defaults, then `wasaga.toml`, then `WASAGA_*` environment variables (which
//! win). Helpers derive every path and URL so no caller formats one itself.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use sha2::Digest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every setting of `wasaga serve`; see the README for the table of variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listen address; port 0 picks a free port.
    #[serde(default = "defaults::http_addr")]
    pub http_addr: SocketAddr,
    /// SQLite file, local archive, compile cache, generated admin token.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// `<step>.wasm` files, watched.
    #[serde(default = "defaults::plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Bearer token for `/api/admin/*`; generated into the data folder when unset.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// `sqlite://…`, `postgres://…` or `mssql://…`; defaults to a file in the data folder.
    #[serde(default)]
    pub store_url: Option<String>,
    /// `embedded` or an `amqp://` URL.
    #[serde(default = "defaults::transport_url")]
    pub transport_url: String,
    /// Kafka bootstrap servers; unset keeps the stream embedded.
    #[serde(default)]
    pub stream_brokers: Option<String>,
    /// `file://…`, `az://…` or `s3://…`; defaults to a folder in the data folder.
    #[serde(default)]
    pub archive_url: Option<String>,
    /// Deliveries of one message to one step before it is dead-lettered.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Wall-clock budget of one step call.
    #[serde(default = "defaults::step_deadline_ms")]
    pub step_deadline_ms: u64,
    /// Linear memory cap of one step instance.
    #[serde(default = "defaults::step_memory_mib")]
    pub step_memory_mib: u64,
    /// Step instances alive at once.
    #[serde(default = "defaults::step_concurrency")]
    pub step_concurrency: u32,
    /// Step instances one step may hold at once; unset: half of `step_concurrency`.
    #[serde(default)]
    pub step_concurrency_per_step: Option<u32>,
    /// First retry delay; each further retry doubles it (with jitter), up to 30 s.
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: u64,
    /// Prefix of every broker name: RabbitMQ exchange and queues, the Kafka topic
    /// (`<namespace>.events`) and consumer groups.
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
    /// Names this host in the fleet; defaults to the host name and a digest of the data
    /// folder, stable across restarts.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Longest a stop waits for batches in hand before abandoning them (they are
    /// delivered again after the restart).
    #[serde(default = "defaults::shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Longest a request may take to be answered.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest a request body may pause between two reads (a client that stops sending
    /// is cut off).
    #[serde(default = "defaults::body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// SQLite durability: `full` (a 202 survives a power cut) or `normal`.
    #[serde(default = "defaults::sqlite_synchronous")]
    pub sqlite_synchronous: crate::store::SqliteSync,
    /// Longest a store statement may run or wait for a lock.
    #[serde(default = "defaults::store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// Largest component accepted by upload or from the plugins folder.
    #[serde(default = "defaults::max_component_mib")]
    pub max_component_mib: u64,
    /// Longest a component may take to compile.
    #[serde(default = "defaults::compile_timeout_ms")]
    pub compile_timeout_ms: u64,
    /// Per call: bytes of state a step may write.
    #[serde(default = "defaults::step_max_state_bytes")]
    pub step_max_state_bytes: u64,
    /// Per call: state keys a step may write or delete.
    #[serde(default = "defaults::step_max_state_keys")]
    pub step_max_state_keys: u64,
    /// Per call: state reads a step may make.
    #[serde(default = "defaults::step_max_state_reads")]
    pub step_max_state_reads: u64,
    /// Per call: bytes of state values a step may read.
    #[serde(default = "defaults::step_max_state_read_bytes")]
    pub step_max_state_read_bytes: u64,
    /// Per call: archive objects a step may write.
    #[serde(default = "defaults::step_max_archive_objects")]
    pub step_max_archive_objects: u64,
    /// Per call: archive bytes a step may write.
    #[serde(default = "defaults::step_max_archive_bytes")]
    pub step_max_archive_bytes: u64,
    /// Per call: log lines kept (more are dropped and counted).
    #[serde(default = "defaults::step_max_log_lines")]
    pub step_max_log_lines: u64,
    /// A pending order with no progress for this long has its events published again.
    #[serde(default = "defaults::redrive_after_ms")]
    pub redrive_after_ms: u64,
    /// How often the upkeep jobs (redrive, retention) run.
    #[serde(default = "defaults::maintenance_interval_ms")]
    pub maintenance_interval_ms: u64,
    /// How long handled events stay in the inbox (duplicates later than this are not
    /// recognised); dead-letter marks are never removed.
    #[serde(default = "defaults::retain_inbox_secs")]
    pub retain_inbox_secs: u64,
    /// How long relayed events stay in the outbox (order timelines show them).
    #[serde(default = "defaults::retain_outbox_secs")]
    pub retain_outbox_secs: u64,
    /// How long an Idempotency-Key is remembered.
    #[serde(default = "defaults::retain_idempotency_secs")]
    pub retain_idempotency_secs: u64,
    /// Automatic rollback: a version new within `auto_rollback_window_secs` (or a canary)
    /// whose failure rate exceeds this over at least `auto_rollback_min_calls` calls.
    #[serde(default = "defaults::auto_rollback_failure_rate")]
    pub auto_rollback_failure_rate: f64,
    #[serde(default = "defaults::auto_rollback_min_calls")]
    pub auto_rollback_min_calls: u64,
    #[serde(default = "defaults::auto_rollback_window_secs")]
    pub auto_rollback_window_secs: u64,
    /// Bytes one call's recording (kept with a dead letter) may hold.
    #[serde(default = "defaults::recording_max_bytes")]
    pub recording_max_bytes: u64,
    /// How long an order's pinned versions are kept.
    #[serde(default = "defaults::retain_pins_secs")]
    pub retain_pins_secs: u64,
    /// How long a console sign-in lasts.
    #[serde(default = "defaults::console_session_secs")]
    pub console_session_secs: u64,
    /// Replication factor of the Kafka topic the stream creates; unset: the broker's default.
    #[serde(default)]
    pub stream_replication: Option<i32>,
    /// Whether the console's cookie is `Secure`: `auto` (when a proxy in front says the
    /// request came over HTTPS, `X-Forwarded-Proto: https`), `always` or `never`.
    #[serde(default)]
    pub console_secure_cookie: SecureCookie,
    /// Failed bearer checks and console sign-ins one client address may make per minute
    /// (also the burst); more are answered 429 until the budget refills.
    #[serde(default = "defaults::auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
    /// Serve `/metrics` here instead of on `http_addr` (unset: on `http_addr`).
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Who may use the order API (`[clients.NAME] token = "env:VAR"`, `scopes = [...]`;
    /// in the TOML file only). With none, the order API is open, which is allowed only
    /// while `http_addr` is a loopback address.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientSettings>,
    /// Named stores (`[stores.NAME] url = "…"`; in the TOML file only).
    #[serde(default)]
    pub stores: BTreeMap<String, StoreSettings>,
    /// Per consumer (a step, or `host` for the orders): `[steps.NAME] store = "NAME"`.
    /// A consumer not listed uses `WASAGA_STORE_URL`.
    #[serde(default)]
    pub steps: BTreeMap<String, StepSettings>,
}

/// One named store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://…`, `postgres://…` or `mssql://…`.
    pub url: String,
}

/// Where one consumer keeps its inbox, outbox, state and dead letters, and how its
/// failures are retried.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSettings {
    /// A name from `[stores]`; unset: the default store.
    #[serde(default)]
    pub store: Option<String>,
    /// Whether the step compensates (undoes effects on `order.cancelled`, commits them on
    /// `order.completed`): its retryable failures of those kinds are retried until they
    /// succeed. Default: true for `payment` and `inventory`, false for every other step,
    /// whose failures follow `WASAGA_MAX_ATTEMPTS` like any event.
    #[serde(default)]
    pub compensates: Option<bool>,
    /// `pinned`: every later event of an order runs on the version that handled its
    /// first event (a refund on the code that captured); `latest` (the default): on the
    /// serving version.
    #[serde(default)]
    pub versioning: Versioning,
    /// The share (0 to 1) of successful calls whose recording is kept for offline
    /// replay against a candidate; 0 by default.
    #[serde(default)]
    pub record_sample: f64,
    /// Kinds (`ns.name`) or namespaces (`ns.*`) of the saga this step owns besides its
    /// own `<name>.*`: only it may emit them. Default: `payment.*` for payment,
    /// `stock.*` for inventory; a claim here replaces the default owner.
    #[serde(default)]
    pub owns: Vec<String>,
    /// The key prefix of the step's per-order state (`<prefix><order id>`), which
    /// retention may remove once the order finished and its events are past the inbox
    /// and outbox retention; `""` keeps it forever. Default: `order/` for `inventory`,
    /// `payment/` for `payment`, none for every other step.
    #[serde(default)]
    pub order_state: Option<String>,
    /// JSON pointers (RFC 6901, e.g. `/payment/card_token`) of payload fields replaced
    /// by `"[redacted]"` in this step's recordings (dead letters and samples) when they
    /// are written; empty by default.
    #[serde(default)]
    pub redact: Vec<String>,
}

/// A client of the order API and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// `env:VAR` (the key is read from that environment variable, so it stays out of the
    /// file), or the key itself; at least 16 characters. Sent as `Authorization: Bearer`.
    pub token: SecretString,
    /// Any of `place`, `read`, `cancel`.
    pub scopes: Vec<Scope>,
}

/// What a client key allows on the order API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/orders`.
    Place,
    /// `GET /api/orders/{id}`.
    Read,
    /// `POST /api/orders/{id}/cancel`.
    Cancel,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Place => "place",
            Scope::Read => "read",
            Scope::Cancel => "cancel",
        }
    }
}

/// When the console's session cookie carries `Secure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookie {
    /// When the request came over HTTPS as a proxy in front reports it.
    #[default]
    Auto,
    Always,
    Never,
}

/// A client key, resolved from its settings.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub name: String,
    pub token: SecretString,
    pub scopes: Vec<Scope>,
}

/// The per-order state prefixes of the saga's own steps.
pub const ORDER_STATE_PREFIXES: [(&str, &str); 2] = [("inventory", "order/"), ("payment", "payment/")];

/// Which version handles an order's later events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    /// Always the serving version.
    #[default]
    Latest,
    /// The version that handled the order's first event, while it is kept.
    Pinned,
}

/// Steps that compensate unless configured otherwise.
pub const COMPENSATING_STEPS: [&str; 2] = ["payment", "inventory"];

/// Every key of [`Settings`], as in `wasaga.toml` and (upper-cased, `WASAGA_`-prefixed)
/// in the environment.
const SETTING_KEYS: [&str; 45] = [
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
    "redrive_after_ms",
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

mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::PathBuf;

    pub fn http_addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("./data")
    }
    pub fn plugins_dir() -> PathBuf {
        PathBuf::from("./dist/plugins")
    }
    pub fn transport_url() -> String {
        "embedded".to_owned()
    }
    pub fn max_attempts() -> u32 {
        5
    }
    pub fn step_deadline_ms() -> u64 {
        1000
    }
    pub fn step_memory_mib() -> u64 {
        64
    }
    pub fn step_concurrency() -> u32 {
        32
    }
    pub fn retry_base_ms() -> u64 {
        200
    }
    pub fn namespace() -> String {
        "wasaga".to_owned()
    }
    pub fn shutdown_timeout_ms() -> u64 {
        10_000
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn body_timeout_ms() -> u64 {
        10_000
    }
    pub fn sqlite_synchronous() -> crate::store::SqliteSync {
        crate::store::SqliteSync::Full
    }
    pub fn store_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_component_mib() -> u64 {
        64
    }
    pub fn compile_timeout_ms() -> u64 {
        120_000
    }
    pub fn step_max_state_bytes() -> u64 {
        1024 * 1024
    }
    pub fn step_max_state_keys() -> u64 {
        1000
    }
    pub fn step_max_state_reads() -> u64 {
        10_000
    }
    pub fn step_max_state_read_bytes() -> u64 {
        16 * 1024 * 1024
    }
    pub fn step_max_archive_objects() -> u64 {
        100
    }
    pub fn step_max_archive_bytes() -> u64 {
        8 * 1024 * 1024
    }
    pub fn step_max_log_lines() -> u64 {
        100
    }
    pub fn redrive_after_ms() -> u64 {
        60_000
    }
    pub fn auto_rollback_failure_rate() -> f64 {
        0.2
    }
    pub fn auto_rollback_min_calls() -> u64 {
        20
    }
    pub fn auto_rollback_window_secs() -> u64 {
        300
    }
    pub fn recording_max_bytes() -> u64 {
        256 * 1024
    }
    pub fn retain_pins_secs() -> u64 {
        30 * 24 * 3600
    }
    pub fn console_session_secs() -> u64 {
        8 * 3600
    }
    pub fn auth_failures_per_minute() -> u32 {
        10
    }
    pub fn maintenance_interval_ms() -> u64 {
        5_000
    }
    pub fn retain_inbox_secs() -> u64 {
        7 * 24 * 3600
    }
    pub fn retain_outbox_secs() -> u64 {
        30 * 24 * 3600
    }
    pub fn retain_idempotency_secs() -> u64 {
        7 * 24 * 3600
    }
}

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
            http_addr: defaults::http_addr(),
            data_dir: defaults::data_dir(),
            plugins_dir: defaults::plugins_dir(),
            admin_token: None,
            store_url: None,
            transport_url: defaults::transport_url(),
            stream_brokers: None,
            archive_url: None,
            max_attempts: defaults::max_attempts(),
            step_deadline_ms: defaults::step_deadline_ms(),
            step_memory_mib: defaults::step_memory_mib(),
            step_concurrency: defaults::step_concurrency(),
            retry_base_ms: defaults::retry_base_ms(),
            namespace: defaults::namespace(),
            host_id: None,
            shutdown_timeout_ms: defaults::shutdown_timeout_ms(),
            request_timeout_ms: defaults::request_timeout_ms(),
            body_timeout_ms: defaults::body_timeout_ms(),
            sqlite_synchronous: defaults::sqlite_synchronous(),
            store_timeout_ms: defaults::store_timeout_ms(),
            max_component_mib: defaults::max_component_mib(),
            compile_timeout_ms: defaults::compile_timeout_ms(),
            step_max_state_bytes: defaults::step_max_state_bytes(),
            step_max_state_keys: defaults::step_max_state_keys(),
            step_max_state_reads: defaults::step_max_state_reads(),
            step_max_state_read_bytes: defaults::step_max_state_read_bytes(),
            step_max_archive_objects: defaults::step_max_archive_objects(),
            step_max_archive_bytes: defaults::step_max_archive_bytes(),
            step_max_log_lines: defaults::step_max_log_lines(),
            redrive_after_ms: defaults::redrive_after_ms(),
            maintenance_interval_ms: defaults::maintenance_interval_ms(),
            auto_rollback_failure_rate: defaults::auto_rollback_failure_rate(),
            auto_rollback_min_calls: defaults::auto_rollback_min_calls(),
            auto_rollback_window_secs: defaults::auto_rollback_window_secs(),
            recording_max_bytes: defaults::recording_max_bytes(),
            retain_pins_secs: defaults::retain_pins_secs(),
            console_session_secs: defaults::console_session_secs(),
            retain_inbox_secs: defaults::retain_inbox_secs(),
            retain_outbox_secs: defaults::retain_outbox_secs(),
            retain_idempotency_secs: defaults::retain_idempotency_secs(),
            stream_replication: None,
            console_secure_cookie: SecureCookie::default(),
            auth_failures_per_minute: defaults::auth_failures_per_minute(),
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

    /// Check ranges that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: &str| Err(ConfigError::Invalid { name, reason: reason.to_owned() });
        if self.max_attempts == 0 {
            return invalid("WASAGA_MAX_ATTEMPTS", "must be at least 1");
        }
        if !(1..=600_000).contains(&self.step_deadline_ms) {
            return invalid("WASAGA_STEP_DEADLINE_MS", "must be between 1 and 600000");
        }
        if !(1..=4096).contains(&self.step_memory_mib) {
            return invalid("WASAGA_STEP_MEMORY_MIB", "must be between 1 and 4096");
        }
        if !(1..=1024).contains(&self.step_concurrency) {
            return invalid("WASAGA_STEP_CONCURRENCY", "must be between 1 and 1024");
        }
        if !(1..=600_000).contains(&self.retry_base_ms) {
            return invalid("WASAGA_RETRY_BASE_MS", "must be between 1 and 600000");
        }
        if let Some(token) = &self.admin_token
            && secrecy::ExposeSecret::expose_secret(token).trim().is_empty()
        {
            return invalid("WASAGA_ADMIN_TOKEN", "must not be empty (leave it unset to generate one)");
        }
        if let Some(host_id) = &self.host_id
            && (host_id.is_empty() || host_id.len() > 128 || host_id.chars().any(char::is_control))
        {
            return invalid("WASAGA_HOST_ID", "1 to 128 printable characters");
        }
        if let Some(per_step) = self.step_concurrency_per_step
            && !(1..=self.step_concurrency).contains(&per_step)
        {
            return invalid("WASAGA_STEP_CONCURRENCY_PER_STEP", "must be between 1 and WASAGA_STEP_CONCURRENCY");
        }
        for (name, value, low, high) in [
            ("WASAGA_SHUTDOWN_TIMEOUT_MS", self.shutdown_timeout_ms, 0, 3_600_000),
            ("WASAGA_REQUEST_TIMEOUT_MS", self.request_timeout_ms, 100, 3_600_000),
            ("WASAGA_BODY_TIMEOUT_MS", self.body_timeout_ms, 100, 3_600_000),
            ("WASAGA_STORE_TIMEOUT_MS", self.store_timeout_ms, 100, 3_600_000),
            ("WASAGA_MAX_COMPONENT_MIB", self.max_component_mib, 1, 1024),
            ("WASAGA_COMPILE_TIMEOUT_MS", self.compile_timeout_ms, 100, 3_600_000),
            ("WASAGA_STEP_MAX_STATE_BYTES", self.step_max_state_bytes, 1, 1 << 30),
            ("WASAGA_STEP_MAX_STATE_KEYS", self.step_max_state_keys, 1, 1_000_000),
            ("WASAGA_STEP_MAX_STATE_READS", self.step_max_state_reads, 1, 1_000_000),
            ("WASAGA_STEP_MAX_STATE_READ_BYTES", self.step_max_state_read_bytes, 1, 1 << 30),
            ("WASAGA_STEP_MAX_ARCHIVE_OBJECTS", self.step_max_archive_objects, 0, 100_000),
            ("WASAGA_STEP_MAX_ARCHIVE_BYTES", self.step_max_archive_bytes, 0, 1 << 30),
            ("WASAGA_STEP_MAX_LOG_LINES", self.step_max_log_lines, 0, 1_000_000),
            ("WASAGA_REDRIVE_AFTER_MS", self.redrive_after_ms, 100, 86_400_000),
            ("WASAGA_MAINTENANCE_INTERVAL_MS", self.maintenance_interval_ms, 100, 3_600_000),
            ("WASAGA_AUTO_ROLLBACK_MIN_CALLS", self.auto_rollback_min_calls, 1, 1_000_000),
            ("WASAGA_AUTO_ROLLBACK_WINDOW_SECS", self.auto_rollback_window_secs, 1, 30 * 86_400),
            ("WASAGA_RECORDING_MAX_BYTES", self.recording_max_bytes, 1024, 64 * 1024 * 1024),
            ("WASAGA_RETAIN_PINS_SECS", self.retain_pins_secs, 1, 10 * 365 * 86_400),
            ("WASAGA_CONSOLE_SESSION_SECS", self.console_session_secs, 1, 30 * 86_400),
            ("WASAGA_RETAIN_INBOX_SECS", self.retain_inbox_secs, 1, 10 * 365 * 86_400),
            ("WASAGA_RETAIN_OUTBOX_SECS", self.retain_outbox_secs, 1, 10 * 365 * 86_400),
            ("WASAGA_RETAIN_IDEMPOTENCY_SECS", self.retain_idempotency_secs, 1, 10 * 365 * 86_400),
        ] {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::Invalid { name, reason: format!("must be between {low} and {high}") });
            }
        }
        if !(0.0..=1.0).contains(&self.auto_rollback_failure_rate) {
            return invalid("WASAGA_AUTO_ROLLBACK_FAILURE_RATE", "must be between 0 and 1");
        }
        for (step, mapping) in &self.steps {
            if !(0.0..=1.0).contains(&mapping.record_sample) {
                return Err(ConfigError::Invalid {
                    name: "steps",
                    reason: format!("[steps.{step}] record_sample must be between 0 and 1"),
                });
            }
            if let Some(pointer) = mapping.redact.iter().find(|p| !p.starts_with('/')) {
                return Err(ConfigError::Invalid {
                    name: "steps",
                    reason: format!(
                        "[steps.{step}] redact: {pointer:?} is not a JSON pointer to a field (e.g. \"/payment/card_token\")"
                    ),
                });
            }
        }
        if let Some(replication) = self.stream_replication
            && !(1..=16).contains(&replication)
        {
            return invalid("WASAGA_STREAM_REPLICATION", "must be between 1 and 16 (unset: the broker's default)");
        }
        self.owners()?;
        if u128::from(self.redrive_after_ms) * 2 >= u128::from(self.retain_inbox_secs) * 1000 {
            // A redriven event must still have its inbox row wherever it was handled.
            return invalid("WASAGA_REDRIVE_AFTER_MS", "must be under half of WASAGA_RETAIN_INBOX_SECS");
        }
        for (step, mapping) in &self.steps {
            if let Some(store) = &mapping.store
                && !self.stores.contains_key(store)
            {
                return Err(ConfigError::Invalid {
                    name: "steps",
                    reason: format!("[steps.{step}] uses store {store:?}, which no [stores.{store}] defines"),
                });
            }
        }
        if self.transport_url != "embedded" {
            match url::Url::parse(&self.transport_url) {
                Ok(url) if matches!(url.scheme(), "amqp" | "amqps") && url.host_str().is_some() => {}
                _ => return invalid("WASAGA_TRANSPORT_URL", "expected `embedded` or amqp://user:pass@host:port/vhost"),
            }
        }
        if let Some(brokers) = &self.stream_brokers {
            let valid = |b: &str| {
                b.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            };
            if brokers.split(',').any(|b| !valid(b.trim())) {
                return invalid("WASAGA_STREAM_BROKERS", "expected host:port[,host:port…]");
            }
        }
        if let Some(url) = &self.archive_url {
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("file" | "memory" | "az" | "azure" | "s3")) {
                return invalid("WASAGA_ARCHIVE_URL", "expected file://<dir>, az://<container> or s3://<bucket>");
            }
        }
        if !(1..=10_000).contains(&self.auth_failures_per_minute) {
            return invalid("WASAGA_AUTH_FAILURES_PER_MINUTE", "must be between 1 and 10000");
        }
        let clients = self.client_keys()?;
        if clients.is_empty() && !self.http_addr.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                name: "WASAGA_HTTP_ADDR",
                reason: format!(
                    "{} is reachable from other machines, but no client key is configured, so anyone \
                     there could place and cancel orders: add [clients.NAME] with token = \"env:VAR\" and \
                     scopes to the config file, or listen on a loopback address such as 127.0.0.1",
                    self.http_addr
                ),
            });
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.namespace.is_empty() || self.namespace.len() > 64 || !self.namespace.chars().all(name_ok) {
            return invalid("WASAGA_NAMESPACE", "1 to 64 letters, digits, '.', '_' or '-'");
        }
        Ok(())
    }

    /// The client keys of `[clients]`, each `env:VAR` read from the environment.
    pub fn client_keys(&self) -> Result<Vec<ClientKey>, ConfigError> {
        use secrecy::ExposeSecret;
        let mut keys: Vec<ClientKey> = Vec::with_capacity(self.clients.len());
        for (name, client) in &self.clients {
            let invalid =
                |reason: String| ConfigError::Invalid { name: "clients", reason: format!("[clients.{name}] {reason}") };
            let configured = client.token.expose_secret();
            let token = match configured.strip_prefix("env:") {
                Some(var) => std::env::var(var)
                    .map_err(|_| invalid(format!("token names the environment variable {var}, which is not set")))?,
                None => configured.to_owned(),
            };
            // Compared trimmed, as a presented token is (see `http::access::token_digest`).
            if token.trim().chars().count() < 16 {
                return Err(invalid("token must have at least 16 characters".to_owned()));
            }
            if client.scopes.is_empty() {
                return Err(invalid("scopes must name at least one of place, read, cancel".to_owned()));
            }
            if let Some(other) = keys.iter().find(|k| k.token.expose_secret().trim() == token.trim()) {
                return Err(invalid(format!("token is the same as [clients.{}]'s", other.name)));
            }
            keys.push(ClientKey {
                name: name.clone(),
                token: SecretString::from(token),
                scopes: client.scopes.clone(),
            });
        }
        Ok(keys)
    }

    /// This host's name in the fleet: the configured one, or the host name and a digest
    /// of the data folder (two hosts on one machine differ by their folders).
    pub fn host_id(&self) -> String {
        if let Some(id) = &self.host_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let digest = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
        format!("{}-{}", if host.is_empty() { "wasaga" } else { host }, &hex::encode(digest)[..8])
    }

    /// Who owns which event kind: the defaults with `[steps.NAME] owns` on top.
    pub fn owners(&self) -> Result<crate::event::Owners, ConfigError> {
        let claims = self.steps.iter().map(|(step, s)| (step.as_str(), s.owns.as_slice()));
        crate::event::Owners::with_claims(claims)
            .map_err(|error| ConfigError::Invalid { name: "steps", reason: error.to_string() })
    }

    /// Whether `step` compensates (see [`StepSettings::compensates`]).
    pub fn compensates(&self, step: &str) -> bool {
        self.steps.get(step).and_then(|s| s.compensates).unwrap_or(COMPENSATING_STEPS.contains(&step))
    }

    /// `(step, key prefix)` of every step whose per-order state retention may remove.
    pub fn order_state(&self) -> Vec<(String, String)> {
        let mut steps: std::collections::BTreeMap<String, String> =
            ORDER_STATE_PREFIXES.iter().map(|(step, prefix)| ((*step).to_owned(), (*prefix).to_owned())).collect();
        for (name, step) in &self.steps {
            if let Some(prefix) = &step.order_state {
                steps.insert(name.clone(), prefix.clone());
            }
        }
        // An empty prefix would match every key of the step.
        steps.into_iter().filter(|(_, prefix)| !prefix.is_empty()).collect()
    }

    /// Steps whose orders are pinned to a version.
    pub fn pinned_steps(&self) -> std::collections::BTreeSet<String> {
        self.steps.iter().filter(|(_, s)| s.versioning == Versioning::Pinned).map(|(n, _)| n.clone()).collect()
    }

    /// The automatic rollback policy.
    pub fn auto_rollback(&self) -> crate::registry::AutoRollback {
        crate::registry::AutoRollback {
            failure_rate: self.auto_rollback_failure_rate,
            min_calls: self.auto_rollback_min_calls,
            window: Duration::from_secs(self.auto_rollback_window_secs),
        }
    }

    /// What every store applies when it opens.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            sqlite_synchronous: self.sqlite_synchronous,
            statement_timeout: Duration::from_millis(self.store_timeout_ms),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// What one step call may make the host hold.
    pub fn call_limits(&self) -> crate::runtime::CallLimits {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        crate::runtime::CallLimits {
            state_bytes: size(self.step_max_state_bytes),
            state_keys: size(self.step_max_state_keys),
            state_reads: size(self.step_max_state_reads),
            state_read_bytes: size(self.step_max_state_read_bytes),
            archive_objects: size(self.step_max_archive_objects),
            archive_bytes: size(self.step_max_archive_bytes),
            log_lines: size(self.step_max_log_lines),
            ..crate::runtime::CallLimits::default()
        }
    }

    /// The Kafka topic of the event stream.
    pub fn stream_topic(&self) -> String {
        format!("{}.events", self.namespace)
    }

    pub fn step_deadline(&self) -> Duration {
        Duration::from_millis(self.step_deadline_ms)
    }

    /// Where compiled components are cached.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.data_dir.join("compile-cache")
    }

    /// Where a generated admin token is kept.
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    /// The store URL, defaulting to a SQLite file in the data folder.
    pub fn store_url(&self) -> String {
        match &self.store_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("wasaga.db").display()),
        }
    }

    /// The archive URL, defaulting to a folder in the data folder.
    pub fn archive_url(&self) -> String {
        match &self.archive_url {
            Some(url) => url.clone(),
            None => {
                let dir = self.data_dir.join("archive");
                let dir = std::path::absolute(&dir).unwrap_or(dir);
                format!("file://{}", dir.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_the_variable() {
        let check = |settings: Settings, variable: &str| {
            let error = settings.validate().expect_err("must be refused").to_string();
            assert!(error.contains(variable), "{error}");
        };
        check(Settings { max_attempts: 0, ..Settings::default() }, "WASAGA_MAX_ATTEMPTS");
        check(Settings { step_deadline_ms: 0, ..Settings::default() }, "WASAGA_STEP_DEADLINE_MS");
        check(Settings { step_memory_mib: 100_000, ..Settings::default() }, "WASAGA_STEP_MEMORY_MIB");
        check(Settings { transport_url: "kafka://x".into(), ..Settings::default() }, "WASAGA_TRANSPORT_URL");
        check(Settings { stream_brokers: Some("localhost".into()), ..Settings::default() }, "WASAGA_STREAM_BROKERS");
        check(Settings { archive_url: Some("gs://b".into()), ..Settings::default() }, "WASAGA_ARCHIVE_URL");
        check(Settings { namespace: "a b".into(), ..Settings::default() }, "WASAGA_NAMESPACE");
        check(Settings { admin_token: Some(" ".to_owned().into()), ..Settings::default() }, "WASAGA_ADMIN_TOKEN");
        check(Settings { max_component_mib: 0, ..Settings::default() }, "WASAGA_MAX_COMPONENT_MIB");
        check(Settings { stream_replication: Some(0), ..Settings::default() }, "WASAGA_STREAM_REPLICATION");
        let amqp = Settings { transport_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(), ..Settings::default() };
        assert!(amqp.validate().is_ok());
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn every_field_has_a_key() {
        // Two objects: one would take `json!` past its recursion limit.
        let mut fields = serde_json::json!({
            "step_max_state_reads": 1, "step_max_state_read_bytes": 1,
            "console_secure_cookie": "always", "auth_failures_per_minute": 5, "metrics_addr": "127.0.0.1:2",
            "request_timeout_ms": 100, "body_timeout_ms": 100
        });
        let first = serde_json::json!({
            "http_addr": "127.0.0.1:1", "data_dir": "d", "plugins_dir": "p", "admin_token": "t",
            "store_url": "s", "transport_url": "embedded", "stream_brokers": "b", "archive_url": "a",
            "max_attempts": 1, "step_deadline_ms": 1, "step_memory_mib": 1, "step_concurrency": 1,
            "retry_base_ms": 1, "namespace": "n", "host_id": "h", "shutdown_timeout_ms": 1,
            "sqlite_synchronous": "normal", "store_timeout_ms": 100, "max_component_mib": 1,
            "compile_timeout_ms": 100, "step_max_state_bytes": 1, "step_max_state_keys": 1,
            "step_max_archive_objects": 1, "step_max_archive_bytes": 1, "step_max_log_lines": 1,
            "redrive_after_ms": 100, "maintenance_interval_ms": 100, "retain_inbox_secs": 1,
            "auto_rollback_failure_rate": 0.5, "auto_rollback_min_calls": 1, "auto_rollback_window_secs": 1,
            "recording_max_bytes": 1024, "retain_pins_secs": 1, "retain_outbox_secs": 1, "console_session_secs": 1,
            "retain_idempotency_secs": 1, "stream_replication": 1, "step_concurrency_per_step": 1
        });
        if let (Some(all), serde_json::Value::Object(first)) = (fields.as_object_mut(), first) {
            all.extend(first);
        }
        let keys: Vec<&str> = fields.as_object().expect("object").keys().map(String::as_str).collect();
        // `stores`, `steps` and `clients` are maps, set in the TOML file only.
        assert_eq!(keys.len(), SETTING_KEYS.len());
        assert!(keys.iter().all(|k| SETTING_KEYS.contains(k)));
        serde_json::from_value::<Settings>(fields).expect("every key is a field");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
    fn the_environment_sets_known_keys_and_ignores_other_wasaga_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WASAGA_HTTP_ADDR", "127.0.0.1:9999");
            jail.set_env("WASAGA_STEP_MEMORY_MIB", "16");
            jail.set_env("WASAGA_URL", "http://elsewhere");
            let settings = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(settings.http_addr.port(), 9999);
            assert_eq!(settings.step_memory_mib, 16);
            jail.set_env("WASAGA_STEP_MEMORY_MIB", "lots");
            let error = Settings::load(None).expect_err("not a number").to_string();
            assert!(error.contains("step_memory_mib") || error.contains("STEP_MEMORY_MIB"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
    fn per_step_stores_come_from_the_file_and_must_exist() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "wasaga.toml",
                r#"
                    store_url = "sqlite://orders.db"
                    [stores.payments]
                    url = "postgres://db/payments"
                    [steps.payment]
                    store = "payments"
                "#,
            )?;
            let settings = Settings::load(Some(Path::new("wasaga.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(settings.stores["payments"].url, "postgres://db/payments");
            assert_eq!(settings.steps["payment"].store.as_deref(), Some("payments"));
            jail.create_file("bad.toml", "[steps.payment]\nstore = \"nowhere\"\n")?;
            let error = Settings::load(Some(Path::new("bad.toml"))).expect_err("unknown store").to_string();
            assert!(error.contains("nowhere"), "{error}");
            jail.create_file("redact.toml", "[steps.payment]\nredact = [\"/payment/card_token\", \"card_token\"]\n")?;
            let error = Settings::load(Some(Path::new("redact.toml"))).expect_err("not a pointer").to_string();
            assert!(error.contains("redact") && error.contains("\"card_token\""), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
    fn the_shipped_examples_load() {
        // Inside a jail: the jails of other tests set WASAGA_ variables process-wide.
        figment::Jail::expect_with(|jail| {
            // compose.yml sets the shop's client key.
            jail.set_env("WASAGA_SHOP_TOKEN", "a-client-key-of-the-shop");
            for example in ["wasaga.toml", "polyglot.toml"] {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(example);
                let settings = Settings::load(Some(&path)).map_err(|e| format!("{example}: {e}"))?;
                if example == "wasaga.toml" {
                    assert_eq!(settings.pinned_steps().into_iter().collect::<Vec<_>>(), ["payment"]);
                    assert_eq!(settings.steps["inventory"].redact, ["/payment/card_token"]);
                }
            }
            Ok(())
        });
    }

    #[test]
    fn a_server_reachable_from_other_machines_needs_a_client_key() {
        let open = Settings { http_addr: "0.0.0.0:8080".parse().expect("address"), ..Settings::default() };
        let error = open.validate().expect_err("refused").to_string();
        assert!(error.contains("WASAGA_HTTP_ADDR") && error.contains("[clients.NAME]"), "{error}");
        let client = ClientSettings { token: "a-key-of-sixteen-chars".to_owned().into(), scopes: vec![Scope::Place] };
        let guarded = Settings { clients: BTreeMap::from([("shop".to_owned(), client)]), ..open };
        assert!(guarded.validate().is_ok());
        let ipv6 = Settings { http_addr: "[::1]:8080".parse().expect("address"), ..Settings::default() };
        assert!(ipv6.validate().is_ok(), "loopback needs no client key");
    }

    #[test]
    fn client_keys_are_long_scoped_distinct_and_read_from_the_environment() {
        let check = |clients: &[(&str, &str, &[Scope])], expected: &str| {
            let clients = clients
                .iter()
                .map(|(name, token, scopes)| {
                    ((*name).to_owned(), ClientSettings { token: (*token).to_owned().into(), scopes: scopes.to_vec() })
                })
                .collect();
            let error = Settings { clients, ..Settings::default() }.validate().expect_err("refused").to_string();
            assert!(error.contains(expected), "{error} lacks {expected}");
        };
        check(&[("shop", "short", &[Scope::Read])], "[clients.shop] token must have at least 16");
        check(&[("shop", "sixteen-chars-and-more", &[])], "[clients.shop] scopes");
        check(
            &[("a", "sixteen-chars-and-more", &[Scope::Read]), ("b", "sixteen-chars-and-more", &[Scope::Place])],
            "same as [clients.a]",
        );
        check(
            &[("shop", "env:WASAGA_TEST_NO_SUCH_VARIABLE", &[Scope::Read])],
            "WASAGA_TEST_NO_SUCH_VARIABLE, which is not set",
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
    fn a_missing_config_file_is_an_error() {
        figment::Jail::expect_with(|_jail| {
            let error = Settings::load(Some(Path::new("/nonexistent/wasaga.toml"))).expect_err("missing");
            assert!(error.to_string().contains("does not exist"));
            Ok(())
        });
    }
}
