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

    async fn fire_timers(&self, limit: u32) -> Result<usize, StoreError> {
        if rows(&mut *self.conn().await?, sql::ANY_TIMER_DUE, &[]).await?.is_empty() {
            return Ok(0);
        }
        let limit = i64::from(limit);
        in_tx!(self, |conn| {
            // Deleting is the claim: rows another host holds are skipped (READPAST).
            let found = rows(conn, sql::FIRE_TIMERS, &[&limit]).await?;
            let mut fired = found
                .iter()
                .map(|r| Ok((int(r, 9)?, StoredEvent::from_columns(r, 0)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            fired.sort_by_key(|(due, event)| (*due, event.id.clone()));
            for (_, event) in &fired {
                insert_event(conn, event).await?;
            }
            Ok(fired.len())
        })
    }

    async fn pending_timers(&self, order_ids: &[String]) -> Result<Vec<PendingTimer>, StoreError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = rows(&mut *self.conn().await?, sql::SELECT_TIMERS, &[&json_list(order_ids)]).await?;
        found
            .iter()
            .map(|r| {
                Ok(PendingTimer {
                    event_id: text(r, 0)?,
                    kind: text(r, 1)?,
                    order_id: text(r, 2)?,
                    step: text(r, 3)?,
                    due_at_ms: int(r, 4)?,
                })
            })
            .collect()
    }
}

/// The statement that marks outbox rows sent on `channel`.
pub(super) fn mark_statement(channel: Channel) -> &'static str {
    match channel {
        Channel::Transport => sql::MARK_RELAYED,
        Channel::Stream => sql::MARK_STREAMED,
    }
}
