//! Azure Blob (`az://container[/prefix]`) and S3 (`s3://bucket[/prefix]`) for
//! [`super::ObjectArchive`], with the `cloud` feature. They take object_store's
//! `AZURE_*` / `AWS_*` variables, and options in the URL's query, which win
//! (`az://archive?endpoint=…&account_name=…&access_key=…`).

use super::ArchiveError;
use super::azure::ContainerAccess;
use object_store::ObjectStore;
use std::sync::Arc;

/// The store (with its Azure container to create, if any) for a URL other than `memory://`.
#[cfg(feature = "cloud")]
pub(super) fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, Option<ContainerAccess>), ArchiveError> {
    use object_store::ClientConfigKey;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::prefix::PrefixStore;
    use std::str::FromStr;
    let unsupported =
        |reason: &str| ArchiveError::Url { url: crate::redact::url(url), reason: crate::redact::text(reason) };
    let parsed = url::Url::parse(url).map_err(|e| unsupported(&e.to_string()))?;
    let bucket = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| unsupported("no container or bucket"))?;
    let prefix = parsed.path().trim_matches('/').to_owned();
    let options: Vec<(String, String)> = parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let (store, container): (Arc<dyn ObjectStore>, _) = match parsed.scheme() {
        "az" | "azure" => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry())
                .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), "10s")
                .with_config(AzureConfigKey::Client(ClientConfigKey::ConnectTimeout), "2s");
            for (key, value) in &options {
                let key =
                    AzureConfigKey::from_str(key).map_err(|_| unsupported(&format!("unknown Azure option {key:?}")))?;
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
                let key =
                    AmazonS3ConfigKey::from_str(key).map_err(|_| unsupported(&format!("unknown S3 option {key:?}")))?;
                builder = builder.with_config(key, value);
            }
            (Arc::new(builder.build().map_err(|e| unsupported(&e.to_string()))?), None)
        }
        _ => return Err(unsupported("expected memory://, az://<container> or s3://<bucket> (or file://<dir>)")),
    };
    let store: Arc<dyn ObjectStore> =
        if prefix.is_empty() { store } else { Arc::new(PrefixStore::new(store, prefix.as_str())) };
    Ok((store, container))
}

/// Without the `cloud` feature only `memory://` and `file://` are archives.
#[cfg(not(feature = "cloud"))]
pub(super) fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, Option<ContainerAccess>), ArchiveError> {
    let reason = if url.starts_with("az://") || url.starts_with("azure://") || url.starts_with("s3://") {
        crate::features::missing("an archive on Azure Blob or S3", "cloud")
    } else {
        "expected memory:// or file://<dir> (az:// and s3:// with the `cloud` feature)".to_owned()
    };
    Err(ArchiveError::Url { url: crate::redact::url(url), reason })
}

#[cfg(feature = "cloud")]
/// Few, quick retries: a write that fails is retried by the saga (the event comes again)
/// without holding the step's consumer for object_store's default three minutes.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(5),
        ..object_store::RetryConfig::default()
    }
}

#[cfg(feature = "cloud")]
/// What creating `container` takes, if the configuration has an account key.
fn container_access(builder: &object_store::azure::MicrosoftAzureBuilder, container: &str) -> Option<ContainerAccess> {
    const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
    const EMULATOR_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let emulator =
        builder.get_config_value(&object_store::azure::AzureConfigKey::UseEmulator).is_some_and(|v| v == "true");
    let account = builder
        .get_config_value(&object_store::azure::AzureConfigKey::AccountName)
        .or_else(|| emulator.then(|| EMULATOR_ACCOUNT.to_owned()))?;
    let key = builder
        .get_config_value(&object_store::azure::AzureConfigKey::AccessKey)
        .or_else(|| emulator.then(|| EMULATOR_KEY.to_owned()))?;
    let endpoint = match builder.get_config_value(&object_store::azure::AzureConfigKey::Endpoint) {
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
