//! Steps that reach the world: the payment step charging the gateway simulator over HTTP
//! through the host. Each charge reaches the ledger once through retries, kills and
//! redeliveries (the host's idempotency keys); every cancelled charge is refunded once;
//! requests outside the allow-list fail the call naming the target; the gateway's key
//! never reaches the step, the log or a recording; replays and shadows send nothing.

use crate::crash::Server;
use crate::helpers::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wasaga_host::config::{Settings, StepSettings};
use wasaga_host::runtime::{CallError, MemoryState, OutboundPolicy, RuntimeConfig, Target};

const WAIT: Duration = Duration::from_secs(90);
/// The gateway's key in these tests; nothing but the gateway may ever see it.
pub(crate) const KEY: &str = "sk_test_5f2b9c0e7d1a4c3b";

/// A gateway demanding [`KEY`], on a free port: (base URL, gateway, server task).
pub(crate) async fn gateway() -> (String, Arc<wasaga_gateway::Gateway>, tokio::task::JoinHandle<()>) {
    let gateway = wasaga_gateway::Gateway::with_key(Duration::from_secs(30), KEY);
    let (url, task) = wasaga_gateway::serve(gateway.clone()).await.expect("the gateway serves");
    (url, gateway, task)
}

/// The payment step's settings for the gateway at `url`.
fn payment_settings(url: &str) -> StepSettings {
    StepSettings {
        outbound: vec![url.to_owned()],
        outbound_headers: BTreeMap::from([("authorization".to_owned(), SecretString::from(format!("Bearer {KEY}")))]),
        env: BTreeMap::from([("WASAGA_GATEWAY_URL".to_owned(), url.to_owned())]),
        record_sample: 1.0,
        ..StepSettings::default()
    }
}

/// The same as a settings file, for a `wasaga serve` process.
fn payment_toml(url: &str) -> String {
    format!(
        "[steps.payment]\noutbound = [\"{url}\"]\nrecord_sample = 1.0\n\n[steps.payment.env]\nWASAGA_GATEWAY_URL = \"{url}\"\n\n\
         [steps.payment.outbound_headers]\nauthorization = \"Bearer {KEY}\"\n"
    )
}

async fn app_calling(url: &str, tune: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.steps.insert("payment".to_owned(), payment_settings(url));
    tune(&mut settings);
    spawn_with(dir, settings).await
}

/// Every order against the gateway's ledger: no order charged twice, every completed
/// order charged once and not refunded, every cancelled order's charge refunded once.
/// Returns (charges, refunds).
pub(crate) fn check_ledger(ledger: &Value, orders: &[Value]) -> (usize, usize) {
    let charges = ledger["charges"].as_array().expect("charges");
    let refunds = ledger["refunds"].as_array().expect("refunds");
    let mut charged: HashMap<&str, Vec<&str>> = HashMap::new();
    for charge in charges {
        let order = charge["order_id"].as_str().expect("order id");
        charged.entry(order).or_default().push(charge["id"].as_str().expect("charge id"));
        let key = charge["idempotency_key"].as_str().expect("key");
        assert!(key.ends_with("/payment/0"), "the host made the key from the event: {key}");
    }
    let mut refunded: HashMap<&str, usize> = HashMap::new();
    for refund in refunds {
        *refunded.entry(refund["charge_id"].as_str().expect("charge id")).or_default() += 1;
    }
    for order in orders {
        let id = order["order_id"].as_str().expect("id");
        let charges = charged.get(id).map_or(&[][..], Vec::as_slice);
        assert!(charges.len() <= 1, "order {id} was charged {} times: {ledger}", charges.len());
        let refunds: usize = charges.iter().map(|c| refunded.get(c).copied().unwrap_or(0)).sum();
        match order["status"].as_str() {
            Some("completed") => assert_eq!((charges.len(), refunds), (1, 0), "completed order {id}: {ledger}"),
            Some("cancelled") => assert_eq!(refunds, charges.len(), "cancelled order {id}: {ledger}"),
            other => panic!("order {id} is {other:?}"),
        }
    }
    (charges.len(), refunds.len())
}

