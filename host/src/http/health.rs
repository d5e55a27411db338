//! Liveness, readiness and metrics.

use super::AppState;
use super::problem::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once every required step is loaded.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let missing = state.missing_steps();
    if !missing.is_empty() {
        return Err(ApiError::Unavailable(format!("steps not loaded: {}", missing.join(", "))));
    }
    for store in state.saga.stores.all() {
        if let Err(error) = store.outbox_lag().await {
            return Err(ApiError::Unavailable(format!("a {} store does not answer: {error}", store.backend())));
        }
    }
    Ok(Json(json!({ "status": "ready", "steps": state.registry.snapshot().keys().collect::<Vec<_>>() })))
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(counts) = state.saga.host_store().order_counts().await {
        for (status, count) in counts {
            metrics::gauge!("wasaga_orders", "status" => status).set(count as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
