//! Dead letters: the list, and replay, dry run, discard and the recording of each.
//! Replay and discard ask for confirmation in the page before they are sent.

use super::UiError;
use super::layout::{self, Flash, Nav, at, scroll};
use super::session::Session;
use crate::http::AppState;
use crate::saga::ops;
use crate::store::DeadLetterRow;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

/// The order a dead letter's event belongs to.
pub fn order_of(row: &DeadLetterRow) -> Option<String> {
    field(row, "order_id").filter(|id| !id.is_empty())
}

fn field(row: &DeadLetterRow, name: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&row.event).ok()?.get(name)?.as_str().map(str::to_owned)
}

/// Dead letters as a table with their actions.
pub fn table(rows: &[DeadLetterRow]) -> Markup {
    scroll(html! {
        table.dead-letters {
            thead { tr { th { "step" } th { "event" } th { "order" } th { "error" } th.num { "attempts" } th { "at (UTC)" } th { "" } } }
            tbody {
                @for row in rows {
                    tr id={ "dl-" (row.id) } {
                        td { (row.consumer) }
                        td { code { (field(row, "kind").unwrap_or_default()) } }
                        td { @if let Some(order) = order_of(row) { a href={ "/ui/orders/" (order) } { code { (order) } } } }
                        td.error { (row.error) }
                        td.num { (row.attempts) }
                        td { (at(row.dead_lettered_at_ms)) }
                        td.actions {
                            button hx-post={ "/ui/dead-letters/" (row.id) "/replay" } hx-target="#content"
                                hx-confirm={ "Replay this " (row.consumer) " dead letter? Its step handles the event again." } { "Replay" }
                            button hx-post={ "/ui/dead-letters/" (row.id) "/dry-run" } hx-target="#content" { "Dry run" }
                            button.danger hx-post={ "/ui/dead-letters/" (row.id) "/discard" } hx-target="#content"
                                hx-confirm="Discard this dead letter? The event is never handled by its step." { "Discard" }
                            a href={ "/ui/dead-letters/" (row.id) "/recording" } download { "Recording" }
                        }
                    }
                }
            }
        }
    })
}

async fn section(state: &AppState, flash: Option<Flash>) -> Result<Markup, UiError> {
    let rows = ops::dead_letters(&state.saga).await?;
    Ok(html! {
        h1 { "Dead letters" }
        @if let Some(flash) = flash { (layout::flash(flash)) }
        @if rows.is_empty() {
            p.empty { "No dead letters." }
        } @else {
            p.hint { (rows.len()) " events a step gave up on. Replay once the cause is fixed; a dry run shows what the serving version would do now, committing nothing." }
            (table(&rows))
        }
    })
}

pub async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Result<Markup, UiError> {
    Ok(layout::page("Dead letters", Nav::DeadLetters, &session, section(&state, None).await?))
}

/// The section again with the action's outcome above it; a failure keeps its status.
async fn after(state: &AppState, result: Result<Flash, UiError>) -> Response {
    layout::after(result, |flash| section(state, Some(flash))).await
}

pub async fn replay(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = ops::replay(&state.saga, &id, None)
        .await
        .map(|row| Flash::Done(format!("Replayed: {} handles {} again.", row.consumer, row.event_id)))
        .map_err(UiError::from);
    after(&state, result).await
}

pub async fn discard(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = ops::discard(&state.saga, &id)
        .await
        .map(|row| Flash::Done(format!("Discarded the dead letter of {} for {}.", row.consumer, row.event_id)))
        .map_err(UiError::from);
    after(&state, result).await
}

pub async fn dry_run(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = ops::dry_run(&state.saga, &id, None)
        .await
        .map(|run| {
            let details = serde_json::to_string_pretty(&serde_json::json!({
                "outcome": run.outcome, "error": run.error, "emits": run.emits, "writes": run.writes,
            }))
            .unwrap_or_default();
            let said = match &run.note {
                Some(note) => format!("{} ({note})", run.outcome),
                None => run.outcome.clone(),
            };
            Flash::Details(format!("Dry run on {}: {said} (nothing committed)", run.version), details)
        })
        .map_err(UiError::from);
    after(&state, result).await
}

/// The recording of the dead letter's last attempt, as a file for `wasaga replay`.
pub async fn recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, UiError> {
    match ops::recording(&state.saga, &id).await? {
        Some(json) => {
            let file = format!("attachment; filename=\"dead-letter-{}.json\"", id.replace(['"', '\\'], ""));
            Ok(([(header::CONTENT_TYPE, "application/json".to_owned()), (header::CONTENT_DISPOSITION, file)], json)
                .into_response())
        }
        None => Err(UiError(crate::http::problem::ApiError::NotFound(format!(
            "dead letter {id} has no recording (it was not a step's call)"
        )))),
    }
}
