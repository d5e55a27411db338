//! [`DeliveryStore`] on SQLite and PostgreSQL: the embedded transport's queue.

use super::*;

macro_rules! deliveries {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl DeliveryStore for $store {
            fn queues_with_commit(&self) -> bool {
                true
            }

            async fn set_subscriptions(&self, consumer: &str, patterns: &[String]) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM subscriptions WHERE consumer = $1").bind(consumer).execute(&mut *tx).await?;
                if !patterns.is_empty() {
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO subscriptions (consumer, pattern) ");
                    query.push_values(patterns, |mut row, pattern| {
                        row.push_bind(consumer).push_bind(pattern);
                    });
                    query.push(" ON CONFLICT (consumer, pattern) DO NOTHING");
                    query.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query("SELECT consumer, pattern FROM subscriptions ORDER BY consumer, pattern")
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn enqueue(
                &self,
                deliveries: &[(String, String, String)],
                now_ms: i64,
                relayed: Option<(Channel, &[i64])>,
            ) -> Result<(), StoreError> {
                let args = (deliveries.to_vec(), relayed.map(|(channel, seqs)| (channel, seqs.to_vec())));
                self.write(args, move |conn, args| {
                    Box::pin(async move {
                        let (deliveries, relayed) = &*args;
                        Self::insert_deliveries(&mut *conn, deliveries.iter(), now_ms).await?;
                        if let Some((channel, seqs)) = relayed {
                            Self::mark(conn, *channel, seqs, now_ms).await?;
                        }
                        Ok(())
                    })
                })
                .await
            }

            async fn claim(
                &self,
                consumer: &str,
                holder: &str,
                now_ms: i64,
                lease_ms: i64,
                limit: u32,
            ) -> Result<Vec<DeliveryRow>, StoreError> {
                if let Some(claims) = &self.claims {
                    // One process owns the store: its clock is the store's.
                    let until_ms = now_ms.saturating_add(lease_ms);
                    // Read past the deliveries already held; `take` skips them.
                    claims.expire(now_ms);
                    let (held, _) = claims.held(consumer);
                    let mut conn = self.lane.get().await?;
                    let fetched = sqlx::query(
                        "SELECT id, consumer, event_id, event, attempts, due_at_ms FROM deliveries \
                         WHERE consumer = $1 AND due_at_ms <= $2 ORDER BY due_at_ms, id LIMIT $3",
                    )
                    .bind(consumer)
                    .bind(now_ms)
                    .bind(i64::from(limit).saturating_add(held.len() as i64))
                    .fetch_all(&mut *conn)
                    .await;
                    let rows = conn.read(fetched)?;
                    let rows = rows.iter().map(DeliveryRow::from_row).collect::<Result<Vec<_>, sqlx::Error>>()?;
                    return Ok(claims.take(consumer, rows, until_ms, limit as usize));
                }
                let args = (consumer.to_owned(), holder.to_owned());
                let rows = self
                    .write(args, move |conn, args| {
                        Box::pin(async move {
                            let (consumer, holder) = &*args;
                            Ok(sqlx::query(concat!(
                                "UPDATE deliveries SET claimed_by = $2, claimed_until_ms = ",
                                $now,
                                " + $3 WHERE id IN \
                         (SELECT id FROM deliveries WHERE consumer = $1 AND due_at_ms <= $4 \
                         AND (claimed_until_ms IS NULL OR claimed_until_ms <= ",
                                $now,
                                ") \
                         ORDER BY due_at_ms, id LIMIT $5",
                                $skip_locked,
                                ") RETURNING id, consumer, event_id, event, attempts, due_at_ms"
                            ))
                            .bind(consumer)
                            .bind(holder)
                            .bind(lease_ms)
                            .bind(now_ms)
                            .bind(i64::from(limit))
                            .fetch_all(&mut *conn)
                            .await?)
                        })
                    })
                    .await?;
                let mut claimed = rows.iter().map(DeliveryRow::from_row).collect::<Result<Vec<_>, sqlx::Error>>()?;
                claimed.sort_by_key(|d| (d.due_at_ms, d.id));
                Ok(claimed)
            }

            async fn release_claims(&self, holder: &str) -> Result<(), StoreError> {
                if let Some(claims) = &self.claims {
                    claims.clear();
                }
                sqlx::query("UPDATE deliveries SET claimed_by = NULL, claimed_until_ms = NULL WHERE claimed_by = $1")
                    .bind(holder)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn renew_claims(&self, holder: &str, lease_ms: i64) -> Result<(), StoreError> {
                if let Some(claims) = &self.claims {
                    claims.renew(clock_ms().saturating_add(lease_ms));
                    return Ok(());
                }
                sqlx::query(concat!("UPDATE deliveries SET claimed_until_ms = ", $now, " + $2 WHERE claimed_by = $1"))
                    .bind(holder)
                    .bind(lease_ms)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
                if let Some(claims) = &self.claims {
                    // The first unclaimed delivery falls due, or the first claim ends.
                    let (held, ends) = claims.held(consumer);
                    let mut query = QueryBuilder::<$db>::new("SELECT MIN(due_at_ms) FROM deliveries WHERE consumer = ");
                    query.push_bind(consumer);
                    if !held.is_empty() {
                        query.push(" AND id NOT IN ");
                        push_list!(query, held);
                    }
                    let mut conn = self.lane.get().await?;
                    let fetched = query.build().fetch_one(&mut *conn).await;
                    let due: Option<i64> = conn.read(fetched)?.try_get(0)?;
                    return Ok(match (due, ends) {
                        (Some(due), Some(ends)) => Some(due.min(ends)),
                        (due, ends) => due.or(ends),
                    });
                }
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query(
                    "SELECT MIN(CASE WHEN claimed_until_ms IS NOT NULL AND claimed_until_ms > due_at_ms \
                     THEN claimed_until_ms ELSE due_at_ms END) FROM deliveries WHERE consumer = $1",
                )
                .bind(consumer)
                .fetch_one(&mut *conn)
                .await;
                let row = conn.read(fetched)?;
                Ok(row.try_get(0)?)
            }

            async fn settle(&self, holder: &str, acked: &[i64], retries: &[RetryRow]) -> Result<(), StoreError> {
                let (mut acked, mut retries) = (acked.to_vec(), retries.to_vec());
                // Claims in memory: the ones this process still holds are its own.
                let in_rows = match &self.claims {
                    Some(claims) => {
                        acked.retain(|id| claims.holds(*id));
                        retries.retain(|retry| claims.holds(retry.id));
                        None
                    }
                    None => Some(holder.to_owned()),
                };
                if acked.is_empty() && retries.is_empty() {
                    return Ok(());
                }
                let settled: Vec<i64> = acked.iter().copied().chain(retries.iter().map(|r| r.id)).collect();
                self.write((acked, retries, in_rows), |conn, args| {
                    Box::pin(async move {
                        let (acked, retries, holder) = &*args;
                        Self::delete_deliveries(&mut *conn, acked, holder.as_deref()).await?;
                        for RetryRow { id, due_at_ms, error, counted } in retries {
                            sqlx::query(
                                "UPDATE deliveries SET attempts = attempts + $1, due_at_ms = $2, last_error = $3, \
                             claimed_by = NULL, claimed_until_ms = NULL WHERE id = $4 \
                             AND ($5 IS NULL OR claimed_by = $5)",
                            )
                            .bind(i64::from(*counted))
                            .bind(*due_at_ms)
                            .bind(error)
                            .bind(*id)
                            .bind(holder.as_deref())
                            .execute(&mut *conn)
                            .await?;
                        }
                        Ok(())
                    })
                })
                .await?;
                if let Some(claims) = &self.claims {
                    claims.forget(settled);
                }
                Ok(())
            }
        }
    };
}

for_both!(deliveries);
