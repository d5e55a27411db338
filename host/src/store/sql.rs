//! The SQL backends. SQLite and PostgreSQL share every statement (both accept `$n`
//! placeholders, `ON CONFLICT` and `RETURNING`), so one macro writes the [`Store`]
//! implementation for each pool type; only opening and migrating differ.

use super::*;
use crate::event::now_ms as clock_ms;
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Postgres, QueryBuilder, Row, Sqlite};
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
        sqlx::migrate!("../migrations/sqlite").run(&writer).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
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
#[derive(Debug, Clone)]
pub struct PgStore {
    writer: Pool<Postgres>,
    reader: Pool<Postgres>,
    lane: Arc<super::lane::Lane<Postgres>>,
    /// Hosts of a fleet share the store: claims are rows, and the outbox is asked.
    claims: Option<Arc<super::claims::MemoryClaims>>,
    relay: RelayIdle,
}

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
        sqlx::migrate!("../migrations/postgres").run(&pool).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
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

fn order_row<R: Row>(row: &R) -> Result<OrderRow, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(OrderRow {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        status: row.try_get("status")?,
        cancel_reason: row.try_get("cancel_reason")?,
        total_cents: row.try_get("total_cents")?,
        items: row.try_get("items")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// Column lists as macros, so statements stay `&'static str` (sqlx refuses dynamic SQL).
macro_rules! order_columns {
    () => {
        "seq, id, customer_id, status, cancel_reason, total_cents, items, created_at_ms, updated_at_ms"
    };
}
macro_rules! event_columns {
    () => {
        "event_id, kind, order_id, payload, step, step_version, occurred_at_ms, attempt, trace"
    };
}

macro_rules! sql_store {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        impl $store {
            /// Outbox rows; `relayed_at_ms` when their deliveries are queued with them.
            async fn insert_events(
                conn: &mut $conn,
                events: &[StoredEvent],
                relayed_at_ms: Option<i64>,
                relay: &RelayIdle,
            ) -> Result<(), sqlx::Error> {
                if events.is_empty() {
                    return Ok(());
                }
                if relayed_at_ms.is_none() {
                    relay.set(false);
                }
                let mut query =
                    QueryBuilder::<$db>::new(concat!("INSERT INTO outbox (", event_columns!(), ", relayed_at_ms) "));
                query.push_values(events, |mut row, e| {
                    row.push_bind(&e.id)
                        .push_bind(&e.kind)
                        .push_bind(&e.order_id)
                        .push_bind(&e.payload)
                        .push_bind(&e.step)
                        .push_bind(&e.step_version)
                        .push_bind(e.occurred_at_ms)
                        .push_bind(i64::from(e.attempt))
                        .push_bind(&e.trace)
                        .push_bind(relayed_at_ms);
                });
                query.build().execute(&mut *conn).await?;
                Ok(())
            }

            async fn insert_dead_letter(
                conn: &mut $conn,
                dead: &DeadLetterRow,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO dead_letters \
                     (id, consumer, event_id, event, error, attempts, dead_lettered_at_ms, recording) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&dead.id)
                .bind(&dead.consumer)
                .bind(&dead.event_id)
                .bind(&dead.event)
                .bind(&dead.error)
                .bind(dead.attempts)
                .bind(dead.dead_lettered_at_ms)
                .bind(&dead.recording)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// A batch's transitions in as few statements as it allows: one `UPDATE … FROM
            /// (VALUES …)` per run of transitions on distinct orders from the same states (an
            /// order changed twice in a batch waits for the next run, so the second change sees
            /// the first), then one insert of the events of those that applied, in batch order.
            /// Returns the events not written (their transition did not apply).
            async fn apply_transitions<'t>(
                conn: &mut $conn,
                transitions: &'t [OrderTransition],
                relayed_at_ms: Option<i64>,
                relay: &RelayIdle,
            ) -> Result<HashSet<&'t str>, sqlx::Error> {
                let mut not_written = HashSet::new();
                let mut rest = transitions;
                while !rest.is_empty() {
                    let mut orders = HashSet::new();
                    let len = rest
                        .iter()
                        .take(TRANSITIONS_PER_STATEMENT)
                        .take_while(|t| t.from == rest[0].from && orders.insert(t.order_id.as_str()))
                        .count();
                    let (run, next) = rest.split_at(len);
                    rest = next;
                    let mut query = QueryBuilder::<$db>::new(
                        "UPDATE orders SET status = v.column2, cancel_reason = v.column3, updated_at_ms = v.column4, \
                         redrives = 0, next_redrive_at_ms = NULL FROM (",
                    );
                    query.push_values(run, |mut row, t| {
                        row.push_bind(&t.order_id)
                            .push_bind(t.to)
                            .push_bind(t.reason.as_deref())
                            .push_bind(t.event.occurred_at_ms);
                    });
                    query.push(") AS v WHERE orders.id = v.column1 AND orders.status IN (");
                    let mut states = query.separated(", ");
                    for from in run[0].from {
                        states.push_bind(*from);
                    }
                    query.push(") RETURNING orders.id");
                    let applied: HashSet<String> = query
                        .build()
                        .fetch_all(&mut *conn)
                        .await?
                        .iter()
                        .map(|row| row.try_get::<String, _>(0))
                        .collect::<Result<_, _>>()?;
                    let mut events = Vec::with_capacity(applied.len());
                    for t in run {
                        if applied.contains(&t.order_id) {
                            events.push(t.event.clone());
                        } else {
                            not_written.insert(t.event.id.as_str());
                        }
                    }
                    Self::insert_events(conn, &events, relayed_at_ms, relay).await?;
                }
                Ok(not_written)
            }

            /// The read model's stock levels: the newest level of each SKU (by `seq`) wins,
            /// whatever order they come in, so a batch writes only its newest per SKU, in one
            /// statement (PostgreSQL refuses an upsert that touches a row twice).
            async fn upsert_stock(conn: &mut $conn, levels: &[StockRow]) -> Result<(), sqlx::Error> {
                // By SKU: two hosts' batches lock the rows in the same order.
                let mut newest: std::collections::BTreeMap<&str, &StockRow> = std::collections::BTreeMap::new();
                for level in levels {
                    let kept = newest.entry(level.sku.as_str()).or_insert(level);
                    if kept.seq < level.seq {
                        *kept = level;
                    }
                }
                let newest: Vec<&StockRow> = newest.into_values().collect();
                for chunk in newest.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO stock (sku, available, reserved, sold, seq) ");
                    query.push_values(chunk, |mut row, level| {
                        row.push_bind(&level.sku)
                            .push_bind(level.available)
                            .push_bind(level.reserved)
                            .push_bind(level.sold)
                            .push_bind(level.seq);
                    });
                    query.push(
                        " ON CONFLICT (sku) DO UPDATE SET available = excluded.available, \
                         reserved = excluded.reserved, sold = excluded.sold, seq = excluded.seq \
                         WHERE stock.seq < excluded.seq",
                    );
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Queue deliveries (a row already there is kept: publishing twice queues once).
            async fn insert_deliveries<'q>(
                conn: &mut $conn,
                deliveries: impl Iterator<Item = &'q Queued>,
                now_ms: i64,
            ) -> Result<(), StoreError> {
                let deliveries: Vec<&Queued> = deliveries.collect();
                for chunk in deliveries.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new("INSERT INTO deliveries (consumer, event_id, event, due_at_ms) ");
                    query.push_values(chunk, |mut row, (consumer, event_id, event)| {
                        row.push_bind(consumer).push_bind(event_id).push_bind(event).push_bind(now_ms);
                    });
                    query.push(" ON CONFLICT (consumer, event_id) DO NOTHING");
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Whether no event waits for the transport's relay. Only then may a commit
            /// queue its own deliveries: queued past a waiting one (a stock level set,
            /// then an order), they would reach their consumer before it.
            async fn relay_idle(conn: &mut $conn, relay: &RelayIdle) -> Result<bool, StoreError> {
                if relay.known_idle() {
                    return Ok(true);
                }
                let waiting = sqlx::query("SELECT 1 FROM outbox WHERE relayed_at_ms IS NULL LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?;
                relay.set(waiting.is_none());
                Ok(waiting.is_none())
            }

            /// Remove settled deliveries (only those `holder` claims, if given).
            async fn delete_deliveries(conn: &mut $conn, ids: &[i64], holder: Option<&str>) -> Result<(), StoreError> {
                for chunk in ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM deliveries WHERE ");
                    if let Some(holder) = holder {
                        query.push("claimed_by = ").push_bind(holder.to_owned()).push(" AND ");
                    }
                    query.push("id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Mark outbox rows as sent on `channel`.
            async fn mark(
                conn: &mut $conn,
                channel: Channel,
                seqs: &[i64],
                now_ms: i64,
            ) -> Result<(), StoreError> {
                for chunk in seqs.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(match channel {
                        Channel::Transport => "UPDATE outbox SET relayed_at_ms = ",
                        Channel::Stream => "UPDATE outbox SET streamed_at_ms = ",
                    });
                    query.push_bind(now_ms).push(" WHERE seq IN (");
                    let mut list = query.separated(", ");
                    for seq in chunk {
                        list.push_bind(*seq);
                    }
                    query.push(")");
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Inbox rows of the batch; a row already there means another host handled
            /// the event first.
            async fn insert_inbox(conn: &mut $conn, batch: &BatchCommit) -> Result<(), StoreError> {
                let now_ms = clock_ms();
                for chunk in batch.inbox.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) ",
                    );
                    query.push_values(chunk, |mut row, (event_id, version)| {
                        row.push_bind(&batch.consumer).push_bind(event_id).push_bind(version).push_bind(now_ms);
                    });
                    query.push(" ON CONFLICT (consumer, event_id) DO NOTHING");
                    let inserted = query.build().execute(&mut *conn).await?.rows_affected();
                    if inserted != chunk.len() as u64 {
                        return Err(StoreError::Conflict(format!(
                            "{} of {} events were already handled by {}",
                            chunk.len() as u64 - inserted,
                            chunk.len(),
                            batch.consumer
                        )));
                    }
                }
                Ok(())
            }

            /// Pins, used version overrides and sampled recordings of a batch.
            async fn apply_versions(conn: &mut $conn, batch: &BatchCommit) -> Result<(), StoreError> {
                let now_ms = clock_ms();
                for chunk in batch.pins.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new("INSERT INTO pins (step, order_id, digest, created_at_ms) ");
                    query.push_values(chunk, |mut row, (order_id, digest)| {
                        row.push_bind(&batch.consumer).push_bind(order_id).push_bind(digest).push_bind(now_ms);
                    });
                    query.push(" ON CONFLICT (step, order_id) DO NOTHING");
                    query.build().execute(&mut *conn).await?;
                }
                for chunk in batch.overrides_used.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM version_overrides WHERE consumer = ");
                    query.push_bind(&batch.consumer).push(" AND event_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    query.push(")");
                    query.build().execute(&mut *conn).await?;
                }
                for r in &batch.recordings {
                    sqlx::query(
                        "INSERT INTO recordings (id, step, event_id, version, outcome, recorded_at_ms, recording) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&r.id)
                    .bind(&r.step)
                    .bind(&r.event_id)
                    .bind(&r.version)
                    .bind(&r.outcome)
                    .bind(r.recorded_at_ms)
                    .bind(&r.recording)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            /// Step state with optimistic concurrency: every key the batch read must still
            /// have the version it saw (rows locked until commit where the backend can),
            /// keys it saw absent must still be absent, then the writes get a new version.
            async fn apply_state(conn: &mut $conn, batch: &BatchCommit) -> Result<(), StoreError> {
                let step = &batch.consumer;
                let seen: std::collections::BTreeMap<&str, Option<i64>> =
                    batch.state_reads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let present: Vec<&str> = seen.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
                for chunk in present.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("SELECT key, version FROM step_state WHERE step = ");
                    query.push_bind(step).push(" AND key IN (");
                    let mut list = query.separated(", ");
                    for key in chunk {
                        list.push_bind(*key);
                    }
                    query.push(")").push($lock);
                    let rows = query.build().fetch_all(&mut *conn).await?;
                    let mut found = std::collections::BTreeMap::new();
                    for row in &rows {
                        found.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
                    }
                    for key in chunk {
                        if found.get(*key).copied() != seen.get(key).copied().flatten() {
                            return Err(StoreError::Conflict(format!("state key {key:?} of {step} changed")));
                        }
                    }
                }
                let version: i64 = rand::random::<i64>() & i64::MAX;
                let (puts, deletes): (Vec<_>, Vec<_>) = batch.state.iter().partition(|(_, v)| v.is_some());
                // Keys the batch saw absent are inserted only if still absent.
                let (fresh, known): (Vec<_>, Vec<_>) =
                    puts.into_iter().partition(|(key, _)| seen.get(key.as_str()) == Some(&None));
                for chunk in fresh.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO step_state (step, key, value, version) ");
                    query.push_values(chunk, |mut row, (key, value)| {
                        row.push_bind(step)
                            .push_bind(key)
                            .push_bind(value.as_deref().unwrap_or_default())
                            .push_bind(version);
                    });
                    query.push(" ON CONFLICT (step, key) DO NOTHING");
                    if query.build().execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
                        return Err(StoreError::Conflict(format!("a state key of {step} was created meanwhile")));
                    }
                }
                for chunk in known.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO step_state (step, key, value, version) ");
                    query.push_values(chunk, |mut row, (key, value)| {
                        row.push_bind(step)
                            .push_bind(key)
                            .push_bind(value.as_deref().unwrap_or_default())
                            .push_bind(version);
                    });
                    query.push(
                        " ON CONFLICT (step, key) DO UPDATE SET value = excluded.value, version = excluded.version",
                    );
                    query.build().execute(&mut *conn).await?;
                }
                for chunk in deletes.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM step_state WHERE step = ");
                    query.push_bind(step).push(" AND key IN (");
                    let mut list = query.separated(", ");
                    for (key, _) in chunk {
                        list.push_bind(key);
                    }
                    query.push(")");
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            fn queues_with_commit(&self) -> bool {
                true
            }

            fn exclusive(&self) -> bool {
                self.claims.is_some()
            }

            async fn create_order(
                &self,
                order: &NewOrder,
                idempotency: Option<(&str, &str)>,
                placed: &StoredEvent,
                queued: Option<&[Queued]>,
            ) -> Result<Created, StoreError> {
                let args = (
                    order.clone(),
                    idempotency.map(|(key, hash)| (key.to_owned(), hash.to_owned())),
                    placed.clone(),
                    queued.map(<[Queued]>::to_vec),
                    self.relay.clone(),
                );
                self.write(args, |conn, args| Box::pin(async move {
                    let (order, idempotency, placed, queued, relay) = &*args;
                    if let Some((key, hash)) = idempotency {
                        let inserted = sqlx::query(
                            "INSERT INTO idempotency_keys (key, body_hash, order_id, created_at_ms) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                        )
                        .bind(&key)
                        .bind(&hash)
                        .bind(&order.id)
                        .bind(order.created_at_ms)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                        if inserted == 0 {
                            let row = sqlx::query("SELECT order_id, body_hash FROM idempotency_keys WHERE key = $1")
                                .bind(&key)
                                .fetch_one(&mut *conn)
                                .await?;
                            return Ok(Created::Existing { order_id: row.try_get(0)?, body_hash: row.try_get(1)? });
                        }
                    }
                    sqlx::query(
                        "INSERT INTO orders (id, customer_id, status, total_cents, items, created_at_ms, updated_at_ms) \
                         VALUES ($1, $2, 'pending', $3, $4, $5, $5)",
                    )
                    .bind(&order.id)
                    .bind(&order.customer_id)
                    .bind(order.total_cents)
                    .bind(&order.items)
                    .bind(order.created_at_ms)
                    .execute(&mut *conn)
                    .await?;
                    let now_ms = clock_ms();
                    let queued = match queued {
                        Some(queued) if Self::relay_idle(&mut *conn, relay).await? => Some(queued),
                        _ => None,
                    };
                    let relayed_at_ms = queued.is_some().then_some(now_ms);
                    Self::insert_events(&mut *conn, std::slice::from_ref(placed), relayed_at_ms, relay).await?;
                    if let Some(queued) = &queued {
                        Self::insert_deliveries(&mut *conn, queued.iter(), now_ms).await?;
                    }
                    Ok(Created::New)
                }))
                .await
            }

            async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *conn).await;
                let row = conn.read(fetched)?;
                Ok(row.map(|r| order_row(&r)).transpose()?)
            }

            async fn orders(
                &self,
                status: Option<&str>,
                limit: u32,
                before_seq: Option<i64>,
            ) -> Result<Vec<OrderRow>, StoreError> {
                let mut query =
                    QueryBuilder::<$db>::new(concat!("SELECT ", order_columns!(), " FROM orders WHERE 1 = 1"));
                if let Some(status) = status {
                    query.push(" AND status = ").push_bind(status);
                }
                if let Some(seq) = before_seq {
                    query.push(" AND seq < ").push_bind(seq);
                }
                query.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.reader).await?;
                Ok(rows.iter().map(order_row).collect::<Result<_, _>>()?)
            }

            async fn timeline(&self, order_id: &str) -> Result<Vec<TimelineRow>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query(
                    "SELECT event_id, kind, occurred_at_ms, step, step_version, attempt FROM outbox \
                     WHERE order_id = $1 ORDER BY seq",
                )
                .bind(order_id)
                .fetch_all(&mut *conn).await;
                let rows = conn.read(fetched)?;
                rows.iter()
                    .map(|r| {
                        Ok(TimelineRow {
                            event_id: r.try_get(0)?,
                            kind: r.try_get(1)?,
                            at_ms: r.try_get(2)?,
                            step: r.try_get(3)?,
                            step_version: r.try_get(4)?,
                            attempt: r.try_get(5)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let applied = Self::apply_transitions(&mut *tx, std::slice::from_ref(transition), None, &self.relay).await?.is_empty();
                tx.commit().await?;
                Ok(applied)
            }

            async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                Self::insert_events(&mut *tx, std::slice::from_ref(event), None, &self.relay).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query("SELECT sku, available, reserved, sold, seq FROM stock WHERE sku = $1")
                    .bind(sku)
                    .fetch_optional(&mut *conn).await;
                let row = conn.read(fetched)?;
                row.map(|r| {
                    Ok(StockRow {
                        sku: r.try_get(0)?,
                        available: r.try_get(1)?,
                        reserved: r.try_get(2)?,
                        sold: r.try_get(3)?,
                        seq: r.try_get(4)?,
                    })
                })
                .transpose()
                .map_err(|e: sqlx::Error| e.into())
            }

            async fn unrelayed(&self, channel: Channel, limit: u32) -> Result<Vec<(i64, StoredEvent)>, StoreError> {
                let statement = match channel {
                    Channel::Transport => concat!(
                        "SELECT seq, ",
                        event_columns!(),
                        " FROM outbox WHERE relayed_at_ms IS NULL ORDER BY seq LIMIT $1"
                    ),
                    Channel::Stream => concat!(
                        "SELECT seq, ",
                        event_columns!(),
                        " FROM outbox WHERE streamed_at_ms IS NULL ORDER BY seq LIMIT $1"
                    ),
                };
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query(statement).bind(i64::from(limit)).fetch_all(&mut *conn).await;
                let rows = conn.read(fetched)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            StoredEvent {
                                id: r.try_get(1)?,
                                kind: r.try_get(2)?,
                                order_id: r.try_get(3)?,
                                payload: r.try_get(4)?,
                                step: r.try_get(5)?,
                                step_version: r.try_get(6)?,
                                occurred_at_ms: r.try_get(7)?,
                                attempt: u32::try_from(r.try_get::<Option<i64>, _>(8)?.unwrap_or(1)).unwrap_or(1),
                                trace: r.try_get(9)?,
                            },
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn mark_relayed(&self, channel: Channel, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
                if seqs.is_empty() {
                    return Ok(());
                }
                self.write(seqs.to_vec(), move |conn, seqs| {
                    Box::pin(async move { Self::mark(conn, channel, &seqs, now_ms).await })
                })
                .await
            }

            async fn outbox_lag(&self, channel: Channel) -> Result<OutboxLag, StoreError> {
                let statement = match channel {
                    Channel::Transport => "SELECT COUNT(*), MIN(occurred_at_ms) FROM outbox WHERE relayed_at_ms IS NULL",
                    Channel::Stream => "SELECT COUNT(*), MIN(occurred_at_ms) FROM outbox WHERE streamed_at_ms IS NULL",
                };
                let row = sqlx::query(statement).fetch_one(&self.reader).await?;
                Ok(OutboxLag { pending: row.try_get(0)?, oldest_at_ms: row.try_get(1)? })
            }

            async fn set_subscriptions(&self, consumer: &str, patterns: &[String]) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM subscriptions WHERE consumer = $1").bind(consumer).execute(&mut *tx).await?;
                if !patterns.is_empty() {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO subscriptions (consumer, pattern) ");
                    query.push_values(patterns, |mut row, pattern| {
                        row.push_bind(consumer).push_bind(pattern);
                    });
                    query.push(" ON CONFLICT (consumer, pattern) DO NOTHING");
                    query.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query("SELECT consumer, pattern FROM subscriptions ORDER BY consumer, pattern")
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn enqueue(
                &self,
                deliveries: &[(String, String, String)],
                now_ms: i64,
                relayed: Option<(Channel, &[i64])>,
            ) -> Result<(), StoreError> {
                let args = (deliveries.to_vec(), relayed.map(|(channel, seqs)| (channel, seqs.to_vec())));
                self.write(args, move |conn, args| Box::pin(async move {
                    let (deliveries, relayed) = &*args;
                    Self::insert_deliveries(&mut *conn, deliveries.iter(), now_ms).await?;
                    if let Some((channel, seqs)) = relayed {
                        Self::mark(conn, *channel, seqs, now_ms).await?;
                    }
                    Ok(())
                }))
                .await
            }

            async fn claim(
                &self,
                consumer: &str,
                holder: &str,
                now_ms: i64,
                lease_ms: i64,
                limit: u32,
            ) -> Result<Vec<DeliveryRow>, StoreError> {
                if let Some(claims) = &self.claims {
                    // One process owns the store: its clock is the store's.
                    let until_ms = now_ms.saturating_add(lease_ms);
                    // Read past the deliveries already held; `take` skips them.
                    claims.expire(now_ms);
                    let (held, _) = claims.held(consumer);
                    let mut conn = self.lane.get().await?;
                    let fetched = sqlx::query(
                        "SELECT id, consumer, event_id, event, attempts, due_at_ms FROM deliveries \
                         WHERE consumer = $1 AND due_at_ms <= $2 ORDER BY due_at_ms, id LIMIT $3",
                    )
                    .bind(consumer)
                    .bind(now_ms)
                    .bind(i64::from(limit).saturating_add(held.len() as i64))
                    .fetch_all(&mut *conn).await;
                    let rows = conn.read(fetched)?;
                    let rows = rows.iter().map(delivery_row).collect::<Result<Vec<_>, sqlx::Error>>()?;
                    return Ok(claims.take(consumer, rows, until_ms, limit as usize));
                }
                let args = (consumer.to_owned(), holder.to_owned());
                let rows = self.write(args, move |conn, args| Box::pin(async move {
                    let (consumer, holder) = &*args;
                    Ok(sqlx::query(concat!(
                        "UPDATE deliveries SET claimed_by = $2, claimed_until_ms = ", $now, " + $3 WHERE id IN \
                         (SELECT id FROM deliveries WHERE consumer = $1 AND due_at_ms <= $4 \
                         AND (claimed_until_ms IS NULL OR claimed_until_ms <= ", $now, ") \
                         ORDER BY due_at_ms, id LIMIT $5",
                        $skip_locked,
                        ") RETURNING id, consumer, event_id, event, attempts, due_at_ms"
                    ))
                    .bind(consumer)
                    .bind(holder)
                    .bind(lease_ms)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?)
                }))
                .await?;
                let mut claimed = rows.iter().map(delivery_row).collect::<Result<Vec<_>, sqlx::Error>>()?;
                claimed.sort_by_key(|d| (d.due_at_ms, d.id));
                Ok(claimed)
            }

            async fn release_claims(&self, holder: &str) -> Result<(), StoreError> {
                if let Some(claims) = &self.claims {
                    claims.clear();
                }
                sqlx::query("UPDATE deliveries SET claimed_by = NULL, claimed_until_ms = NULL WHERE claimed_by = $1")
                    .bind(holder)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn renew_claims(&self, holder: &str, lease_ms: i64) -> Result<(), StoreError> {
                if let Some(claims) = &self.claims {
                    claims.renew(clock_ms().saturating_add(lease_ms));
                    return Ok(());
                }
                sqlx::query(concat!("UPDATE deliveries SET claimed_until_ms = ", $now, " + $2 WHERE claimed_by = $1"))
                    .bind(holder)
                    .bind(lease_ms)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
                if let Some(claims) = &self.claims {
                    // The first unclaimed delivery falls due, or the first claim ends.
                    let (held, ends) = claims.held(consumer);
                    let mut query =
                        QueryBuilder::<$db>::new("SELECT MIN(due_at_ms) FROM deliveries WHERE consumer = ");
                    query.push_bind(consumer);
                    if !held.is_empty() {
                        query.push(" AND id NOT IN (");
                        let mut list = query.separated(", ");
                        for id in held {
                            list.push_bind(id);
                        }
                        query.push(")");
                    }
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_one(&mut *conn).await;
                    let due: Option<i64> = conn.read(fetched)?.try_get(0)?;
                    return Ok(match (due, ends) {
                        (Some(due), Some(ends)) => Some(due.min(ends)),
                        (due, ends) => due.or(ends),
                    });
                }
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query(
                    "SELECT MIN(CASE WHEN claimed_until_ms IS NOT NULL AND claimed_until_ms > due_at_ms \
                     THEN claimed_until_ms ELSE due_at_ms END) FROM deliveries WHERE consumer = $1",
                )
                .bind(consumer)
                .fetch_one(&mut *conn).await;
                let row = conn.read(fetched)?;
                Ok(row.try_get(0)?)
            }

            async fn settle(
                &self,
                holder: &str,
                acked: &[i64],
                retries: &[(i64, i64, String, bool)],
            ) -> Result<(), StoreError> {
                let (mut acked, mut retries) = (acked.to_vec(), retries.to_vec());
                // Claims in memory: the ones this process still holds are its own.
                let in_rows = match &self.claims {
                    Some(claims) => {
                        acked.retain(|id| claims.holds(*id));
                        retries.retain(|retry| claims.holds(retry.0));
                        None
                    }
                    None => Some(holder.to_owned()),
                };
                if acked.is_empty() && retries.is_empty() {
                    return Ok(());
                }
                let settled: Vec<i64> = acked.iter().copied().chain(retries.iter().map(|r| r.0)).collect();
                self.write((acked, retries, in_rows), |conn, args| Box::pin(async move {
                    let (acked, retries, holder) = &*args;
                    Self::delete_deliveries(&mut *conn, acked, holder.as_deref()).await?;
                    for (id, due_at_ms, error, counted) in retries {
                        sqlx::query(
                            "UPDATE deliveries SET attempts = attempts + $1, due_at_ms = $2, last_error = $3, \
                             claimed_by = NULL, claimed_until_ms = NULL WHERE id = $4 \
                             AND ($5 IS NULL OR claimed_by = $5)",
                        )
                        .bind(i64::from(*counted))
                        .bind(*due_at_ms)
                        .bind(error)
                        .bind(*id)
                        .bind(holder.as_deref())
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                }))
                .await?;
                if let Some(claims) = &self.claims {
                    claims.forget(settled);
                }
                Ok(())
            }

            async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError> {
                let mut handled = HashSet::new();
                for chunk in event_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("SELECT event_id FROM inbox WHERE consumer = ");
                    query.push_bind(consumer).push(" AND event_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    query.push(")");
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        handled.insert(row.try_get::<String, _>(0)?);
                    }
                }
                Ok(handled)
            }

            async fn state_get(&self, step: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query("SELECT value, version FROM step_state WHERE step = $1 AND key = $2")
                    .bind(step)
                    .bind(key)
                    .fetch_optional(&mut *conn).await;
                let row = conn.read(fetched)?;
                Ok(row
                    .map(|r| Ok::<_, sqlx::Error>(Versioned { value: r.try_get(0)?, version: r.try_get(1)? }))
                    .transpose()?)
            }

            async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
                let settled = batch.settled.clone();
                self.write((batch.clone(), self.relay.clone()), |conn, args| Box::pin(async move {
                    let (batch, relay) = &*args;
                    Self::insert_inbox(&mut *conn, batch).await?;
                    Self::apply_state(&mut *conn, batch).await?;
                    let now_ms = clock_ms();
                    let queued = match &batch.queued {
                        Some(queued) if Self::relay_idle(&mut *conn, relay).await? => Some(queued),
                        _ => None,
                    };
                    let relayed_at_ms = queued.is_some().then_some(now_ms);
                    for chunk in batch.outbox.chunks(500) {
                        Self::insert_events(&mut *conn, chunk, relayed_at_ms, relay).await?;
                    }
                    let not_written =
                        Self::apply_transitions(&mut *conn, &batch.transitions, relayed_at_ms, relay).await?;
                    if let Some(queued) = queued {
                        // A transition that did not apply wrote no event: nothing to deliver.
                        let written = queued.iter().filter(|(_, event_id, _)| !not_written.contains(event_id.as_str()));
                        Self::insert_deliveries(&mut *conn, written, now_ms).await?;
                    }
                    Self::upsert_stock(&mut *conn, &batch.stock).await?;
                    for dead in &batch.dead_letters {
                        Self::insert_dead_letter(&mut *conn, dead).await?;
                    }
                    Self::apply_versions(&mut *conn, batch).await?;
                    Self::delete_deliveries(&mut *conn, &batch.settled, None).await?;
                    Ok(())
                }))
                .await?;
                if let Some(claims) = &self.claims {
                    claims.forget(settled);
                }
                Ok(())
            }

            async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, consumer, event_id, event, error, attempts, dead_lettered_at_ms FROM dead_letters \
                     ORDER BY dead_lettered_at_ms, id",
                )
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(dead_letter_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
            }

            async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
                let row = sqlx::query(
                    "DELETE FROM dead_letters WHERE id = $1 \
                     RETURNING id, consumer, event_id, event, error, attempts, dead_lettered_at_ms",
                )
                .bind(id)
                .fetch_optional(&self.writer)
                .await?;
                Ok(row.as_ref().map(dead_letter_row).transpose()?)
            }

            async fn reopen_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
                let mut tx = self.writer.begin().await?;
                let row = sqlx::query(
                    "SELECT id, consumer, event_id, event, error, attempts, dead_lettered_at_ms FROM dead_letters \
                     WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row.as_ref().map(dead_letter_row).transpose()? else {
                    return Ok(None);
                };
                sqlx::query(
                    "DELETE FROM inbox WHERE consumer = $1 AND event_id = $2 AND step_version LIKE 'dead-lettered:%'",
                )
                .bind(&row.consumer)
                .bind(&row.event_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(row))
            }

            async fn requeue(&self, consumer: &str, event_id: &str, event: &str, now_ms: i64) -> Result<(), StoreError> {
                let row = sqlx::query(
                    "INSERT INTO deliveries (consumer, event_id, event, due_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (consumer, event_id) DO UPDATE SET attempts = 0, due_at_ms = excluded.due_at_ms, \
                     last_error = NULL, claimed_by = NULL, claimed_until_ms = NULL RETURNING id",
                )
                .bind(consumer)
                .bind(event_id)
                .bind(event)
                .bind(now_ms)
                .fetch_one(&self.writer)
                .await?;
                if let Some(claims) = &self.claims {
                    claims.forget([row.try_get::<i64, _>(0)?]);
                }
                Ok(())
            }

            async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
                let rows =
                    sqlx::query("SELECT status, COUNT(*) FROM orders GROUP BY status").fetch_all(&self.reader).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
                let args = (name.to_owned(), holder.to_owned());
                self.write(args, move |conn, args| Box::pin(async move {
                    let (name, holder) = &*args;
                    let taken = sqlx::query(concat!(
                        "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, ", $now, " + $3) \
                         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
                         WHERE leases.holder = excluded.holder OR leases.until_ms < ", $now
                    ))
                    .bind(name)
                    .bind(holder)
                    .bind(ttl_ms)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    Ok(taken == 1)
                }))
                .await
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                    .bind(name)
                    .bind(holder)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn stalled_orders(
                &self,
                now_ms: i64,
                stall_ms: i64,
                since_ms: i64,
                limit: u32,
            ) -> Result<Vec<CheckedOrder>, StoreError> {
                // `redrives = -1`: found complete since its last change (a transition sets 0).
                let rows = sqlx::query(
                    "UPDATE orders SET redrives = redrives + 1, next_redrive_at_ms = $1 + $2 * (redrives + 1) \
                     WHERE id IN (SELECT id FROM orders WHERE redrives >= 0 AND updated_at_ms <= $1 - $2 \
                     AND updated_at_ms >= $4 AND COALESCE(next_redrive_at_ms, 0) <= $1 \
                     ORDER BY updated_at_ms LIMIT $3) RETURNING id, status, updated_at_ms",
                )
                .bind(now_ms)
                .bind(stall_ms)
                .bind(i64::from(limit))
                .bind(since_ms)
                .fetch_all(&self.writer)
                .await?;
                rows.iter()
                    .map(|r| Ok(CheckedOrder { id: r.try_get(0)?, status: r.try_get(1)?, updated_at_ms: r.try_get(2)? }))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn events_of(&self, order_ids: &[String], since_ms: i64) -> Result<Vec<StoredEvent>, StoreError> {
                let mut events = Vec::new();
                for chunk in order_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(concat!("SELECT ", event_columns!(), " FROM outbox WHERE "));
                    query.push("relayed_at_ms IS NOT NULL AND occurred_at_ms >= ").push_bind(since_ms);
                    query.push(" AND order_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    query.push(") ORDER BY seq");
                    let rows = query.build().fetch_all(&self.reader).await?;
                    for r in &rows {
                        events.push(StoredEvent {
                            id: r.try_get(0)?,
                            kind: r.try_get(1)?,
                            order_id: r.try_get(2)?,
                            payload: r.try_get(3)?,
                            step: r.try_get(4)?,
                            step_version: r.try_get(5)?,
                            occurred_at_ms: r.try_get(6)?,
                            attempt: u32::try_from(r.try_get::<Option<i64>, _>(7)?.unwrap_or(1)).unwrap_or(1),
                            trace: r.try_get(8)?,
                        });
                    }
                }
                Ok(events)
            }

            async fn mark_checked(&self, orders: &[CheckedOrder]) -> Result<(), StoreError> {
                for chunk in orders.chunks(200) {
                    // Only if unchanged since the check: a later transition needs a check of its own.
                    let mut query = QueryBuilder::<$db>::new("UPDATE orders SET redrives = -1 WHERE ");
                    for (i, order) in chunk.iter().enumerate() {
                        if i > 0 {
                            query.push(" OR ");
                        }
                        query.push("(id = ").push_bind(&order.id);
                        query.push(" AND updated_at_ms = ").push_bind(order.updated_at_ms).push(")");
                    }
                    query.build().execute(&self.writer).await?;
                }
                Ok(())
            }

            async fn prune(&self, cutoffs: &Cutoffs, limit: u32) -> Result<Pruned, StoreError> {
                let limit = i64::from(limit);
                let inbox = sqlx::query(
                    "DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM inbox \
                     WHERE handled_at_ms < $1 AND step_version NOT LIKE 'dead-lettered:%' LIMIT $2)",
                )
                .bind(cutoffs.inbox_before_ms)
                .bind(limit)
                .execute(&self.writer)
                .await?
                .rows_affected();
                let outbox_statement = if cutoffs.stream {
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE occurred_at_ms < $1 \
                     AND relayed_at_ms IS NOT NULL AND streamed_at_ms IS NOT NULL LIMIT $2)"
                } else {
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE occurred_at_ms < $1 \
                     AND relayed_at_ms IS NOT NULL LIMIT $2)"
                };
                let outbox = sqlx::query(outbox_statement)
                    .bind(cutoffs.outbox_before_ms)
                    .bind(limit)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                let idempotency_keys = sqlx::query(
                    "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys \
                     WHERE created_at_ms < $1 LIMIT $2)",
                )
                .bind(cutoffs.idempotency_before_ms)
                .bind(limit)
                .execute(&self.writer)
                .await?
                .rows_affected();
                for statement in [
                    "DELETE FROM pins WHERE (step, order_id) IN (SELECT step, order_id FROM pins \
                     WHERE created_at_ms < $1 LIMIT $2)",
                    "DELETE FROM recordings WHERE id IN (SELECT id FROM recordings WHERE recorded_at_ms < $1 LIMIT $2)",
                ] {
                    sqlx::query(statement).bind(cutoffs.pins_before_ms).bind(limit).execute(&self.writer).await?;
                }
                let mut step_state = 0;
                for (step, prefix) in &cutoffs.order_state {
                    // The order id follows the prefix; SUBSTR counts characters from 1.
                    let start = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX - 1) + 1;
                    step_state += sqlx::query(
                        "DELETE FROM step_state WHERE step = $1 AND key IN (SELECT s.key FROM step_state s \
                         JOIN orders o ON o.id = SUBSTR(s.key, CAST($5 AS INTEGER)) WHERE s.step = $1 AND s.key LIKE $2 ESCAPE '\\' \
                         AND o.status IN ('completed', 'cancelled') AND o.updated_at_ms < $3 LIMIT $4)",
                    )
                    .bind(step)
                    .bind(like_prefix(prefix))
                    .bind(cutoffs.finished_before_ms)
                    .bind(limit)
                    .bind(start)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                }
                let plugin_versions = match cutoffs.versions_before_ms {
                    Some(before) => sqlx::query(
                        "DELETE FROM plugin_versions WHERE digest IN (SELECT v.digest FROM plugin_versions v \
                         WHERE v.created_at_ms < $1 \
                         AND NOT EXISTS (SELECT 1 FROM plugin_slots s \
                             WHERE v.digest IN (s.current_digest, s.previous_digest, s.rollout_digest)) \
                         AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.digest = v.digest) \
                         AND NOT EXISTS (SELECT 1 FROM version_overrides o WHERE o.digest = v.digest) \
                         AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.version = v.digest) LIMIT $2)",
                    )
                    .bind(before)
                    .bind(limit)
                    .execute(&self.writer)
                    .await?
                    .rows_affected(),
                    None => 0,
                };
                let hosts = sqlx::query("DELETE FROM hosts WHERE seen_at_ms < $1")
                    .bind(cutoffs.hosts_before_ms)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM leases WHERE until_ms < $1")
                    .bind(cutoffs.hosts_before_ms)
                    .execute(&self.writer)
                    .await?;
                Ok(Pruned { inbox, outbox, idempotency_keys, step_state, plugin_versions, hosts })
            }

            async fn put_version(&self, version: &VersionRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO plugin_versions (digest, name, version, subscribes, bytes, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&version.digest)
                .bind(&version.name)
                .bind(&version.version)
                .bind(serde_json::to_string(&version.subscribes).unwrap_or_default())
                .bind(&version.bytes)
                .bind(version.created_at_ms)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn version(&self, digest: &str) -> Result<Option<VersionRow>, StoreError> {
                let row = sqlx::query(
                    "SELECT digest, name, version, subscribes, bytes, created_at_ms FROM plugin_versions \
                     WHERE digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.reader)
                .await?;
                row.map(|r| {
                    let subscribes: String = r.try_get(3)?;
                    Ok(VersionRow {
                        digest: r.try_get(0)?,
                        name: r.try_get(1)?,
                        version: r.try_get(2)?,
                        subscribes: serde_json::from_str(&subscribes).unwrap_or_default(),
                        bytes: r.try_get(4)?,
                        created_at_ms: r.try_get(5)?,
                    })
                })
                .transpose()
                .map_err(|e: sqlx::Error| e.into())
            }

            async fn version_digests(&self, name: &str) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query("SELECT digest FROM plugin_versions WHERE name = $1 ORDER BY created_at_ms")
                    .bind(name)
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(Into::into)
            }

            async fn slots(&self) -> Result<Vec<SlotRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT name, current_digest, previous_digest, generation, updated_at_ms, rollout_mode, \
                     rollout_digest, rollout_percent, rollout_started_at_ms FROM plugin_slots ORDER BY name",
                )
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        let mode: Option<String> = r.try_get(5)?;
                        let digest: Option<String> = r.try_get(6)?;
                        let rollout = match (mode, digest) {
                            (Some(mode), Some(digest)) => Some(RolloutRow {
                                mode,
                                digest,
                                percent: r.try_get::<Option<i64>, _>(7)?.unwrap_or(0),
                                started_at_ms: r.try_get::<Option<i64>, _>(8)?.unwrap_or(0),
                            }),
                            _ => None,
                        };
                        Ok(SlotRow {
                            name: r.try_get(0)?,
                            current: r.try_get(1)?,
                            previous: r.try_get(2)?,
                            generation: r.try_get(3)?,
                            updated_at_ms: r.try_get(4)?,
                            rollout,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn set_slot(&self, slot: &SlotRow, expected: i64) -> Result<bool, StoreError> {
                let rollout = slot.rollout.as_ref();
                let changed = if expected == 0 {
                    sqlx::query(
                        "INSERT INTO plugin_slots (name, current_digest, previous_digest, generation, updated_at_ms, \
                         rollout_mode, rollout_digest, rollout_percent, rollout_started_at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(&slot.name)
                    .bind(&slot.current)
                    .bind(&slot.previous)
                    .bind(slot.generation)
                    .bind(slot.updated_at_ms)
                    .bind(rollout.map(|r| r.mode.as_str()))
                    .bind(rollout.map(|r| r.digest.as_str()))
                    .bind(rollout.map(|r| r.percent))
                    .bind(rollout.map(|r| r.started_at_ms))
                    .execute(&self.writer)
                    .await?
                    .rows_affected()
                } else {
                    sqlx::query(
                        "UPDATE plugin_slots SET current_digest = $2, previous_digest = $3, generation = $4, \
                         updated_at_ms = $5, rollout_mode = $6, rollout_digest = $7, rollout_percent = $8, \
                         rollout_started_at_ms = $9 WHERE name = $1 AND generation = $10",
                    )
                    .bind(&slot.name)
                    .bind(&slot.current)
                    .bind(&slot.previous)
                    .bind(slot.generation)
                    .bind(slot.updated_at_ms)
                    .bind(rollout.map(|r| r.mode.as_str()))
                    .bind(rollout.map(|r| r.digest.as_str()))
                    .bind(rollout.map(|r| r.percent))
                    .bind(rollout.map(|r| r.started_at_ms))
                    .bind(expected)
                    .execute(&self.writer)
                    .await?
                    .rows_affected()
                };
                Ok(changed == 1)
            }

            async fn add_history(&self, entry: &HistoryRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO plugin_history (name, action, digest, reason, host_id, at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&entry.name)
                .bind(&entry.action)
                .bind(&entry.digest)
                .bind(&entry.reason)
                .bind(&entry.host_id)
                .bind(entry.at_ms)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn history(&self, name: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT name, action, digest, reason, host_id, at_ms FROM plugin_history WHERE name = $1 \
                     ORDER BY id DESC LIMIT $2",
                )
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(HistoryRow {
                            name: r.try_get(0)?,
                            action: r.try_get(1)?,
                            digest: r.try_get(2)?,
                            reason: r.try_get(3)?,
                            host_id: r.try_get(4)?,
                            at_ms: r.try_get(5)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn pins(&self, step: &str, order_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
                let mut pins = HashMap::new();
                for chunk in order_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("SELECT order_id, digest FROM pins WHERE step = ");
                    query.push_bind(step).push(" AND order_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    query.push(")");
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        pins.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
                    }
                }
                Ok(pins)
            }

            async fn overrides(
                &self,
                consumer: &str,
                event_ids: &[String],
            ) -> Result<HashMap<String, String>, StoreError> {
                let mut overrides = HashMap::new();
                for chunk in event_ids.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new("SELECT event_id, digest FROM version_overrides WHERE consumer = ");
                    query.push_bind(consumer).push(" AND event_id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id);
                    }
                    query.push(")");
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        overrides.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
                    }
                }
                Ok(overrides)
            }

            async fn set_override(&self, consumer: &str, event_id: &str, digest: &str) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO version_overrides (consumer, event_id, digest) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer, event_id) DO UPDATE SET digest = excluded.digest",
                )
                .bind(consumer)
                .bind(event_id)
                .bind(digest)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn dead_letter_recording(&self, id: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT recording FROM dead_letters WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?;
                Ok(row.map(|r| r.try_get::<Option<String>, _>(0)).transpose()?.flatten())
            }

            async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
                let row = sqlx::query(
                    "SELECT id, consumer, event_id, event, error, attempts, dead_lettered_at_ms FROM dead_letters \
                     WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.reader)
                .await?;
                Ok(row.as_ref().map(dead_letter_row).transpose()?)
            }

            async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, step, event_id, version, outcome, recorded_at_ms, recording FROM recordings \
                     WHERE step = $1 ORDER BY recorded_at_ms DESC LIMIT $2",
                )
                .bind(step)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(RecordingRow {
                            id: r.try_get(0)?,
                            step: r.try_get(1)?,
                            event_id: r.try_get(2)?,
                            version: r.try_get(3)?,
                            outcome: r.try_get(4)?,
                            recorded_at_ms: r.try_get(5)?,
                            recording: r.try_get(6)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn heartbeat(&self, host: &HostRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO hosts (host_id, http_addr, started_at_ms, seen_at_ms, steps) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host_id) DO UPDATE SET \
                     http_addr = excluded.http_addr, started_at_ms = excluded.started_at_ms, \
                     seen_at_ms = excluded.seen_at_ms, steps = excluded.steps",
                )
                .bind(&host.host_id)
                .bind(&host.http_addr)
                .bind(host.started_at_ms)
                .bind(host.seen_at_ms)
                .bind(&host.steps)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT host_id, http_addr, started_at_ms, seen_at_ms, steps FROM hosts \
                     WHERE seen_at_ms >= $1 ORDER BY host_id",
                )
                .bind(seen_after_ms)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(HostRow {
                            host_id: r.try_get(0)?,
                            http_addr: r.try_get(1)?,
                            started_at_ms: r.try_get(2)?,
                            seen_at_ms: r.try_get(3)?,
                            steps: r.try_get(4)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn remove_host(&self, host_id: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM hosts WHERE host_id = $1").bind(host_id).execute(&self.writer).await?;
                Ok(())
            }
        }
    };
}

fn delivery_row<R: Row>(r: &R) -> Result<DeliveryRow, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(DeliveryRow {
        id: r.try_get(0)?,
        consumer: r.try_get(1)?,
        event_id: r.try_get(2)?,
        event: r.try_get(3)?,
        attempts: r.try_get(4)?,
        due_at_ms: r.try_get(5)?,
    })
}

fn dead_letter_row<R: Row>(r: &R) -> Result<DeadLetterRow, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Ok(DeadLetterRow {
        id: r.try_get(0)?,
        consumer: r.try_get(1)?,
        event_id: r.try_get(2)?,
        event: r.try_get(3)?,
        error: r.try_get(4)?,
        attempts: r.try_get(5)?,
        dead_lettered_at_ms: r.try_get(6)?,
        recording: None,
    })
}

// The last argument is the store's clock in milliseconds since the epoch: leases and
// claims compare it, never a host's clock.
sql_store!(
    SqliteStore,
    Sqlite,
    sqlx::SqliteConnection,
    "sqlite",
    "",
    "",
    "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
);
sql_store!(
    PgStore,
    Postgres,
    sqlx::PgConnection,
    "postgres",
    " FOR UPDATE",
    " FOR UPDATE SKIP LOCKED",
    "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
);
