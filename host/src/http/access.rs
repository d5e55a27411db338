//! Who may call what. The admin token may do everything; a client key from
//! `[clients.NAME]` may do what its scopes name (`place`, `read`, `cancel` on the order
//! API); with no client configured the order API is open, which the settings allow only
//! on a loopback address. The cross-customer order list is the admin's alone.
//!
//! A presented token is digested the same way as the configured ones (trimmed, SHA-256)
//! and compared in constant time. Failed bearer checks and console sign-ins are limited
//! per client address with `governor`, so a token cannot be guessed at network speed:
//! over the budget, an address is answered 429 without its token being looked at.

use super::AppState;
use super::problem::ApiError;
use super::ui::session::constant_time_eq;
use crate::config::{ClientKey, Scope, SecureCookie};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Extensions, HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// The digest a token is compared by, configured or presented alike: surrounding
/// whitespace (a newline from a file or a header) is not part of a token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// One client of the order API.
struct Client {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// Who a bearer token names.
enum Caller<'a> {
    Admin,
    Client(&'a Client),
    Unknown,
}

/// The access rules of one server.
pub struct Access {
    clients: Vec<Client>,
    /// No client is configured: the order API needs no credential.
    open: bool,
    failures: Failures,
    /// When the console's cookie is `Secure`.
    pub secure_cookie: SecureCookie,
}

impl Access {
    pub fn new(clients: &[ClientKey], failures_per_minute: u32, secure_cookie: SecureCookie) -> Access {
        let clients: Vec<Client> = clients
            .iter()
            .map(|key| Client {
                name: key.name.clone(),
                digest: token_digest(key.token.expose_secret()),
                scopes: key.scopes.clone(),
            })
            .collect();
        Access { open: clients.is_empty(), clients, failures: Failures::new(failures_per_minute), secure_cookie }
    }

    fn caller(&self, admin_digest: &[u8], token: &str) -> Caller<'_> {
        let digest = token_digest(token);
        if constant_time_eq(&digest, admin_digest) {
            return Caller::Admin;
        }
        match self.clients.iter().find(|client| constant_time_eq(&client.digest, &digest)) {
            Some(client) => Caller::Client(client),
            None => Caller::Unknown,
        }
    }

    /// How long `peer` must wait before a credential of theirs is looked at again.
    pub fn blocked(&self, peer: IpAddr) -> Option<Duration> {
        self.failures.blocked(peer)
    }

    /// Count a wrong token or sign-in from `peer`; over the budget, how long it must wait.
    pub fn failed(&self, peer: IpAddr) -> Option<Duration> {
        self.failures.failed(peer)
    }
}

/// Failed credentials per client address.
struct Failures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses over their budget, until when: checked before any token is compared.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

/// Past this many addresses, forget those whose budget is full again.
const TRACKED_ADDRESSES: usize = 10_000;

impl Failures {
    fn new(per_minute: u32) -> Failures {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Failures { limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)), blocked: Mutex::default() }
    }

    fn blocked(&self, peer: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked.lock();
        let until = *blocked.get(&peer)?;
        let now = Instant::now();
        if until > now {
            return Some(until - now);
        }
        blocked.remove(&peer);
        None
    }

    fn failed(&self, peer: IpAddr) -> Option<Duration> {
        if self.limiter.len() > TRACKED_ADDRESSES {
            self.limiter.retain_recent();
        }
        let not_until = self.limiter.check_key(&peer).err()?;
        let wait = not_until.wait_time_from(self.limiter.clock().now());
        let now = Instant::now();
        let mut blocked = self.blocked.lock();
        blocked.retain(|_, until| *until > now);
        blocked.insert(peer, now + wait);
        metrics::counter!("wasaga_auth_blocked_total").increment(1);
        tracing::warn!(%peer, wait_ms = wait.as_millis() as u64, "too many failed credentials from one address");
        Some(wait)
    }
}

