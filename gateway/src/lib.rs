//! A card gateway for tests and demos, shaped like a real card API (Stripe's and Adyen's
//! rules for retries): `POST /v1/charges`, `POST /v1/refunds`, `GET /v1/ledger`.
//!
//! Every charge and refund carries an `Idempotency-Key`: the same key with the same body
//! gets the first answer again (marked `Idempotent-Replayed: true`), the same key with
//! another body gets 409, and a key whose first request is still running gets 409 too.
//! Only what the ledger holds was charged, so a test can count charges from outside.
//!
//! With an API key configured, a request without `Authorization: Bearer <key>` gets 401,
//! as a real gateway answers a client that lost its credentials.
//!
//! Test tokens: `tok_ok` (and any other) charges; `tok_decline` is refused (402, final);
//! `tok_flaky_N` answers 503 to the first N attempts of a key, then charges; `tok_slow`
//! answers after the configured delay (past a step's deadline); `tok_3ds` needs the
//! cardholder's authentication (3-D Secure): the charge answers 202 `requires_action`,
//! and when the cardholder completes it (after the configured delay) the charge succeeds
//! and a signed webhook `charge.succeeded` goes to the configured URL, retried until it is
//! answered 2xx. While webhooks are withheld, no cardholder ever completes one.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Where a gateway sends webhooks, and the secret that signs them.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The full URL, e.g. `http://127.0.0.1:8080/api/hooks/payment`.
    pub url: String,
    /// The shared secret: HMAC-SHA256 key of the `webhook-signature`.
    pub secret: String,
}

/// The gateway's books: answers by key, attempts of flaky keys, and the ledger.
#[derive(Debug, Default)]
struct Book {
    /// Idempotency key → (digest of the body, status, body) of its final answer.
    answers: HashMap<String, (String, u16, Value)>,
    /// Keys whose first request is running.
    running: HashSet<String>,
    /// Attempts per key, for `tok_flaky_N`.
    attempts: HashMap<String, u32>,
    charges: Vec<Value>,
    refunds: Vec<Value>,
    /// Charges awaiting the cardholder (`tok_3ds`), by id.
    awaiting: HashMap<String, Value>,
    /// Charge ids issued so far (succeeded or not), for the next id.
    issued: usize,
}

/// A running gateway's state.
#[derive(Debug)]
pub struct Gateway {
    book: Mutex<Book>,
    /// How long `tok_slow` takes.
    slow: Duration,
    /// The key clients must present, if any.
    api_key: Option<String>,
    /// Where webhooks go; read at every attempt, so a receiver that moved is found.
    webhooks: Mutex<Option<WebhookTarget>>,
    /// How long a cardholder takes to complete 3-D Secure.
    action_delay: Mutex<Duration>,
    /// No cardholder completes 3-D Secure while set (they abandon it).
    withheld: AtomicBool,
    /// Webhooks answered 2xx so far.
    delivered: AtomicUsize,
}

impl Gateway {
    pub fn new(slow: Duration) -> Arc<Gateway> {
        Arc::new(Gateway::build(slow, None))
    }

    /// A gateway that answers only clients presenting `Authorization: Bearer <api_key>`.
    pub fn with_key(slow: Duration, api_key: &str) -> Arc<Gateway> {
        Arc::new(Gateway::build(slow, Some(api_key.to_owned())))
    }

    fn build(slow: Duration, api_key: Option<String>) -> Gateway {
        Gateway {
            book: Mutex::default(),
            slow,
            api_key,
            webhooks: Mutex::new(None),
            action_delay: Mutex::new(Duration::from_millis(200)),
            withheld: AtomicBool::new(false),
            delivered: AtomicUsize::new(0),
        }
    }

    /// Send webhooks to `target` from now on (also those being retried).
    pub fn send_webhooks_to(&self, target: WebhookTarget) {
        *self.webhooks.lock() = Some(target);
    }

    /// How long a cardholder takes to complete 3-D Secure (200 ms by default).
    pub fn set_action_delay(&self, delay: Duration) {
        *self.action_delay.lock() = delay;
    }

    /// While `withheld`, cardholders abandon 3-D Secure: those charges never succeed and
    /// no webhook is sent for them.
    pub fn withhold_webhooks(&self, withheld: bool) {
        self.withheld.store(withheld, Ordering::SeqCst);
    }

    /// Webhooks the receiver has answered 2xx.
    pub fn webhooks_delivered(&self) -> usize {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Charges and refunds made so far, and charges still awaiting the cardholder.
    pub fn ledger(&self) -> Value {
        let book = self.book.lock();
        let mut awaiting: Vec<&Value> = book.awaiting.values().collect();
        awaiting.sort_by_key(|c| c["id"].as_str().map(str::to_owned));
        json!({ "charges": book.charges, "refunds": book.refunds, "awaiting_action": awaiting })
    }
}

/// A gateway serving on a free port of 127.0.0.1 until the returned handle is aborted
/// or dropped with its runtime: `(base URL, gateway, server task)`.
pub async fn serve(gateway: Arc<Gateway>) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(gateway);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), task))
}

