//! [`DeliveryStore`] on SQL Server: the embedded transport's queue.

use super::outbox::mark_statement;
use super::*;

#[async_trait]
impl DeliveryStore for MssqlStore {
    async fn enqueue(
        &self,
        deliveries: &[(String, String, String)],
        now_ms: i64,
        relayed: Option<(Channel, &[i64])>,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() && relayed.is_none_or(|(_, seqs)| seqs.is_empty()) {
            return Ok(());
        }
        in_tx!(self, |conn| {
            for (consumer, event_id, event) in deliveries {
                insert_guarded(conn, sql::ENQUEUE, &[consumer, event_id, event, &now_ms]).await?;
            }
            if let Some((channel, seqs)) = relayed
                && !seqs.is_empty()
            {
                exec(conn, mark_statement(channel), &[&now_ms, &json_list(seqs)]).await?;
            }
            Ok(())
        })
    }

    async fn set_subscriptions(&self, consumer: &str, patterns: &[String]) -> Result<(), StoreError> {
        in_tx!(self, |conn| {
            exec(conn, sql::DELETE_SUBSCRIPTIONS, &[&consumer]).await?;
            for pattern in patterns {
                insert_guarded(conn, sql::INSERT_SUBSCRIPTION, &[&consumer, pattern]).await?;
            }
            Ok(())
        })
    }

    async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_SUBSCRIPTIONS, &[]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, text(r, 1)?))).collect()
    }

    async fn claim(
        &self,
        consumer: &str,
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let limit = i64::from(limit);
        let found =
            rows(&mut *self.conn().await?, sql::CLAIM, &[&consumer, &holder, &lease_ms, &now_ms, &limit]).await?;
        let mut claimed: Vec<DeliveryRow> = all(&found)?;
        claimed.sort_by_key(|d| (d.due_at_ms, d.id));
        Ok(claimed)
    }

    async fn release_claims(&self, holder: &str) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::RELEASE_CLAIMS, &[&holder]).await.map(|_| ())
    }

    async fn renew_claims(&self, holder: &str, lease_ms: i64) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::RENEW_CLAIMS, &[&holder, &lease_ms]).await.map(|_| ())
    }

    async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::NEXT_DUE, &[&consumer]).await?;
        found.first().map(|r| opt_int(r, 0)).transpose().map(Option::flatten)
    }

    async fn settle(&self, holder: &str, acked: &[i64], retries: &[RetryRow]) -> Result<(), StoreError> {
        if acked.is_empty() && retries.is_empty() {
            return Ok(());
        }
        in_tx!(self, |conn| {
            if !acked.is_empty() {
                exec(conn, sql::SETTLE_DELIVERIES, &[&json_list(acked), &holder]).await?;
            }
            for RetryRow { id, due_at_ms, error, counted } in retries {
                let step = i64::from(*counted);
                exec(conn, sql::RETRY_DELIVERY, &[&step, due_at_ms, error, id, &holder]).await?;
            }
            Ok(())
        })
    }
}
