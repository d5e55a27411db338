//! Liveness, readiness and metrics.

use super::AppState;
use super::problem::ApiError;
use super::problem::Problem;
use super::responses::Common;
use crate::store::Channel;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses(
        Common,
        (status = 200, description = "The process is up", body = Object)
    )
)]
/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        Common,
        (status = 200, description = "Ready: steps loaded, stores and transport answer", body = Object),
        (status = 503, description = "Not ready, and why", body = Problem, content_type = "application/problem+json")
    )
)]
/// Ready once every required step is loaded.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let missing = state.missing_steps();
    if !missing.is_empty() {
        return Err(ApiError::Unavailable(format!("steps not loaded: {}", missing.join(", "))));
    }
    for (backend, lag) in state.saga.query().outbox_lags(Channel::Transport).await {
        if let Err(error) = lag {
            return Err(ApiError::Unavailable(format!("a {backend} store does not answer: {error}")));
        }
    }
    let transport = &state.saga.transport;
    if let Some(reason) = transport.unavailable() {
        return Err(ApiError::Unavailable(format!("the {} transport is unavailable: {reason}", transport.name())));
    }
    // The stream does not decide readiness: the saga runs while it is down, and it
    // catches up when back. Its state is reported for operators.
    let stream = state.saga.stream.as_ref().map(|stream| match stream.unavailable() {
        None => json!({ "topic": stream.topic(), "status": "ok" }),
        Some(reason) => json!({ "topic": stream.topic(), "status": "lagging", "reason": reason }),
    });
    Ok(Json(json!({
        "status": "ready",
        "steps": state.registry.snapshot().keys().collect::<Vec<_>>(),
        "transport": transport.name(),
        "stream": stream,
    })))
}

#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses(
        Common,
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")
    )
)]
/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    render_metrics(Some(&state)).await
}

/// Every metric, with the gauges read from the store refreshed once the server started.
pub async fn render_metrics(state: Option<&AppState>) -> Response {
    if let Some(state) = state
        && let Ok(counts) = state.saga.query().order_counts().await
    {
        for (status, count) in counts {
            metrics::gauge!("wasaga_orders", "status" => status).set(count as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render()).into_response()
}
