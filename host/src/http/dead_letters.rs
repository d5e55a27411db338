//! `/api/admin/dead-letters`: list, replay (deliver again with a fresh attempt count; the
//! inbox still allows at most one effect) and discard.

use super::AppState;
use super::body::Checker;
use super::problem::ApiError;
use super::problem::Problem;
use super::responses::{AdminOnly, Common};
use crate::event::Digest;
use crate::saga::ops;
use crate::store::DeadLetterRow;
use axum::Json;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// An event a step gave up on.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    id: String,
    step: String,
    /// The event, as on the wire.
    #[schema(value_type = Object)]
    event: Value,
    error: String,
    attempts: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
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

#[utoipa::path(
    get, path = "/api/admin/dead-letters", tag = "dead letters",
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Every dead letter, oldest first", body = Vec<DeadLetterView>)
    ),
    security(("admin_token" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let rows = ops::dead_letters(&state.saga).await?;
    Ok(Json(rows.into_iter().map(view).collect()))
}

/// `?version=sha256:…` to replay on a kept version, `&dry_run=true` to commit nothing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// A kept version (`sha256:` and 64 lowercase hex digits) to run it on.
    version: Option<String>,
    /// `true`: run against live state and answer what it would do; nothing is committed.
    dry_run: Option<String>,
}

/// What a dry run did: nothing of it was committed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    /// `ok` or the failure's kind.
    outcome: String,
    error: Option<String>,
    /// The digest that ran.
    version: String,
    /// `{"kind","payload"}` per event it would emit.
    #[schema(value_type = Vec<Object>)]
    emits: Vec<Value>,
    /// `{"key","value"}` per state write (`value` null for a delete).
    #[schema(value_type = Vec<Object>)]
    writes: Vec<Value>,
    /// Why a run that did nothing did nothing, when the host can tell (the order ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[utoipa::path(
    post, path = "/api/admin/dead-letters/{id}/replay", tag = "dead letters",
    params(("id" = String, Path, description = "The dead letter id"), ReplayQuery),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "The dry run (with dry_run=true)", body = DryRunView),
        (status = 202, description = "Queued for its step again", body = DeadLetterView),
        (status = 404, description = "No such dead letter, or the version is not kept", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid version or dry_run", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker is down; try again", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ReplayQuery>,
) -> Result<Response, ApiError> {
    let mut check = Checker::default();
    let version = match query.version.as_deref().filter(|v| !v.is_empty()).map(str::parse::<Digest>) {
        None => None,
        Some(Ok(digest)) => Some(digest),
        Some(Err(_)) => {
            check.fail("version", "must be a digest as the plugin list shows it: sha256:<64 lowercase hex digits>");
            None
        }
    };
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
        let run = ops::dry_run(&state.saga, &id, version.as_ref().map(Digest::as_str)).await?;
        let view = DryRunView {
            outcome: run.outcome,
            error: run.error,
            version: run.version,
            emits: run.emits,
            writes: run.writes,
            note: run.note,
        };
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    let row = ops::replay(&state.saga, &id, version.as_ref().map(Digest::as_str)).await?;
    Ok((StatusCode::ACCEPTED, Json(view(row))).into_response())
}

#[utoipa::path(
    get, path = "/api/admin/dead-letters/{id}/recording", tag = "dead letters",
    params(("id" = String, Path, description = "The dead letter id")),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "The recording (for `wasaga replay`)", body = Object),
        (status = 404, description = "No such dead letter, or no recording", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
/// The recording of the dead letter's last attempt.
pub async fn recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match ops::recording(&state.saga, &id).await? {
        Some(json) => Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::NotFound(format!("dead letter {id:?} has no recording (it was not a step's call)"))),
    }
}

/// `GET /api/admin/recordings?step=…&limit=…`: sampled recordings of successful calls.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingsQuery {
    /// The step.
    step: Option<String>,
    /// 1 to 1000; 100 by default.
    limit: Option<String>,
}

#[utoipa::path(
    get, path = "/api/admin/recordings", tag = "dead letters",
    params(RecordingsQuery),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Sampled recordings, newest first", body = Vec<Object>),
        (status = 422, description = "A missing step or an invalid limit", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
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
    let rows = state.saga.query().recordings(&step, limit).await?;
    Ok(Json(rows.into_iter().map(|r| serde_json::from_str(&r.recording).unwrap_or(Value::Null)).collect()))
}

#[utoipa::path(
    delete, path = "/api/admin/dead-letters/{id}", tag = "dead letters",
    params(("id" = String, Path, description = "The dead letter id")),
    responses(
        Common,
        AdminOnly,
        (status = 204, description = "Discarded"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
pub async fn discard(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    ops::discard(&state.saga, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
