//! [`Archive`] over `object_store`: memory (`memory://`), or Azure Blob
//! (`az://container[/prefix]`) and S3 (`s3://bucket[/prefix]`) as `cloud.rs` opens them.
//! A local folder is [`super::LocalArchive`].

use super::azure::{ContainerAccess, ensure_container};
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
    /// An Azure container to create at start, when the account key is known.
    container: Option<ContainerAccess>,
}

impl ObjectArchive {
    /// Open the archive named by `url`: `memory://`, `az://…` or `s3://…`.
    pub fn from_url(url: &str) -> Result<ObjectArchive, ArchiveError> {
        if url.starts_with("memory://") {
            let store = Arc::new(object_store::memory::InMemory::new());
            return Ok(ObjectArchive { store, container: None });
        }
        let (store, container) = super::cloud::open(url)?;
        Ok(ObjectArchive { store, container })
    }

    /// Create the Azure container if it is missing, retrying until the service answers
    /// (writes fail, and are retried, until then).
    pub async fn prepare(&self) {
        let Some(access) = &self.container else {
            return;
        };
        let mut backoff =
            crate::backoff::Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(5));
        loop {
            match ensure_container(access).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(container = %access.container, %error, "cannot create the archive container yet");
                    tokio::time::sleep(backoff.failed()).await;
                }
            }
        }
    }
}

/// A write's failure: a refusal of this object by the storage, or an outage.
fn classify(name: &str, error: object_store::Error) -> ArchiveError {
    let message = error.to_string();
    match &error {
        object_store::Error::InvalidPath { .. } => ArchiveError::Refused(format!("{name}: {message}")),
        _ => match super::client_error_status(&message) {
            Some(status) => ArchiveError::Refused(format!("{name}: status {status}: {message}")),
            None => ArchiveError::Storage(message),
        },
    }
}

pub(super) fn object_path(name: &str) -> Result<ObjectPath, ArchiveError> {
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
        opts.attributes.insert(object_store::Attribute::ContentType, content_type.to_owned().into());
        match self.store.put_opts(&path, PutPayload::from(body), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => {
                // The container went away (a storage account reset, an emulator that lost
                // its metadata): create it again; the write is retried by the saga.
                if let Some(access) = &self.container
                    && e.to_string().contains("ContainerNotFound")
                    && let Err(error) = ensure_container(access).await
                {
                    tracing::warn!(container = %access.container, %error, "cannot create the archive container");
                }
                Err(classify(name, e))
            }
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
