//! Signing in and out, and the check in front of every other console route: a genuine,
//! unexpired session, and for an action the session's CSRF token from the same origin.

use super::layout;
use super::session::{COOKIE, Session, constant_time_eq};
use crate::config::SecureCookie;
use crate::event::now_ms;
use crate::http::AppState;
use crate::http::access;
use axum::extract::{Query, Request, State};
use axum::http::{Extensions, HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;

/// The header htmx sends the CSRF token in (set on `<body hx-headers>`).
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a console path only, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with("/ui") && !next.starts_with("//") && !next.contains('\\') => next.to_owned(),
        _ => "/ui".to_owned(),
    }
}

pub async fn login_page(Query(query): Query<NextQuery>) -> Response {
    (layout::headers(), layout::sign_in(&safe_next(query.next.as_deref()), None)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SignIn>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let peer = access::peer(&extensions);
    let too_many = |wait| {
        let secs = access::retry_secs(wait);
        let message = format!("Too many failed sign-ins: try again in {secs} s.");
        let page = layout::sign_in(&next, Some(message.as_str()));
        let retry_after = [(header::RETRY_AFTER, secs.to_string())];
        (StatusCode::TOO_MANY_REQUESTS, retry_after, layout::headers(), page).into_response()
    };
    if let Some(wait) = state.access.blocked(peer) {
        return too_many(wait);
    }
    // Compare digests, so the time taken says nothing about the token.
    if !constant_time_eq(&access::token_digest(&form.token), &state.admin_token_digest) {
        if let Some(wait) = state.access.failed(peer) {
            return too_many(wait);
        }
        tracing::warn!(%peer, "console sign-in refused: not the admin token");
        let page = layout::sign_in(&next, Some("That is not the admin token."));
        return (StatusCode::UNAUTHORIZED, layout::headers(), page).into_response();
    }
    let (value, session) = state.sessions.issue(now_ms());
    let secure = match state.access.secure_cookie {
        SecureCookie::Always => true,
        SecureCookie::Never => false,
        SecureCookie::Auto => access::forwarded_https(&headers),
    };
    let cookie = Cookie::build((COOKIE, value))
        .path("/ui")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(time::Duration::milliseconds(session.expires_ms - now_ms()))
        .build();
    (jar.add(cookie), Redirect::to(&next)).into_response()
}

/// Sign out: the session is revoked here, not only forgotten by the browser.
pub async fn logout(State(state): State<AppState>, Extension(session): Extension<Session>, jar: CookieJar) -> Response {
    state.sessions.revoke(&session, now_ms());
    let gone = Cookie::build((COOKIE, "")).path("/ui").build();
    (jar.remove(gone), [("HX-Redirect", "/ui/login")], StatusCode::NO_CONTENT).into_response()
}

/// Refuse console requests without a session (a GET is sent to the sign-in page), and
/// actions without the session's CSRF token or from another origin.
pub async fn require_session(
    State(state): State<AppState>,
    jar: CookieJar,
    mut request: Request,
    next: Next,
) -> Response {
    let session = jar.get(COOKIE).and_then(|c| state.sessions.check(c.value(), now_ms()));
    let Some(session) = session else {
        return signed_out(&request);
    };
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && let Err(refusal) = check_action(request.headers(), &session)
    {
        tracing::warn!(path = %request.uri().path(), refusal, "console action refused");
        return (StatusCode::FORBIDDEN, layout::headers(), layout::flash(layout::Flash::Error(refusal.to_owned())))
            .into_response();
    }
    request.extensions_mut().insert(session);
    let mut response = next.run(request).await;
    for (name, value) in layout::headers() {
        response.headers_mut().entry(name).or_insert(value);
    }
    response
}

fn signed_out(request: &Request) -> Response {
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ui");
    let next = percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC);
    let login = format!("/ui/login?next={next}");
    if request.headers().contains_key("hx-request") {
        // htmx follows HX-Redirect with a full page load.
        return (StatusCode::UNAUTHORIZED, [("HX-Redirect", login.as_str())], "sign in again").into_response();
    }
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return Redirect::to(&login).into_response();
    }
    (StatusCode::UNAUTHORIZED, "sign in to the console first").into_response()
}

fn check_action(headers: &HeaderMap, session: &Session) -> Result<(), &'static str> {
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !constant_time_eq(token.as_bytes(), session.csrf.as_bytes()) {
        return Err("the action lacks this session's CSRF token; reload the page");
    }
    // A browser names the page's origin on a POST: it must be this server.
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
        if origin_host != host {
            return Err("the action comes from another origin");
        }
    }
    Ok(())
}
