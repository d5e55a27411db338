//! The step's key-value state as the runtime sees it: a trait the saga binds to the
//! store transaction of the current event, and an in-memory implementation for tests,
//! benchmarks and validation calls.

use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// A failure of the storage behind a step's state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The storage cannot answer now: the host's outage, retried without an attempt.
    #[error("state storage is unavailable: {0}")]
    Unavailable(String),
    /// The storage refused what the step asked for (a key it cannot hold): the step's
    /// fault, which uses an attempt like a trap.
    #[error("the state store refused the step's request: {0}")]
    Refused(String),
}

/// One step's namespace of state, bound to the transaction of the event being handled.
#[async_trait]
pub trait StepState: Send + Sync {
    /// The value under `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Store `value` under `key`.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StateError>;
    /// Remove `key`.
    async fn delete(&self, key: &str) -> Result<(), StateError>;
}

/// State in a map: for tests, benchmarks and `describe` calls.
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryState {
    /// A copy of every entry.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries.lock().clone()
    }
}

#[async_trait]
impl StepState for MemoryState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.lock().get(key).cloned())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        self.entries.lock().insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.entries.lock().remove(key);
        Ok(())
    }
}
