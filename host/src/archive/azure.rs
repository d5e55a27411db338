//! Creating an Azure Blob container that does not exist yet. `object_store` reads and
//! writes blobs but cannot create containers, and a fresh Azurite (or a new storage
//! account) has none; with an account key, the host creates its container at start.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where the container lives and how to sign for it.
#[derive(Debug, Clone)]
pub struct ContainerAccess {
    /// The account's blob endpoint, e.g. `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1` (Azurite puts the account in the path).
    pub endpoint: String,
    pub account: String,
    /// The base64 account key.
    pub key: String,
    pub container: String,
}

const API_VERSION: &str = "2021-08-06";

/// The SharedKey `Authorization` header of a body-less request (the Blob service's
/// string-to-sign: verb, eleven empty standard headers, then the `x-ms-` headers and the
/// canonical resource).
fn authorization(
    access: &ContainerAccess,
    verb: &str,
    path: &str,
    query: &[(&str, &str)],
    date: &str,
) -> Result<String, String> {
    let mut resource = format!("/{}{}", access.account, path);
    let mut sorted: Vec<_> = query.to_vec();
    sorted.sort();
    for (name, value) in sorted {
        resource.push_str(&format!("\n{}:{}", name.to_lowercase(), value));
    }
    let to_sign = format!("{verb}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n{resource}");
    let key = STANDARD.decode(&access.key).map_err(|e| format!("the account key is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(to_sign.as_bytes());
    Ok(format!("SharedKey {}:{}", access.account, STANDARD.encode(mac.finalize().into_bytes())))
}

/// Create the container unless it exists.
pub async fn ensure_container(access: &ContainerAccess) -> Result<(), String> {
    let base = url::Url::parse(&access.endpoint).map_err(|e| format!("endpoint {:?}: {e}", access.endpoint))?;
    let path = format!("{}/{}", base.path().trim_end_matches('/'), access.container);
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(Some("restype=container"));
    let date = httpdate(std::time::SystemTime::now());
    let auth = authorization(access, "PUT", &path, &[("restype", "container")], &date)?;
    let response = reqwest::Client::new()
        .put(url)
        // Every outbound call is bounded: a hung endpoint must not hold a task forever.
        .timeout(std::time::Duration::from_secs(10))
        .header("x-ms-date", &date)
        .header("x-ms-version", API_VERSION)
        .header("Content-Length", "0")
        .header("Authorization", auth)
        .send()
        .await
        .map_err(|e| crate::redact::text(&e.to_string()))?;
    match response.status().as_u16() {
        201 | 409 => Ok(()),
        status => Err(format!("creating container {} answered {status}: {}", access.container, {
            response.text().await.unwrap_or_default().chars().take(300).collect::<String>()
        })),
    }
}

/// An RFC 1123 date, as the `x-ms-date` header wants.
fn httpdate(at: std::time::SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_account_path_and_query() {
        let access = ContainerAccess {
            endpoint: "http://127.0.0.1:10000/devstoreaccount1".into(),
            account: "devstoreaccount1".into(),
            key: STANDARD.encode(b"key"),
            container: "archive".into(),
        };
        let date = "Thu, 26 Nov 2026 12:00:00 GMT";
        let a = authorization(&access, "PUT", "/devstoreaccount1/archive", &[("restype", "container")], date);
        let b = authorization(&access, "PUT", "/devstoreaccount1/other", &[("restype", "container")], date);
        let a = a.expect("signs");
        assert!(a.starts_with("SharedKey devstoreaccount1:"), "{a}");
        assert_ne!(a, b.expect("signs"));
        assert_eq!(httpdate(std::time::UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
