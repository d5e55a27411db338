//! A small client of the admin API, used by the CLI.

use serde::de::DeserializeOwned;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no admin token: {0}")]
    Token(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the server answered {status}: {detail}")]
    Refused { status: u16, detail: String },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: String) -> Client {
        Client { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned(), token }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Connect { url: self.base.clone(), reason: e.to_string() })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { status: status.as_u16(), detail });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn list_plugins(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send(self.http.get(format!("{}/api/admin/plugins", self.base))).await
    }

    /// Upload a component; `rollout` is the query (`rollout=canary&percent=N` or `rollout=shadow`).
    pub async fn push_plugin(
        &self,
        name: &str,
        bytes: Vec<u8>,
        rollout: Option<String>,
    ) -> Result<serde_json::Value, ClientError> {
        let query = rollout.map(|q| format!("?{q}")).unwrap_or_default();
        let request = self
            .http
            .put(format!("{}/api/admin/plugins/{name}{query}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes);
        self.send(request).await
    }

    pub async fn dead_letters(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send(self.http.get(format!("{}/api/admin/dead-letters", self.base))).await
    }

    pub async fn replay_dead_letter(
        &self,
        id: &str,
        version: Option<&str>,
        dry_run: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(version) = version {
            query.push(("version", version));
        }
        if dry_run {
            query.push(("dry_run", "true"));
        }
        let request = self.http.post(format!("{}/api/admin/dead-letters/{id}/replay", self.base)).query(&query);
        self.send(request).await
    }

    pub async fn dead_letter_recording(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.get(format!("{}/api/admin/dead-letters/{id}/recording", self.base))).await
    }

    pub async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<serde_json::Value>, ClientError> {
        let limit = limit.to_string();
        let request =
            self.http.get(format!("{}/api/admin/recordings", self.base)).query(&[("step", step), ("limit", &limit)]);
        self.send(request).await
    }

    pub async fn promote_plugin(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.post(format!("{}/api/admin/plugins/{name}/promote", self.base))).await
    }

    pub async fn shadow_report(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.get(format!("{}/api/admin/plugins/{name}/shadow", self.base))).await
    }

    pub async fn plugin_history(&self, name: &str) -> Result<Vec<serde_json::Value>, ClientError> {
        self.send(self.http.get(format!("{}/api/admin/plugins/{name}/history", self.base))).await
    }

    /// Discard answers 204 with no body.
    pub async fn discard_dead_letter(&self, id: &str) -> Result<(), ClientError> {
        let request = self.http.delete(format!("{}/api/admin/dead-letters/{id}", self.base)).bearer_auth(&self.token);
        let response =
            request.send().await.map_err(|e| ClientError::Connect { url: self.base.clone(), reason: e.to_string() })?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status().as_u16();
        let detail = response.text().await.unwrap_or_default();
        Err(ClientError::Refused { status, detail })
    }

    pub async fn order(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.get(format!("{}/api/orders/{id}", self.base))).await
    }

    pub async fn rollback_plugin(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.post(format!("{}/api/admin/plugins/{name}/rollback", self.base))).await
    }
}

/// Plugins as an aligned table.
pub fn plugins_table(plugins: &[serde_json::Value]) -> String {
    let field = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
    let mut out = format!(
        "{:<12} {:<10} {:<20} {:<10} {:<22} {}\n",
        "STEP", "VERSION", "DIGEST", "PREVIOUS", "ROLLOUT", "SUBSCRIBES"
    );
    for p in plugins {
        let digest = field(p, "digest");
        let short = digest.get(..19).unwrap_or(&digest).to_owned();
        let previous = p.get("previous").filter(|v| !v.is_null()).map(|v| field(v, "version")).unwrap_or("-".into());
        let subscribes = p
            .get("subscribes")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let rollout = p
            .get("rollout")
            .filter(|v| !v.is_null())
            .map(|r| match field(r, "mode").as_str() {
                "canary" => format!("canary {}% {}", r["percent"], field(&r["candidate"], "version")),
                mode => format!("{mode} {}", field(&r["candidate"], "version")),
            })
            .unwrap_or("-".into());
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:<20} {:<10} {:<22} {}",
            field(p, "name"),
            field(p, "version"),
            short,
            previous,
            rollout,
            subscribes
        );
    }
    out
}
