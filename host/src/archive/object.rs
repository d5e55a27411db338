//! [`Archive`] over `object_store`: memory (`memory://`), Azure Blob
//! (`az://container[/prefix]`) or S3 (`s3://bucket[/prefix]`). A local folder is
//! [`super::LocalArchive`].
//!
//! Azure and S3 take object_store's `AZURE_*` / `AWS_*` variables, and options in the
//! URL's query, which win (`az://archive?endpoint=…&account_name=…&access_key=…`).

use super::azure::{ContainerAccess, ensure_container};
use super::{Archive, ArchiveError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, RetryConfig};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::str::FromStr;
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
        let unsupported =
            |reason: &str| ArchiveError::Url { url: crate::redact::url(url), reason: crate::redact::text(reason) };
        if url.starts_with("memory://") {
            let store = Arc::new(object_store::memory::InMemory::new());
            return Ok(ObjectArchive { store, container: None });
        }
        let parsed = url::Url::parse(url).map_err(|e| unsupported(&e.to_string()))?;
        let bucket =
            parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| unsupported("no container or bucket"))?;
        let prefix = parsed.path().trim_matches('/').to_owned();
        let options: Vec<(String, String)> =
            parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let (store, container): (Arc<dyn ObjectStore>, _) = match parsed.scheme() {
            "az" | "azure" => {
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_retry(retry())
                    .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), "10s")
                    .with_config(AzureConfigKey::Client(ClientConfigKey::ConnectTimeout), "2s");
                for (key, value) in &options {
                    let key = AzureConfigKey::from_str(key)
                        .map_err(|_| unsupported(&format!("unknown Azure option {key:?}")))?;
                    builder = builder.with_config(key, value);
                }
                let container = container_access(&builder, bucket);
                (Arc::new(builder.build().map_err(|e| unsupported(&e.to_string()))?), container)
            }
            "s3" => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry())
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "10s")
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "2s");
                for (key, value) in &options {
                    let key = AmazonS3ConfigKey::from_str(key)
                        .map_err(|_| unsupported(&format!("unknown S3 option {key:?}")))?;
                    builder = builder.with_config(key, value);
                }
                (Arc::new(builder.build().map_err(|e| unsupported(&e.to_string()))?), None)
            }
            _ => return Err(unsupported("expected memory://, az://<container> or s3://<bucket> (or file://<dir>)")),
        };
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { store } else { Arc::new(PrefixStore::new(store, prefix.as_str())) };
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

/// Few, quick retries: a write that fails is retried by the saga (the event comes again)
/// without holding the step's consumer for object_store's default three minutes.
fn retry() -> RetryConfig {
    RetryConfig { max_retries: 2, retry_timeout: std::time::Duration::from_secs(5), ..RetryConfig::default() }
}

/// What creating `container` takes, if the configuration has an account key.
fn container_access(builder: &MicrosoftAzureBuilder, container: &str) -> Option<ContainerAccess> {
    const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
    const EMULATOR_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let emulator = builder.get_config_value(&AzureConfigKey::UseEmulator).is_some_and(|v| v == "true");
    let account = builder
        .get_config_value(&AzureConfigKey::AccountName)
        .or_else(|| emulator.then(|| EMULATOR_ACCOUNT.to_owned()))?;
    let key =
        builder.get_config_value(&AzureConfigKey::AccessKey).or_else(|| emulator.then(|| EMULATOR_KEY.to_owned()))?;
    let endpoint = match builder.get_config_value(&AzureConfigKey::Endpoint) {
        Some(endpoint) if !emulator => endpoint,
        _ if emulator => {
            let base =
                std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
            format!("{}/{account}", base.trim_end_matches('/'))
        }
        _ => format!("https://{account}.blob.core.windows.net"),
    };
    Some(ContainerAccess { endpoint, account, key, container: container.to_owned() })
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
