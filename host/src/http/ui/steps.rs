//! Steps: what each serves, what it served before, its subscriptions, calls per version,
//! its rollout; upload a new version (at once, as a canary or as a shadow), roll back,
//! promote.

use super::UiError;
use super::layout::{self, Flash, Nav, at, digest, scroll};
use super::session::Session;
use crate::http::AppState;
use crate::http::admin::{PluginView, VersionView};
use crate::http::problem::ApiError;
use crate::registry::{RolloutMode, Source};
use axum::Extension;
use axum::extract::{Multipart, Path, State};
use axum::response::Response;
use bytes::Bytes;
use maud::{Markup, html};

fn version_row(role: &str, v: &VersionView) -> Markup {
    html! {
        tr {
            td { (role) }
            td { (v.version) }
            td { (digest(&v.digest)) }
            td { (at(i64::try_from(v.loaded_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))) }
            td.num { (v.stats.calls) }
            td.num { (v.stats.failures) }
            td.num { @if let Some(p99) = v.stats.p99_ms { (format!("{p99:.1} ms")) } @else { "–" } }
        }
    }
}

fn step_card(plugin: &PluginView, history: &[crate::store::HistoryRow]) -> Markup {
    let name = &plugin.name;
    html! {
        section.step id={ "step-" (name) } {
            h2 { (name) " " small { "serving " (plugin.current.version) " " (digest(&plugin.current.digest)) } }
            p.subscribes { "subscribes to " @for (i, s) in plugin.current.subscribes.iter().enumerate() { @if i > 0 { ", " } code { (s) } } }
            @if let Some(rollout) = &plugin.rollout {
                p.rollout {
                    strong { (rollout.mode) }
                    @if rollout.mode == "canary" { " on " (rollout.percent) "% of orders" } @else { ": runs beside the serving version, commits nothing" }
                    ", candidate " (digest(&rollout.digest))
                }
            }
            (scroll(html! {
                table.versions {
                    thead { tr { th { "" } th { "version" } th { "digest" } th { "loaded (UTC)" } th.num { "calls" } th.num { "failures" } th.num { "p99" } } }
                    tbody {
                        (version_row("serving", &plugin.current))
                        @if let Some(rollout) = &plugin.rollout { (version_row(rollout.mode, &rollout.candidate)) }
                        @if let Some(previous) = &plugin.previous { (version_row("previous", previous)) }
                    }
                }
            }))
            div.actions {
                @if plugin.rollout.is_some() {
                    button hx-post={ "/ui/steps/" (name) "/promote" } hx-target="#content"
                        hx-confirm={ "Promote the candidate of " (name) " to serve every order?" } { "Promote" }
                    button.danger hx-post={ "/ui/steps/" (name) "/rollback" } hx-target="#content"
                        hx-confirm={ "Abort the rollout of " (name) "?" } { "Abort rollout" }
                } @else if plugin.previous.is_some() {
                    button.danger hx-post={ "/ui/steps/" (name) "/rollback" } hx-target="#content"
                        hx-confirm={ "Roll " (name) " back to its previous version?" } { "Roll back" }
                }
            }
            form.upload hx-post={ "/ui/steps/" (name) "/upload" } hx-encoding="multipart/form-data" hx-target="#content" {
                label { "New version " input type="file" name="file" accept=".wasm,application/wasm" required; }
                label {
                    "serve "
                    select name="mode" {
                        option value="now" { "at once" }
                        option value="canary" { "as a canary" }
                        option value="shadow" { "as a shadow" }
                    }
                }
                label { "canary % " input type="number" name="percent" min="1" max="99" value="10"; }
                button type="submit" { "Upload" }
            }
            @if !history.is_empty() {
                details.history {
                    summary { "History" }
                    ul {
                        @for h in history {
                            li { (at(h.at_ms)) " · " strong { (h.action) } " " (digest(&h.digest)) " on " (h.host_id)
                                @if !h.reason.is_empty() { " · " (h.reason) } }
                        }
                    }
                }
            }
        }
    }
}

