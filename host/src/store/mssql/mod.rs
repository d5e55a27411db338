//! The SQL Server backend, through tiberius with a bb8 pool: connections and
//! transactions here, the statements in [`sql`], each role's operations in its own file.
//!
//! Concurrency: statements run at READ COMMITTED (enable `READ_COMMITTED_SNAPSHOT` on the
//! database so readers never wait for writers). Every write that depends on a read is one
//! statement: `INSERT … WHERE NOT EXISTS (… WITH (UPDLOCK, HOLDLOCK))` for keys that must
//! be unique (idempotency keys, deliveries, inbox rows), for upserts that guarded
//! `INSERT` followed by an `UPDATE` in one batch (the update always finds the row,
//! whoever inserted it), conditional `UPDATE … WHERE status IN …` for order transitions,
//! `UPDATE … WHERE version = @seen` for step state the batch read and writes, `OUTPUT
//! DELETED` to take a dead letter; the relay reads the outbox `WITH (READPAST)` so it
//! never waits on a batch still committing. Where the outcome would otherwise rest on the
//! hints, it does not: a unique-key violation on a guarded insert counts as "already
//! there" (what SQL Server answers a moment later), an upsert whose insert loses the race
//! runs once more, and state writes compare versions in the statement. Only state a batch
//! reads without writing is held by the hint alone (`LOCK_STATE_VERSIONS`). Lists travel
//! as one JSON parameter read with `OPENJSON`.

mod consumers;
mod dead_letters;
mod deliveries;
mod fleet;
mod orders;
mod outbox;
mod prune;
pub mod sql;

use super::*;
use async_trait::async_trait;
use tiberius::{AuthMethod, Client, Config, Row, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// A pooled connection, and whether a transaction may still be open on it: a
/// transaction whose future was dropped half-way (a client hung up) leaves the flag set,
/// and the pool then discards the connection instead of handing out an open transaction.
pub struct Connection {
    client: Client<Compat<TcpStream>>,
    in_transaction: bool,
}

impl std::ops::Deref for Connection {
    type Target = Client<Compat<TcpStream>>;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// Opens tiberius connections for the pool.
#[derive(Clone)]
pub struct Manager {
    config: Config,
    connect_timeout: std::time::Duration,
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = tiberius::error::Error;

    async fn connect(&self) -> Result<Connection, Self::Error> {
        let connect = async {
            let tcp = TcpStream::connect(self.config.get_addr()).await?;
            tcp.set_nodelay(true)?;
            Client::connect(self.config.clone(), tcp.compat_write()).await
        };
        let client = tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| {
            tiberius::error::Error::Io { kind: std::io::ErrorKind::TimedOut, message: "connect timed out".to_owned() }
        })??;
        Ok(Connection { client, in_transaction: false })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), Self::Error> {
        conn.simple_query("SELECT 1").await?.into_row().await?;
        Ok(())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.in_transaction
    }
}

/// Connection settings from `mssql://user:password@host:port/database?trust_server_certificate=true`.
pub fn config_from_url(url: &str) -> Result<Config, StoreError> {
    let bad = |reason: &str| StoreError::Url { url: crate::redact::url(url), reason: reason.to_owned() };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "mssql" && parsed.scheme() != "sqlserver" {
        return Err(bad("expected mssql://"));
    }
    let mut config = Config::new();
    config.host(parsed.host_str().ok_or_else(|| bad("no host"))?);
    config.port(parsed.port().unwrap_or(1433));
    let database = parsed.path().trim_start_matches('/');
    if !database.is_empty() {
        config.database(database);
    }
    let user = url::form_urlencoded::parse(parsed.username().as_bytes()).map(|(k, _)| k.into_owned()).next();
    let password = parsed
        .password()
        .map(|p| url::form_urlencoded::parse(p.as_bytes()).map(|(k, _)| k.into_owned()).next().unwrap_or_default());
    match (user, password) {
        (Some(user), Some(password)) if !user.is_empty() => {
            config.authentication(AuthMethod::sql_server(user, password))
        }
        _ => return Err(bad("give a user and password: mssql://user:password@host/database")),
    }
    for (key, value) in parsed.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("trust_server_certificate", "true") => config.trust_cert(),
            ("trust_server_certificate", "false") => {}
            (key, _) => return Err(bad(&format!("unknown option {key:?} (known: trust_server_certificate)"))),
        }
    }
    config.application_name("wasaga");
    Ok(config)
}