/// The gateway's routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/charges", post(charge))
        .route("/v1/refunds", post(refund))
        .route("/v1/ledger", get(ledger))
        .route("/v1/webhooks/withhold", post(withhold))
        .route("/v1/webhooks/release", post(release_webhooks))
        .with_state(gateway)
}

/// A problem answer, as card APIs send them: a code and a message.
fn error(status: StatusCode, code: &str, message: &str) -> (u16, Value) {
    (status.as_u16(), json!({ "error": { "code": code, "message": message } }))
}

fn answer(status: u16, body: Value, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if replayed && let Ok(value) = "true".parse() {
        response.headers_mut().insert("idempotent-replayed", value);
    }
    response
}

/// What a request with a key may do now.
enum Admission {
    /// Answer this again.
    Replay(u16, Value),
    /// Refuse it.
    Refuse(u16, Value),
    /// Handle it: the key is held until [`finish`] or [`release`].
    Handle(Request),
}

struct Request {
    key: String,
    digest: String,
    body: serde_json::Map<String, Value>,
}

/// A key belongs to the endpoint it was first sent to: the same key and body on another
/// endpoint is refused, never answered with the other endpoint's answer.
fn admit(gateway: &Gateway, endpoint: &str, headers: &HeaderMap, body: &Bytes) -> Admission {
    if let Some(key) = &gateway.api_key {
        let presented =
            headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(key.as_str()) {
            let (status, body) = error(StatusCode::UNAUTHORIZED, "invalid_api_key", "send Authorization: Bearer <key>");
            return Admission::Refuse(status, body);
        }
    }
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::trim) else {
        let (status, body) = error(StatusCode::BAD_REQUEST, "missing_idempotency_key", "send an Idempotency-Key");
        return Admission::Refuse(status, body);
    };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        let (status, body) = error(StatusCode::BAD_REQUEST, "invalid_json", "the body must be a JSON object");
        return Admission::Refuse(status, body);
    };
    // The body as parsed (keys sorted), so a client that serialises it again matches.
    let digest = hex::encode(Sha256::digest(format!("{endpoint} {}", Value::Object(fields.clone())).as_bytes()));
    let mut book = gateway.book.lock();
    if let Some((first, status, answer)) = book.answers.get(key) {
        if *first == digest {
            return Admission::Replay(*status, answer.clone());
        }
        let (status, body) =
            error(StatusCode::CONFLICT, "idempotency_key_reused", "this key was used with another body or endpoint");
        return Admission::Refuse(status, body);
    }
    if !book.running.insert(key.to_owned()) {
        let (status, body) =
            error(StatusCode::CONFLICT, "idempotency_key_in_use", "a request with this key is still running");
        return Admission::Refuse(status, body);
    }
    Admission::Handle(Request { key: key.to_owned(), digest, body: fields })
}

/// Keep `request`'s answer for its key and let the key go.
fn finish(gateway: &Gateway, request: &Request, status: u16, body: Value) -> Response {
    let mut book = gateway.book.lock();
    book.running.remove(&request.key);
    book.answers.insert(request.key.clone(), (request.digest.clone(), status, body.clone()));
    answer(status, body, false)
}

/// Let the key go without an answer: the next attempt is handled afresh.
fn release(gateway: &Gateway, request: &Request, status: u16, body: Value) -> Response {
    gateway.book.lock().running.remove(&request.key);
    answer(status, body, false)
}

