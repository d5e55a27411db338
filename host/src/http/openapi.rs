//! `GET /api/openapi.json`: the API described from the handlers' own annotations and
//! types, collected as the routes are declared (`super::api`), so the description cannot
//! drift from the code. CI fuzzes the server against it.

use super::problem;
use super::responses::Common;
use axum::Extension;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasaga",
        description = "Runs the business steps of an order saga as sandboxed WebAssembly components. \
            Errors are application/problem+json (RFC 9457). /api/admin/*, setting stock and the \
            cross-customer order list need the admin token. Placing, reading and cancelling an \
            order need a client key with the scope place, read or cancel (or the admin token), sent \
            as Authorization: Bearer; with no client configured they are open, which the server \
            allows only while it listens on a loopback address. Failed tokens are limited per \
            client address (429 with Retry-After)."
    ),
    components(schemas(problem::Problem, problem::FieldError)),
    modifiers(&AdminToken),
    tags(
        (name = "orders", description = "Place, follow and cancel orders"),
        (name = "stock", description = "Stock levels, set through the inventory step"),
        (name = "plugins", description = "Step versions: upload, rollback, rollouts"),
        (name = "dead letters", description = "Events a step gave up on, their recordings and replays"),
        (name = "admin", description = "The fleet and the archive"),
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "hooks", description = "Signed callbacks for steps (Standard Webhooks signatures)"),
    )
)]
pub struct ApiDoc;

/// The bearer tokens: the admin token, and the client keys of `[clients.NAME]`.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let client_key = Http::builder()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A client key from [clients.NAME] in the configuration; its scopes (place, read, cancel) \
                 say which order endpoints it may call",
            ))
            .build();
        components.add_security_scheme("client_key", SecurityScheme::Http(client_key));
    }
}

/// This document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "health",
    responses(Common, (status = 200, description = "The OpenAPI 3.1 description of this API", body = Object))
)]
pub async fn openapi_json(Extension(description): Extension<Described>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], description.0)
}

/// The description, rendered once when the router is built: anyone may ask for it, so
/// asking costs a reference to its bytes, not a copy of the document.
#[derive(Debug, Clone)]
pub struct Described(bytes::Bytes);

impl Described {
    pub fn of(description: &utoipa::openapi::OpenApi) -> Described {
        Described(bytes::Bytes::from(serde_json::to_vec(description).unwrap_or_default()))
    }
}
