//! Console sessions: signing in with the admin token sets an HttpOnly cookie holding an
//! expiry and an HMAC of it keyed by the admin token's digest, so any host of the fleet
//! (same token) accepts it without shared session state. Every action also carries a
//! CSRF token derived the same way, which a page from another site cannot know.
//!
//! Each session has a random id; signing out revokes it on this host until it would
//! have expired anyway, so a copied cookie stops working there at once. Other hosts of
//! the fleet do not learn of the revocation: they accept it until it expires.

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rand::RngCore;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

/// The cookie's name.
pub const COOKIE: &str = "wasaga_session";

/// Issues and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: Vec<u8>,
    ttl_ms: i64,
    /// Signed-out session ids → when they would have expired.
    revoked: Arc<Mutex<HashMap<String, i64>>>,
}

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random, so that one session can be revoked.
    pub id: String,
    pub expires_ms: i64,
    /// What forms and htmx requests must send back.
    pub csrf: String,
}

impl Sessions {
    /// Sessions keyed by the admin token's digest, valid for `ttl_ms`.
    pub fn new(token_digest: &[u8], ttl_ms: i64) -> Sessions {
        Sessions { key: token_digest.to_vec(), ttl_ms, revoked: Arc::default() }
    }

    fn mac(&self, purpose: &str, id: &str, expires_ms: i64) -> String {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{purpose}:{id}:{expires_ms}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session from `now_ms`: the cookie value and the session.
    pub fn issue(&self, now_ms: i64) -> (String, Session) {
        let expires_ms = now_ms.saturating_add(self.ttl_ms);
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let cookie = format!("{expires_ms}.{id}.{}", self.mac("session", &id, expires_ms));
        let csrf = self.mac("csrf", &id, expires_ms);
        (cookie, Session { id, expires_ms, csrf })
    }

    /// The session a cookie value names, if it is genuine, not expired and not revoked.
    pub fn check(&self, cookie: &str, now_ms: i64) -> Option<Session> {
        let mut parts = cookie.splitn(3, '.');
        let (expires, id, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let expires_ms: i64 = expires.parse().ok()?;
        if expires_ms <= now_ms || !constant_time_eq(mac.as_bytes(), self.mac("session", id, expires_ms).as_bytes()) {
            return None;
        }
        if self.revoked.lock().contains_key(id) {
            return None;
        }
        Some(Session { id: id.to_owned(), expires_ms, csrf: self.mac("csrf", id, expires_ms) })
    }

    /// Sign `session` out: its cookie is refused from now on.
    pub fn revoke(&self, session: &Session, now_ms: i64) {
        let mut revoked = self.revoked.lock();
        // Expired sessions are refused anyway: no need to remember them.
        revoked.retain(|_, expires_ms| *expires_ms > now_ms);
        revoked.insert(session.id.clone(), session.expires_ms);
    }

    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }
}

/// Compare without revealing where two strings differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_genuine_until_it_expires() {
        let sessions = Sessions::new(b"digest", 1000);
        let (cookie, session) = sessions.issue(5000);
        assert_eq!(sessions.check(&cookie, 5500), Some(session.clone()));
        assert_eq!(sessions.check(&cookie, 6000), None, "expired");
        let forged = format!("{}.{}", session.expires_ms + 10_000, cookie.split_once('.').map(|c| c.1).unwrap_or(""));
        assert_eq!(sessions.check(&forged, 5500), None, "a longer expiry with the old MAC");
        assert_eq!(Sessions::new(b"other", 1000).check(&cookie, 5500), None, "another token's host");
        assert_ne!(session.csrf, cookie);
    }

    #[test]
    fn a_revoked_session_is_refused_and_others_are_not() {
        let sessions = Sessions::new(b"digest", 1000);
        let (first, first_session) = sessions.issue(5000);
        let (second, second_session) = sessions.issue(5000);
        assert_ne!(first_session.csrf, second_session.csrf, "each session has its own CSRF token");
        sessions.revoke(&first_session, 5100);
        assert_eq!(sessions.check(&first, 5200), None);
        assert_eq!(sessions.check(&second, 5200), Some(second_session));
    }
}
