//! `/api/admin/dead-letters`: list, replay (deliver again with a fresh attempt count; the
//! inbox still allows at most one effect) and discard.

use super::AppState;
use super::problem::ApiError;
use crate::saga::ops;
use crate::store::DeadLetterRow;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
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

pub async fn replay(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let row = ops::replay(&state.saga, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(view(row))).into_response())
}

pub async fn discard(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    ops::discard(&state.saga, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
