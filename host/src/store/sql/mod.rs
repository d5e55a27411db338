//! The SQL backends. SQLite and PostgreSQL share every statement (both accept `$n`
//! placeholders, `ON CONFLICT` and `RETURNING`), so each role's file holds one macro that
//! [`for_both`] writes out for each pool type; only opening and migrating differ (here).

use super::*;
use crate::event::now_ms as clock_ms;
use async_trait::async_trait;
use futures::future::BoxFuture;
#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, Pool, QueryBuilder, Row, Sqlite};
use std::str::FromStr;

/// Connections a store keeps for its hot reads (see `lane.rs`): about one per consumer
/// reading at once.
const LANE_WIDTH: usize = 4;
/// SQLite readers for everything else (the API's lists, maintenance).
const READERS: u32 = 4;
/// Transitions written by one statement: 4 parameters each, well under either backend's
/// limit on parameters.
const TRANSITIONS_PER_STATEMENT: usize = 500;

/// SQLite: one writer connection (SQLite allows one writer at a time, so writes queue
/// in the pool instead of spinning on SQLITE_BUSY) and a pool of readers over WAL. One
/// process at a time: an exclusive lock on `<file>.lock` keeps a second one out.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
    /// The hot reads, on readers kept out of the pool (see `lane.rs`).
    lane: Arc<super::lane::Lane<Sqlite>>,
    /// The hot write paths, committed in groups (see `group.rs`).
    group: super::group::GroupWriter,
    /// One process owns the file (`_lock`), so its claims live in memory
    claims: Option<Arc<super::claims::MemoryClaims>>,
    /// and whether an event waits for the relay is known without asking.
    relay: RelayIdle,
    _lock: Arc<std::fs::File>,
}

impl SqliteStore {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<SqliteStore, StoreError> {
        let bad_url = |e: sqlx::Error| StoreError::Url { url: crate::redact::url(url), reason: e.to_string() };
        let synchronous = match options.sqlite_synchronous {
            SqliteSync::Full => SqliteSynchronous::Full,
            SqliteSync::Normal => SqliteSynchronous::Normal,
        };
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(bad_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(options.statement_timeout)
            // A batch's statements differ by their number of rows (up to the batch size)
            // or ids: keep them all prepared rather than preparing them again and again.
            .statement_cache_capacity(1024);
        let file = connect.get_filename().to_owned();
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect(format!("{}: {e}", dir.display())))?;
        }
        let lock = lock_exclusively(&file)?;
        // No ping before each acquire: a file cannot hang up, and on SQLite a ping is a
        // round trip to the connection's thread, as dear as the statement it precedes.
        // (The pool still pings a connection as it returns, which catches a bad state.)
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| StoreError::Connect(crate::redact::text(&e.to_string())))?;
        super::migrations::sqlite().run(&writer).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS + LANE_WIDTH as u32)
            .test_before_acquire(false)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect.read_only(true))
            .await
            .map_err(|e| StoreError::Connect(crate::redact::text(&e.to_string())))?;
        let lane = Arc::new(super::lane::Lane::new(reader.clone(), LANE_WIDTH));
        let claims = Some(Arc::default());
        let relay = RelayIdle(Some(Arc::default()));
        // A rollback may undo what a query in the same transaction saw (a relay's mark):
        // the flag is known again only after the next query.
        let forget = relay.clone();
        let group = super::group::GroupWriter::start(writer.clone(), move || forget.set(false));
        Ok(SqliteStore { writer, reader, lane, group, claims, relay, _lock: Arc::new(lock) })
    }

    /// Run `work` on `args` in a write transaction, committed with whatever else is
    /// waiting (and run again should another write of its group fail: see `group.rs`).
    async fn write<A, T, F>(&self, args: A, work: F) -> Result<T, StoreError>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut sqlx::SqliteConnection, Arc<A>) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        let args = Arc::new(args);
        self.group.write(move |conn| work(conn, args.clone())).await
    }
}

/// Whether no outbox row waits for the transport's relay, kept in memory where one
/// process owns the store (SQLite), so that a commit need not ask before queueing its
/// own deliveries. Every unrelayed row is written (or made unrelayed again, `redrive`)
/// on the one writer connection, which clears the flag first; the query that finds none
/// sets it again, and any rollback of a group clears it (the query may have seen a mark
/// that the rollback undid). `None`: always ask (other hosts write too).
#[derive(Debug, Clone, Default)]
struct RelayIdle(Option<Arc<std::sync::atomic::AtomicBool>>);

impl RelayIdle {
    fn known_idle(&self) -> bool {
        self.0.as_ref().is_some_and(|idle| idle.load(std::sync::atomic::Ordering::Acquire))
    }

