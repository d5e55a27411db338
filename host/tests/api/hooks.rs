//! Signed webhooks from outside: a callback signed with the step's secret is stored once
//! as `<step>.hook` of its order, however often it is sent; forged, stale or unsigned
//! ones are refused with 401 problem+json and change nothing.

use crate::helpers::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use wasaga_host::config::StepSettings;

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "whsec_test_4f1d2c3b5a697887";

fn now_secs() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
        .expect("secs")
}

fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

async fn send(app: &TestApp, step: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
    let mut request = app.http.post(app.url(&format!("/api/hooks/{step}"))).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.expect("sent")
}

fn signed(id: &str, timestamp: i64, body: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature(secret, id, timestamp, body)),
    ]
}

async fn hooks_of(app: &TestApp, order_id: &str) -> usize {
    let order = app.order(order_id).await;
    order["timeline"].as_array().into_iter().flatten().filter(|e| e["kind"] == "payment.hook").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_stored_once_and_forgeries_change_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    let hook = StepSettings { hook_secret: Some(SecretString::from(SECRET.to_owned())), ..StepSettings::default() };
    settings.steps.insert("payment".to_owned(), hook);
    let app = spawn_with(dir, settings).await;
    app.stock_up("SKU-1", 10).await;
    let order_id = app.place(&[("SKU-1", 1)], "tok_ok").await;
    eventually(WAIT, "the order completes", async || app.order(&order_id).await["status"] == "completed").await;

    let body = json!({"order_id": order_id, "status": "succeeded"}).to_string();
    let now = now_secs();
    let first = send(&app, "payment", &signed("msg_1", now, &body, SECRET), &body).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["duplicate"], false);
    // The same delivery again (a gateway retrying): stored once.
    let again = send(&app, "payment", &signed("msg_1", now, &body, SECRET), &body).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!((again["duplicate"].clone(), again["event_id"].clone()), (json!(true), first["event_id"].clone()));
    eventually(WAIT, "the hook is on the order's timeline", async || hooks_of(&app, &order_id).await == 1).await;

    // Refused, each with 401 problem+json: another secret, another body, a stale or
    // future timestamp (a minute past the 300 s window either way, so a slow request
    // cannot bring one back into it), no signature.
    let other_body = json!({"order_id": order_id, "status": "failed"}).to_string();
    let forged = [
        (signed("msg_2", now, &body, "whsec_wrong_0000000000"), body.clone()),
        (signed("msg_2", now, &body, SECRET), other_body.clone()),
        (signed("msg_2", now - 360, &body, SECRET), body.clone()),
        (signed("msg_2", now + 360, &body, SECRET), body.clone()),
        (vec![("webhook-id", "msg_2".to_owned()), ("webhook-timestamp", now.to_string())], body.clone()),
    ];
    for (headers, body) in &forged {
        let response = send(&app, "payment", headers, body).await;
        assert_eq!(response.status(), 401);
        let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
        assert_eq!(content_type, "application/problem+json");
        let problem: Value = response.json().await.expect("json");
        assert!(problem["detail"].as_str().is_some_and(|d| d.starts_with("webhook refused")), "{problem}");
    }
    // A step that takes no webhooks, and a body naming no order.
    assert_eq!(send(&app, "inventory", &signed("msg_3", now, &body, SECRET), &body).await.status(), 404);
    let orphan = json!({"status": "succeeded"}).to_string();
    assert_eq!(send(&app, "payment", &signed("msg_4", now, &orphan, SECRET), &orphan).await.status(), 422);
    // Nothing refused was stored.
    let stored = send(&app, "payment", &signed("msg_5", now, &body, SECRET), &body).await;
    assert_eq!(stored.status(), 202, "a fresh delivery still passes");
    eventually(WAIT, "exactly the two accepted deliveries", async || hooks_of(&app, &order_id).await == 2).await;
    app.stop().await;
}
