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
        }
    };
}

for_both!(outbox);
