//! The simulator as a payment step will use it, over HTTP.

use serde_json::{Value, json};
use std::time::Duration;

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let gateway = wasaga_gateway::Gateway::new(Duration::from_millis(50));
    tokio::spawn(async move { axum::serve(listener, wasaga_gateway::router(gateway)).await });
    format!("http://{addr}")
}

async fn post(base: &str, path: &str, key: &str, body: Value) -> (u16, Value, bool) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (status, response.json().await.expect("json"), replayed)
}

async fn ledger(base: &str) -> Value {
    reqwest::get(format!("{base}/v1/ledger")).await.expect("sent").json().await.expect("json")
}

#[tokio::test]
async fn a_key_charges_once_however_often_it_is_sent() {
    let base = start().await;
    let charge = json!({"amount_cents": 1200, "token": "tok_ok", "order_id": "o-1"});
    let (status, first, replayed) = post(&base, "/v1/charges", "e-1/payment/0", charge.clone()).await;
    assert_eq!((status, replayed), (200, false));
    let (status, again, replayed) = post(&base, "/v1/charges", "e-1/payment/0", charge).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(first, again, "the same answer");
    let other = json!({"amount_cents": 1300, "token": "tok_ok", "order_id": "o-1"});
    let (status, body, _) = post(&base, "/v1/charges", "e-1/payment/0", other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(ledger(&base).await["charges"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_charges_key_and_body_sent_to_refunds_is_refused_not_replayed() {
    let base = start().await;
    let body = json!({"amount_cents": 500, "token": "tok_ok", "charge_id": "ch_1"});
    assert_eq!(post(&base, "/v1/charges", "k-1", body.clone()).await.0, 200);
    let (status, answer, replayed) = post(&base, "/v1/refunds", "k-1", body).await;
    assert_eq!((status, replayed), (409, false), "{answer}");
    assert_eq!(ledger(&base).await["refunds"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn test_tokens_decline_fail_for_a_while_and_wait() {
    let base = start().await;
    let (status, body, _) =
        post(&base, "/v1/charges", "k-decline", json!({"amount_cents": 100, "token": "tok_decline"})).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "card_declined");
    let flaky = json!({"amount_cents": 100, "token": "tok_flaky_2"});
    for _ in 0..2 {
        assert_eq!(post(&base, "/v1/charges", "k-flaky", flaky.clone()).await.0, 503);
    }
    assert_eq!(post(&base, "/v1/charges", "k-flaky", flaky).await.0, 200, "the third attempt charges");
    let started = std::time::Instant::now();
    assert_eq!(post(&base, "/v1/charges", "k-slow", json!({"amount_cents": 100, "token": "tok_slow"})).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(50), "tok_slow takes the configured delay");
    let charges = ledger(&base).await["charges"].as_array().map(Vec::len);
    assert_eq!(charges, Some(2), "the flaky charge and the slow one; no decline");
}

#[tokio::test]
async fn a_charge_is_refunded_once() {
    let base = start().await;
    let (_, charge, _) = post(&base, "/v1/charges", "c-1", json!({"amount_cents": 700, "token": "tok_ok"})).await;
    let id = charge["id"].as_str().expect("charge id").to_owned();
    let refund = json!({"charge_id": id});
    assert_eq!(post(&base, "/v1/refunds", "r-1", refund.clone()).await.0, 200);
    assert!(post(&base, "/v1/refunds", "r-1", refund.clone()).await.2, "replayed");
    assert_eq!(post(&base, "/v1/refunds", "r-2", refund).await.0, 409, "a second key cannot refund it again");
    assert_eq!(post(&base, "/v1/refunds", "r-3", json!({"charge_id": "ch_404"})).await.0, 404);
    let book = ledger(&base).await;
    assert_eq!(book["refunds"].as_array().map(Vec::len), Some(1));
    assert_eq!(book["refunds"][0]["amount_cents"], 700);
}

#[tokio::test]
async fn a_request_without_a_key_or_with_a_bad_body_is_refused() {
    let base = start().await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/charges"))
        .json(&json!({"amount_cents": 1, "token": "tok_ok"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    assert_eq!(post(&base, "/v1/charges", "k", json!({"token": "tok_ok"})).await.0, 400, "no amount");
    assert_eq!(ledger(&base).await["charges"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn with_a_key_only_clients_presenting_it_are_answered() {
    let gateway = wasaga_gateway::Gateway::with_key(Duration::from_millis(50), "sk_test_1234");
    let (base, _task) = wasaga_gateway::serve(gateway.clone()).await.expect("serves");
    let charge = json!({"amount_cents": 100, "token": "tok_ok", "order_id": "o-9"});
    let (status, body, _) = post(&base, "/v1/charges", "k-1", charge.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/charges"))
        .header("idempotency-key", "k-1")
        .header("authorization", "Bearer sk_test_1234")
        .json(&charge)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(gateway.ledger()["charges"].as_array().map(Vec::len), Some(1));
}
