//! [`Archive`] over `object_store`: a local folder (`file://`) or memory (`memory://`).

use super::{Archive, ArchiveError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;

/// An archive backed by any `object_store` implementation.
#[derive(Debug, Clone)]
pub struct ObjectArchive {
    store: Arc<dyn ObjectStore>,
    /// The local filesystem store refuses object attributes, so content types are kept
    /// only where the backend stores them.
    content_types: bool,
}

impl ObjectArchive {
    /// Open the archive named by `url`: `file:///abs/dir` or `memory://`.
    pub fn from_url(url: &str) -> Result<ObjectArchive, ArchiveError> {
        let unsupported = |reason: &str| ArchiveError::Url { url: url.to_owned(), reason: reason.to_owned() };
        if url.starts_with("memory://") {
            return Ok(ObjectArchive { store: Arc::new(object_store::memory::InMemory::new()), content_types: true });
        }
        if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).map_err(|e| unsupported(&format!("cannot create {dir}: {e}")))?;
            let local =
                object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| unsupported(&e.to_string()))?;
            return Ok(ObjectArchive { store: Arc::new(local), content_types: false });
        }
        Err(unsupported("expected file://<dir> or memory://"))
    }
}

fn object_path(name: &str) -> Result<ObjectPath, ArchiveError> {
    // Reject names that object_store would silently normalise (`..`, empty segments).
    ObjectPath::parse(name)
        .ok()
        .filter(|p| !name.is_empty() && p.as_ref() == name)
        .ok_or_else(|| ArchiveError::Name(name.to_owned()))
}

#[async_trait]
impl Archive for ObjectArchive {
    async fn put_once(&self, name: &str, body: Bytes, content_type: &str) -> Result<(), ArchiveError> {
        let path = object_path(name)?;
        let mut opts = PutOptions::from(PutMode::Create);
        if self.content_types {
            opts.attributes.insert(object_store::Attribute::ContentType, content_type.to_owned().into());
        }
        match self.store.put_opts(&path, PutPayload::from(body), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(ArchiveError::Storage(e.to_string())),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let prefix = object_path(prefix.trim_end_matches('/'))?;
        let mut names: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| ArchiveError::Storage(e.to_string()))?;
        names.sort();
        Ok(names)
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError> {
        let path = object_path(name)?;
        match self.store.get(&path).await {
            Ok(result) => result.bytes().await.map(Some).map_err(|e| ArchiveError::Storage(e.to_string())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::Storage(e.to_string())),
        }
    }
}