async fn terminal(app: &Api, ids: &[String]) {
    for id in ids {
        eventually(WAIT, "the order ends", async || {
            matches!(app.order(id).await["status"].as_str(), Some("completed" | "cancelled"))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_reach_the_ledger_once_through_retries_and_cancels_are_refunded_once() {
    let (url, gateway, server) = gateway().await;
    let app = app_calling(&url, |_| {}).await;
    app.stock_up("SKU-1", 100).await;
    let mut ids = Vec::new();
    for token in ["tok_ok", "tok_flaky_2", "tok_decline", "tok_ok", "tok_flaky_2"] {
        ids.push(app.place(&[("SKU-1", 1)], token).await);
    }
    // Cancelled at once: some before the charge (voided), some after (refunded), some
    // too late (completed); the ledger must match each.
    for _ in 0..6 {
        let id = app.place(&[("SKU-1", 2)], "tok_ok").await;
        app.cancel(&id).await;
        ids.push(id);
    }
    terminal(&app, &ids).await;
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 100)])).await;
    let orders = app.all_orders().await;
    eventually(WAIT, "every cancelled charge is refunded", async || {
        let ledger = gateway.ledger();
        let refunds = ledger["refunds"].as_array().map_or(0, Vec::len);
        let charges_of_cancelled = ledger["charges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| orders.iter().any(|o| o["order_id"] == c["order_id"] && o["status"] == "cancelled"))
            .count();
        refunds == charges_of_cancelled
    })
    .await;
    let (charges, refunds) = check_ledger(&gateway.ledger(), &orders);
    let completed = orders.iter().filter(|o| o["status"] == "completed").count();
    assert_eq!(charges, completed + refunds, "{}", gateway.ledger());
    assert!(completed >= 4, "the tok_ok and tok_flaky_2 orders complete");
    let declined = orders.iter().find(|o| o["order_id"] == ids[2].as_str()).expect("the declined order");
    assert_eq!(declined["status"], "cancelled");

    // The recordings hold every request and answer, the host's key, no secret.
    let out_dir = app.dir.path().join("recordings");
    let out = out_dir.to_str().expect("path");
    let base = format!("http://{}", app.addr);
    let (code, said) = wasaga_cli(&["recordings", "--url", &base, "--token", &app.token, "pull", "payment", "-o", out]);
    assert_eq!(code, 0, "{said}");
    let mut http_calls = 0;
    for file in std::fs::read_dir(&out_dir).expect("recordings").filter_map(Result::ok) {
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert!(!text.contains(KEY), "a recording holds the gateway's key: {text}");
        let recording: Value = serde_json::from_str(&text).expect("json");
        for call in recording["calls"].as_array().into_iter().flatten().filter(|c| c["call"] == "http") {
            http_calls += 1;
            let headers = call["headers"].to_string();
            assert!(headers.contains("idempotency-key"), "{call}");
            assert!(!headers.to_ascii_lowercase().contains("authorization"), "{call}");
        }
    }
    assert!(http_calls >= 4, "recorded requests: {http_calls}");

    // With the gateway stopped, the recordings replay offline: answered from themselves.
    server.abort();
    let _ = server.await;
    assert!(reqwest::get(format!("{url}/v1/ledger")).await.is_err(), "the gateway is down");
    let serving = components_dir().join("payment.wasm");
    let (code, said) = wasaga_cli(&["replay", out, "--plugin", serving.to_str().expect("path")]);
    assert_eq!(code, 0, "every recording replays offline, the same: {said}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_payment_version_sends_nothing() {
    let (url, gateway, _server) = gateway().await;
    let app = app_calling(&url, |_| {}).await;
    app.stock_up("SKU-1", 100).await;
    let response = app.upload_rollout("payment", "rollout=shadow", component("payment-v2")).await;
    assert_eq!(response.status(), 200);
    let mut ids = Vec::new();
    for token in ["tok_ok", "tok_flaky_2", "tok_ok", "tok_decline"] {
        ids.push(app.place(&[("SKU-1", 1)], token).await);
    }
    terminal(&app, &ids).await;
    let shadow =
        async || -> Value { app.admin_get("/api/admin/plugins/payment/shadow").await.json().await.expect("json") };
    eventually(WAIT, "the shadow ran every live call", async || shadow().await["calls"].as_u64() >= Some(4)).await;
    let report = shadow().await;
    // It got the live calls' answers, so it decided as the live version did.
    assert_eq!(report["calls"], report["same"], "{report}");
    let orders = app.all_orders().await;
    let (charges, _) = check_ledger(&gateway.ledger(), &orders);
    let completed = orders.iter().filter(|o| o["status"] == "completed").count();
    assert_eq!(charges, completed, "the shadow charged nothing: {}", gateway.ledger());
    app.stop().await;
}

/// The runtime with `policy` for the payment step.
fn runtime_with(policy: OutboundPolicy) -> Arc<wasaga_host::runtime::Runtime> {
    let config = RuntimeConfig { outbound: BTreeMap::from([("payment".to_owned(), policy)]), ..runtime_config() };
    wasaga_host::runtime::Runtime::new(config).expect("runtime")
}

fn reserved(order_id: &str) -> TestEvent {
    TestEvent::new(
        "stock.reserved",
        order_id,
        json!({"items": [], "total_cents": 500, "payment": {"card_token": "tok_ok"}, "levels": []}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outside_the_list_fails_the_call_naming_the_target_and_the_setting() {
    let (url, gateway, _server) = gateway().await;
    let port = url.rsplit(':').next().expect("port").to_owned();
    let target = |text: &str| Target::parse(text).expect("target");
    let policy = |targets: Vec<Target>, gateway_url: &str| OutboundPolicy {
        targets,
        env: vec![("WASAGA_GATEWAY_URL".to_owned(), gateway_url.to_owned())],
        ..OutboundPolicy::default()
    };
    let refusal = async |policy: OutboundPolicy| -> String {
        let runtime = runtime_with(policy);
        let step = load(&runtime, "payment").await;
        let state = Arc::new(MemoryState::default());
        match runtime.call(&step, reserved("o-1").input(), state, None).await {
            Err(CallError::Outbound(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    // Another port of the same host.
    let message = refusal(policy(vec![target("http://127.0.0.1:9")], &url)).await;
    assert!(message.contains(&format!("http://127.0.0.1:{port}")), "{message}");
    assert!(message.contains("[steps.payment] outbound") && message.contains("http://127.0.0.1:9"), "{message}");
    // Nothing listed: nothing reachable.
    let message = refusal(policy(vec![], &url)).await;
    assert!(message.contains("lists no target"), "{message}");
    // A name that resolves to loopback is refused unless the address itself is listed.
    let by_name = format!("http://localhost:{port}");
    let message = refusal(policy(vec![target(&by_name)], &by_name)).await;
    assert!(message.contains("loopback, link-local or private"), "{message}");
    assert!(gateway.ledger()["charges"].as_array().is_some_and(Vec::is_empty), "nothing was sent");
    // Listed, but the gateway's key is the host's to add: without it, 401, and the step
    // (which cannot set it) fails the charge as the gateway refused it.
    let runtime = runtime_with(policy(vec![target(&url)], &url));
    let step = load(&runtime, "payment").await;
    let state = Arc::new(MemoryState::default());
    let emits = runtime.call(&step, reserved("o-2").input(), state, None).await.expect("the call runs");
    assert_eq!(emits[0].kind, "payment.declined", "{emits:?}");
    assert!(payload(&emits[0])["reason"].as_str().is_some_and(|r| r.contains("invalid_api_key")), "{emits:?}");
    // A call that may not reach the network (a dry run) would call out: refused.
    let runtime = runtime_with(policy(vec![target(&url)], &url));
    let step = load(&runtime, "payment").await;
    let event = reserved("o-3");
    let input = event.input().network(wasaga_host::runtime::Network::Closed("a dry run never sends"));
    match runtime.call(&step, input, Arc::new(MemoryState::default()), None).await {
        Err(CallError::Outbound(message)) => assert!(message.contains("would call out"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(gateway.ledger()["charges"].as_array().is_some_and(Vec::is_empty), "nothing was charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_traffic_charges_each_order_once_and_keeps_the_key_to_itself() {
    let (url, gateway, _server) = gateway().await;
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let config = dir.path().join("wasaga.toml");
    std::fs::write(&config, payment_toml(&url)).expect("settings");
    let token = format!("t-{}", rand_id());
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 400), ("SKU-2".to_owned(), 300)]);
    // SIGKILLs land anywhere, between a gateway's answer and the commit among them: the
    // redelivered event carries the same key, and the gateway answers it again.
    let start = || Server::start_with(dir.path(), None, Some(&config), &token);
    let server = crate::crash::kill_mid_traffic(start, &stocked, &[8, 40, 90]).await;
    server.api.assert_invariants(&stocked).await;
    let orders = server.api.all_orders().await;
    let settled = async || {
        let ledger = gateway.ledger();
        let cancelled: Vec<&Value> = orders.iter().filter(|o| o["status"] == "cancelled").collect();
        let charged_cancelled = ledger["charges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| cancelled.iter().any(|o| o["order_id"] == c["order_id"]))
            .count();
        ledger["refunds"].as_array().map_or(0, Vec::len) == charged_cancelled
    };
    eventually(WAIT, "every cancelled charge is refunded", settled).await;
    let (charges, refunds) = check_ledger(&gateway.ledger(), &orders);
    eprintln!("{} orders after 3 SIGKILLs: {charges} charges, {refunds} refunds, none twice", orders.len());
    // Nothing the host wrote holds the key: not its log, not its database.
    assert!(!server.log_tail().iter().any(|line| line.contains(KEY)), "the log holds the gateway's key");
    for file in std::fs::read_dir(dir.path().join("data")).expect("data").filter_map(Result::ok) {
        if file.path().is_file() {
            let bytes = std::fs::read(file.path()).expect("read");
            let found = bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
            assert!(!found, "{} holds the gateway's key", file.path().display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_rabbitmq_one_killed_charge_each_order_once() {
    let _shared = crate::brokers::RABBIT.read().await;
    let (gateway_url, gateway, _server) = gateway().await;
    let fleet = crate::crash::RabbitFleet::new(2).await;
    let config = fleet.dirs[0].path().join("wasaga.toml");
    std::fs::write(&config, payment_toml(&gateway_url)).expect("settings");
    let start = |i: usize| fleet.start(i, &config);
    let mut servers = fleet.start_all(&config).await;
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 200)]);
    servers[0].api.stock_up("SKU-1", 200).await;
    let tokens = ["tok_ok", "tok_flaky_2", "tok_ok", "tok_decline"];
    let mut ids = Vec::new();
    for round in 0..2 {
        for i in 0..30usize {
            let api = &servers[i % 2].api;
            let body = order_body(&[("SKU-1", 1)], tokens[i % tokens.len()]);
            let response = api.post_json("/api/orders", &body).await;
            assert_eq!(response.status(), 202);
            let placed: Value = response.json().await.expect("json");
            ids.push(placed["order_id"].as_str().expect("id").to_owned());
        }
        if round == 0 {
            // Host 1 dies with deliveries in hand: RabbitMQ redelivers them to either host.
            servers.remove(1).kill();
            let restarted = start(1);
            restarted.api.wait_ready().await;
            servers.push(restarted);
        }
    }
    terminal(&servers[0].api, &ids).await;
    servers[1].api.assert_invariants(&stocked).await;
    let orders = servers[0].api.all_orders().await;
    let (charges, _) = check_ledger(&gateway.ledger(), &orders);
    let completed = orders.iter().filter(|o| o["status"] == "completed").count();
    assert_eq!(charges, completed, "one charge per completed order: {}", gateway.ledger());
    assert!(completed >= 40, "the tok_ok and tok_flaky_2 orders complete: {completed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_recording_cannot_make_a_replay_call_out() {
    // A recording written by someone else: its settings point payment at a live gateway,
    // and it records no request. Replay answers only from the recording: nothing is sent.
    let (url, gateway, _server) = gateway().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let recording = json!({
        "format": 2,
        "step": "payment",
        "version": format!("sha256:{}", "0".repeat(64)),
        "attempt": 1,
        "event": {
            "id": "e-crafted", "kind": "stock.reserved", "order_id": "o-crafted", "occurred_at_ms": 1,
            "payload": json!({"items": [], "total_cents": 500, "payment": {"card_token": "tok_ok"}, "levels": []}).to_string(),
        },
        "origin": {"step": "inventory", "step_version": "x"},
        "calls": [],
        "outcome": {"outcome": "ok", "emits": []},
        "settings": [["WASAGA_GATEWAY_URL", url]],
    });
    let file = dir.path().join("crafted.json");
    std::fs::write(&file, recording.to_string()).expect("write");
    let serving = components_dir().join("payment.wasm");
    let (code, said) =
        wasaga_cli(&["replay", file.to_str().expect("path"), "--plugin", serving.to_str().expect("path")]);
    assert_eq!(code, 1, "the replay diverges: {said}");
    assert!(said.contains("would call out"), "{said}");
    assert!(gateway.ledger()["charges"].as_array().is_some_and(Vec::is_empty), "nothing reached the gateway");
}
