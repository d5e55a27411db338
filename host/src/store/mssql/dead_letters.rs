//! [`DeadLetterStore`] on SQL Server.

use super::*;

#[async_trait]
impl DeadLetterStore for MssqlStore {
    async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTERS, &[]).await?;
        all(&found)
    }

    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::TAKE_DEAD_LETTER, &[&id]).await?;
        found.first().map(|r| DeadLetterRow::from_columns(r, 0)).transpose()
    }

    async fn reopen_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        in_tx!(self, |conn| {
            let found = rows(conn, sql::SELECT_DEAD_LETTER, &[&id]).await?;
            let Some(row) = found.first().map(|r| DeadLetterRow::from_columns(r, 0)).transpose()? else {
                return Ok(None);
            };
            exec(conn, sql::UNMARK_DEAD_LETTERED, &[&row.consumer, &row.event_id]).await?;
            Ok(Some(row))
        })
    }

    async fn requeue(&self, consumer: &str, event_id: &str, event: &str, now_ms: i64) -> Result<(), StoreError> {
        upsert(&mut *self.conn().await?, sql::REQUEUE, &[&consumer, &event_id, &event, &now_ms]).await
    }

    async fn dead_letter_recording(&self, id: &str) -> Result<Option<String>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTER_RECORDING, &[&id]).await?;
        Ok(found.first().map(|r| opt_text(r, 0)).transpose()?.flatten())
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTER, &[&id]).await?;
        found.first().map(|r| DeadLetterRow::from_columns(r, 0)).transpose()
    }
}