async fn section(state: &AppState, flash: Option<Flash>) -> Result<Markup, UiError> {
    let slots = state.registry.snapshot();
    let mut cards = Vec::new();
    for slot in slots.values() {
        let plugin = PluginView::of(slot, state);
        let history = state.saga.query().history(&plugin.name, 5).await?;
        cards.push(step_card(&plugin, &history));
    }
    Ok(html! {
        h1 { "Steps" }
        @if let Some(flash) = flash { (layout::flash(flash)) }
        p.hint { "Calls, failures and p99 are this host's since each version was loaded." }
        @if cards.is_empty() { p.empty { "No steps are loaded." } }
        @for card in cards { (card) }
    })
}

pub async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Result<Markup, UiError> {
    Ok(layout::page("Steps", Nav::Steps, &session, section(&state, None).await?))
}

async fn after(state: &AppState, result: Result<Flash, UiError>) -> Response {
    layout::after(result, |flash| section(state, Some(flash))).await
}

/// The upload form: the file, how to serve it, and a canary's share.
struct Upload {
    file: Bytes,
    mode: Option<RolloutMode>,
}

async fn read_upload(mut form: Multipart) -> Result<Upload, UiError> {
    let mut file = None;
    let mut mode = String::from("now");
    let mut percent = String::new();
    while let Some(field) = form.next_field().await.map_err(|e| ApiError::BadInput(format!("the upload: {e}")))? {
        let name = field.name().unwrap_or("").to_owned();
        let bytes = field.bytes().await.map_err(|e| ApiError::BadInput(format!("the upload: {e}")))?;
        match name.as_str() {
            "file" => file = Some(bytes),
            "mode" => mode = String::from_utf8_lossy(&bytes).into_owned(),
            "percent" => percent = String::from_utf8_lossy(&bytes).trim().to_owned(),
            _ => {}
        }
    }
    let file = file.filter(|f| !f.is_empty()).ok_or_else(|| ApiError::BadInput("choose a .wasm file".to_owned()))?;
    let mode = match mode.as_str() {
        "now" => None,
        "shadow" => Some(RolloutMode::Shadow),
        "canary" => match percent.parse::<u8>() {
            Ok(percent) if (1..=99).contains(&percent) => Some(RolloutMode::Canary { percent }),
            _ => return Err(ApiError::BadInput("canary %: a whole number from 1 to 99".to_owned()).into()),
        },
        other => return Err(ApiError::BadInput(format!("serve: {other:?} is not at once, canary or shadow")).into()),
    };
    Ok(Upload { file, mode })
}

pub async fn upload(State(state): State<AppState>, Path(name): Path<String>, form: Multipart) -> Response {
    let result: Result<Flash, UiError> = async {
        let upload = read_upload(form).await?;
        let slot = match upload.mode {
            None => state.registry.install(&name, upload.file, Source::Upload).await.map(|i| i.slot().clone())?,
            Some(mode) => state.registry.start_rollout(&name, upload.file, mode).await?,
        };
        let view = PluginView::of(&slot, &state);
        Ok(match &view.rollout {
            Some(rollout) => Flash::Done(format!("{name}: {} {} started", rollout.mode, rollout.digest)),
            None => Flash::Done(format!("{name} now serves {} ({})", view.current.version, view.current.digest)),
        })
    }
    .await;
    after(&state, result).await
}

pub async fn rollback(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = state
        .registry
        .rollback(&name)
        .await
        .map(|slot| Flash::Done(format!("{name} rolled back: serving {}", slot.current.digest)))
        .map_err(UiError::from);
    after(&state, result).await
}

pub async fn promote(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = state
        .registry
        .promote(&name)
        .await
        .map(|slot| Flash::Done(format!("{name}: the candidate now serves ({})", slot.current.digest)))
        .map_err(UiError::from);
    after(&state, result).await
}
