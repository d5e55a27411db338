//! `/api/admin/dead-letters`: list, replay (deliver again with a fresh attempt count; the
//! inbox still allows at most one effect) and discard.

use super::AppState;
use super::body::Checker;
use super::problem::ApiError;
use crate::saga::ops;
use crate::store::DeadLetterRow;
use axum::Json;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize)]
pub struct DeadLetterView {
    id: String,
    step: String,
    event: Value,
    error: String,
    attempts: i64,
    #[serde(with = "time::serde::rfc3339")]
    dead_lettered_at: time::OffsetDateTime,
}

fn view(row: DeadLetterRow) -> DeadLetterView {
    DeadLetterView {
        id: row.id,
        step: row.consumer,
        event: serde_json::from_str(&row.event).unwrap_or(Value::String(row.event)),
        error: row.error,
        attempts: row.attempts,
        dead_lettered_at: time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(row.dead_lettered_at_ms) * 1_000_000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    }
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let rows = ops::dead_letters(&state.saga).await?;
    Ok(Json(rows.into_iter().map(view).collect()))
}

/// `?version=sha256:…` to replay on a kept version, `&dry_run=true` to commit nothing.
#[derive(Debug, Deserialize)]
pub struct ReplayQuery {
    version: Option<String>,
    dry_run: Option<String>,
}

pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ReplayQuery>,
) -> Result<Response, ApiError> {
    let mut check = Checker::default();
    let version = query.version.filter(|v| !v.is_empty());
    if let Some(version) = &version
        && !(version.len() == 71
            && version.starts_with("sha256:")
            && version[7..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    {
        check.fail("version", "must be a digest as the plugin list shows it: sha256:<64 hex digits>");
    }
    let dry_run = match query.dry_run.as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => {
            check.fail("dry_run", "must be true or false");
            false
        }
    };
    check.finish(Some(()))?;
    if dry_run {
        let run = ops::dry_run(&state.saga, &id, version.as_deref()).await?;
        return Ok((StatusCode::OK, Json(run)).into_response());
    }
    let row = ops::replay(&state.saga, &id, version.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(view(row))).into_response())
}

/// The recording of the dead letter's last attempt.
pub async fn recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match ops::recording(&state.saga, &id).await? {
        Some(json) => Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::NotFound(format!("dead letter {id:?} has no recording (it was not a step's call)"))),
    }
}

/// `GET /api/admin/recordings?step=…&limit=…`: sampled recordings of successful calls.
#[derive(Debug, Deserialize)]
pub struct RecordingsQuery {
    step: Option<String>,
    limit: Option<String>,
}

pub async fn recordings(
    State(state): State<AppState>,
    Query(query): Query<RecordingsQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let mut check = Checker::default();
    let step = query.step.filter(|s| !s.is_empty());
    if step.is_none() {
        check.fail("step", "is required");
    }
    let limit = match query.limit.as_deref() {
        None | Some("") => 100,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                check.fail("limit", "must be a whole number from 1 to 1000");
                100
            }
        },
    };
    let step = check.finish(step)?;
    let rows = state.saga.stores.for_consumer(&step).recordings(&step, limit).await?;
    Ok(Json(rows.into_iter().map(|r| serde_json::from_str(&r.recording).unwrap_or(Value::Null)).collect()))
}

pub async fn discard(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    ops::discard(&state.saga, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
