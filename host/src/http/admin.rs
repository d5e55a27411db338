//! `/api/admin/*`: the bearer-token check, and the plugin endpoints (list, upload,
//! rollback).

use super::AppState;
use super::body::Checker;
use super::problem::ApiError;
use super::problem::Problem;
use super::responses::{AdminOnly, Common};
use crate::registry::{RegistryError, RolloutMode, Slot, Source, StepRegistry, VersionSummary};
use crate::runtime::LoadedStep;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One version of a step, as the API shows it, with its calls on this host.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: String,
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub loaded_at: time::OffsetDateTime,
    pub subscribes: Vec<String>,
    /// The contract version it was built against: `wasaga:saga@0.2.0` or `@0.1.0`.
    pub contract: String,
    /// Calls, failures and p99 latency of this version on this host since it was loaded.
    pub stats: StatsView,
}

/// A version's calls on this host.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    pub calls: u64,
    /// Traps, timeouts, memory, limits, fatal errors, invalid output.
    pub failures: u64,
    /// Failures on events the version it was judged against (the one it replaced, or
    /// the serving version for a candidate) handled without failing: what automatic
    /// rollback counts.
    pub regressions: u64,
    pub p99_ms: Option<f64>,
}

impl From<VersionSummary> for StatsView {
    fn from(s: VersionSummary) -> Self {
        StatsView { calls: s.calls, failures: s.failures, regressions: s.regressions, p99_ms: s.p99_ms }
    }
}

/// A candidate being rolled out.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutView {
    /// `canary` or `shadow`.
    pub mode: &'static str,
    pub digest: String,
    /// The share of orders a canary takes (0 for a shadow).
    pub percent: u8,
    pub candidate: VersionView,
}

/// A step with its serving and previous versions and its rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    #[serde(flatten)]
    pub current: VersionView,
    pub previous: Option<VersionView>,
    pub rollout: Option<RolloutView>,
    /// The event kinds only this step may emit: its own namespace and the saga's kinds
    /// the configuration gives it (`payment.*`, `stock.*` by default).
    pub owns: Vec<String>,
}

impl VersionView {
    fn of(step: &LoadedStep, registry: &StepRegistry) -> Self {
        VersionView {
            version: step.version.clone(),
            digest: step.digest.to_string(),
            loaded_at: step.loaded_at,
            subscribes: step.subscribes.clone(),
            contract: format!("wasaga:saga@{}", step.contract),
            stats: registry.stats().summary(&step.digest).into(),
        }
    }
}

impl PluginView {
    pub(crate) fn of(slot: &Slot, state: &AppState) -> Self {
        let registry = &state.registry;
        PluginView {
            owns: state.saga.config.owners.owned_by(&slot.current.name),
            name: slot.current.name.to_string(),
            current: VersionView::of(&slot.current, registry),
            previous: slot.previous.as_deref().map(|p| VersionView::of(p, registry)),
            rollout: slot.rollout.as_ref().map(|r| RolloutView {
                mode: r.mode.name(),
                digest: r.candidate.digest.to_string(),
                percent: r.mode.percent(),
                candidate: VersionView::of(&r.candidate, registry),
            }),
        }
    }
}

#[utoipa::path(
    get, path = "/api/admin/plugins", tag = "plugins",
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Every step", body = Vec<PluginView>)
    ),
    security(("admin_token" = []))
)]
pub async fn list_plugins(State(state): State<AppState>) -> Json<Vec<PluginView>> {
    Json(state.registry.snapshot().values().map(|slot| PluginView::of(slot, &state)).collect())
}

/// Content types accepted for a component upload.
const WASM_TYPES: [&str; 2] = ["application/wasm", "application/octet-stream"];

/// `?rollout=canary&percent=N` or `?rollout=shadow` on an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// `canary` or `shadow`; without it the upload serves at once.
    rollout: Option<String>,
    /// 1 to 99, with `rollout=canary`.
    percent: Option<String>,
}

impl UploadQuery {
    fn mode(&self) -> Result<Option<RolloutMode>, ApiError> {
        let mut check = Checker::default();
        let mode = match self.rollout.as_deref() {
            None | Some("") => {
                if self.percent.is_some() {
                    check.fail("percent", "is only for rollout=canary");
                }
                None
            }
            Some("shadow") => {
                if self.percent.is_some() {
                    check.fail("percent", "is only for rollout=canary");
                }
                Some(RolloutMode::Shadow)
            }
            Some("canary") => match self.percent.as_deref().map(str::parse::<u8>) {
                Some(Ok(percent)) if (1..=99).contains(&percent) => Some(RolloutMode::Canary { percent }),
                None => {
                    check.fail("percent", "is required for rollout=canary");
                    None
                }
                Some(_) => {
                    check.fail("percent", "must be a whole number from 1 to 99");
                    None
                }
            },
            Some(_) => {
                check.fail("rollout", "must be canary or shadow");
                None
            }
        };
        check.finish(Some(mode))
    }
}

