//! Settings: defaults, then `wasaga.toml`, then `WASAGA_*` environment variables (which
//! win). Helpers derive every path and URL so no caller formats one itself.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
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
    /// First retry delay; each further retry doubles it (with jitter), up to 30 s.
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: u64,
    /// Prefix of every broker name: RabbitMQ exchange and queues, the Kafka topic
    /// (`<namespace>.events`) and consumer groups.
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
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

/// Where one consumer keeps its inbox, outbox, state and dead letters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSettings {
    /// A name from `[stores]`.
    pub store: String,
}

/// Every key of [`Settings`], as in `wasaga.toml` and (upper-cased, `WASAGA_`-prefixed)
/// in the environment.
const SETTING_KEYS: [&str; 14] = [
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
        for (step, mapping) in &self.steps {
            if !self.stores.contains_key(&mapping.store) {
                return Err(ConfigError::Invalid {
                    name: "steps",
                    reason: format!(
                        "[steps.{step}] uses store {:?}, which no [stores.{}] defines",
                        mapping.store, mapping.store
                    ),
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
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.namespace.is_empty() || self.namespace.len() > 64 || !self.namespace.chars().all(name_ok) {
            return invalid("WASAGA_NAMESPACE", "1 to 64 letters, digits, '.', '_' or '-'");
        }
        Ok(())
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
        let amqp = Settings { transport_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(), ..Settings::default() };
        assert!(amqp.validate().is_ok());
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn every_field_has_a_key() {
        let fields = serde_json::json!({
            "http_addr": "127.0.0.1:1", "data_dir": "d", "plugins_dir": "p", "admin_token": "t",
            "store_url": "s", "transport_url": "embedded", "stream_brokers": "b", "archive_url": "a",
            "max_attempts": 1, "step_deadline_ms": 1, "step_memory_mib": 1, "step_concurrency": 1,
            "retry_base_ms": 1, "namespace": "n"
        });
        let keys: Vec<&str> = fields.as_object().expect("object").keys().map(String::as_str).collect();
        // `stores` and `steps` are maps, set in the TOML file only.
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
            assert_eq!(settings.steps["payment"].store, "payments");
            jail.create_file("bad.toml", "[steps.payment]\nstore = \"nowhere\"\n")?;
            let error = Settings::load(Some(Path::new("bad.toml"))).expect_err("unknown store").to_string();
            assert!(error.contains("nowhere"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let error = Settings::load(Some(Path::new("/nonexistent/wasaga.toml"))).expect_err("missing");
        assert!(error.to_string().contains("does not exist"));
    }
}
