//! Ranges and shapes the types alone do not check; every error names the setting.

use super::*;

impl Settings {
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
            ("WASAGA_STEP_MAX_HTTP_REQUESTS", self.step_max_http_requests, 0, 10_000),
            ("WASAGA_STEP_MAX_HTTP_REQUEST_BYTES", self.step_max_http_request_bytes, 0, 1 << 30),
            ("WASAGA_STEP_MAX_HTTP_RESPONSE_BYTES", self.step_max_http_response_bytes, 0, 1 << 30),
            ("WASAGA_STEP_MAX_TIMER_SECS", self.step_max_timer_secs, 0, 365 * 86_400),
            ("WASAGA_REDRIVE_AFTER_MS", self.redrive_after_ms, 100, 86_400_000),
            ("WASAGA_BATCH_LINGER_MS", self.batch_linger_ms, 0, 1_000),
            ("WASAGA_ORDER_DEADLINE_SECS", self.order_deadline_secs, 0, 30 * 86_400),
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
        self.outbound_policies()?;
        self.hooks()?;
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

    /// Per step: `outbound` targets, `outbound_headers` (each `env:VAR` read from the
    /// environment) and `env` settings.
    pub fn outbound_policies(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::runtime::OutboundPolicy>, ConfigError> {
        use secrecy::ExposeSecret;
        let mut policies = std::collections::BTreeMap::new();
        for (step, settings) in &self.steps {
            let invalid = |field: &str, reason: String| ConfigError::Invalid {
                name: "steps",
                reason: format!("[steps.{step}] {field}: {reason}"),
            };
            let mut policy = crate::runtime::OutboundPolicy::default();
            for target in &settings.outbound {
                policy.targets.push(crate::runtime::Target::parse(target).map_err(|e| invalid("outbound", e))?);
            }
            for (name, configured) in &settings.outbound_headers {
                let header = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid("outbound_headers", format!("{name:?} is not a header name")))?;
                let configured = configured.expose_secret();
                let value = match configured.strip_prefix("env:") {
                    Some(var) => std::env::var(var).map_err(|_| {
                        invalid(
                            "outbound_headers",
                            format!("{name} names the environment variable {var}, which is not set"),
                        )
                    })?,
                    None => configured.to_owned(),
                };
                let mut value = http::HeaderValue::from_str(&value)
                    .map_err(|_| invalid("outbound_headers", format!("the value of {name} is not a header value")))?;
                // Kept out of debug output and HPACK tables.
                value.set_sensitive(true);
                policy.headers.push((header, value));
            }
            if !settings.outbound_headers.is_empty() && settings.outbound.is_empty() {
                return Err(invalid(
                    "outbound_headers",
                    "set, but outbound lists no target to send them to".to_owned(),
                ));
            }
            for (name, value) in &settings.env {
                let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !name_ok || value.contains('\0') {
                    return Err(invalid(
                        "env",
                        format!("{name:?}: names are letters, digits and '_'; values hold no NUL"),
                    ));
                }
                policy.env.push((name.clone(), value.clone()));
            }
            policies.insert(step.clone(), policy);
        }
        Ok(policies)
    }

    /// The steps taking webhooks: `hook_secret` (`env:VAR` read from the environment, at
    /// least 16 characters) and the pointer to the order id.
    pub fn hooks(&self) -> Result<std::collections::BTreeMap<String, crate::saga::hooks::Hook>, ConfigError> {
        use secrecy::ExposeSecret;
        let mut hooks = std::collections::BTreeMap::new();
        for (step, settings) in &self.steps {
            let invalid = |field: &str, reason: String| ConfigError::Invalid {
                name: "steps",
                reason: format!("[steps.{step}] {field}: {reason}"),
            };
            let Some(configured) = &settings.hook_secret else {
                if settings.hook_order_id.is_some() {
                    return Err(invalid("hook_order_id", "set, but hook_secret is not".to_owned()));
                }
                continue;
            };
            let configured = configured.expose_secret();
            let secret = match configured.strip_prefix("env:") {
                Some(var) => std::env::var(var).map_err(|_| {
                    invalid("hook_secret", format!("names the environment variable {var}, which is not set"))
                })?,
                None => configured.to_owned(),
            };
            if secret.chars().count() < 16 {
                return Err(invalid("hook_secret", "must have at least 16 characters".to_owned()));
            }
            let order_id = settings.hook_order_id.clone().unwrap_or_else(|| "/order_id".to_owned());
            if !order_id.starts_with('/') {
                return Err(invalid("hook_order_id", format!("{order_id:?} is not a JSON pointer (RFC 6901)")));
            }
            hooks.insert(step.clone(), crate::saga::hooks::Hook { secret: SecretString::from(secret), order_id });
        }
        Ok(hooks)
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
}