/// SQL Server error numbers of a unique-key violation.
const UNIQUE_VIOLATIONS: [u32; 2] = [2627, 2601];

/// Sort a driver error into what a caller can do about it.
fn query_error(error: tiberius::error::Error) -> StoreError {
    let text = crate::redact::text(&error.to_string());
    match &error {
        tiberius::error::Error::Server(token) => match token.code() {
            // Deadlock victim; snapshot update conflict.
            1205 | 3960 => StoreError::Conflict(text),
            // Lock request timeout; query timeout; resources; database unavailable.
            1222 | 8645 | 701 | 802 | 904 | 921 | 40613 | 40501 | 49918 => StoreError::Unavailable(text),
            // Constraints, truncation, conversion.
            547 | 515 | 2601 | 2627 | 8152 | 2628 | 245 | 8114 => StoreError::Rejected(text),
            _ => StoreError::Query(text),
        },
        tiberius::error::Error::Io { .. } | tiberius::error::Error::Tls(_) | tiberius::error::Error::Routing { .. } => {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Query(text),
    }
}

fn pool_error(error: bb8::RunError<tiberius::error::Error>) -> StoreError {
    match error {
        bb8::RunError::User(error) => match query_error(error) {
            StoreError::Query(text) => StoreError::Unavailable(text),
            other => other,
        },
        bb8::RunError::TimedOut => StoreError::Unavailable("timed out waiting for a connection".to_owned()),
    }
}

/// Whether a failed guarded insert lost a race for a unique key (counts as "already there").
fn lost_insert_race(error: &tiberius::error::Error) -> bool {
    matches!(error, tiberius::error::Error::Server(token) if UNIQUE_VIOLATIONS.contains(&token.code()))
}

/// SQL Server: a bb8 pool of tiberius connections.
#[derive(Clone)]
pub struct MssqlStore {
    pool: bb8::Pool<Manager>,
}

impl std::fmt::Debug for MssqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlStore").finish_non_exhaustive()
    }
}

fn text(row: &Row, idx: usize) -> Result<String, StoreError> {
    Ok(row.try_get::<&str, _>(idx).map_err(query_error)?.unwrap_or_default().to_owned())
}

fn opt_text(row: &Row, idx: usize) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<&str, _>(idx).map_err(query_error)?.map(str::to_owned))
}

fn int(row: &Row, idx: usize) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(idx).map_err(query_error)?.unwrap_or_default())
}

fn opt_int(row: &Row, idx: usize) -> Result<Option<i64>, StoreError> {
    row.try_get::<i64, _>(idx).map_err(query_error)
}

/// A row type read from consecutive columns, starting at column `at`.
pub(super) trait FromColumns: Sized {
    fn from_columns(row: &Row, at: usize) -> Result<Self, StoreError>;
}

/// Every row as `T`, from its first column.
fn all<T: FromColumns>(found: &[Row]) -> Result<Vec<T>, StoreError> {
    found.iter().map(|row| T::from_columns(row, 0)).collect()
}

/// Implements [`FromColumns`]: each field from the next column, by the reader named.
macro_rules! from_columns {
    ($ty:ident { $($field:ident: $read:ident),+ $(,)? }) => {
        impl FromColumns for $ty {
            #[allow(unused_assignments)] // the last field's advance
            fn from_columns(row: &Row, mut at: usize) -> Result<Self, StoreError> {
                Ok($ty { $($field: { let value = $read(row, at)?; at += 1; value }),+ })
            }
        }
    };
}

