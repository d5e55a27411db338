//! The operators' console at `/ui`: server-rendered pages (maud), htmx for the live parts
//! and the actions, uPlot for the charts. Every asset is in the binary: it works offline.
//!
//! Signing in takes the admin token and sets an HttpOnly, SameSite=Strict session cookie
//! (`session.rs`); every action is a POST that must carry the session's CSRF token. No
//! page or fragment other than the sign-in page and the assets answers without a session.

mod auth;
mod charts;
mod dead_letters;
mod hosts;
mod layout;
mod orders;
pub mod session;
mod steps;

pub use charts::Charts;
pub use session::Sessions;

use super::AppState;
use super::problem::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub fn router(state: AppState) -> Router<AppState> {
    let max_component = state.registry.runtime().config().max_component_bytes.saturating_add(64 * 1024);
    let private = Router::new()
        .route("/ui", get(charts::overview))
        .route("/ui/", get(charts::overview))
        .route("/ui/series.json", get(charts::series))
        .route("/ui/orders", get(orders::list))
        .route("/ui/orders/rows", get(orders::rows))
        .route("/ui/orders/counts", get(orders::counts))
        .route("/ui/orders/{id}", get(orders::show))
        .route("/ui/steps", get(steps::page))
        .route("/ui/steps/{name}/upload", post(steps::upload).layer(DefaultBodyLimit::max(max_component)))
        .route("/ui/steps/{name}/rollback", post(steps::rollback))
        .route("/ui/steps/{name}/promote", post(steps::promote))
        .route("/ui/dead-letters", get(dead_letters::page))
        .route("/ui/dead-letters/{id}/replay", post(dead_letters::replay))
        .route("/ui/dead-letters/{id}/dry-run", post(dead_letters::dry_run))
        .route("/ui/dead-letters/{id}/discard", post(dead_letters::discard))
        .route("/ui/dead-letters/{id}/recording", get(dead_letters::recording))
        .route("/ui/hosts", get(hosts::page))
        .route("/ui/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(state, auth::require_session));
    Router::new()
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/assets/{file}", get(asset))
        .merge(private)
}

/// The console's static files, compiled in.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    ("htmx.min.js", "text/javascript", include_bytes!("../../../assets/vendor/htmx-2.0.11.min.js")),
    ("uPlot.min.js", "text/javascript", include_bytes!("../../../assets/vendor/uPlot-1.6.32.iife.min.js")),
    ("uPlot.min.css", "text/css", include_bytes!("../../../assets/vendor/uPlot-1.6.32.min.css")),
    ("console.css", "text/css", include_bytes!("../../../assets/console.css")),
    ("console.js", "text/javascript", include_bytes!("../../../assets/console.js")),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, bytes)) => {
            ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "public, max-age=3600")], *bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// An error of a console request: the API's error, shown as HTML with the same status.
pub struct UiError(pub ApiError);

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        UiError(error)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(error: crate::store::StoreError) -> Self {
        UiError(error.into())
    }
}

impl From<crate::saga::ops::OpError> for UiError {
    fn from(error: crate::saga::ops::OpError) -> Self {
        UiError(error.into())
    }
}

impl From<crate::registry::RegistryError> for UiError {
    fn from(error: crate::registry::RegistryError) -> Self {
        UiError(error.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, _) = self.0.status_and_code();
        let message = match &self.0 {
            // The cause is logged by the API's own conversion; the page says what to do.
            ApiError::Internal(_) => "internal error; the server's log has the cause".to_owned(),
            error => error.to_string(),
        };
        (status, layout::headers(), layout::flash(layout::Flash::Error(message))).into_response()
    }
}
