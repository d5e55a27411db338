//! Step state during a batch. Reads go to the store and remember the version they saw;
//! writes are buffered per call and kept only if the call succeeds. The commit checks
//! that every version read is still current (optimistic concurrency): a step's state
//! may be written by several hosts, and a stale read re-runs the batch instead of
//! overwriting a newer value.

use crate::runtime::{StateError, StepState};
use crate::store::Store;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

type Writes = BTreeMap<String, Option<Vec<u8>>>;
/// Key → (version seen, value seen); `None` for an absent key.
type Reads = BTreeMap<String, (Option<i64>, Option<Vec<u8>>)>;

/// The state of one step for one batch, over the store.
pub struct BatchState {
    store: Arc<dyn Store>,
    step: String,
    /// Writes of the batch's successful calls.
    writes: Mutex<Writes>,
    /// Keys read from the store, with the version seen (`None`: absent) and the value.
    reads: Mutex<Reads>,
    /// Keys read ahead (`saga::readahead`): they count as read once a call reads them.
    ahead: Mutex<Reads>,
    /// How many keys were read ahead.
    ahead_total: Mutex<usize>,
}

impl BatchState {
    pub fn new(store: Arc<dyn Store>, step: &str) -> Arc<BatchState> {
        Arc::new(BatchState {
            store,
            step: step.to_owned(),
            writes: Mutex::new(Writes::new()),
            reads: Mutex::new(BTreeMap::new()),
            ahead: Mutex::new(BTreeMap::new()),
            ahead_total: Mutex::new(0),
        })
    }

    /// A view for one call.
    pub fn call(self: &Arc<Self>) -> Arc<CallState> {
        Arc::new(CallState { batch: self.clone(), writes: Mutex::new(Writes::new()) })
    }

    /// Keep a successful call's writes.
    pub fn keep(&self, call: &CallState) {
        let mut call_writes = call.writes.lock();
        self.writes.lock().append(&mut call_writes);
    }

    /// Everything to commit.
    pub fn take_writes(&self) -> Vec<(String, Option<Vec<u8>>)> {
        std::mem::take(&mut *self.writes.lock()).into_iter().collect()
    }

    /// The versions the batch read, for the commit to check.
    pub fn reads(&self) -> Vec<(String, Option<i64>)> {
        self.reads.lock().iter().map(|(key, (version, _))| (key.clone(), *version)).collect()
    }

    /// Read `keys` in one query, as the batch's reads of them (a re-run reads again
    /// what its last run read: one round trip instead of one per key).
    pub async fn prefetch(&self, keys: &[String]) -> Result<(), crate::store::StoreError> {
        let fetched = self.fetch(keys).await?;
        let mut reads = self.reads.lock();
        for (key, seen) in fetched {
            reads.entry(key).or_insert(seen);
        }
        Ok(())
    }

    /// The version and value of each of `keys` the batch has not read yet, in one query.
    async fn fetch(&self, keys: &[String]) -> Result<Reads, crate::store::StoreError> {
        let keys: Vec<String> = {
            let reads = self.reads.lock();
            keys.iter().filter(|k| !reads.contains_key(*k)).cloned().collect()
        };
        if keys.is_empty() {
            return Ok(Reads::new());
        }
        let mut found = self.store.state_get_many(&self.step, &keys).await?;
        Ok(keys
            .into_iter()
            .map(|key| {
                let seen = found.remove(&key).map_or((None, None), |v| (Some(v.version), Some(v.value)));
                (key, seen)
            })
            .collect())
    }

    /// Read `keys` in one query, for calls that will likely read them; unlike
    /// [`BatchState::prefetch`], a key becomes one of the batch's reads only when a call
    /// reads it.
    pub async fn read_ahead(&self, keys: &[String]) -> Result<(), crate::store::StoreError> {
        if !self.store.reads_many_at_once() {
            // One round trip per key anyway (SQL Server): a wrong guess would cost one.
            return Ok(());
        }
        let mut fetched = self.fetch(keys).await?;
        *self.ahead_total.lock() += fetched.len();
        self.ahead.lock().append(&mut fetched);
        Ok(())
    }

    /// Of the keys read ahead: how many a call read, and how many none did.
    pub fn ahead_used(&self) -> (usize, usize) {
        let unused = self.ahead.lock().len();
        (self.ahead_total.lock().saturating_sub(unused), unused)
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(value) = self.writes.lock().get(key) {
            return Ok(value.clone());
        }
        if let Some((_, value)) = self.reads.lock().get(key) {
            // One value per key for the whole batch: the version checked at commit.
            return Ok(value.clone());
        }
        let ahead = self.ahead.lock().remove(key);
        if let Some(seen) = ahead {
            let value = seen.1.clone();
            self.reads.lock().entry(key.to_owned()).or_insert(seen);
            return Ok(value);
        }
        let found = self.store.state_get(&self.step, key).await.map_err(|e| {
            if e.is_transient() { StateError::Unavailable(e.to_string()) } else { StateError::Refused(e.to_string()) }
        })?;
        let (version, value) = match found {
            Some(versioned) => (Some(versioned.version), Some(versioned.value)),
            None => (None, None),
        };
        self.reads.lock().entry(key.to_owned()).or_insert((version, value.clone()));
        Ok(value)
    }
}

/// One call's view: its own writes over the batch's.
pub struct CallState {
    batch: Arc<BatchState>,
    writes: Mutex<Writes>,
}

#[async_trait]
impl StepState for CallState {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(value) = self.writes.lock().get(key) {
            return Ok(value.clone());
        }
        self.batch.read(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        self.writes.lock().insert(key.to_owned(), Some(value));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.writes.lock().insert(key.to_owned(), None);
        Ok(())
    }
}
