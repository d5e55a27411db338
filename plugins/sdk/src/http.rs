//! Outbound HTTP through the host (`wasi:http/outgoing-handler`).
//!
//! The host sends a step's request only to the targets configured for the step
//! (`[steps.NAME] outbound`), inside the call's deadline and budgets. Unless the request
//! carries its own, the host adds `Idempotency-Key: <event id>/<step>/<n>` (n counts the
//! call's requests from 0), the same on every attempt, redelivery and host: a server that
//! honours keys then acts once however often the event is handled. Configured secret
//! headers (`[steps.NAME.outbound_headers]`) are added by the host; the step never sees them.

use serde::{Deserialize, Serialize};

/// A request a step sends.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// A `POST` of `body` as JSON.
    pub fn post_json<T: Serialize>(url: &str, body: &T) -> Request {
        Request {
            method: "POST".to_owned(),
            url: url.to_owned(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the answer ({}) is not the JSON expected: {e}", self.status))
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The parts of an absolute URL the WASI request needs: scheme, authority, path and query.
pub fn split_url(url: &str) -> Result<(&str, &str, &str), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_what_the_request_needs() {
        assert_eq!(
            split_url("http://127.0.0.1:9911/v1/charges?x=1"),
            Ok(("http", "127.0.0.1:9911", "/v1/charges?x=1"))
        );
        assert_eq!(split_url("https://api.example.com"), Ok(("https", "api.example.com", "/")));
        assert!(split_url("/v1/charges").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
