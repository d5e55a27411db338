//! What a step may ask of the host: its own state, the log, the archive, provenance,
//! outbound HTTP and its settings.

use crate::http::{Request, Response};
use crate::types::{Level, Origin, StepError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The host as a step sees it. In a component every call goes through the WIT imports
/// and is bound to the host's transaction; natively, [`crate::MemoryHost`] stands in.
pub trait Host {
    /// The bytes under `key` in this step's namespace.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Store `value` under `key`.
    fn put(&mut self, key: &str, value: &[u8]);
    /// Remove `key`.
    fn delete(&mut self, key: &str);
    /// Write a line to the host's log.
    fn log(&self, level: Level, message: &str);
    /// Write an immutable object to the archive (analytics steps only).
    fn archive_put(&mut self, name: &str, body: &[u8], content_type: &str) -> Result<(), String>;
    /// Who emitted the event being handled.
    fn origin(&self) -> Origin;
    /// Send `request` through the host (see [`crate::http`]). `Err` is a request that got
    /// no answer: refused by the host, or a network failure.
    fn http(&mut self, request: &Request) -> Result<Response, String> {
        Err(format!("{} {}: this host makes no outbound calls", request.method, request.url))
    }
    /// A setting the operator gave the step (`[steps.NAME.env]`), if any.
    fn setting(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
}

/// Typed state on top of [`Host`]: values are JSON.
pub trait HostExt: Host {
    /// The value under `key`, decoded; undecodable state is a fatal error naming the key.
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StepError> {
        match self.get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StepError::Fatal(format!("state under {key:?} is corrupt: {e}"))),
        }
    }

    /// Store `value` under `key` as JSON.
    fn put_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), StepError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| StepError::Fatal(format!("cannot encode state {key:?}: {e}")))?;
        self.put(key, &bytes);
        Ok(())
    }
}

impl<H: Host + ?Sized> HostExt for H {}
