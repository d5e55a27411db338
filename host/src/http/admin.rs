//! `/api/admin/*`: the bearer-token check, and the plugin endpoints (list, upload,
//! rollback).

use super::AppState;
use super::problem::ApiError;
use crate::registry::{Installed, RegistryError, Slot, Source};
use crate::runtime::LoadedStep;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Refuse admin requests without the admin token: 401 without one, 403 with a wrong one.
pub async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        None => ApiError::Unauthorized.into_response(),
        // Compare digests, so the time taken says nothing about the token.
        Some(token) if Sha256::digest(token.trim().as_bytes()).as_slice() != &state.admin_token_digest[..] => {
            ApiError::Forbidden.into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// One version of a step, as the API shows it.
#[derive(Debug, Serialize)]
pub struct VersionView {
    pub version: String,
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub loaded_at: time::OffsetDateTime,
    pub subscribes: Vec<String>,
}

/// A step with its serving and previous versions.
#[derive(Debug, Serialize)]
pub struct PluginView {
    pub name: String,
    #[serde(flatten)]
    pub current: VersionView,
    pub previous: Option<VersionView>,
}

impl VersionView {
    fn of(step: &LoadedStep) -> Self {
        VersionView {
            version: step.version.clone(),
            digest: step.digest.to_string(),
            loaded_at: step.loaded_at,
            subscribes: step.subscribes.clone(),
        }
    }
}

impl PluginView {
    fn of(slot: &Slot) -> Self {
        PluginView {
            name: slot.current.name.to_string(),
            current: VersionView::of(&slot.current),
            previous: slot.previous.as_deref().map(VersionView::of),
        }
    }
}

pub async fn list_plugins(State(state): State<AppState>) -> Json<Vec<PluginView>> {
    Json(state.registry.snapshot().values().map(PluginView::of).collect())
}

/// Content types accepted for a component upload.
const WASM_TYPES: [&str; 2] = ["application/wasm", "application/octet-stream"];

pub async fn put_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PluginView>, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !WASM_TYPES.contains(&mime) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the component with Content-Type: application/wasm (got {:?})",
            content_type
        )));
    }
    match state.registry.install(&name, body, Source::Upload).await {
        Ok(Installed::Swapped(slot) | Installed::Unchanged(slot)) => Ok(Json(PluginView::of(&slot))),
        Err(error) => Err(registry_error(error)),
    }
}

pub async fn rollback_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    state.registry.rollback(&name).await.map(|slot| Json(PluginView::of(&slot))).map_err(registry_error)
}

fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::Refused(crate::runtime::LoadError::TooLarge { .. }) => {
            ApiError::PayloadTooLarge(error.to_string())
        }
        RegistryError::Refused(reason) => {
            ApiError::Unprocessable { code: "step_refused", detail: format!("component refused: {reason}") }
        }
        RegistryError::UnknownStep(_) => ApiError::NotFound(error.to_string()),
        RegistryError::NoPrevious(_) | RegistryError::Contended(_) => ApiError::Conflict(error.to_string()),
        RegistryError::Store(error) => error.into(),
    }
}

/// A live host of the fleet, as the API shows it.
#[derive(Debug, Serialize)]
pub struct HostView {
    host_id: String,
    http_addr: String,
    #[serde(with = "time::serde::rfc3339")]
    started_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    seen_at: time::OffsetDateTime,
    /// Step → the digest this host serves.
    steps: serde_json::Value,
}

fn at(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `GET /api/admin/hosts`: the hosts seen within the last 10 s and what each serves.
pub async fn list_hosts(State(state): State<AppState>) -> Result<Json<Vec<HostView>>, ApiError> {
    let ttl = i64::try_from(crate::saga::HOST_TTL.as_millis()).unwrap_or(10_000);
    let rows = state.saga.host_store().hosts(crate::event::now_ms() - ttl).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| HostView {
                host_id: row.host_id,
                http_addr: row.http_addr,
                started_at: at(row.started_at_ms),
                seen_at: at(row.seen_at_ms),
                steps: serde_json::from_str(&row.steps).unwrap_or_default(),
            })
            .collect(),
    ))
}

/// 404 for any path the API does not have.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}
