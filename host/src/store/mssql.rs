//! The SQL Server backend, through tiberius with a bb8 pool.
//!
//! Concurrency: statements run at READ COMMITTED (enable `READ_COMMITTED_SNAPSHOT` on
//! the database so readers never wait for writers). Every write that depends on a read is
//! one statement: `INSERT … WHERE NOT EXISTS (… WITH (UPDLOCK, HOLDLOCK))` for keys that
//! must be unique (idempotency keys, deliveries), for upserts an `UPDATE` followed by
//! that guarded `INSERT` in one batch (the key-range lock closes the gap between them),
//! conditional `UPDATE … WHERE status IN …` for order transitions, `OUTPUT DELETED` to
//! take a dead letter; the relay reads the outbox `WITH (READPAST)` so it never waits on
//! a batch still committing. Lists travel as one JSON parameter read with `OPENJSON`.

use super::*;
use tiberius::{AuthMethod, Client, Config, Row, ToSql};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// Every statement the backend issues (tests parse each with a T-SQL parser).
pub mod sql {
    pub const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys ([key], body_hash, order_id, created_at_ms) \
        SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
        (SELECT 1 FROM idempotency_keys WITH (UPDLOCK, HOLDLOCK) WHERE [key] = @P1)";
    pub const SELECT_IDEMPOTENCY: &str = "SELECT order_id, body_hash FROM idempotency_keys WHERE [key] = @P1";
    pub const INSERT_ORDER: &str = "INSERT INTO orders \
        (id, customer_id, status, total_cents, items, created_at_ms, updated_at_ms) \
        VALUES (@P1, @P2, 'pending', @P3, @P4, @P5, @P5)";
    pub const INSERT_EVENT: &str = "INSERT INTO outbox \
        (event_id, kind, order_id, payload, step, step_version, occurred_at_ms) \
        VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7)";
    pub const SELECT_ORDER: &str = "SELECT seq, id, customer_id, status, cancel_reason, total_cents, items, \
        created_at_ms, updated_at_ms FROM orders WHERE id = @P1";
    pub const SELECT_ORDERS: &str = "SELECT TOP (@P1) seq, id, customer_id, status, cancel_reason, total_cents, \
        items, created_at_ms, updated_at_ms FROM orders \
        WHERE (@P2 IS NULL OR status = @P2) AND (@P3 IS NULL OR seq < @P3) ORDER BY seq DESC";
    pub const SELECT_TIMELINE: &str = "SELECT event_id, kind, occurred_at_ms, step, step_version FROM outbox \
        WHERE order_id = @P1 ORDER BY seq";
    pub const UPDATE_ORDER_STATUS: &str = "UPDATE orders SET status = @P1, cancel_reason = @P2, \
        updated_at_ms = @P3 WHERE id = @P4 AND status IN (SELECT value FROM OPENJSON(@P5))";
    pub const SELECT_STOCK: &str = "SELECT sku, available, reserved, sold, seq FROM stock WHERE sku = @P1";
    pub const SELECT_UNRELAYED: &str = "SELECT TOP (@P1) seq, event_id, kind, order_id, payload, step, \
        step_version, occurred_at_ms FROM outbox WITH (READPAST) WHERE relayed_at_ms IS NULL ORDER BY seq";
    pub const MARK_RELAYED: &str = "UPDATE outbox SET relayed_at_ms = @P1 \
        WHERE seq IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P2))";
    pub const OUTBOX_LAG: &str = "SELECT COUNT_BIG(*), MIN(occurred_at_ms) FROM outbox WHERE relayed_at_ms IS NULL";
    pub const SELECT_UNSTREAMED: &str = "SELECT TOP (@P1) seq, event_id, kind, order_id, payload, step, \
        step_version, occurred_at_ms FROM outbox WITH (READPAST) WHERE streamed_at_ms IS NULL ORDER BY seq";
    pub const MARK_STREAMED: &str = "UPDATE outbox SET streamed_at_ms = @P1 \
        WHERE seq IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P2))";
    pub const STREAM_LAG: &str = "SELECT COUNT_BIG(*), MIN(occurred_at_ms) FROM outbox WHERE streamed_at_ms IS NULL";
    pub const ENQUEUE: &str = "INSERT INTO deliveries (consumer, event_id, event, due_at_ms) \
        SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
        (SELECT 1 FROM deliveries WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND event_id = @P2)";
    pub const SELECT_DUE: &str = "SELECT TOP (@P3) id, consumer, event_id, event, attempts FROM deliveries \
        WHERE consumer = @P1 AND due_at_ms <= @P2 ORDER BY due_at_ms, id";
    pub const NEXT_DUE: &str = "SELECT MIN(due_at_ms) FROM deliveries WHERE consumer = @P1";
    pub const DELETE_DELIVERIES: &str =
        "DELETE FROM deliveries WHERE id IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P1))";
    pub const RETRY_DELIVERY: &str = "UPDATE deliveries SET attempts = attempts + @P1, due_at_ms = @P2, \
        last_error = @P3 WHERE id = @P4";
    pub const SELECT_HANDLED: &str = "SELECT event_id FROM inbox WHERE consumer = @P1 \
        AND event_id IN (SELECT value FROM OPENJSON(@P2))";
    pub const SELECT_STATE: &str = "SELECT value FROM step_state WHERE step = @P1 AND [key] = @P2";
    pub const INSERT_INBOX: &str = "INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) \
        VALUES (@P1, @P2, @P3, @P4)";
    pub const UPSERT_STATE: &str = "UPDATE step_state SET value = @P3 WHERE step = @P1 AND [key] = @P2; \
        INSERT INTO step_state (step, [key], value) SELECT @P1, @P2, @P3 WHERE NOT EXISTS \
        (SELECT 1 FROM step_state WITH (UPDLOCK, HOLDLOCK) WHERE step = @P1 AND [key] = @P2)";
    pub const DELETE_STATE: &str = "DELETE FROM step_state WHERE step = @P1 AND [key] = @P2";
    pub const UPSERT_STOCK: &str = "UPDATE stock SET available = @P2, reserved = @P3, sold = @P4, seq = @P5 \
        WHERE sku = @P1 AND seq < @P5; \
        INSERT INTO stock (sku, available, reserved, sold, seq) SELECT @P1, @P2, @P3, @P4, @P5 WHERE NOT EXISTS \
        (SELECT 1 FROM stock WITH (UPDLOCK, HOLDLOCK) WHERE sku = @P1)";
    pub const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters \
        (id, consumer, event_id, event, error, attempts, dead_lettered_at_ms) \
        VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7)";
    pub const SELECT_DEAD_LETTERS: &str = "SELECT id, consumer, event_id, event, error, attempts, \
        dead_lettered_at_ms FROM dead_letters ORDER BY dead_lettered_at_ms, id";
    pub const SELECT_DEAD_LETTER: &str = "SELECT id, consumer, event_id, event, error, attempts, \
        dead_lettered_at_ms FROM dead_letters WHERE id = @P1";
    pub const TAKE_DEAD_LETTER: &str = "DELETE FROM dead_letters OUTPUT DELETED.id, DELETED.consumer, \
        DELETED.event_id, DELETED.event, DELETED.error, DELETED.attempts, DELETED.dead_lettered_at_ms \
        WHERE id = @P1";
    pub const UNMARK_DEAD_LETTERED: &str = "DELETE FROM inbox WHERE consumer = @P1 AND event_id = @P2 \
        AND step_version LIKE 'dead-lettered:%'";
    pub const REQUEUE: &str = "UPDATE deliveries SET attempts = 0, due_at_ms = @P4, last_error = NULL \
        WHERE consumer = @P1 AND event_id = @P2; \
        INSERT INTO deliveries (consumer, event_id, event, due_at_ms) SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
        (SELECT 1 FROM deliveries WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND event_id = @P2)";
    pub const ORDER_COUNTS: &str = "SELECT status, COUNT_BIG(*) FROM orders GROUP BY status";
    pub const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) FROM sys.tables WHERE name = '_wasaga_migrations'";
    pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE _wasaga_migrations \
        (version BIGINT PRIMARY KEY, description NVARCHAR(200) NOT NULL, applied_at_ms BIGINT NOT NULL)";
    pub const APPLIED_MIGRATIONS: &str = "SELECT version FROM _wasaga_migrations";
    pub const RECORD_MIGRATION: &str =
        "INSERT INTO _wasaga_migrations (version, description, applied_at_ms) VALUES (@P1, @P2, @P3)";

    /// Every statement, for the parse test.
    #[cfg(test)]
    pub const ALL: &[&str] = &[
        INSERT_IDEMPOTENCY,
        SELECT_IDEMPOTENCY,
        INSERT_ORDER,
        INSERT_EVENT,
        SELECT_ORDER,
        SELECT_ORDERS,
        SELECT_TIMELINE,
        UPDATE_ORDER_STATUS,
        SELECT_STOCK,
        SELECT_UNRELAYED,
        MARK_RELAYED,
        OUTBOX_LAG,
        SELECT_UNSTREAMED,
        MARK_STREAMED,
        STREAM_LAG,
        ENQUEUE,
        SELECT_DUE,
        NEXT_DUE,
        DELETE_DELIVERIES,
        RETRY_DELIVERY,
        SELECT_HANDLED,
        SELECT_STATE,
        INSERT_INBOX,
        UPSERT_STATE,
        DELETE_STATE,
        UPSERT_STOCK,
        INSERT_DEAD_LETTER,
        SELECT_DEAD_LETTERS,
        SELECT_DEAD_LETTER,
        TAKE_DEAD_LETTER,
        UNMARK_DEAD_LETTERED,
        REQUEUE,
        ORDER_COUNTS,
        MIGRATIONS_TABLE_EXISTS,
        CREATE_MIGRATIONS_TABLE,
        APPLIED_MIGRATIONS,
        RECORD_MIGRATION,
        "SELECT 1",
    ];
}

