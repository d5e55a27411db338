//! Signed webhooks: `POST /api/hooks/{step}` takes a callback for a step (a payment
//! gateway confirming a charge, say), verified by the step's secret, and stores it as the
//! event `<step>.hook` of the order the body names, delivered to the step exactly once
//! like any event (retries, dead letters).
//!
//! Signatures follow Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds)
//! and `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` (several,
//! space-separated, during a key rotation). A timestamp outside the replay window, a
//! missing header or a signature that does not match is refused with 401 and changes
//! nothing; the comparison is constant-time. The same `webhook-id` is stored once: its
//! event id is derived from the step and the id.

use super::AppState;
use super::problem::{ApiError, Problem};
use super::responses::Common;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;
use utoipa::ToSchema;

/// How far a webhook's timestamp may be from the host's clock, either way.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// What a stored webhook became.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookAccepted {
    /// The event id of `<step>.hook`.
    event_id: String,
    order_id: String,
    /// True when this delivery id was stored before: nothing was stored again.
    duplicate: bool,
}

/// Why a webhook was refused as unauthenticated; the detail says which check failed.
fn refused(reason: &str) -> ApiError {
    ApiError::NoCredential(format!("webhook refused: {reason}"))
}

/// The Standard Webhooks signature check of `body` under `secret`, at `now` (Unix seconds).
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<String, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let id =
        header("webhook-id").filter(|id| !id.is_empty() && id.len() <= 256).ok_or_else(|| refused("no webhook-id"))?;
    let timestamp = header("webhook-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| refused("no webhook-timestamp in Unix seconds"))?;
    if (now - timestamp).abs() > REPLAY_WINDOW_SECS {
        return Err(refused(&format!("webhook-timestamp is more than {REPLAY_WINDOW_SECS} s from the host's clock")));
    }
    let signatures = header("webhook-signature").ok_or_else(|| refused("no webhook-signature"))?;
    let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    for signature in signatures.split_whitespace() {
        let Some(encoded) = signature.strip_prefix("v1,") else { continue };
        let Ok(presented) = base64::engine::general_purpose::STANDARD.decode(encoded) else { continue };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { continue };
        mac.update(&signed);
        // `verify_slice` compares in constant time.
        if mac.verify_slice(&presented).is_ok() {
            return Ok(id.to_owned());
        }
    }
    Err(refused("no webhook-signature matches"))
}

#[utoipa::path(
    post, path = "/api/hooks/{step}", tag = "hooks",
    params(("step" = String, Path, description = "The step the callback is for")),
    request_body(content = Object, description = "The callback; the order id at the step's `hook_order_id` pointer"),
    responses(
        Common,
        (status = 202, description = "Stored as `<step>.hook`; delivered to the step", body = HookAccepted),
        (status = 200, description = "This webhook-id was stored before; nothing changed", body = HookAccepted),
        (status = 401, description = "Missing headers, a timestamp outside the replay window, or no matching signature", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No step takes webhooks under this name", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not JSON, or names no order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(step): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(hook) = state.hooks.get(&step) else {
        return Err(ApiError::NotFound(format!("no step {step:?} takes webhooks ([steps.NAME] hook_secret)")));
    };
    let now = crate::event::now_ms() / 1000;
    let delivery = verify(hook.secret.expose_secret().as_bytes(), &headers, &body, now)?;
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Unprocessable { code: "invalid_hook", detail: format!("the body is not JSON: {e}") })?;
    let order_id = payload
        .pointer(&hook.order_id)
        .and_then(serde_json::Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::Unprocessable {
            code: "invalid_hook",
            detail: format!("the body has no order id at {}", hook.order_id),
        })?
        .to_owned();
    let stored = crate::saga::hooks::store(&state.saga, &step, &delivery, &order_id, payload).await?;
    let status = if stored.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    let answer = HookAccepted { event_id: stored.event_id, order_id, duplicate: stored.duplicate };
    Ok((status, Json(answer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().expect("value"));
        headers.insert("webhook-timestamp", timestamp.to_string().parse().expect("value"));
        headers.insert("webhook-signature", format!("v1,bogus v1,{signature}").parse().expect("value"));
        headers
    }

    #[test]
    fn only_a_fresh_signature_by_the_secret_over_this_body_passes() {
        let body = br#"{"order_id":"o-1"}"#;
        let headers = signed(b"whsec", "msg_1", 1_000, body);
        assert_eq!(verify(b"whsec", &headers, body, 1_000).expect("verified"), "msg_1");
        assert_eq!(verify(b"whsec", &headers, body, 1_000 + REPLAY_WINDOW_SECS).expect("in the window"), "msg_1");
        for (secret, body, now, says) in [
            (&b"other"[..], &body[..], 1_000, "matches"),
            (&b"whsec"[..], &br#"{"order_id":"o-2"}"#[..], 1_000, "matches"),
            (&b"whsec"[..], &body[..], 1_000 + REPLAY_WINDOW_SECS + 1, "clock"),
            (&b"whsec"[..], &body[..], 1_000 - REPLAY_WINDOW_SECS - 1, "clock"),
        ] {
            let error = verify(secret, &headers, body, now).expect_err("refused").to_string();
            assert!(error.contains(says), "{error}");
        }
        let mut missing = headers.clone();
        missing.remove("webhook-signature");
        assert!(verify(b"whsec", &missing, body, 1_000).is_err());
    }
}
