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
//! answers after the configured delay (past a step's deadline).

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
use std::time::Duration;

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
}

/// A running gateway's state.
#[derive(Debug)]
pub struct Gateway {
    book: Mutex<Book>,
    /// How long `tok_slow` takes.
    slow: Duration,
    /// The key clients must present, if any.
    api_key: Option<String>,
}

impl Gateway {
    pub fn new(slow: Duration) -> Arc<Gateway> {
        Arc::new(Gateway { book: Mutex::default(), slow, api_key: None })
    }

    /// A gateway that answers only clients presenting `Authorization: Bearer <api_key>`.
    pub fn with_key(slow: Duration, api_key: &str) -> Arc<Gateway> {
        Arc::new(Gateway { book: Mutex::default(), slow, api_key: Some(api_key.to_owned()) })
    }

    /// Charges and refunds made so far.
    pub fn ledger(&self) -> Value {
        let book = self.book.lock();
        json!({ "charges": book.charges, "refunds": book.refunds })
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
    let charge = {
        let mut book = gateway.book.lock();
        let charge = json!({
            "id": format!("ch_{}", book.charges.len() + 1),
            "status": "succeeded",
            "amount_cents": amount,
            "order_id": request.body.get("order_id").cloned().unwrap_or(Value::Null),
            "idempotency_key": request.key,
        });
        book.charges.push(charge.clone());
        charge
    };
    finish(&gateway, &request, 200, charge)
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
