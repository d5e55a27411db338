//! The archive: immutable, create-only objects in blob storage. Names are derived from
//! event ids, so a retried write finds its object already there and succeeds.

mod azure;
mod batch;
mod cloud;
mod local;
mod object;

pub use batch::{ArchiveWrite, CallArchive};
pub use local::LocalArchive;
pub use object::ObjectArchive;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Writes in flight at once when a batch's objects go to remote storage.
const CONCURRENT_WRITES: usize = 32;

/// Open the archive named by `url`: a local folder (`file:///abs/dir`), memory
/// (`memory://`), Azure Blob (`az://…`) or S3 (`s3://…`). A local folder flushes each
/// batch to disk when `durable`.
pub fn open(url: &str, durable: bool) -> Result<Arc<dyn Archive>, ArchiveError> {
    if let Some(dir) = url.strip_prefix("file://") {
        return Ok(Arc::new(LocalArchive::open(std::path::Path::new(dir), durable)?));
    }
    let archive = Arc::new(ObjectArchive::from_url(url)?);
    tokio::spawn({
        let archive = archive.clone();
        async move { archive.prepare().await }
    });
    Ok(archive)
}

/// What failed when writing or listing the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive URL {url:?} is not supported: {reason}")]
    Url { url: String, reason: String },
    #[error("archive object name {0:?} is invalid")]
    Name(String),
    /// The storage cannot answer now (connection, timeout, 5xx): an outage.
    #[error("archive storage failed: {0}")]
    Storage(String),
    /// The storage refused this object (a name too long or invalid for it, a 4xx): the
    /// event's fault, which the same write would meet again.
    #[error("the archive refused the object: {0}")]
    Refused(String),
}

impl ArchiveError {
    /// Whether the same write can only fail again: the data's fault, not an outage.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ArchiveError::Refused(_) | ArchiveError::Name(_))
    }
}

/// A client error status (4xx other than a timeout or a throttle) in an HTTP storage
/// error's message: object_store keeps its retry error's status private.
fn client_error_status(message: &str) -> Option<u16> {
    let (_, rest) = message.split_once("status code: ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    ((400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429)).then_some(status)
}

/// Create-only object storage.
#[async_trait]
pub trait Archive: Send + Sync {
    /// Write `body` under `name` unless an object of that name exists; both are success.
    async fn put_once(&self, name: &str, body: Bytes, content_type: &str) -> Result<(), ArchiveError>;
    /// [`Archive::put_once`] for each of a batch's writes; the first failure is returned.
    async fn put_all(&self, writes: Vec<ArchiveWrite>) -> Result<(), ArchiveError> {
        futures::stream::iter(writes)
            .map(|(name, body, content_type)| async move { self.put_once(&name, body, &content_type).await })
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }
    /// Names under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError>;
    /// The object's bytes, if it exists.
    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError>;
}