from_columns!(OrderRow {
    seq: int,
    id: text,
    customer_id: text,
    status: text,
    cancel_reason: opt_text,
    total_cents: int,
    items: text,
    created_at_ms: int,
    updated_at_ms: int,
});
from_columns!(TimelineRow {
    order_id: text,
    event_id: text,
    kind: text,
    at_ms: int,
    step: text,
    step_version: text,
    attempt: opt_int,
});
from_columns!(DeadLetterRow {
    id: text,
    consumer: text,
    event_id: text,
    event: text,
    error: text,
    attempts: int,
    dead_lettered_at_ms: int,
    recording: none,
});
from_columns!(DeliveryRow { id: int, consumer: text, event_id: text, event: text, attempts: int, due_at_ms: int });
from_columns!(RecordingRow {
    id: text,
    step: text,
    event_id: text,
    version: text,
    outcome: text,
    recorded_at_ms: int,
    recording: text,
});
from_columns!(HistoryRow { name: text, action: text, digest: text, reason: text, host_id: text, at_ms: int });
from_columns!(HostRow { host_id: text, http_addr: text, started_at_ms: int, seen_at_ms: int, steps: text });
from_columns!(StockRow { sku: text, available: int, reserved: int, sold: int, seq: int });
from_columns!(CheckedOrder { id: text, status: text, updated_at_ms: int });
from_columns!(StoredEvent {
    id: text,
    kind: text,
    order_id: text,
    payload: text,
    step: text,
    step_version: text,
    occurred_at_ms: int,
    attempt: attempt,
    trace: opt_text,
});

/// Not read: a field the statement does not select.
fn none(_: &Row, _: usize) -> Result<Option<String>, StoreError> {
    Ok(None)
}

/// An event's attempt (unknown for events of older versions: 1).
fn attempt(row: &Row, idx: usize) -> Result<u32, StoreError> {
    Ok(u32::try_from(opt_int(row, idx)?.unwrap_or(1)).unwrap_or(1))
}

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

async fn rows(conn: &mut Connection, statement: &str, params: &[&dyn ToSql]) -> Result<Vec<Row>, StoreError> {
    conn.query(statement, params).await.map_err(query_error)?.into_first_result().await.map_err(query_error)
}

async fn exec(conn: &mut Connection, statement: &str, params: &[&dyn ToSql]) -> Result<u64, StoreError> {
    Ok(conn.execute(statement, params).await.map_err(query_error)?.total())
}

/// A guarded insert: rows inserted, with a lost unique-key race counted as 0.
async fn insert_guarded(conn: &mut Connection, statement: &str, params: &[&dyn ToSql]) -> Result<u64, StoreError> {
    match conn.execute(statement, params).await {
        Ok(result) => Ok(result.total()),
        Err(error) if lost_insert_race(&error) => Ok(0),
        Err(error) => Err(query_error(error)),
    }
}

/// An upsert (`INSERT … WHERE NOT EXISTS (… WITH (UPDLOCK, HOLDLOCK)); UPDATE …`): the
/// update runs after the row exists, whoever inserted it. On an engine that ignores the
/// hints a racer's insert may hit the unique key instead; the statement then runs once
/// more, and its update applies.
async fn upsert(conn: &mut Connection, statement: &str, params: &[&dyn ToSql]) -> Result<(), StoreError> {
    match conn.execute(statement, params).await {
        Ok(_) => Ok(()),
        Err(error) if lost_insert_race(&error) => exec(conn, statement, params).await.map(|_| ()),
        Err(error) => Err(query_error(error)),
    }
}

/// Run `body` in a transaction on one pooled connection: commit if it succeeds, roll
/// back if it fails. The connection is marked while the transaction is open, so one
/// dropped half-way is discarded by the pool rather than reused.
macro_rules! in_tx {
    ($self:ident, |$conn:ident| $body:block) => {{
        let mut pooled = $self.pool.get().await.map_err(pool_error)?;
        let $conn: &mut Connection = &mut pooled;
        $conn.in_transaction = true;
        $conn
            .simple_query("BEGIN TRANSACTION")
            .await
            .map_err(query_error)?
            .into_results()
            .await
            .map_err(query_error)?;
        let result: Result<_, StoreError> = async { $body }.await;
        let end = if result.is_ok() { "COMMIT TRANSACTION" } else { "ROLLBACK TRANSACTION" };
        let ended = match $conn.simple_query(end).await {
            Ok(stream) => stream.into_results().await.map(|_| ()).map_err(query_error),
            Err(e) => Err(query_error(e)),
        };
        if ended.is_ok() {
            $conn.in_transaction = false;
        }
        match (result, ended) {
            (Ok(value), Ok(())) => Ok(value),
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
        }
    }};
}
use in_tx;

