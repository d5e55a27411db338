//! Step state during a batch: reads go to the store (each step has one consumer, so no
//! one else writes its namespace), writes are buffered per call and kept only if the
//! call succeeds, then committed with the batch.

use crate::runtime::{StateError, StepState};
use crate::store::Store;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type Writes = BTreeMap<String, Option<Vec<u8>>>;

fn lock(m: &Mutex<Writes>) -> std::sync::MutexGuard<'_, Writes> {
    // A panic while holding this lock cannot leave the map half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes of the successful calls of one batch, over the store.
pub struct BatchState {
    store: Arc<dyn Store>,
    step: String,
    writes: Mutex<Writes>,
}

impl BatchState {
    pub fn new(store: Arc<dyn Store>, step: &str) -> Arc<BatchState> {
        Arc::new(BatchState { store, step: step.to_owned(), writes: Mutex::new(Writes::new()) })
    }

    /// A view for one call.
    pub fn call(self: &Arc<Self>) -> Arc<CallState> {
        Arc::new(CallState { batch: self.clone(), writes: Mutex::new(Writes::new()) })
    }

    /// Keep a successful call's writes.
    pub fn keep(&self, call: &CallState) {
        let mut call_writes = lock(&call.writes);
        lock(&self.writes).append(&mut call_writes);
    }

    /// Everything to commit.
    pub fn take(&self) -> Vec<(String, Option<Vec<u8>>)> {
        std::mem::take(&mut *lock(&self.writes)).into_iter().collect()
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(value) = lock(&self.writes).get(key) {
            return Ok(value.clone());
        }
        self.store.state_get(&self.step, key).await.map_err(|e| StateError(e.to_string()))
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
        if let Some(value) = lock(&self.writes).get(key) {
            return Ok(value.clone());
        }
        self.batch.read(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        lock(&self.writes).insert(key.to_owned(), Some(value));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        lock(&self.writes).insert(key.to_owned(), None);
        Ok(())
    }
}
