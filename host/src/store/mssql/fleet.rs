//! [`FleetStore`] on SQL Server: leases, versions, slots, history, hosts.

use super::*;

#[async_trait]
impl FleetStore for MssqlStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        if exec(&mut conn, sql::RENEW_LEASE, &[&name, &holder, &ttl_ms]).await? == 1 {
            return Ok(true);
        }
        Ok(insert_guarded(&mut conn, sql::INSERT_LEASE, &[&name, &holder, &ttl_ms]).await? == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::RELEASE_LEASE, &[&name, &holder]).await.map(|_| ())
    }

    async fn put_version(&self, version: &VersionRow) -> Result<(), StoreError> {
        let subscribes = json_list(&version.subscribes);
        insert_guarded(
            &mut *self.conn().await?,
            sql::INSERT_VERSION,
            &[
                &version.digest,
                &version.name,
                &version.version,
                &subscribes,
                &version.bytes.as_slice(),
                &version.created_at_ms,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn version(&self, digest: &str) -> Result<Option<VersionRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_VERSION, &[&digest]).await?;
        found
            .first()
            .map(|r| {
                Ok(VersionRow {
                    digest: text(r, 0)?,
                    name: text(r, 1)?,
                    version: text(r, 2)?,
                    subscribes: serde_json::from_str(&text(r, 3)?).unwrap_or_default(),
                    bytes: r.try_get::<&[u8], _>(4).map_err(query_error)?.unwrap_or_default().to_vec(),
                    created_at_ms: int(r, 5)?,
                })
            })
            .transpose()
    }

    async fn version_digests(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_VERSION_DIGESTS, &[&name]).await?;
        found.iter().map(|r| text(r, 0)).collect()
    }

    async fn slots(&self) -> Result<Vec<SlotRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_SLOTS, &[]).await?;
        found
            .iter()
            .map(|r| {
                let rollout = match (opt_text(r, 5)?, opt_text(r, 6)?) {
                    (Some(mode), Some(digest)) => Some(RolloutRow {
                        mode,
                        digest,
                        percent: opt_int(r, 7)?.unwrap_or(0),
                        started_at_ms: opt_int(r, 8)?.unwrap_or(0),
                    }),
                    _ => None,
                };
                Ok(SlotRow {
                    name: text(r, 0)?,
                    current: text(r, 1)?,
                    previous: opt_text(r, 2)?,
                    generation: int(r, 3)?,
                    updated_at_ms: int(r, 4)?,
                    rollout,
                })
            })
            .collect()
    }

    async fn set_slot(&self, slot: &SlotRow, expected: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let rollout = slot.rollout.as_ref();
        let (mode, digest) = (or_empty(rollout.map(|r| r.mode.as_str())), or_empty(rollout.map(|r| r.digest.as_str())));
        let (percent, started) = (rollout.map(|r| r.percent), rollout.map(|r| r.started_at_ms));
        let previous = or_empty(slot.previous.as_deref());
        // The slot's nine columns, then (for an update) the generation it must still have.
        let columns: [&dyn ToSql; 10] = [
            &slot.name,
            &slot.current,
            &previous,
            &slot.generation,
            &slot.updated_at_ms,
            &mode,
            &digest,
            &percent,
            &started,
            &expected,
        ];
        let changed = if expected == 0 {
            insert_guarded(&mut conn, sql::INSERT_SLOT, &columns[..9]).await?
        } else {
            exec(&mut conn, sql::UPDATE_SLOT, &columns).await?
        };
        Ok(changed == 1)
    }

    async fn add_history(&self, entry: &HistoryRow) -> Result<(), StoreError> {
        exec(
            &mut *self.conn().await?,
            sql::INSERT_HISTORY,
            &[&entry.name, &entry.action, &entry.digest, &entry.reason, &entry.host_id, &entry.at_ms],
        )
        .await
        .map(|_| ())
    }

    async fn history(&self, name: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::SELECT_HISTORY, &[&name, &limit]).await?;
        all(&found)
    }

    async fn heartbeat(&self, host: &HostRow) -> Result<(), StoreError> {
        upsert(
            &mut *self.conn().await?,
            sql::HEARTBEAT,
            &[&host.host_id, &host.http_addr, &host.started_at_ms, &host.seen_at_ms, &host.steps],
        )
        .await
    }

    async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_HOSTS, &[&seen_after_ms]).await?;
        all(&found)
    }

    async fn remove_host(&self, host_id: &str) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::DELETE_HOST, &[&host_id]).await.map(|_| ())
    }
}
