//! The HTTP API (axum), as README.md ("Orders", "Plugins", "Debugging a dead letter")
//! and `/api/openapi.json` describe it.
//!
//! **API Boundary:** paths, bodies and status codes here are relied on by clients and
//! tests outside the project; change them only by adding.

pub mod access;
mod admin;
mod archive;
pub mod body;
mod dead_letters;
mod guard;
mod health;
pub mod hooks;
pub mod openapi;
mod orders;
pub mod problem;
mod responses;
mod stock;
pub mod ui;

pub use admin::{PluginView, VersionView};

use crate::registry::StepRegistry;
use crate::saga::SagaContext;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<StepRegistry>,
    /// SHA-256 of the admin token.
    pub admin_token_digest: Arc<[u8]>,
    /// Steps that must be loaded before `/readyz` says ready.
    pub required_steps: Arc<[String]>,
    pub saga: Arc<SagaContext>,
    /// Console sign-ins.
    pub sessions: ui::Sessions,
    /// The console's overview samples.
    pub charts: Arc<ui::Charts>,
    /// Client keys, failed-credential budgets, the cookie policy.
    pub access: Arc<access::Access>,
    /// Whether `/metrics` is served here (not on an address of its own).
    pub metrics_on_api: bool,
    /// Longest a request may take to be answered (`WASAGA_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Longest a request body may pause (`WASAGA_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// Steps that take signed webhooks, by name.
    pub hooks: Arc<std::collections::BTreeMap<String, crate::saga::hooks::Hook>>,
}

impl AppState {
    /// Required steps that are not loaded (readiness, and whether orders are accepted).
    pub fn missing_steps(&self) -> Vec<String> {
        let steps = self.registry.snapshot();
        self.required_steps.iter().filter(|name| !steps.contains_key(*name)).cloned().collect()
    }
}

/// `/metrics` alone, on `WASAGA_METRICS_ADDR`; it answers before the server started too.
pub fn metrics_router(state: Arc<arc_swap::ArcSwapOption<AppState>>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let state = state.load_full();
                async move { health::render_metrics(state.as_deref()).await }
            }),
        )
        .layer(TraceLayer::new_for_http())
}

pub fn router(state: AppState) -> Router {
    let body_timeout = state.body_timeout;
    let (api, description) = api(&state).split_for_parts();
    api.merge(ui::router(state.clone()))
        .fallback(admin::not_found)
        .layer(axum::Extension(openapi::Described::of(&description)))
        .layer(middleware::map_response(problem::as_problem))
        .layer(middleware::from_fn(guard::reject_control_characters))
        .layer(DefaultBodyLimit::max(body::MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), bound_request))
        // A body that pauses longer than this fails to read (400): a client that sends
        // headers and stops holds no handler, and no shutdown, for longer.
        .layer(MapRequestBodyLayer::new(axum::body::Body::new))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every endpoint of the API, each declared once: its route, who may call it, and (from
/// its `#[utoipa::path]`) its description in `/api/openapi.json`.
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    // A little over the runtime's limit, so an oversized upload gets the runtime's
    // message naming the setting rather than a bare 413.
    let max_component = state.registry.runtime().config().max_component_bytes.saturating_add(1024);
    // The cross-customer list, setting stock and everything under /api/admin are the admin's.
    let admin = OpenApiRouter::new()
        .routes(routes!(orders::list))
        .routes(routes!(stock::put))
        .routes(routes!(admin::list_plugins))
        .routes(routes!(admin::put_plugin).map(|route| route.layer(DefaultBodyLimit::max(max_component))))
        .routes(routes!(admin::rollback_plugin))
        .routes(routes!(admin::promote_plugin))
        .routes(routes!(admin::shadow_report))
        .routes(routes!(admin::plugin_history))
        .routes(routes!(admin::list_hosts))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::discard))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(dead_letters::recording))
        .routes(routes!(dead_letters::recordings))
        .routes(routes!(archive::list))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_admin));
    // The rest of the order API needs a client key with the scope (or the admin token).
    let place = OpenApiRouter::new()
        .routes(routes!(orders::place))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_place));
    let read = OpenApiRouter::new()
        .routes(routes!(orders::get))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_read));
    let cancel = OpenApiRouter::new()
        .routes(routes!(orders::cancel))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_cancel));
    let mut open = OpenApiRouter::new()
        .routes(routes!(stock::get))
        // Authenticated by the step's signature, not a bearer token.
        .routes(routes!(hooks::receive))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::openapi_json));
    if state.metrics_on_api {
        open = open.routes(routes!(health::metrics));
    }
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(admin)
        .merge(place)
        .merge(read)
        .merge(cancel)
        .merge(open)
}

/// Answer within `WASAGA_REQUEST_TIMEOUT_MS` (503 after it); an upload also gets its
/// compile's own bound, `WASAGA_COMPILE_TIMEOUT_MS`. Handlers are cancel-safe: what they
/// commit is one store transaction.
async fn bound_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut bound = state.request_timeout;
    if request.method() == axum::http::Method::PUT && request.uri().path().starts_with("/api/admin/plugins/") {
        bound = bound.saturating_add(state.registry.runtime().config().compile_timeout);
    }
    match tokio::time::timeout(bound, next.run(request)).await {
        Ok(response) => response,
        Err(_) => problem::ApiError::Unavailable(format!(
            "no answer within {} ms (WASAGA_REQUEST_TIMEOUT_MS)",
            bound.as_millis()
        ))
        .into_response(),
    }
}
