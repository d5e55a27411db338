//! What spans the roles on SQLite and PostgreSQL: the backend's name and pruning.

use super::*;

macro_rules! prune {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn prune(&self, cutoffs: &Cutoffs, limit: u32) -> Result<Pruned, StoreError> {
                let limit = i64::from(limit);
                let inbox = sqlx::query(
                    "DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM inbox \
                     WHERE handled_at_ms < $1 AND step_version NOT LIKE 'dead-lettered:%' LIMIT $2)",
                )
                .bind(cutoffs.inbox_before_ms)
                .bind(limit)
                .execute(&self.writer)
                .await?
                .rows_affected();
                let outbox_statement = if cutoffs.stream {
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE occurred_at_ms < $1 \
                     AND relayed_at_ms IS NOT NULL AND streamed_at_ms IS NOT NULL LIMIT $2)"
                } else {
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE occurred_at_ms < $1 \
                     AND relayed_at_ms IS NOT NULL LIMIT $2)"
                };
                let outbox = sqlx::query(outbox_statement)
                    .bind(cutoffs.outbox_before_ms)
                    .bind(limit)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                let idempotency_keys = sqlx::query(
                    "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys \
                     WHERE created_at_ms < $1 LIMIT $2)",
                )
                .bind(cutoffs.idempotency_before_ms)
                .bind(limit)
                .execute(&self.writer)
                .await?
                .rows_affected();
                for statement in [
                    "DELETE FROM pins WHERE (step, order_id) IN (SELECT step, order_id FROM pins \
                     WHERE created_at_ms < $1 LIMIT $2)",
                    "DELETE FROM recordings WHERE id IN (SELECT id FROM recordings WHERE recorded_at_ms < $1 LIMIT $2)",
                ] {
                    sqlx::query(statement).bind(cutoffs.pins_before_ms).bind(limit).execute(&self.writer).await?;
                }
                let mut step_state = 0;
                for (step, prefix) in &cutoffs.order_state {
                    // The order id follows the prefix; SUBSTR counts characters from 1.
                    let start = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX - 1) + 1;
                    step_state += sqlx::query(
                        "DELETE FROM step_state WHERE step = $1 AND key IN (SELECT s.key FROM step_state s \
                         JOIN orders o ON o.id = SUBSTR(s.key, CAST($5 AS INTEGER)) WHERE s.step = $1 AND s.key LIKE $2 ESCAPE '\\' \
                         AND o.status IN ('completed', 'cancelled') AND o.updated_at_ms < $3 LIMIT $4)",
                    )
                    .bind(step)
                    .bind(like_prefix(prefix))
                    .bind(cutoffs.finished_before_ms)
                    .bind(limit)
                    .bind(start)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                }
                let plugin_versions = match cutoffs.versions_before_ms {
                    Some(before) => sqlx::query(
                        "DELETE FROM plugin_versions WHERE digest IN (SELECT v.digest FROM plugin_versions v \
                         WHERE v.created_at_ms < $1 \
                         AND NOT EXISTS (SELECT 1 FROM plugin_slots s \
                             WHERE v.digest IN (s.current_digest, s.previous_digest, s.rollout_digest)) \
                         AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.digest = v.digest) \
                         AND NOT EXISTS (SELECT 1 FROM version_overrides o WHERE o.digest = v.digest) \
                         AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.version = v.digest) LIMIT $2)",
                    )
                    .bind(before)
                    .bind(limit)
                    .execute(&self.writer)
                    .await?
                    .rows_affected(),
                    None => 0,
                };
                let hosts = sqlx::query("DELETE FROM hosts WHERE seen_at_ms < $1")
                    .bind(cutoffs.hosts_before_ms)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM leases WHERE until_ms < $1")
                    .bind(cutoffs.hosts_before_ms)
                    .execute(&self.writer)
                    .await?;
                Ok(Pruned { inbox, outbox, idempotency_keys, step_state, plugin_versions, hosts })
            }
        }
    };
}

for_both!(prune);