/// An optional text as a parameter: `""` for none, which the statement reads back with
/// `NULLIF(@Pn, N'')`. tiberius sends a `None` as the TDS NULL type (0x1F), which SQL
/// Server accepts and Babelfish's TDS listener refuses; none of these values is ever
/// empty (ids, digests, reasons, traces, JSON).
fn or_empty(value: Option<&str>) -> &str {
    value.unwrap_or_default()
}

/// Write an event to the outbox.
async fn insert_event(conn: &mut Connection, e: &StoredEvent) -> Result<(), StoreError> {
    let attempt = i64::from(e.attempt);
    let trace = or_empty(e.trace.as_deref());
    let params: [&dyn ToSql; 9] =
        [&e.id, &e.kind, &e.order_id, &e.payload, &e.step, &e.step_version, &e.occurred_at_ms, &attempt, &trace];
    exec(conn, sql::INSERT_EVENT, &params).await.map(|_| ())
}

impl MssqlStore {
    /// Connect and apply the migrations not applied yet, recording each.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<MssqlStore, StoreError> {
        let config = config_from_url(url)?;
        let pool = bb8::Pool::builder()
            .max_size(16)
            .connection_timeout(options.connect_timeout)
            .build(Manager { config, connect_timeout: options.connect_timeout })
            .await
            .map_err(|e| StoreError::Connect(crate::redact::text(&e.to_string())))?;
        let store = MssqlStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(|e| StoreError::Connect(crate::redact::text(&e.to_string())))?;
        let exists = rows(&mut conn, sql::MIGRATIONS_TABLE_EXISTS, &[]).await?;
        if exists.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).unwrap_or(0) == 0 {
            exec(&mut conn, sql::CREATE_MIGRATIONS_TABLE, &[]).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        }
        let applied: Vec<i64> =
            rows(&mut conn, sql::APPLIED_MIGRATIONS, &[]).await?.iter().filter_map(|r| int(r, 0).ok()).collect();
        drop(conn);
        for &(version, description, script) in super::migrations::MSSQL {
            if applied.contains(&version) {
                continue;
            }
            let now = crate::event::now_ms();
            let migrate = |e: StoreError| StoreError::Migrate(format!("{version}_{description}: {e}"));
            in_tx!(self, |conn| {
                conn.simple_query(script).await.map_err(query_error)?.into_results().await.map_err(query_error)?;
                exec(conn, sql::RECORD_MIGRATION, &[&version, &description, &now]).await?;
                Ok(())
            })
            .map_err(migrate)?;
        }
        Ok(())
    }

    async fn conn(&self) -> Result<bb8::PooledConnection<'_, Manager>, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

async fn apply_transition(conn: &mut Connection, t: &OrderTransition) -> Result<bool, StoreError> {
    let from = json_list(t.from);
    let applied = exec(
        conn,
        sql::UPDATE_ORDER_STATUS,
        &[&t.to, &or_empty(t.reason.as_deref()), &t.event.occurred_at_ms, &t.order_id, &from],
    )
    .await?
        == 1;
    if applied {
        insert_event(conn, &t.event).await?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::MsSqlDialect;
    use sqlparser::parser::Parser;

    #[test]
    fn every_statement_parses_as_t_sql() {
        for statement in sql::ALL {
            if let Err(error) = Parser::parse_sql(&MsSqlDialect {}, statement) {
                panic!("{error}\n{statement}");
            }
        }
    }

    #[test]
    fn every_migration_parses_as_t_sql() {
        for &(version, description, script) in crate::store::migrations::MSSQL {
            let statements =
                Parser::parse_sql(&MsSqlDialect {}, script).unwrap_or_else(|e| panic!("{version}_{description}: {e}"));
            assert!(!statements.is_empty(), "{version}_{description}: no statements");
        }
    }

    #[test]
    fn urls_become_connection_settings() {
        let config =
            config_from_url("mssql://sa:p%40ss@db.local:1444/orders?trust_server_certificate=true").expect("valid URL");
        assert_eq!(config.get_addr(), "db.local:1444");
        for (url, fragment) in [
            ("postgres://x@h/db", "expected mssql://"),
            ("mssql://h/db", "user and password"),
            ("mssql://sa:pw@h/db?color=blue", "unknown option"),
        ] {
            let error = config_from_url(url).expect_err(url).to_string();
            assert!(error.contains(fragment), "{url}: {error}");
            assert!(!error.contains("pw"), "the password leaks: {error}");
        }
    }
}
