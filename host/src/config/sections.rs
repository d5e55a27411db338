//! The tables of the settings file: named stores, steps, clients.

use secrecy::SecretString;
use serde::Deserialize;

/// One named store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://…`, `postgres://…` or `mssql://…`.
    pub url: String,
}

/// Where one consumer keeps its inbox, outbox, state and dead letters, and how its
/// failures are retried.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSettings {
    /// A name from `[stores]`; unset: the default store.
    #[serde(default)]
    pub store: Option<String>,
    /// Whether the step compensates (undoes effects on `order.cancelled`, commits them on
    /// `order.completed`): its retryable failures of those kinds are retried until they
    /// succeed. Default: true for `payment` and `inventory`, false for every other step,
    /// whose failures follow `WASAGA_MAX_ATTEMPTS` like any event.
    #[serde(default)]
    pub compensates: Option<bool>,
    /// `pinned`: every later event of an order runs on the version that handled its
    /// first event (a refund on the code that captured); `latest` (the default): on the
    /// serving version.
    #[serde(default)]
    pub versioning: Versioning,
    /// The share (0 to 1) of successful calls whose recording is kept for offline
    /// replay against a candidate; 0 by default.
    #[serde(default)]
    pub record_sample: f64,
    /// Kinds (`ns.name`) or namespaces (`ns.*`) of the saga this step owns besides its
    /// own `<name>.*`: only it may emit them. Default: `payment.*` for payment,
    /// `stock.*` for inventory; a claim here replaces the default owner.
    #[serde(default)]
    pub owns: Vec<String>,
    /// The key prefix of the step's per-order state (`<prefix><order id>`), which
    /// retention may remove once the order finished and its events are past the inbox
    /// and outbox retention; `""` keeps it forever. Default: `order/` for `inventory`,
    /// `payment/` for `payment`, none for every other step.
    #[serde(default)]
    pub order_state: Option<String>,
    /// JSON pointers (RFC 6901, e.g. `/payment/card_token`) of fields replaced by
    /// `"[redacted]"` in this step's recordings (dead letters and samples) when they are
    /// written: in event and emitted payloads and in outbound request and answer bodies;
    /// empty by default.
    #[serde(default)]
    pub redact: Vec<String>,
    /// Targets the step may call over HTTP, each `scheme://host[:port]`; none by default.
    /// A name resolving to a loopback, link-local or private address is refused unless
    /// the address itself is listed.
    #[serde(default)]
    pub outbound: Vec<String>,
    /// Headers the host adds to the step's requests (`authorization = "env:GATEWAY_KEY"`,
    /// read from that environment variable, or the value itself). The step never sees
    /// them, may not set them, and no log or recording holds them.
    #[serde(default)]
    pub outbound_headers: std::collections::BTreeMap<String, SecretString>,
    /// The secret that signs the step's webhooks (`POST /api/hooks/NAME`): `env:VAR`, or
    /// the secret itself; unset, the step takes none.
    #[serde(default)]
    pub hook_secret: Option<SecretString>,
    /// JSON pointer to the order id in a webhook's body; `/order_id` by default.
    #[serde(default)]
    pub hook_order_id: Option<String>,
    /// Settings the step reads as its environment (`Host::setting`); not secret: use
    /// `outbound_headers` for keys.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// A client of the order API and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// `env:VAR` (the key is read from that environment variable, so it stays out of the
    /// file), or the key itself; at least 16 characters. Sent as `Authorization: Bearer`.
    pub token: SecretString,
    /// Any of `place`, `read`, `cancel`.
    pub scopes: Vec<Scope>,
}

/// What a client key allows on the order API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/orders`.
    Place,
    /// `GET /api/orders/{id}`.
    Read,
    /// `POST /api/orders/{id}/cancel`.
    Cancel,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Place => "place",
            Scope::Read => "read",
            Scope::Cancel => "cancel",
        }
    }
}

/// When the console's session cookie carries `Secure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookie {
    /// When the request came over HTTPS as a proxy in front reports it.
    #[default]
    Auto,
    Always,
    Never,
}

/// A client key, resolved from its settings.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub name: String,
    pub token: SecretString,
    pub scopes: Vec<Scope>,
}

/// The per-order state prefixes of the saga's own steps.
pub const ORDER_STATE_PREFIXES: [(&str, &str); 2] = [("inventory", "order/"), ("payment", "payment/")];

/// Which version handles an order's later events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    /// Always the serving version.
    #[default]
    Latest,
    /// The version that handled the order's first event, while it is kept.
    Pinned,
}
