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
    check(Settings { batch_linger_ms: 5_000, ..Settings::default() }, "WASAGA_BATCH_LINGER_MS");
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
        "request_timeout_ms": 100, "body_timeout_ms": 100, "step_max_http_requests": 1,
        "step_max_http_request_bytes": 1, "step_max_http_response_bytes": 1, "order_deadline_secs": 1,
        "step_max_timer_secs": 1, "batch_linger_ms": 1
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

#[test]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
fn outbound_settings_name_what_is_wrong_and_read_secrets_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("WASAGA_TEST_GATEWAY_AUTH", "Bearer sk_live_x");
        jail.create_file(
            "wasaga.toml",
            r#"
                [steps.payment]
                outbound = ["http://127.0.0.1:9911", "https://api.example.com"]
                [steps.payment.outbound_headers]
                authorization = "env:WASAGA_TEST_GATEWAY_AUTH"
                [steps.payment.env]
                WASAGA_GATEWAY_URL = "http://127.0.0.1:9911"
            "#,
        )?;
        let settings = Settings::load(Some(Path::new("wasaga.toml"))).map_err(|e| e.to_string())?;
        let policies = settings.outbound_policies().map_err(|e| e.to_string())?;
        let payment = &policies["payment"];
        let targets: Vec<String> = payment.targets.iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["http://127.0.0.1:9911", "https://api.example.com:443"]);
        assert_eq!(payment.headers[0].1, "Bearer sk_live_x");
        assert!(payment.headers[0].1.is_sensitive());
        // The secret is not in the policy's debug output.
        assert!(!format!("{payment:?}").contains("sk_live_x"));
        for (file, body, says) in [
            ("target.toml", "[steps.payment]\noutbound = [\"http://x/path\"]\n", "outbound"),
            ("scheme.toml", "[steps.payment]\noutbound = [\"ftp://x\"]\n", "http or https"),
            (
                "unset.toml",
                "[steps.payment]\noutbound = [\"http://x\"]\n[steps.payment.outbound_headers]\nauthorization = \"env:WASAGA_TEST_NO_SUCH_VARIABLE\"\n",
                "WASAGA_TEST_NO_SUCH_VARIABLE",
            ),
            ("nowhere.toml", "[steps.payment.outbound_headers]\nauthorization = \"k\"\n", "lists no target"),
            ("env.toml", "[steps.payment.env]\n\"A-B\" = \"x\"\n", "env"),
        ] {
            jail.create_file(file, body)?;
            let error = Settings::load(Some(Path::new(file))).expect_err(file).to_string();
            assert!(error.contains("[steps.payment]") && error.contains(says), "{file}: {error}");
        }
        Ok(())
    });
}