    fn set(&self, idle: bool) {
        if let Some(flag) = &self.0 {
            flag.store(idle, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Hold an exclusive lock on `<db>.lock` for as long as the store is open, so a second
/// process on the same file refuses to start (the embedded transport and the single
/// writer assume one process).
fn lock_exclusively(db: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Connect(format!("cannot open the lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(format!(
            "the SQLite store is in use by another wasaga process (lock {} is held); \
             one process per SQLite data folder: stop the other one, or use PostgreSQL for a fleet",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Connect(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

/// PostgreSQL: one pool for reads and writes, with a statement timeout so a lock held
/// elsewhere turns into a retry instead of a stuck consumer.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub struct PgStore {
    writer: Pool<Postgres>,
    reader: Pool<Postgres>,
    lane: Arc<super::lane::Lane<Postgres>>,
    /// Hosts of a fleet share the store: claims are rows, and the outbox is asked.
    claims: Option<Arc<super::claims::MemoryClaims>>,
    relay: RelayIdle,
}

#[cfg(feature = "postgres")]
impl PgStore {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<PgStore, StoreError> {
        let timeout_ms = options.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url { url: crate::redact::url(url), reason: crate::redact::text(&e.to_string()) })?
            .options([("statement_timeout", timeout_ms.as_str()), ("lock_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Connect(crate::redact::text(&e.to_string())))?;
        // Hosts of a fleet start together: the first migrates, the others wait for it.
        super::migrations::postgres().run(&pool).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        let lane = Arc::new(super::lane::Lane::new(pool.clone(), LANE_WIDTH));
        Ok(PgStore { reader: pool.clone(), writer: pool, lane, claims: None, relay: RelayIdle(None) })
    }

    /// Run `work` on `args` in a write transaction of its own (PostgreSQL groups
    /// commits itself).
    async fn write<A, T, F>(&self, args: A, work: F) -> Result<T, StoreError>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
        F: for<'c> Fn(&'c mut sqlx::PgConnection, Arc<A>) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        use sqlx::Connection;
        let mut conn = self.lane.get().await?;
        let result = async {
            let mut tx = conn.begin().await?;
            let value = work(&mut tx, Arc::new(args)).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        conn.wrote(result)
    }
}

/// The filter, order and limit of a page of orders.
fn push_page<DB: sqlx::Database>(query: &mut QueryBuilder<DB>, page: &OrderPage)
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    query.push(" WHERE 1 = 1");
    if let Some(status) = &page.status {
        query.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(seq) = page.before_seq {
        query.push(" AND seq < ").push_bind(seq);
    }
    query.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(page.limit));
}

/// An outbox row's event, by column name (`event_columns!`).
fn stored_event<R: Row>(row: &R) -> Result<StoredEvent, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(StoredEvent {
        id: row.try_get("event_id")?,
        kind: row.try_get("kind")?,
        order_id: row.try_get("order_id")?,
        payload: row.try_get("payload")?,
        step: row.try_get("step")?,
        step_version: row.try_get("step_version")?,
        occurred_at_ms: row.try_get("occurred_at_ms")?,
        // Unknown for events of older versions.
        attempt: u32::try_from(row.try_get::<Option<i64>, _>("attempt")?.unwrap_or(1)).unwrap_or(1),
        trace: row.try_get("trace")?,
    })
}

/// Column lists as macros, so statements stay `&'static str` (sqlx refuses dynamic SQL).
macro_rules! order_columns {
    () => {
        "seq, id, customer_id, status, cancel_reason, total_cents, items, created_at_ms, updated_at_ms"
    };
}
macro_rules! timeline_columns {
    () => {
        "e.order_id, e.event_id, e.kind, e.occurred_at_ms, e.step, e.step_version, e.attempt"
    };
}
macro_rules! event_columns {
    () => {
        "event_id, kind, order_id, payload, step, step_version, occurred_at_ms, attempt, trace"
    };
}

/// `(a, b, …)`: `items` as bound parameters, for an `IN`.
macro_rules! push_list {
    ($query:expr, $items:expr) => {{
        $query.push("(");
        let mut list = $query.separated(", ");
        for item in $items {
            list.push_bind(item);
        }
        $query.push(")");
    }};
}

/// Writes one role's operations, given as a macro, for both pools.
// The last argument is the store's clock in milliseconds since the epoch: leases and
// claims compare it, never a host's clock.
macro_rules! for_both {
    ($m:ident) => {
        $m!(
            SqliteStore,
            Sqlite,
            sqlx::SqliteConnection,
            "sqlite",
            "",
            "",
            "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
        );
        #[cfg(feature = "postgres")]
        $m!(
            PgStore,
            Postgres,
            sqlx::PgConnection,
            "postgres",
            " FOR UPDATE",
            " FOR UPDATE SKIP LOCKED",
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        );
    };
}

mod consumers;
mod dead_letters;
mod deliveries;
mod fleet;
mod orders;
mod outbox;
mod prune;
mod write;
