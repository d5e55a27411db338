//! Settings mapped to each module's configuration, and the paths and URLs derived from them.

use super::*;
use crate::runtime::{Allocator, RuntimeConfig};
use crate::saga::{BATCH_SIZE, COMPENSATING_STEPS, RETRY_CAP, SagaConfig};
use crate::store::FleetStore;
use crate::stream::KafkaSettings;
use crate::transport::TransportOptions;
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;

impl Settings {
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
            http_requests: size(self.step_max_http_requests),
            http_request_bytes: size(self.step_max_http_request_bytes),
            http_response_bytes: size(self.step_max_http_response_bytes),
            timer_delay_ms: self.step_max_timer_secs.saturating_mul(1000),
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

    /// The saga's retries, batching, upkeep and per-step policies.
    pub fn saga_config(&self) -> Result<SagaConfig, ConfigError> {
        let steps = self.step_names();
        Ok(SagaConfig {
            max_attempts: self.max_attempts,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_cap: RETRY_CAP,
            batch_size: BATCH_SIZE,
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            compensating: steps.iter().filter(|step| self.compensates(step)).cloned().collect(),
            redrive_after: Duration::from_millis(self.redrive_after_ms),
            order_deadline: (self.order_deadline_secs > 0).then(|| Duration::from_secs(self.order_deadline_secs)),
            retain_inbox: Duration::from_secs(self.retain_inbox_secs),
            retain_outbox: Duration::from_secs(self.retain_outbox_secs),
            retain_idempotency: Duration::from_secs(self.retain_idempotency_secs),
            maintenance_every: Duration::from_millis(self.maintenance_interval_ms),
            pinned: self.pinned_steps(),
            record_sample: self
                .steps
                .iter()
                .filter(|(_, s)| s.record_sample > 0.0)
                .map(|(name, s)| (name.clone(), s.record_sample))
                .collect(),
            redact: self
                .steps
                .iter()
                .filter(|(_, s)| !s.redact.is_empty())
                .map(|(name, s)| (name.clone(), s.redact.clone()))
                .collect(),
            auto_rollback: self.auto_rollback(),
            recording_max_bytes: usize::try_from(self.recording_max_bytes).unwrap_or(usize::MAX),
            retain_pins: Duration::from_secs(self.retain_pins_secs),
            owners: self.owners()?,
            order_state: self.order_state(),
        })
    }

    /// The saga's own steps and every configured one.
    fn step_names(&self) -> Vec<String> {
        let mut names: Vec<String> = COMPENSATING_STEPS.iter().map(|s| (*s).to_owned()).collect();
        names.extend(self.steps.keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// The WebAssembly runtime's limits and caches.
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            deadline: self.step_deadline(),
            memory_mib: self.step_memory_mib,
            concurrency: self.step_concurrency,
            per_step_concurrency: self.step_concurrency_per_step.unwrap_or((self.step_concurrency / 2).max(1)),
            cache_dir: Some(self.compile_cache_dir()),
            allocator: Allocator::Pooling,
            limits: self.call_limits(),
            max_component_bytes: usize::try_from(self.max_component_mib.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            compile_timeout: Duration::from_millis(self.compile_timeout_ms),
            // Checked by `validate` when the settings were loaded.
            outbound: self.outbound_policies().unwrap_or_default(),
            ..RuntimeConfig::default()
        }
    }

    /// What the transport at `transport_url` is opened with.
    pub fn transport_options(&self, host_id: &str) -> TransportOptions {
        TransportOptions {
            namespace: self.namespace.clone(),
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_cap: RETRY_CAP,
            host_id: host_id.to_owned(),
        }
    }

    /// The event stream, when brokers are configured; its consumer leases in `leases`.
    pub fn kafka_settings(&self, host_id: &str, leases: Arc<dyn FleetStore>) -> Option<KafkaSettings> {
        Some(KafkaSettings {
            brokers: self.stream_brokers.clone()?,
            topic: self.stream_topic(),
            namespace: self.namespace.clone(),
            instance: host_id.to_owned(),
            leases: Some(leases),
            replication: self.stream_replication,
        })
    }

    /// Named stores by URL, and which consumer uses which.
    pub fn store_routes(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let named = self.stores.iter().map(|(name, s)| (name.clone(), s.url.clone())).collect();
        let routes =
            self.steps.iter().filter_map(|(step, s)| s.store.clone().map(|store| (step.clone(), store))).collect();
        (named, routes)
    }
}
