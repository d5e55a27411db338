//! The store: orders, the outbox, the inbox, step state, the embedded transport's
//! deliveries, dead letters and the fleet's registry, behind one trait per role
//! (`roles.rs`) with SQLite, PostgreSQL (`sql/`) and SQL Server (`mssql/`) backends, each
//! role's SQL in a file of its own.
//!
//! **Architecture Invariant:** the saga code names only the role traits and [`Store`]; a
//! backend is chosen by URL in [`open`].
//!
//! Every write that must be atomic with another is one method here, so a backend holds
//! the whole transaction: an order and its `order.placed` (`create_order`), a handled
//! batch of deliveries with its inbox rows, state, emitted events and order transitions
//! (`commit_batch`).

mod claims;
mod group;
mod lane;
mod migrations;
#[cfg(feature = "mssql")]
mod mssql;
mod roles;
mod rows;
mod sql;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[cfg(feature = "mssql")]
pub use mssql::{MssqlStore, config_from_url as mssql_config};
pub use roles::{ConsumerStore, DeadLetterStore, DeliveryStore, FleetStore, OrderStore, OutboxStore, Store};
pub use rows::*;
#[cfg(feature = "postgres")]
pub use sql::PgStore;
pub use sql::SqliteStore;

pub use crate::event::StoredEvent;

/// A store operation failed. The variants say what a caller may do about it: an
/// unavailable store is waited out, a conflict re-runs the work on fresh state, and only
/// a refusal of the data itself counts against the event that carried it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url} is not supported: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to the store: {0}")]
    Connect(String),
    /// Another process owns the store (SQLite allows one): waiting will not help.
    #[error("{0}")]
    InUse(String),
    #[error("migrating the store failed: {0}")]
    Migrate(String),
    /// The store cannot answer now: connection lost, timeout, lock wait, pool exhausted.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store refused the data: a constraint or an encoding the same data fails again.
    #[error("the store refused the data: {0}")]
    Rejected(String),
    /// Another writer changed what this work read, or handled the same event first.
    #[error("a concurrent writer got there first: {0}")]
    Conflict(String),
    #[error("store query failed: {0}")]
    Query(String),
}

impl StoreError {
    /// Whether waiting and trying again, unchanged, can succeed: the store's fault, not
    /// the data's.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Connect(_) | StoreError::Conflict(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        classify_sqlx(error)
    }
}

/// Sort a driver error into what a caller can do about it.
fn classify_sqlx(error: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    let text = crate::redact::text(&error.to_string());
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if matches!(
                db.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            ) {
                return StoreError::Rejected(text);
            }
            classify_code(&code, text)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(text),
        sqlx::Error::Encode(_) => StoreError::Rejected(text),
        _ => StoreError::Query(text),
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes, by what they mean for a retry.
fn classify_code(code: &str, text: String) -> StoreError {
    let sqlite = code.parse::<i64>().ok().map(|n| n & 0xff);
    match code {
        // PostgreSQL: serialization failure, deadlock.
        "40001" | "40P01" => StoreError::Conflict(text),
        // PostgreSQL: statement timeout or cancel, lock timeout, object in use.
        "57014" | "55P03" | "55006" => StoreError::Unavailable(text),
        // PostgreSQL: connection, resources, operator intervention, system errors.
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c.starts_with("58") => {
            StoreError::Unavailable(text)
        }
        // PostgreSQL: data exceptions (a NUL in text, a bad encoding) and integrity.
        c if c.starts_with("22") || c.starts_with("23") => StoreError::Rejected(text),
        // SQLite: busy, locked, I/O error, disk full, cannot open.
        _ if matches!(sqlite, Some(5 | 6 | 10 | 13 | 14)) => StoreError::Unavailable(text),
        // SQLite: constraint, mismatch, too big.
        _ if matches!(sqlite, Some(18..=20)) => StoreError::Rejected(text),
        _ => StoreError::Query(text),
    }
}

/// `prefix` as a LIKE pattern matching every key that starts with it (`\` escapes).
pub fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_' | '[') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// How durable SQLite commits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Every commit reaches the disk before it returns: a 202 survives a power cut.
    Full,
    /// Commits reach the disk at checkpoints: faster; a power cut may lose the last ones
    /// (a crash of the process loses nothing).
    Normal,
}

/// Settings every backend applies when it opens.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub sqlite_synchronous: SqliteSync,
    /// Longest a statement may run or wait for a lock before the store gives up on it
    /// (the work is then retried, not counted against an event).
    pub statement_timeout: std::time::Duration,
    /// Longest wait for a connection.
    pub connect_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_synchronous: SqliteSync::Full,
            statement_timeout: std::time::Duration::from_secs(30),
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Open and migrate the store at `url`: `sqlite://path`, `postgres://…` or `mssql://…`.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(url, options).await?));
    }
    #[cfg(not(all(feature = "postgres", feature = "mssql")))]
    let not_built = |what: &str, feature: &str| StoreError::Url {
        url: crate::redact::url(url),
        reason: crate::features::missing(what, feature),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PgStore::open(url, options).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(not_built("PostgreSQL", "postgres"));
    }
    if url.starts_with("mssql://") || url.starts_with("sqlserver://") {
        #[cfg(feature = "mssql")]
        return Ok(Arc::new(MssqlStore::open(url, options).await?));
        #[cfg(not(feature = "mssql"))]
        return Err(not_built("SQL Server", "mssql"));
    }
    Err(StoreError::Url {
        url: crate::redact::url(url),
        reason: "expected sqlite://…, postgres://… or mssql://…".to_owned(),
    })
}