async fn charge(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    const ENDPOINT: &str = "/v1/charges";
    let request = match admit(&gateway, ENDPOINT, &headers, &body) {
        Admission::Replay(status, body) => return answer(status, body, true),
        Admission::Refuse(status, body) => return answer(status, body, false),
        Admission::Handle(request) => request,
    };
    let amount = request.body.get("amount_cents").and_then(Value::as_i64).filter(|a| *a > 0);
    let token = request.body.get("token").and_then(Value::as_str).unwrap_or_default().to_owned();
    let Some(amount) = amount else {
        let (status, body) = error(StatusCode::BAD_REQUEST, "invalid_amount", "amount_cents must be above 0");
        return finish(&gateway, &request, status, body);
    };
    if token == "tok_decline" {
        let (status, body) = error(StatusCode::PAYMENT_REQUIRED, "card_declined", "the card was declined");
        return finish(&gateway, &request, status, body);
    }
    if let Some(failures) = token.strip_prefix("tok_flaky_").and_then(|n| n.parse::<u32>().ok()) {
        let attempt = {
            let mut book = gateway.book.lock();
            let attempts = book.attempts.entry(request.key.clone()).or_default();
            *attempts += 1;
            *attempts
        };
        if attempt <= failures {
            let (status, body) = error(StatusCode::SERVICE_UNAVAILABLE, "try_again", "the issuer did not answer");
            return release(&gateway, &request, status, body);
        }
    }
    if token == "tok_slow" {
        tokio::time::sleep(gateway.slow).await;
    }
    let three_ds = token == "tok_3ds";
    let charge = {
        let mut book = gateway.book.lock();
        book.issued += 1;
        let charge = json!({
            "id": format!("ch_{}", book.issued),
            "status": if three_ds { "requires_action" } else { "succeeded" },
            "amount_cents": amount,
            "order_id": request.body.get("order_id").cloned().unwrap_or(Value::Null),
            "idempotency_key": request.key,
        });
        if three_ds {
            book.awaiting.insert(charge["id"].as_str().unwrap_or_default().to_owned(), charge.clone());
        } else {
            book.charges.push(charge.clone());
        }
        charge
    };
    if three_ds {
        tokio::spawn(authenticate(gateway.clone(), charge.clone()));
        return finish(&gateway, &request, 202, charge);
    }
    finish(&gateway, &request, 200, charge)
}

/// The cardholder completes 3-D Secure after the action delay (unless webhooks are
/// withheld): the charge succeeds and its webhook is sent until answered.
async fn authenticate(gateway: Arc<Gateway>, charge: Value) {
    let delay = *gateway.action_delay.lock();
    tokio::time::sleep(delay).await;
    if gateway.withheld.load(Ordering::SeqCst) {
        return;
    }
    let id = charge["id"].as_str().unwrap_or_default().to_owned();
    let succeeded = {
        let mut book = gateway.book.lock();
        let Some(mut charge) = book.awaiting.remove(&id) else { return };
        charge["status"] = json!("succeeded");
        book.charges.push(charge.clone());
        charge
    };
    let event = json!({ "type": "charge.succeeded", "data": succeeded });
    send_webhook(&gateway, &format!("evt_{id}"), &event).await;
}

/// Send one webhook until the receiver answers 2xx, backing off from 100 ms to 2 s, for
/// at most 10 minutes: a receiver that is down gets it when it is back.
async fn send_webhook(gateway: &Gateway, id: &str, event: &Value) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let client = reqwest::Client::new();
    let body = event.to_string();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut wait = Duration::from_millis(100);
    while tokio::time::Instant::now() < give_up {
        let target = gateway.webhooks.lock().clone();
        if let Some(target) = target
            && let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(target.secret.as_bytes())
        {
            // Signed afresh at every attempt: the receiver's replay window counts from it.
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            let sent = client
                .post(&target.url)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", format!("v1,{signature}"))
                .body(body.clone())
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if sent.is_ok_and(|answer| answer.status().is_success()) {
                gateway.delivered.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

async fn refund(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    const ENDPOINT: &str = "/v1/refunds";
    let request = match admit(&gateway, ENDPOINT, &headers, &body) {
        Admission::Replay(status, body) => return answer(status, body, true),
        Admission::Refuse(status, body) => return answer(status, body, false),
        Admission::Handle(request) => request,
    };
    let charge_id = request.body.get("charge_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let (status, body) = {
        let mut book = gateway.book.lock();
        let charge = book.charges.iter().find(|c| c["id"] == charge_id.as_str()).cloned();
        match charge {
            None => error(StatusCode::NOT_FOUND, "no_such_charge", "no charge has this id"),
            Some(_) if book.refunds.iter().any(|r| r["charge_id"] == charge_id.as_str()) => {
                error(StatusCode::CONFLICT, "charge_already_refunded", "this charge was refunded already")
            }
            Some(charge) => {
                let refund = json!({
                    "id": format!("re_{}", book.refunds.len() + 1),
                    "status": "succeeded",
                    "charge_id": charge_id,
                    "amount_cents": charge["amount_cents"],
                    "idempotency_key": request.key,
                });
                book.refunds.push(refund.clone());
                (200, refund)
            }
        }
    };
    finish(&gateway, &request, status, body)
}

async fn ledger(State(gateway): State<Arc<Gateway>>) -> axum::Json<Value> {
    axum::Json(gateway.ledger())
}

/// Test control: cardholders abandon 3-D Secure from now on.
async fn withhold(State(gateway): State<Arc<Gateway>>) -> StatusCode {
    gateway.withhold_webhooks(true);
    StatusCode::NO_CONTENT
}

/// Test control: cardholders complete 3-D Secure again.
async fn release_webhooks(State(gateway): State<Arc<Gateway>>) -> StatusCode {
    gateway.withhold_webhooks(false);
    StatusCode::NO_CONTENT
}
