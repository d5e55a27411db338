//! `/api/admin/dead-letters`: list, replay (deliver again with a fresh attempt count; the
//! inbox still allows at most one effect) and discard.

use super::AppState;
use super::problem::ApiError;
use crate::saga::wire;
use crate::store::DeadLetterRow;
use crate::transport::TransportError;
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
    let mut rows = Vec::new();
    for store in state.saga.stores.all() {
        rows.extend(store.dead_letters().await?);
    }
    rows.sort_by(|a, b| (a.dead_lettered_at_ms, &a.id).cmp(&(b.dead_lettered_at_ms, &b.id)));
    Ok(Json(rows.into_iter().map(view).collect()))
}

pub async fn replay(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    // Reopen, queue, then remove: a crash or failure at any point leaves the dead letter
    // listed (a second replay is harmless: the inbox absorbs a duplicate).
    // A dead letter lives in the store of the step that gave up.
    let mut found = None;
    for store in state.saga.stores.all() {
        if let Some(row) = store.reopen_dead_letter(&id).await? {
            found = Some((store.clone(), row));
            break;
        }
    }
    let Some((store, row)) = found else {
        return Err(ApiError::NotFound(format!("no dead letter {id:?}")));
    };
    let event =
        wire::decode(&row.event).map_err(|e| ApiError::Internal(format!("dead letter {id} is unreadable: {e}")))?;
    // The source the consumer reads: the transport, or the stream for an observer.
    let source = state.saga.source_for(&row.consumer);
    source.redeliver(&row.consumer, &event).await.map_err(|e| match e {
        TransportError::Unavailable { .. } => ApiError::Unavailable(format!("cannot replay now: {e}")),
        _ => ApiError::Internal(e.to_string()),
    })?;
    store.take_dead_letter(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(view(row))).into_response())
}

pub async fn discard(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    for store in state.saga.stores.all() {
        if store.take_dead_letter(&id).await?.is_some() {
            return Ok(StatusCode::NO_CONTENT);
        }
    }
    Err(ApiError::NotFound(format!("no dead letter {id:?}")))
}