/// The stores of one deployment: a default store and named stores that consumers (steps,
/// or `host` for the orders) are mapped to. Each store carries its own inbox, outbox,
/// state, deliveries and dead letters; events cross stores only through the transport.
pub struct Stores {
    default: Arc<dyn Store>,
    named: std::collections::BTreeMap<String, Arc<dyn Store>>,
    /// consumer → store name
    routes: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("named", &self.named.keys()).field("routes", &self.routes).finish()
    }
}

impl Stores {
    /// Everything in one store.
    pub fn single(store: Arc<dyn Store>) -> Arc<Stores> {
        Arc::new(Stores { default: store, named: Default::default(), routes: Default::default() })
    }

    /// Open the default store and every named one (a URL used twice is opened once), and
    /// map consumers to them. A consumer mapped to an unknown name is an error.
    pub async fn open(
        default_url: &str,
        named: &std::collections::BTreeMap<String, String>,
        routes: std::collections::BTreeMap<String, String>,
        options: &StoreOptions,
    ) -> Result<Arc<Stores>, StoreError> {
        for (consumer, name) in &routes {
            if !named.contains_key(name) {
                return Err(StoreError::Url {
                    url: name.clone(),
                    reason: format!("step {consumer:?} uses store {name:?}, which no [stores.{name}] defines"),
                });
            }
        }
        let default = open(default_url, options).await?;
        let mut by_url: std::collections::BTreeMap<&str, Arc<dyn Store>> = Default::default();
        by_url.insert(default_url, default.clone());
        let mut opened = std::collections::BTreeMap::new();
        for (name, url) in named {
            let store = match by_url.get(url.as_str()) {
                Some(store) => store.clone(),
                None => {
                    let store = open(url, options).await?;
                    by_url.insert(url, store.clone());
                    store
                }
            };
            opened.insert(name.clone(), store);
        }
        Ok(Arc::new(Stores { default, named: opened, routes }))
    }

    /// The store of `consumer` (a step name, or `host`).
    pub fn for_consumer(&self, consumer: &str) -> &Arc<dyn Store> {
        self.routes.get(consumer).and_then(|name| self.named.get(name)).unwrap_or(&self.default)
    }

    /// The store holding the orders.
    pub fn host(&self) -> &Arc<dyn Store> {
        self.for_consumer(crate::event::HOST_CONSUMER)
    }

    /// Every distinct store, the default first.
    pub fn all(&self) -> Vec<&Arc<dyn Store>> {
        let mut all: Vec<&Arc<dyn Store>> = vec![&self.default];
        for store in self.named.values() {
            if !all.iter().any(|known| Arc::ptr_eq(known, store)) {
                all.push(store);
            }
        }
        all
    }
}
