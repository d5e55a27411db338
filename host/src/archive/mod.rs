//! The archive: immutable, create-only objects in blob storage. Names are derived from
//! event ids, so a retried write finds its object already there and succeeds.

mod azure;
mod batch;
mod object;

pub use batch::{ArchiveWrite, CallArchive};

pub use object::ObjectArchive;

use async_trait::async_trait;
use bytes::Bytes;

/// What failed when writing or listing the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive URL {url:?} is not supported: {reason}")]
    Url { url: String, reason: String },
    #[error("archive object name {0:?} is invalid")]
    Name(String),
    #[error("archive storage failed: {0}")]
    Storage(String),
}

/// Create-only object storage.
#[async_trait]
pub trait Archive: Send + Sync {
    /// Write `body` under `name` unless an object of that name exists; both are success.
    async fn put_once(&self, name: &str, body: Bytes, content_type: &str) -> Result<(), ArchiveError>;
    /// Names under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError>;
    /// The object's bytes, if it exists.
    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError>;
}
