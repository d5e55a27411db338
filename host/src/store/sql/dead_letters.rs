//! [`DeadLetterStore`] on SQLite and PostgreSQL.

use super::*;

macro_rules! dead_letters {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl DeadLetterStore for $store {
            async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, consumer, event_id, event, error, attempts, dead_lettered_at_ms FROM dead_letters \
                     ORDER BY dead_lettered_at_ms, id",
                )
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(DeadLetterRow::from_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
            }

            async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
                let row = sqlx::query(
                    "DELETE FROM dead_letters WHERE id = $1 \
                     RETURNING id, consumer, event_id, event, error, attempts, dead_lettered_at_ms",
                )
                .bind(id)
                .fetch_optional(&self.writer)
                .await?;
                Ok(row.as_ref().map(DeadLetterRow::from_row).transpose()?)
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
                let Some(row) = row.as_ref().map(DeadLetterRow::from_row).transpose()? else {
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
                Ok(row.as_ref().map(DeadLetterRow::from_row).transpose()?)
            }
        }
    };
}

for_both!(dead_letters);
