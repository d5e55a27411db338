//! [`OutboxStore`] on SQLite and PostgreSQL.

use super::*;

macro_rules! outbox {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl OutboxStore for $store {
            async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                Self::insert_events(&mut *tx, std::slice::from_ref(event), None, &self.relay).await?;
                tx.commit().await?;
                Ok(())
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
                    .map(|r| Ok((r.try_get("seq")?, stored_event(r)?)))
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
                    Channel::Transport => {
                        "SELECT COUNT(*), MIN(occurred_at_ms) FROM outbox WHERE relayed_at_ms IS NULL"
                    }
                    Channel::Stream => "SELECT COUNT(*), MIN(occurred_at_ms) FROM outbox WHERE streamed_at_ms IS NULL",
                };
                let row = sqlx::query(statement).fetch_one(&self.reader).await?;
                Ok(OutboxLag { pending: row.try_get(0)?, oldest_at_ms: row.try_get(1)? })
            }

            async fn fire_timers(&self, limit: u32) -> Result<usize, StoreError> {
                // Most rounds find none: ask the reader first, write only when one is due.
                let due = sqlx::query(concat!("SELECT 1 FROM timers WHERE due_at_ms <= ", $now, " LIMIT 1"))
                    .fetch_optional(&self.reader)
                    .await?;
                if due.is_none() {
                    return Ok(0);
                }
                self.write((i64::from(limit), self.relay.clone()), |conn, args| {
                    Box::pin(async move {
                        let (limit, relay) = &*args;
                        // Deleting is the claim: a second host deleting the same rows
                        // waits for the first and then finds them gone.
                        let rows = sqlx::query(concat!(
                            "DELETE FROM timers WHERE event_id IN (SELECT event_id FROM timers WHERE due_at_ms <= ",
                            $now,
                            " ORDER BY due_at_ms LIMIT $1",
                            $skip_locked,
                            ") RETURNING ",
                            event_columns!(),
                            ", due_at_ms"
                        ))
                        .bind(*limit)
                        .fetch_all(&mut *conn)
                        .await?;
                        let mut fired = rows
                            .iter()
                            .map(|r| Ok((r.try_get::<i64, _>("due_at_ms")?, stored_event(r)?)))
                            .collect::<Result<Vec<_>, sqlx::Error>>()?;
                        fired.sort_by_key(|(due, event)| (*due, event.id.clone()));
                        let events: Vec<StoredEvent> = fired.into_iter().map(|(_, event)| event).collect();
                        Self::insert_events(&mut *conn, &events, None, relay).await?;
                        Ok(events.len())
                    })
                })
                .await
            }

            async fn pending_timers(&self, order_ids: &[String]) -> Result<Vec<PendingTimer>, StoreError> {
                let mut timers = Vec::new();
                for chunk in order_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT event_id, kind, order_id, step, due_at_ms FROM timers WHERE order_id IN ",
                    );
                    push_list!(query, chunk);
                    for row in query.build().fetch_all(&self.reader).await? {
                        timers.push(PendingTimer {
                            event_id: row.try_get(0)?,
                            kind: row.try_get(1)?,
                            order_id: row.try_get(2)?,
                            step: row.try_get(3)?,
                            due_at_ms: row.try_get(4)?,
                        });
                    }
                }
                timers.sort_by_key(|t| (t.due_at_ms, t.event_id.clone()));
                Ok(timers)
            }
        }
    };
}

for_both!(outbox);
