//! What spans the roles on SQL Server: the backend's name and pruning.

use super::*;

#[async_trait]
impl Store for MssqlStore {
    fn backend(&self) -> &'static str {
        "mssql"
    }

    async fn prune(&self, cutoffs: &Cutoffs, limit: u32) -> Result<Pruned, StoreError> {
        let limit = i64::from(limit);
        let stream = i32::from(cutoffs.stream);
        let mut conn = self.conn().await?;
        exec(&mut conn, sql::PRUNE_PINS, &[&cutoffs.pins_before_ms, &limit]).await?;
        exec(&mut conn, sql::PRUNE_RECORDINGS, &[&cutoffs.pins_before_ms, &limit]).await?;
        let mut step_state = 0;
        for (step, prefix) in &cutoffs.order_state {
            let start = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX - 1) + 1;
            let pattern = crate::store::like_prefix(prefix);
            step_state +=
                exec(&mut conn, sql::PRUNE_ORDER_STATE, &[step, &pattern, &cutoffs.finished_before_ms, &limit, &start])
                    .await?;
        }
        let plugin_versions = match cutoffs.versions_before_ms {
            Some(before) => exec(&mut conn, sql::PRUNE_VERSIONS, &[&before, &limit]).await?,
            None => 0,
        };
        let hosts = exec(&mut conn, sql::PRUNE_HOSTS, &[&cutoffs.hosts_before_ms]).await?;
        exec(&mut conn, sql::PRUNE_LEASES, &[&cutoffs.hosts_before_ms]).await?;
        Ok(Pruned {
            inbox: exec(&mut conn, sql::PRUNE_INBOX, &[&cutoffs.inbox_before_ms, &limit]).await?,
            outbox: exec(&mut conn, sql::PRUNE_OUTBOX, &[&cutoffs.outbox_before_ms, &limit, &stream]).await?,
            idempotency_keys: exec(&mut conn, sql::PRUNE_IDEMPOTENCY, &[&cutoffs.idempotency_before_ms, &limit])
                .await?,
            step_state,
            plugin_versions,
            hosts,
        })
    }
}
