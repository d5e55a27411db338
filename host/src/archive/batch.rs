//! Archive writes deferred to the end of a batch. A step's `archive.put` is recorded (the
//! name checked at once) and succeeds; the consumer keeps the writes of successful calls
//! and issues them concurrently before the batch commits. One slow round trip per event
//! would otherwise bound the archiving step to a few hundred events per second. The
//! batch commits only after every write succeeded, and names are create-only and derived
//! from event ids, so a batch retried after a failed write duplicates nothing.

use super::{Archive, ArchiveError, object::object_path};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;

/// One write: name, body, content type.
pub type ArchiveWrite = (String, Bytes, String);

/// The archive as one call sees it: writes are recorded, reads go to the archive.
pub struct CallArchive {
    inner: Arc<dyn Archive>,
    writes: Mutex<Vec<ArchiveWrite>>,
}

impl CallArchive {
    pub fn new(inner: Arc<dyn Archive>) -> Arc<CallArchive> {
        Arc::new(CallArchive { inner, writes: Mutex::new(Vec::new()) })
    }

    /// The recorded writes (of a call that succeeded).
    pub fn take(&self) -> Vec<ArchiveWrite> {
        std::mem::take(&mut *self.writes.lock())
    }

    /// Issue `writes` to `archive` (several at once, or as one batch where the archive
    /// can); the first failure is returned.
    pub async fn write_all(archive: &Arc<dyn Archive>, writes: Vec<ArchiveWrite>) -> Result<(), ArchiveError> {
        archive.put_all(writes).await
    }
}

#[async_trait]
impl Archive for CallArchive {
    async fn put_once(&self, name: &str, body: Bytes, content_type: &str) -> Result<(), ArchiveError> {
        object_path(name)?;
        let mut writes = self.writes.lock();
        writes.push((name.to_owned(), body, content_type.to_owned()));
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        self.inner.list(prefix).await
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError> {
        self.inner.get(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ObjectArchive;

    #[tokio::test]
    async fn writes_wait_for_the_batch_and_bad_names_fail_at_once() {
        let archive: Arc<dyn Archive> = Arc::new(ObjectArchive::from_url("memory://").expect("memory"));
        let call = CallArchive::new(archive.clone());
        call.put_once("events/a.json", Bytes::from_static(b"{}"), "application/json").await.expect("recorded");
        assert!(call.put_once("events/../x", Bytes::new(), "text/plain").await.is_err());
        assert_eq!(archive.get("events/a.json").await.expect("reads"), None, "not written yet");
        CallArchive::write_all(&archive, call.take()).await.expect("written");
        assert!(archive.get("events/a.json").await.expect("reads").is_some());
    }
}