/// The address a request came from (its TCP peer); unspecified when served without one.
pub fn peer(extensions: &Extensions) -> IpAddr {
    extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

/// Whole seconds to wait, at least 1 (for `Retry-After`).
pub fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Refuse requests without the admin token: 401 without a token, 403 with another one,
/// 429 while the address has failed too often.
pub async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = bearer(request.headers()) else {
        return ApiError::Unauthorized.into_response();
    };
    let peer = peer(request.extensions());
    if let Some(wait) = state.access.blocked(peer) {
        return ApiError::TooManyFailures(retry_secs(wait)).into_response();
    }
    match state.access.caller(&state.admin_token_digest, token) {
        Caller::Admin => next.run(request).await,
        Caller::Client(client) => {
            ApiError::NotAllowed(format!("client {} may not do this: it needs the admin token", client.name))
                .into_response()
        }
        Caller::Unknown => match state.access.failed(peer) {
            Some(wait) => ApiError::TooManyFailures(retry_secs(wait)).into_response(),
            None => ApiError::Forbidden.into_response(),
        },
    }
}

/// Let a request of the order API through if its caller may `scope`.
async fn require(state: &AppState, scope: Scope, request: Request, next: Next) -> Response {
    let Some(token) = bearer(request.headers()) else {
        if state.access.open {
            return next.run(request).await;
        }
        return ApiError::NoCredential(format!(
            "this endpoint needs an Authorization: Bearer header with a client key that has the {} scope",
            scope.as_str()
        ))
        .into_response();
    };
    let peer = peer(request.extensions());
    if let Some(wait) = state.access.blocked(peer) {
        return ApiError::TooManyFailures(retry_secs(wait)).into_response();
    }
    match state.access.caller(&state.admin_token_digest, token) {
        Caller::Admin => next.run(request).await,
        Caller::Client(client) if client.scopes.contains(&scope) => next.run(request).await,
        Caller::Client(client) => {
            tracing::info!(client = %client.name, scope = scope.as_str(), "order request refused: scope not granted");
            ApiError::NotAllowed(format!("client {} does not have the {} scope", client.name, scope.as_str()))
                .into_response()
        }
        Caller::Unknown => match state.access.failed(peer) {
            Some(wait) => ApiError::TooManyFailures(retry_secs(wait)).into_response(),
            None => ApiError::NotAllowed("the bearer token is neither a client key nor the admin token".to_owned())
                .into_response(),
        },
    }
}

pub async fn require_place(State(state): State<AppState>, request: Request, next: Next) -> Response {
    require(&state, Scope::Place, request, next).await
}

pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    require(&state, Scope::Read, request, next).await
}

pub async fn require_cancel(State(state): State<AppState>, request: Request, next: Next) -> Response {
    require(&state, Scope::Cancel, request, next).await
}

/// Whether the request reached the proxy in front over HTTPS (`X-Forwarded-Proto` or
/// `Forwarded: proto=https`). Trusting a forged header costs nothing: it only makes the
/// forger's own cookie `Secure`.
pub fn forwarded_https(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let proto = text(header::HeaderName::from_static("x-forwarded-proto"))
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = text(header::FORWARDED).is_some_and(|v| {
        v.split(',').next().unwrap_or("").split(';').any(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto") && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
        })
    });
    proto || forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_and_presented_tokens_are_digested_alike() {
        assert_eq!(token_digest("secret\n"), token_digest(" secret"));
        assert_ne!(token_digest("secret"), token_digest("Secret"));
    }

    #[test]
    fn an_address_over_its_budget_waits_and_others_do_not() {
        let failures = Failures::new(2);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert_eq!(failures.failed(a), None);
        assert_eq!(failures.failed(a), None);
        assert_eq!(failures.blocked(a), None, "two failures are within the budget");
        assert!(failures.failed(a).is_some(), "the third is over it");
        let wait = failures.blocked(a).expect("and it waits");
        assert!(wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(failures.blocked(b), None);
    }

    #[test]
    fn https_is_what_the_proxy_says() {
        let check = |name: &'static str, value: &'static str, expected: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(name, header::HeaderValue::from_static(value));
            assert_eq!(forwarded_https(&headers), expected, "{name}: {value}");
        };
        check("x-forwarded-proto", "https", true);
        check("x-forwarded-proto", "HTTPS, http", true);
        check("x-forwarded-proto", "http", false);
        check("forwarded", "for=1.2.3.4;proto=https", true);
        check("forwarded", "for=1.2.3.4;proto=http", false);
        assert!(!forwarded_https(&HeaderMap::new()));
    }
}
