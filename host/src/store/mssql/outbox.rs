//! [`OutboxStore`] on SQL Server.

use super::*;

#[async_trait]
impl OutboxStore for MssqlStore {
    async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError> {
        insert_event(&mut *self.conn().await?, event).await
    }

    async fn unrelayed(&self, channel: Channel, limit: u32) -> Result<Vec<(i64, StoredEvent)>, StoreError> {
        let limit = i64::from(limit);
        let statement = match channel {
            Channel::Transport => sql::SELECT_UNRELAYED,
            Channel::Stream => sql::SELECT_UNSTREAMED,
        };
        let found = rows(&mut *self.conn().await?, statement, &[&limit]).await?;
        found.iter().map(|r| Ok((int(r, 0)?, StoredEvent::from_columns(r, 1)?))).collect()
    }

    async fn mark_relayed(&self, channel: Channel, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        exec(&mut *self.conn().await?, mark_statement(channel), &[&now_ms, &json_list(seqs)]).await.map(|_| ())
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
}

/// The statement that marks outbox rows sent on `channel`.
pub(super) fn mark_statement(channel: Channel) -> &'static str {
    match channel {
        Channel::Transport => sql::MARK_RELAYED,
        Channel::Stream => sql::MARK_STREAMED,
    }
}