/// The migrations of `migrations/mssql`, in order: (version, description, T-SQL).
pub const MIGRATIONS: [(i64, &str, &str); 2] = [
    (
        20261126000000,
        "create_saga_tables",
        include_str!("../../../migrations/mssql/20261126000000_create_saga_tables.sql"),
    ),
    (
        20261126120000,
        "add_stream_cursor",
        include_str!("../../../migrations/mssql/20261126120000_add_stream_cursor.sql"),
    ),
];

type Connection = Client<Compat<TcpStream>>;

/// Opens tiberius connections for the pool.
#[derive(Clone)]
pub struct Manager {
    config: Config,
}

impl bb8::ManageConnection for Manager {
    type Connection = Connection;
    type Error = tiberius::error::Error;

    async fn connect(&self) -> Result<Connection, Self::Error> {
        let tcp = TcpStream::connect(self.config.get_addr()).await?;
        tcp.set_nodelay(true)?;
        Client::connect(self.config.clone(), tcp.compat_write()).await
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), Self::Error> {
        conn.simple_query("SELECT 1").await?.into_row().await?;
        Ok(())
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

/// Connection settings from `mssql://user:password@host:port/database?trust_server_certificate=true`.
pub fn config_from_url(url: &str) -> Result<Config, StoreError> {
    let bad = |reason: &str| StoreError::Url { url: redact(url), reason: reason.to_owned() };
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

/// The URL with its password replaced, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn query_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Query(error.to_string())
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

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn order_row(row: &Row) -> Result<OrderRow, StoreError> {
    Ok(OrderRow {
        seq: int(row, 0)?,
        id: text(row, 1)?,
        customer_id: text(row, 2)?,
        status: text(row, 3)?,
        cancel_reason: opt_text(row, 4)?,
        total_cents: int(row, 5)?,
        items: text(row, 6)?,
        created_at_ms: int(row, 7)?,
        updated_at_ms: int(row, 8)?,
    })
}

fn dead_letter_row(row: &Row) -> Result<DeadLetterRow, StoreError> {
    Ok(DeadLetterRow {
        id: text(row, 0)?,
        consumer: text(row, 1)?,
        event_id: text(row, 2)?,
        event: text(row, 3)?,
        error: text(row, 4)?,
        attempts: int(row, 5)?,
        dead_lettered_at_ms: int(row, 6)?,
    })
}

async fn rows(conn: &mut Connection, statement: &str, params: &[&dyn ToSql]) -> Result<Vec<Row>, StoreError> {
    conn.query(statement, params).await.map_err(query_error)?.into_first_result().await.map_err(query_error)
}

async fn exec(conn: &mut Connection, statement: &str, params: &[&dyn ToSql]) -> Result<u64, StoreError> {
    Ok(conn.execute(statement, params).await.map_err(query_error)?.total())
}

/// Run `body` in a transaction on one pooled connection: commit if it succeeds, roll
/// back (so the connection returns to the pool clean) if it fails.
macro_rules! in_tx {
    ($self:ident, |$conn:ident| $body:block) => {{
        let mut pooled = $self.pool.get().await.map_err(query_error)?;
        let $conn: &mut Connection = &mut pooled;
        let begun: Result<(), StoreError> = async {
            $conn
                .simple_query("BEGIN TRANSACTION")
                .await
                .map_err(query_error)?
                .into_results()
                .await
                .map_err(query_error)?;
            Ok(())
        }
        .await;
        begun?;
        let result: Result<_, StoreError> = async { $body }.await;
        let end = if result.is_ok() { "COMMIT TRANSACTION" } else { "ROLLBACK TRANSACTION" };
        let ended = match $conn.simple_query(end).await {
            Ok(stream) => stream.into_results().await.map(|_| ()).map_err(query_error),
            Err(e) => Err(query_error(e)),
        };
        match (result, ended) {
            (Ok(value), Ok(())) => Ok(value),
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
        }
    }};
}

fn insert_event_params(e: &StoredEvent) -> [&dyn ToSql; 7] {
    [&e.id, &e.kind, &e.order_id, &e.payload, &e.step, &e.step_version, &e.occurred_at_ms]
}

impl MssqlStore {
    /// Connect and apply the migrations not applied yet, recording each.
    pub async fn open(url: &str) -> Result<MssqlStore, StoreError> {
        let config = config_from_url(url)?;
        let pool = bb8::Pool::builder()
            .max_size(16)
            .connection_timeout(std::time::Duration::from_secs(10))
            .build(Manager { config })
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        let store = MssqlStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(|e| StoreError::Connect(e.to_string()))?;
        let exists = rows(&mut conn, sql::MIGRATIONS_TABLE_EXISTS, &[]).await?;
        if exists.first().and_then(|r| r.try_get::<i32, _>(0).ok().flatten()).unwrap_or(0) == 0 {
            exec(&mut conn, sql::CREATE_MIGRATIONS_TABLE, &[]).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        }
        let applied: Vec<i64> =
            rows(&mut conn, sql::APPLIED_MIGRATIONS, &[]).await?.iter().filter_map(|r| int(r, 0).ok()).collect();
        drop(conn);
        for (version, description, script) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            let now = crate::saga::now_ms();
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
        self.pool.get().await.map_err(query_error)
    }
}

async fn apply_transition(conn: &mut Connection, t: &OrderTransition) -> Result<bool, StoreError> {
    let from = json_list(t.from);
    let applied = exec(
        conn,
        sql::UPDATE_ORDER_STATUS,
        &[&t.to, &t.reason.as_deref(), &t.event.occurred_at_ms, &t.order_id, &from],
    )
    .await?
        == 1;
    if applied {
        exec(conn, sql::INSERT_EVENT, &insert_event_params(&t.event)).await?;
    }
    Ok(applied)
}

#[async_trait]
impl Store for MssqlStore {
    fn backend(&self) -> &'static str {
        "mssql"
    }

    async fn create_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        placed: &StoredEvent,
    ) -> Result<Created, StoreError> {
        in_tx!(self, |conn| {
            if let Some((key, hash)) = idempotency {
                let inserted =
                    exec(conn, sql::INSERT_IDEMPOTENCY, &[&key, &hash, &order.id, &order.created_at_ms]).await?;
                if inserted == 0 {
                    let found = rows(conn, sql::SELECT_IDEMPOTENCY, &[&key]).await?;
                    let row = found.first().ok_or_else(|| StoreError::Query("idempotency key vanished".into()))?;
                    return Ok(Created::Existing { order_id: text(row, 0)?, body_hash: text(row, 1)? });
                }
            }
            exec(
                conn,
                sql::INSERT_ORDER,
                &[&order.id, &order.customer_id, &order.total_cents, &order.items, &order.created_at_ms],
            )
            .await?;
            exec(conn, sql::INSERT_EVENT, &insert_event_params(placed)).await?;
            Ok(Created::New)
        })
    }

    async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_ORDER, &[&id]).await?;
        found.first().map(order_row).transpose()
    }

    async fn orders(
        &self,
        status: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::SELECT_ORDERS, &[&limit, &status, &before_seq]).await?;
        found.iter().map(order_row).collect()
    }

    async fn timeline(&self, order_id: &str) -> Result<Vec<TimelineRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_TIMELINE, &[&order_id]).await?;
        found
            .iter()
            .map(|r| {
                Ok(TimelineRow {
                    event_id: text(r, 0)?,
                    kind: text(r, 1)?,
                    at_ms: int(r, 2)?,
                    step: text(r, 3)?,
                    step_version: text(r, 4)?,
                })
            })
            .collect()
    }

    async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError> {
        in_tx!(self, |conn| { apply_transition(conn, transition).await })
    }

    async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::INSERT_EVENT, &insert_event_params(event)).await.map(|_| ())
    }

    async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_STOCK, &[&sku]).await?;
        found
            .first()
            .map(|r| {
                Ok(StockRow {
                    sku: text(r, 0)?,
                    available: int(r, 1)?,
                    reserved: int(r, 2)?,
                    sold: int(r, 3)?,
                    seq: int(r, 4)?,
                })
            })
            .transpose()
    }

    async fn unrelayed(&self, channel: Channel, limit: u32) -> Result<Vec<(i64, StoredEvent)>, StoreError> {
        let limit = i64::from(limit);
        let statement = match channel {
            Channel::Transport => sql::SELECT_UNRELAYED,
            Channel::Stream => sql::SELECT_UNSTREAMED,
        };
        let found = rows(&mut *self.conn().await?, statement, &[&limit]).await?;
        found
            .iter()
            .map(|r| {
                Ok((
                    int(r, 0)?,
                    StoredEvent {
                        id: text(r, 1)?,
                        kind: text(r, 2)?,
                        order_id: text(r, 3)?,
                        payload: text(r, 4)?,
                        step: text(r, 5)?,
                        step_version: text(r, 6)?,
                        occurred_at_ms: int(r, 7)?,
                    },
                ))
            })
            .collect()
    }

    async fn mark_relayed(&self, channel: Channel, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let statement = match channel {
            Channel::Transport => sql::MARK_RELAYED,
            Channel::Stream => sql::MARK_STREAMED,
        };
        exec(&mut *self.conn().await?, statement, &[&now_ms, &json_list(seqs)]).await.map(|_| ())
    }

    async fn outbox_lag(&self, channel: Channel) -> Result<OutboxLag, StoreError> {
        let statement = match channel {
            Channel::Transport => sql::OUTBOX_LAG,
            Channel::Stream => sql::STREAM_LAG,
        };
        let found = rows(&mut *self.conn().await?, statement, &[]).await?;
        let row = found.first().ok_or_else(|| StoreError::Query("no row".into()))?;
        Ok(OutboxLag { pending: int(row, 0)?, oldest_at_ms: opt_int(row, 1)? })
    }

    async fn enqueue(&self, deliveries: &[(String, String, String)], now_ms: i64) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        in_tx!(self, |conn| {
            for (consumer, event_id, event) in deliveries {
                exec(conn, sql::ENQUEUE, &[consumer, event_id, event, &now_ms]).await?;
            }
            Ok(())
        })
    }

    async fn due(&self, consumer: &str, now_ms: i64, limit: u32) -> Result<Vec<DeliveryRow>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::SELECT_DUE, &[&consumer, &now_ms, &limit]).await?;
        found
            .iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: int(r, 0)?,
                    consumer: text(r, 1)?,
                    event_id: text(r, 2)?,
                    event: text(r, 3)?,
                    attempts: int(r, 4)?,
                })
            })
            .collect()
    }

    async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::NEXT_DUE, &[&consumer]).await?;
        found.first().map(|r| opt_int(r, 0)).transpose().map(Option::flatten)
    }

    async fn settle(&self, acked: &[i64], retries: &[(i64, i64, String, bool)]) -> Result<(), StoreError> {
        if acked.is_empty() && retries.is_empty() {
            return Ok(());
        }
        in_tx!(self, |conn| {
            if !acked.is_empty() {
                exec(conn, sql::DELETE_DELIVERIES, &[&json_list(acked)]).await?;
            }
            for (id, due_at_ms, error, counted) in retries {
                let step = i64::from(*counted);
                exec(conn, sql::RETRY_DELIVERY, &[&step, due_at_ms, error, id]).await?;
            }
            Ok(())
        })
    }

    async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let found = rows(&mut *self.conn().await?, sql::SELECT_HANDLED, &[&consumer, &json_list(event_ids)]).await?;
        found.iter().map(|r| text(r, 0)).collect()
    }

    async fn state_get(&self, step: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_STATE, &[&step, &key]).await?;
        found
            .first()
            .map(|r| r.try_get::<&[u8], _>(0).map(|v| v.unwrap_or_default().to_vec()).map_err(query_error))
            .transpose()
    }

    async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let now_ms = crate::saga::now_ms();
        in_tx!(self, |conn| {
            for (event_id, version) in &batch.inbox {
                exec(conn, sql::INSERT_INBOX, &[&batch.consumer, event_id, version, &now_ms]).await?;
            }
            for (key, value) in &batch.state {
                match value {
                    Some(value) => exec(conn, sql::UPSERT_STATE, &[&batch.consumer, key, &value.as_slice()]).await?,
                    None => exec(conn, sql::DELETE_STATE, &[&batch.consumer, key]).await?,
                };
            }
            for event in &batch.outbox {
                exec(conn, sql::INSERT_EVENT, &insert_event_params(event)).await?;
            }
            for transition in &batch.transitions {
                apply_transition(conn, transition).await?;
            }
            for level in &batch.stock {
                exec(
                    conn,
                    sql::UPSERT_STOCK,
                    &[&level.sku, &level.available, &level.reserved, &level.sold, &level.seq],
                )
                .await?;
            }
            for dead in &batch.dead_letters {
                exec(
                    conn,
                    sql::INSERT_DEAD_LETTER,
                    &[
                        &dead.id,
                        &dead.consumer,
                        &dead.event_id,
                        &dead.event,
                        &dead.error,
                        &dead.attempts,
                        &dead.dead_lettered_at_ms,
                    ],
                )
                .await?;
            }
            Ok(())
        })
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTERS, &[]).await?;
        found.iter().map(dead_letter_row).collect()
    }

    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::TAKE_DEAD_LETTER, &[&id]).await?;
        found.first().map(dead_letter_row).transpose()
    }

    async fn reopen_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        in_tx!(self, |conn| {
            let found = rows(conn, sql::SELECT_DEAD_LETTER, &[&id]).await?;
            let Some(row) = found.first().map(dead_letter_row).transpose()? else {
                return Ok(None);
            };
            exec(conn, sql::UNMARK_DEAD_LETTERED, &[&row.consumer, &row.event_id]).await?;
            Ok(Some(row))
        })
    }

    async fn requeue(&self, consumer: &str, event_id: &str, event: &str, now_ms: i64) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::REQUEUE, &[&consumer, &event_id, &event, &now_ms]).await.map(|_| ())
    }

    async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::ORDER_COUNTS, &[]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, int(r, 1)?))).collect()
    }
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
        for (version, description, script) in MIGRATIONS {
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
