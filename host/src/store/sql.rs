//! The SQL backends. SQLite and PostgreSQL share every statement (both accept `$n`
//! placeholders, `ON CONFLICT` and `RETURNING`), so one macro writes the [`Store`]
//! implementation for each pool type; only opening and migrating differ.

use super::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Postgres, QueryBuilder, Row, Sqlite};
use std::str::FromStr;
use std::time::Duration;

/// SQLite: one writer connection (SQLite allows one writer at a time, so writes queue
/// in the pool instead of spinning on SQLITE_BUSY) and a pool of readers over WAL.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url { url: url.to_owned(), reason: e.to_string() })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect(format!("{}: {e}", dir.display())))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(SqliteStore { writer, reader })
    }
}

/// PostgreSQL: one pool for reads and writes.
#[derive(Debug, Clone)]
pub struct PgStore {
    writer: Pool<Postgres>,
    reader: Pool<Postgres>,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url { url: url.to_owned(), reason: e.to_string() })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        Ok(PgStore { reader: pool.clone(), writer: pool })
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
        "event_id, kind, order_id, payload, step, step_version, occurred_at_ms"
    };
}

macro_rules! sql_store {
    ($store:ty, $db:ty, $name:literal) => {
        impl $store {
            async fn insert_events(
                tx: &mut sqlx::Transaction<'_, $db>,
                events: &[StoredEvent],
            ) -> Result<(), sqlx::Error> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut query = QueryBuilder::<$db>::new(concat!("INSERT INTO outbox (", event_columns!(), ") "));
                query.push_values(events, |mut row, e| {
                    row.push_bind(&e.id)
                        .push_bind(&e.kind)
                        .push_bind(&e.order_id)
                        .push_bind(&e.payload)
                        .push_bind(&e.step)
                        .push_bind(&e.step_version)
                        .push_bind(e.occurred_at_ms);
                });
                query.build().execute(&mut **tx).await?;
                Ok(())
            }

            async fn insert_dead_letter(
                tx: &mut sqlx::Transaction<'_, $db>,
                dead: &DeadLetterRow,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO dead_letters (id, consumer, event_id, event, error, attempts, dead_lettered_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&dead.id)
                .bind(&dead.consumer)
                .bind(&dead.event_id)
                .bind(&dead.event)
                .bind(&dead.error)
                .bind(dead.attempts)
                .bind(dead.dead_lettered_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn apply_transition(
                tx: &mut sqlx::Transaction<'_, $db>,
                t: &OrderTransition,
            ) -> Result<bool, sqlx::Error> {
                let mut query = QueryBuilder::<$db>::new("UPDATE orders SET status = ");
                query
                    .push_bind(t.to)
                    .push(", cancel_reason = ")
                    .push_bind(t.reason.as_deref())
                    .push(", updated_at_ms = ")
                    .push_bind(t.event.occurred_at_ms)
                    .push(" WHERE id = ")
                    .push_bind(&t.order_id)
                    .push(" AND status IN (");
                let mut states = query.separated(", ");
                for from in t.from {
                    states.push_bind(*from);
                }
                query.push(")");
                let applied = query.build().execute(&mut **tx).await?.rows_affected() == 1;
                if applied {
                    Self::insert_events(tx, std::slice::from_ref(&t.event)).await?;
                }
                Ok(applied)
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn create_order(
                &self,
                order: &NewOrder,
                idempotency: Option<(&str, &str)>,
                placed: &StoredEvent,
            ) -> Result<Created, StoreError> {
                let mut tx = self.writer.begin().await?;
                if let Some((key, hash)) = idempotency {
                    let inserted = sqlx::query(
                        "INSERT INTO idempotency_keys (key, body_hash, order_id, created_at_ms) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                    )
                    .bind(key)
                    .bind(hash)
                    .bind(&order.id)
                    .bind(order.created_at_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        let row = sqlx::query("SELECT order_id, body_hash FROM idempotency_keys WHERE key = $1")
                            .bind(key)
                            .fetch_one(&mut *tx)
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
                .execute(&mut *tx)
                .await?;
                Self::insert_events(&mut tx, std::slice::from_ref(placed)).await?;
                tx.commit().await?;
                Ok(Created::New)
            }

            async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?;
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
                let rows = sqlx::query(
                    "SELECT event_id, kind, occurred_at_ms, step, step_version FROM outbox \
                     WHERE order_id = $1 ORDER BY seq",
                )
                .bind(order_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(TimelineRow {
                            event_id: r.try_get(0)?,
                            kind: r.try_get(1)?,
                            at_ms: r.try_get(2)?,
                            step: r.try_get(3)?,
                            step_version: r.try_get(4)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let applied = Self::apply_transition(&mut tx, transition).await?;
                tx.commit().await?;
                Ok(applied)
            }

            async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                Self::insert_events(&mut tx, std::slice::from_ref(event)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
                let row = sqlx::query("SELECT sku, available, reserved, sold, seq FROM stock WHERE sku = $1")
                    .bind(sku)
                    .fetch_optional(&self.reader)
                    .await?;
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
                let rows = sqlx::query(statement)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
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
                let mut query = QueryBuilder::<$db>::new(match channel {
                    Channel::Transport => "UPDATE outbox SET relayed_at_ms = ",
                    Channel::Stream => "UPDATE outbox SET streamed_at_ms = ",
                });
                query.push_bind(now_ms).push(" WHERE seq IN (");
                let mut list = query.separated(", ");
                for seq in seqs {
                    list.push_bind(*seq);
                }
                query.push(")");
                query.build().execute(&self.writer).await?;
                Ok(())
            }

            async fn outbox_lag(&self, channel: Channel) -> Result<OutboxLag, StoreError> {
                let statement = match channel {
                    Channel::Transport => "SELECT COUNT(*), MIN(occurred_at_ms) FROM outbox WHERE relayed_at_ms IS NULL",
                    Channel::Stream => "SELECT COUNT(*), MIN(occurred_at_ms) FROM outbox WHERE streamed_at_ms IS NULL",
                };
                let row = sqlx::query(statement)
                    .fetch_one(&self.reader)
                    .await?;
                Ok(OutboxLag { pending: row.try_get(0)?, oldest_at_ms: row.try_get(1)? })
            }

            async fn enqueue(&self, deliveries: &[(String, String, String)], now_ms: i64) -> Result<(), StoreError> {
                for chunk in deliveries.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new("INSERT INTO deliveries (consumer, event_id, event, due_at_ms) ");
                    query.push_values(chunk, |mut row, (consumer, event_id, event)| {
                        row.push_bind(consumer).push_bind(event_id).push_bind(event).push_bind(now_ms);
                    });
                    query.push(" ON CONFLICT (consumer, event_id) DO NOTHING");
                    query.build().execute(&self.writer).await?;
                }
                Ok(())
            }

            async fn due(&self, consumer: &str, now_ms: i64, limit: u32) -> Result<Vec<DeliveryRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, consumer, event_id, event, attempts FROM deliveries \
                     WHERE consumer = $1 AND due_at_ms <= $2 ORDER BY due_at_ms, id LIMIT $3",
                )
                .bind(consumer)
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(DeliveryRow {
                            id: r.try_get(0)?,
                            consumer: r.try_get(1)?,
                            event_id: r.try_get(2)?,
                            event: r.try_get(3)?,
                            attempts: r.try_get(4)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
                let row = sqlx::query("SELECT MIN(due_at_ms) FROM deliveries WHERE consumer = $1")
                    .bind(consumer)
                    .fetch_one(&self.reader)
                    .await?;
                Ok(row.try_get(0)?)
            }

            async fn settle(&self, acked: &[i64], retries: &[(i64, i64, String, bool)]) -> Result<(), StoreError> {
                if acked.is_empty() && retries.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writer.begin().await?;
                if !acked.is_empty() {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM deliveries WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in acked {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    query.build().execute(&mut *tx).await?;
                }
                for (id, due_at_ms, error, counted) in retries {
                    sqlx::query(
                        "UPDATE deliveries SET attempts = attempts + $1, due_at_ms = $2, last_error = $3 WHERE id = $4",
                    )
                    .bind(i64::from(*counted))
                    .bind(*due_at_ms)
                    .bind(error)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError> {
                if event_ids.is_empty() {
                    return Ok(HashSet::new());
                }
                let mut query = QueryBuilder::<$db>::new("SELECT event_id FROM inbox WHERE consumer = ");
                query.push_bind(consumer).push(" AND event_id IN (");
                let mut list = query.separated(", ");
                for id in event_ids {
                    list.push_bind(id);
                }
                query.push(")");
                let rows = query.build().fetch_all(&self.reader).await?;
                rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(Into::into)
            }

            async fn state_get(&self, step: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT value FROM step_state WHERE step = $1 AND key = $2")
                    .bind(step)
                    .bind(key)
                    .fetch_optional(&self.reader)
                    .await?;
                Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
            }

            async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                let now_ms = crate::saga::now_ms();
                for chunk in batch.inbox.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) ",
                    );
                    query.push_values(chunk, |mut row, (event_id, version)| {
                        row.push_bind(&batch.consumer).push_bind(event_id).push_bind(version).push_bind(now_ms);
                    });
                    query.build().execute(&mut *tx).await?;
                }
                let (puts, deletes): (Vec<_>, Vec<_>) = batch.state.iter().partition(|(_, v)| v.is_some());
                for chunk in puts.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO step_state (step, key, value) ");
                    query.push_values(chunk, |mut row, (key, value)| {
                        row.push_bind(&batch.consumer).push_bind(key).push_bind(value.as_deref().unwrap_or_default());
                    });
                    query.push(" ON CONFLICT (step, key) DO UPDATE SET value = excluded.value");
                    query.build().execute(&mut *tx).await?;
                }
                for (key, _) in deletes {
                    sqlx::query("DELETE FROM step_state WHERE step = $1 AND key = $2")
                        .bind(&batch.consumer)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
                for chunk in batch.outbox.chunks(500) {
                    Self::insert_events(&mut tx, chunk).await?;
                }
                for transition in &batch.transitions {
                    Self::apply_transition(&mut tx, transition).await?;
                }
                for level in &batch.stock {
                    sqlx::query(
                        "INSERT INTO stock (sku, available, reserved, sold, seq) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (sku) DO UPDATE SET available = excluded.available, \
                         reserved = excluded.reserved, sold = excluded.sold, seq = excluded.seq \
                         WHERE stock.seq < excluded.seq",
                    )
                    .bind(&level.sku)
                    .bind(level.available)
                    .bind(level.reserved)
                    .bind(level.sold)
                    .bind(level.seq)
                    .execute(&mut *tx)
                    .await?;
                }
                for dead in &batch.dead_letters {
                    Self::insert_dead_letter(&mut tx, dead).await?;
                }
                tx.commit().await?;
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
                sqlx::query(
                    "INSERT INTO deliveries (consumer, event_id, event, due_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (consumer, event_id) DO UPDATE SET attempts = 0, due_at_ms = excluded.due_at_ms, \
                     last_error = NULL",
                )
                .bind(consumer)
                .bind(event_id)
                .bind(event)
                .bind(now_ms)
                .execute(&self.writer)
                .await?;
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
        }
    };
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
    })
}

sql_store!(SqliteStore, Sqlite, "sqlite");
sql_store!(PgStore, Postgres, "postgres");