#[utoipa::path(
    put, path = "/api/admin/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The step"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Serving (or rolling out)", body = PluginView),
        (status = 409, description = "Changed by another host at the same time", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than WASAGA_MAX_COMPONENT_MIB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/wasm", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused, with the reason; the serving version is unchanged", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
pub async fn put_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PluginView>, ApiError> {
    let mode = query.mode()?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !WASM_TYPES.contains(&mime) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the component with Content-Type: application/wasm (got {:?})",
            content_type
        )));
    }
    let slot = match mode {
        None => state.registry.install(&name, body, Source::Upload).await.map(|installed| installed.slot().clone()),
        Some(mode) => state.registry.start_rollout(&name, body, mode).await,
    };
    slot.map(|slot| Json(PluginView::of(&slot, &state))).map_err(registry_error)
}

#[utoipa::path(
    post, path = "/api/admin/plugins/{name}/rollback", tag = "plugins",
    params(("name" = String, Path, description = "The step")),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Rolled back", body = PluginView),
        (status = 404, description = "No such step", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to roll back to", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
/// Abort a rollout if one runs, else serve the previous version again.
pub async fn rollback_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    state.registry.rollback(&name).await.map(|slot| Json(PluginView::of(&slot, &state))).map_err(registry_error)
}

#[utoipa::path(
    post, path = "/api/admin/plugins/{name}/promote", tag = "plugins",
    params(("name" = String, Path, description = "The step")),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Promoted", body = PluginView),
        (status = 404, description = "No such step", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No rollout to promote", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
/// Make the rollout's candidate the serving version.
pub async fn promote_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    state.registry.promote(&name).await.map(|slot| Json(PluginView::of(&slot, &state))).map_err(registry_error)
}

#[utoipa::path(
    get, path = "/api/admin/plugins/{name}/shadow", tag = "plugins",
    params(("name" = String, Path, description = "The step")),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "calls, same, different, failed, dropped, samples", body = Object),
        (status = 404, description = "No such step, or no shadow here", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
/// The shadow comparison of `name` on this host.
pub async fn shadow_report(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.registry.current(&name).is_none() {
        return Err(ApiError::NotFound(format!("step {name:?} is not loaded")));
    }
    match state.saga.shadows.report(&name) {
        Some(mut report) => {
            report["host_id"] = serde_json::Value::String(state.saga.host_id.clone());
            report["running"] = serde_json::Value::Bool(state.registry.shadow(&name).is_some());
            Ok(Json(report))
        }
        None => Err(ApiError::NotFound(format!("step {name:?} has no shadow comparison on this host"))),
    }
}

#[utoipa::path(
    get, path = "/api/admin/plugins/{name}/history", tag = "plugins",
    params(("name" = String, Path, description = "The step")),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Installs, rollbacks, rollouts, refusals, newest first", body = Vec<HistoryView>)
    ),
    security(("admin_token" = []))
)]
/// History of a step's versions in the fleet, newest first.
pub async fn plugin_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<HistoryView>>, ApiError> {
    let rows = state.saga.query().history(&name, 100).await?;
    Ok(Json(
        rows.into_iter()
            .map(|h| HistoryView {
                action: h.action,
                digest: h.digest,
                reason: h.reason,
                host_id: h.host_id,
                at: at(h.at_ms),
            })
            .collect(),
    ))
}

/// One change of a step's versions in the fleet.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// `install`, `rollback`, `auto-rollback`, `rollout`, `promote`, `refused`, …
    action: String,
    /// The version it concerns (`sha256:<hex>`).
    digest: String,
    reason: String,
    /// The host that made the change.
    host_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: time::OffsetDateTime,
}

fn registry_error(error: RegistryError) -> ApiError {
    error.into()
}

/// A live host of the fleet, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostView {
    host_id: String,
    http_addr: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    started_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    seen_at: time::OffsetDateTime,
    /// Step → the digest this host serves.
    #[schema(value_type = Object)]
    steps: serde_json::Value,
}

fn at(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[utoipa::path(
    get, path = "/api/admin/hosts", tag = "admin",
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "The live hosts", body = Vec<HostView>)
    ),
    security(("admin_token" = []))
)]
/// `GET /api/admin/hosts`: the hosts seen within the last 10 s and what each serves.
pub async fn list_hosts(State(state): State<AppState>) -> Result<Json<Vec<HostView>>, ApiError> {
    let ttl = i64::try_from(crate::saga::HOST_TTL.as_millis()).unwrap_or(10_000);
    let rows = state.saga.query().hosts(crate::event::now_ms() - ttl).await?;
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
