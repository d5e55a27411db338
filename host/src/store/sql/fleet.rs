//! [`FleetStore`] on SQLite and PostgreSQL: leases, versions, slots, history, hosts.

use super::*;

macro_rules! fleet {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl FleetStore for $store {
            fn exclusive(&self) -> bool {
                self.claims.is_some()
            }

            async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
                let args = (name.to_owned(), holder.to_owned());
                self.write(args, move |conn, args| Box::pin(async move {
                    let (name, holder) = &*args;
                    let taken = sqlx::query(concat!(
                        "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, ", $now, " + $3) \
                         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
                         WHERE leases.holder = excluded.holder OR leases.until_ms < ", $now
                    ))
                    .bind(name)
                    .bind(holder)
                    .bind(ttl_ms)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    Ok(taken == 1)
                }))
                .await
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                    .bind(name)
                    .bind(holder)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn put_version(&self, version: &VersionRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO plugin_versions (digest, name, version, subscribes, bytes, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&version.digest)
                .bind(&version.name)
                .bind(&version.version)
                .bind(serde_json::to_string(&version.subscribes).unwrap_or_default())
                .bind(&version.bytes)
                .bind(version.created_at_ms)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn version(&self, digest: &str) -> Result<Option<VersionRow>, StoreError> {
                let row = sqlx::query(
                    "SELECT digest, name, version, subscribes, bytes, created_at_ms FROM plugin_versions \
                     WHERE digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.reader)
                .await?;
                row.map(|r| {
                    let subscribes: String = r.try_get(3)?;
                    Ok(VersionRow {
                        digest: r.try_get(0)?,
                        name: r.try_get(1)?,
                        version: r.try_get(2)?,
                        subscribes: serde_json::from_str(&subscribes).unwrap_or_default(),
                        bytes: r.try_get(4)?,
                        created_at_ms: r.try_get(5)?,
                    })
                })
                .transpose()
                .map_err(|e: sqlx::Error| e.into())
            }

            async fn version_digests(&self, name: &str) -> Result<Vec<String>, StoreError> {
                let rows = sqlx::query("SELECT digest FROM plugin_versions WHERE name = $1 ORDER BY created_at_ms")
                    .bind(name)
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(Into::into)
            }

            async fn slots(&self) -> Result<Vec<SlotRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT name, current_digest, previous_digest, generation, updated_at_ms, rollout_mode, \
                     rollout_digest, rollout_percent, rollout_started_at_ms FROM plugin_slots ORDER BY name",
                )
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        let mode: Option<String> = r.try_get(5)?;
                        let digest: Option<String> = r.try_get(6)?;
                        let rollout = match (mode, digest) {
                            (Some(mode), Some(digest)) => Some(RolloutRow {
                                mode,
                                digest,
                                percent: r.try_get::<Option<i64>, _>(7)?.unwrap_or(0),
                                started_at_ms: r.try_get::<Option<i64>, _>(8)?.unwrap_or(0),
                            }),
                            _ => None,
                        };
                        Ok(SlotRow {
                            name: r.try_get(0)?,
                            current: r.try_get(1)?,
                            previous: r.try_get(2)?,
                            generation: r.try_get(3)?,
                            updated_at_ms: r.try_get(4)?,
                            rollout,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn set_slot(&self, slot: &SlotRow, expected: i64) -> Result<bool, StoreError> {
                let rollout = slot.rollout.as_ref();
                // A new slot is inserted; a known one changes only at the generation read.
                let statement = if expected == 0 {
                    "INSERT INTO plugin_slots (name, current_digest, previous_digest, generation, updated_at_ms, \
                     rollout_mode, rollout_digest, rollout_percent, rollout_started_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING"
                } else {
                    "UPDATE plugin_slots SET current_digest = $2, previous_digest = $3, generation = $4, \
                     updated_at_ms = $5, rollout_mode = $6, rollout_digest = $7, rollout_percent = $8, \
                     rollout_started_at_ms = $9 WHERE name = $1 AND generation = $10"
                };
                let mut query = sqlx::query(statement)
                    .bind(&slot.name)
                    .bind(&slot.current)
                    .bind(&slot.previous)
                    .bind(slot.generation)
                    .bind(slot.updated_at_ms)
                    .bind(rollout.map(|r| r.mode.as_str()))
                    .bind(rollout.map(|r| r.digest.as_str()))
                    .bind(rollout.map(|r| r.percent))
                    .bind(rollout.map(|r| r.started_at_ms));
                if expected != 0 {
                    query = query.bind(expected);
                }
                let changed = query.execute(&self.writer).await?.rows_affected();
                Ok(changed == 1)
            }

            async fn add_history(&self, entry: &HistoryRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO plugin_history (name, action, digest, reason, host_id, at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&entry.name)
                .bind(&entry.action)
                .bind(&entry.digest)
                .bind(&entry.reason)
                .bind(&entry.host_id)
                .bind(entry.at_ms)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn history(&self, name: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT name, action, digest, reason, host_id, at_ms FROM plugin_history WHERE name = $1 \
                     ORDER BY id DESC LIMIT $2",
                )
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(HistoryRow::from_row)
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn heartbeat(&self, host: &HostRow) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO hosts (host_id, http_addr, started_at_ms, seen_at_ms, steps) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host_id) DO UPDATE SET \
                     http_addr = excluded.http_addr, started_at_ms = excluded.started_at_ms, \
                     seen_at_ms = excluded.seen_at_ms, steps = excluded.steps",
                )
                .bind(&host.host_id)
                .bind(&host.http_addr)
                .bind(host.started_at_ms)
                .bind(host.seen_at_ms)
                .bind(&host.steps)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT host_id, http_addr, started_at_ms, seen_at_ms, steps FROM hosts \
                     WHERE seen_at_ms >= $1 ORDER BY host_id",
                )
                .bind(seen_after_ms)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(HostRow::from_row)
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn remove_host(&self, host_id: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM hosts WHERE host_id = $1").bind(host_id).execute(&self.writer).await?;
                Ok(())
            }
        }
    };
}

for_both!(fleet);
