//! The writes a transaction is made of (events, dead letters, transitions, stock,
//! deliveries, inbox, state), shared by the roles' operations.

use super::*;

/// Bind an event's columns (`event_columns!`, in order) to a row of a `push_values`.
macro_rules! push_event {
    ($row:expr, $e:expr) => {
        $row.push_bind(&$e.id)
            .push_bind(&$e.kind)
            .push_bind(&$e.order_id)
            .push_bind(&$e.payload)
            .push_bind(&$e.step)
            .push_bind(&$e.step_version)
            .push_bind($e.occurred_at_ms)
            .push_bind(i64::from($e.attempt))
            .push_bind(&$e.trace)
    };
}

macro_rules! writes {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        impl $store {
            /// Outbox rows; `relayed_at_ms` when their deliveries are queued with them.
            pub(super) async fn insert_events(
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
                    push_event!(row, e).push_bind(relayed_at_ms);
                });
                query.build().execute(&mut *conn).await?;
                Ok(())
            }

            /// Timers, due `delay_ms` after now by the store's clock.
            pub(super) async fn insert_timers(conn: &mut $conn, timers: &[TimerRow]) -> Result<(), sqlx::Error> {
                for chunk in timers.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new(concat!("INSERT INTO timers (", event_columns!(), ", due_at_ms) "));
                    query.push_values(chunk, |mut row, t| {
                        push_event!(row, t.event).push(concat!($now, " + ")).push_bind_unseparated(t.delay_ms);
                    });
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            pub(super) async fn insert_dead_letter(conn: &mut $conn, dead: &DeadLetterRow) -> Result<(), sqlx::Error> {
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
            pub(super) async fn apply_transitions<'t>(
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
                    query.push(") AS v WHERE orders.id = v.column1 AND orders.status IN ");
                    push_list!(query, run[0].from.iter().copied());
                    query.push(" RETURNING orders.id");
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
            pub(super) async fn upsert_stock(conn: &mut $conn, levels: &[StockRow]) -> Result<(), sqlx::Error> {
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
                    let mut query =
                        QueryBuilder::<$db>::new("INSERT INTO stock (sku, available, reserved, sold, seq) ");
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
            pub(super) async fn insert_deliveries<'q>(
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
            pub(super) async fn relay_idle(conn: &mut $conn, relay: &RelayIdle) -> Result<bool, StoreError> {
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
            pub(super) async fn delete_deliveries(
                conn: &mut $conn,
                ids: &[i64],
                holder: Option<&str>,
            ) -> Result<(), StoreError> {
                for chunk in ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM deliveries WHERE ");
                    if let Some(holder) = holder {
                        query.push("claimed_by = ").push_bind(holder.to_owned()).push(" AND ");
                    }
                    query.push("id IN ");
                    push_list!(query, chunk.iter().copied());
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Mark outbox rows as sent on `channel`.
            pub(super) async fn mark(
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
                    query.push_bind(now_ms).push(" WHERE seq IN ");
                    push_list!(query, chunk.iter().copied());
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Inbox rows of the batch; a row already there means another host handled
            /// the event first.
            pub(super) async fn insert_inbox(conn: &mut $conn, batch: &BatchCommit) -> Result<(), StoreError> {
                let rows: Vec<(&str, &str, &str)> = batch
                    .inbox
                    .iter()
                    .map(|(event_id, version)| (batch.consumer.as_str(), event_id.as_str(), version.as_str()))
                    .chain(batch.also_handled.iter().map(|(c, e, v)| (c.as_str(), e.as_str(), v.as_str())))
                    .collect();
                let now_ms = clock_ms();
                for chunk in rows.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) ",
                    );
                    query.push_values(chunk, |mut row, (consumer, event_id, version)| {
                        row.push_bind(*consumer).push_bind(*event_id).push_bind(*version).push_bind(now_ms);
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
            pub(super) async fn apply_versions(conn: &mut $conn, batch: &BatchCommit) -> Result<(), StoreError> {
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
                    query.push_bind(&batch.consumer).push(" AND event_id IN ");
                    push_list!(query, chunk);
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
            /// keys it saw absent must still be absent, whether it writes them or not, then
            /// the writes get a new version.
            ///
            /// A key seen absent has no row to lock: two batches that each read absent the
            /// key the other creates (a webhook and the charge it confirms) would both
            /// commit, each on a read the other made stale. So keys seen absent and keys
            /// written unread are locked by name first (`lock_names`), and the check reads
            /// only after that.
            pub(super) async fn apply_state(conn: &mut $conn, batch: &BatchCommit) -> Result<(), StoreError> {
                let step = &batch.consumer;
                let seen: std::collections::BTreeMap<&str, Option<i64>> =
                    batch.state_reads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let mut unrowed: Vec<&str> = seen.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
                unrowed.extend(batch.state.iter().map(|(k, _)| k.as_str()).filter(|k| !seen.contains_key(k)));
                Self::lock_names(&mut *conn, step, &unrowed).await?;
                let checked: Vec<&str> = seen.keys().copied().collect();
                for chunk in checked.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("SELECT key, version FROM step_state WHERE step = ");
                    query.push_bind(step).push(" AND key IN ");
                    push_list!(query, chunk.iter().copied());
                    query.push($lock);
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
                let insert = |chunk: &[&(String, Option<Vec<u8>>)]| {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO step_state (step, key, value, version) ");
                    query.push_values(chunk, |mut row, (key, value)| {
                        row.push_bind(step)
                            .push_bind(key)
                            .push_bind(value.as_deref().unwrap_or_default())
                            .push_bind(version);
                    });
                    query
                };
                for chunk in fresh.chunks(500) {
                    let mut query = insert(chunk);
                    query.push(" ON CONFLICT (step, key) DO NOTHING");
                    if query.build().execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
                        return Err(StoreError::Conflict(format!("a state key of {step} was created meanwhile")));
                    }
                }
                for chunk in known.chunks(500) {
                    let mut query = insert(chunk);
                    query.push(
                        " ON CONFLICT (step, key) DO UPDATE SET value = excluded.value, version = excluded.version",
                    );
                    query.build().execute(&mut *conn).await?;
                }
                for chunk in deletes.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM step_state WHERE step = ");
                    query.push_bind(step).push(" AND key IN ");
                    push_list!(query, chunk.iter().map(|(key, _)| key));
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }
    };
}

for_both!(writes);

impl SqliteStore {
    /// Nothing to lock: one writer holds the database's only write transaction, so the
    /// check after this reads what every other commit left.
    async fn lock_names(_: &mut sqlx::SqliteConnection, _: &str, _: &[&str]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The advisory lock space of state key names (`'WSAG'`), apart from the one-number
/// locks of migrations.
#[cfg(feature = "postgres")]
const STATE_NAME_LOCKS: i32 = 0x5753_4147;

/// The seed of a whole step's advisory lock, a 64-bit hash of its name (held shared by a
/// batch that locks names, alone by one that would lock more than
/// [`STATE_NAME_LOCKS_MAX`]). 64 bits, not `hashtext`'s 32: a step's name is its
/// author's choice, and one chosen to share another step's lock would make that step's
/// commits wait for its own.
#[cfg(feature = "postgres")]
const STATE_STEP_LOCKS: i64 = 0x5753_4148;

/// The most names one commit locks one by one. PostgreSQL's lock table is shared by the
/// whole server and sized for `max_locks_per_transaction` (64 by default) per
/// connection: a step reading tens of thousands of absent keys would fill it, failing
/// its own commit and other sessions' locks. Four names per delivery of a full batch
/// (64 deliveries).
#[cfg(feature = "postgres")]
const STATE_NAME_LOCKS_MAX: usize = 256;

#[cfg(feature = "postgres")]
impl PgStore {
    /// Lock `keys` of `step` by name until the transaction ends: a batch that saw a key
    /// absent and one that creates it take turns, and the later one's check sees the
    /// earlier one's row. Taken in one order (the step, then names by hash), so two
    /// batches never wait in a cycle; a hash shared by two names only makes their
    /// batches take turns.
    ///
    /// Past [`STATE_NAME_LOCKS_MAX`] names the batch locks its whole step instead, and
    /// every batch that locks names holds the step shared: a batch of either kind still
    /// takes turns with every other that touches its names, and no commit holds more
    /// than `STATE_NAME_LOCKS_MAX + 1` locks.
    async fn lock_names(conn: &mut sqlx::PgConnection, step: &str, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        if keys.len() > STATE_NAME_LOCKS_MAX {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($2, $1))")
                .bind(STATE_STEP_LOCKS)
                .bind(step)
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        sqlx::query(
            "SELECT CASE WHEN l.h IS NULL THEN pg_advisory_xact_lock_shared(hashtextextended($2, $4)) \
             ELSE pg_advisory_xact_lock($1, l.h) END FROM \
             (SELECT NULL::int4 AS h, 0 AS o \
              UNION ALL SELECT DISTINCT hashtext($2 || '/' || k), 1 FROM unnest($3::text[]) AS k \
              ORDER BY o, h OFFSET 0) AS l",
        )
        .bind(STATE_NAME_LOCKS)
        .bind(step)
        .bind(keys)
        .bind(STATE_STEP_LOCKS)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
