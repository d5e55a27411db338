//! [`ConsumerStore`] on SQLite and PostgreSQL: inbox, state, pins, overrides, a batch's commit.

use super::*;

macro_rules! consumers {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl ConsumerStore for $store {
            async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError> {
                let mut handled = HashSet::new();
                for chunk in event_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("SELECT event_id FROM inbox WHERE consumer = ");
                    query.push_bind(consumer).push(" AND event_id IN ");
                    push_list!(query, chunk);
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        handled.insert(row.try_get::<String, _>(0)?);
                    }
                }
                Ok(handled)
            }

            async fn state_get(&self, step: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query("SELECT value, version FROM step_state WHERE step = $1 AND key = $2")
                    .bind(step)
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await;
                let row = conn.read(fetched)?;
                Ok(row
                    .map(|r| Ok::<_, sqlx::Error>(Versioned { value: r.try_get(0)?, version: r.try_get(1)? }))
                    .transpose()?)
            }

            fn reads_many_at_once(&self) -> bool {
                true
            }

            async fn state_get_many(
                &self,
                step: &str,
                keys: &[String],
            ) -> Result<HashMap<String, Versioned>, StoreError> {
                let mut found = HashMap::new();
                for chunk in keys.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new("SELECT key, value, version FROM step_state WHERE step = ");
                    query.push_bind(step).push(" AND key IN ");
                    push_list!(query, chunk);
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        found.insert(row.try_get(0)?, Versioned { value: row.try_get(1)?, version: row.try_get(2)? });
                    }
                }
                Ok(found)
            }

            async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
                let settled = batch.settled.clone();
                self.write((batch.clone(), self.relay.clone()), |conn, args| {
                    Box::pin(async move {
                        let (batch, relay) = &*args;
                        Self::insert_inbox(&mut *conn, batch).await?;
                        Self::apply_state(&mut *conn, batch).await?;
                        let now_ms = clock_ms();
                        let queued = match &batch.queued {
                            Some(queued) if Self::relay_idle(&mut *conn, relay).await? => Some(queued),
                            _ => None,
                        };
                        let relayed_at_ms = queued.is_some().then_some(now_ms);
                        for chunk in batch.outbox.chunks(500) {
                            Self::insert_events(&mut *conn, chunk, relayed_at_ms, relay).await?;
                        }
                        Self::insert_timers(&mut *conn, &batch.timers).await?;
                        let not_written =
                            Self::apply_transitions(&mut *conn, &batch.transitions, relayed_at_ms, relay).await?;
                        if let Some(queued) = queued {
                            // A transition that did not apply wrote no event: nothing to deliver.
                            let written =
                                queued.iter().filter(|(_, event_id, _)| !not_written.contains(event_id.as_str()));
                            Self::insert_deliveries(&mut *conn, written, now_ms).await?;
                        }
                        Self::upsert_stock(&mut *conn, &batch.stock).await?;
                        for dead in &batch.dead_letters {
                            Self::insert_dead_letter(&mut *conn, dead).await?;
                        }
                        Self::apply_versions(&mut *conn, batch).await?;
                        Self::delete_deliveries(&mut *conn, &batch.settled, None).await?;
                        Ok(())
                    })
                })
                .await?;
                if let Some(claims) = &self.claims {
                    claims.forget(settled);
                }
                Ok(())
            }

            async fn pins(&self, step: &str, order_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
                let mut pins = HashMap::new();
                for chunk in order_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new("SELECT order_id, digest FROM pins WHERE step = ");
                    query.push_bind(step).push(" AND order_id IN ");
                    push_list!(query, chunk);
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        pins.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
                    }
                }
                Ok(pins)
            }

            async fn overrides(
                &self,
                consumer: &str,
                event_ids: &[String],
            ) -> Result<HashMap<String, String>, StoreError> {
                let mut overrides = HashMap::new();
                for chunk in event_ids.chunks(500) {
                    let mut query =
                        QueryBuilder::<$db>::new("SELECT event_id, digest FROM version_overrides WHERE consumer = ");
                    query.push_bind(consumer).push(" AND event_id IN ");
                    push_list!(query, chunk);
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_all(&mut *conn).await;
                    for row in conn.read(fetched)? {
                        overrides.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
                    }
                }
                Ok(overrides)
            }

            async fn set_override(&self, consumer: &str, event_id: &str, digest: &str) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO version_overrides (consumer, event_id, digest) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer, event_id) DO UPDATE SET digest = excluded.digest",
                )
                .bind(consumer)
                .bind(event_id)
                .bind(digest)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, step, event_id, version, outcome, recorded_at_ms, recording FROM recordings \
                     WHERE step = $1 ORDER BY recorded_at_ms DESC LIMIT $2",
                )
                .bind(step)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(RecordingRow::from_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
            }
        }
    };
}

for_both!(consumers);
