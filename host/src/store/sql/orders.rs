//! [`OrderStore`] on SQLite and PostgreSQL.

use super::*;

macro_rules! orders {
    ($store:ty, $db:ty, $conn:ty, $name:literal, $lock:literal, $skip_locked:literal, $now:literal) => {
        #[async_trait]
        impl OrderStore for $store {
            async fn create_order(&self, order: &NewOrder, queued: Option<&[Queued]>) -> Result<Created, StoreError> {
                let args = (order.clone(), queued.map(<[Queued]>::to_vec), self.relay.clone());
                self.write(args, |conn, args| Box::pin(async move {
                    let (order, queued, relay) = &*args;
                    let placed = &order.placed;
                    if let Some(Idempotency { key, body_hash: hash }) = &order.idempotency {
                        let inserted = sqlx::query(
                            "INSERT INTO idempotency_keys (key, body_hash, order_id, created_at_ms) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                        )
                        .bind(&key)
                        .bind(&hash)
                        .bind(&order.id)
                        .bind(order.created_at_ms)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                        if inserted == 0 {
                            let row = sqlx::query("SELECT order_id, body_hash FROM idempotency_keys WHERE key = $1")
                                .bind(&key)
                                .fetch_one(&mut *conn)
                                .await?;
                            return Ok(Created::Existing { order_id: row.try_get(0)?, body_hash: row.try_get(1)? });
                        }
                    }
                    sqlx::query(
                        "INSERT INTO orders (id, customer_id, status, total_cents, items, created_at_ms, updated_at_ms) \
                         VALUES ($1, $2, 'pending', $3, $4, $5, $5)",
                    )
                    .bind(&order.id)
                    .bind(&order.customer_id)
                    .bind(order.total_cents)
                    .bind(&order.items)
                    .bind(order.created_at_ms)
                    .execute(&mut *conn)
                    .await?;
                    let now_ms = clock_ms();
                    let queued = match queued {
                        Some(queued) if Self::relay_idle(&mut *conn, relay).await? => Some(queued),
                        _ => None,
                    };
                    let relayed_at_ms = queued.is_some().then_some(now_ms);
                    Self::insert_events(&mut *conn, std::slice::from_ref(placed), relayed_at_ms, relay).await?;
                    if let Some(queued) = &queued {
                        Self::insert_deliveries(&mut *conn, queued.iter(), now_ms).await?;
                    }
                    Ok(Created::New)
                }))
                .await
            }

            async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *conn).await;
                let row = conn.read(fetched)?;
                Ok(row.map(|r| OrderRow::from_row(&r)).transpose()?)
            }

            async fn orders(&self, page: &OrderPage) -> Result<Vec<OrderRow>, StoreError> {
                let mut query = QueryBuilder::<$db>::new(concat!("SELECT ", order_columns!(), " FROM orders"));
                push_page(&mut query, page);
                let rows = query.build().fetch_all(&self.reader).await?;
                Ok(rows.iter().map(OrderRow::from_row).collect::<Result<_, _>>()?)
            }

            async fn timelines(&self, order_ids: &[String]) -> Result<Vec<TimelineRow>, StoreError> {
                if order_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::<$db>::new(concat!("SELECT ", timeline_columns!(), " FROM outbox e WHERE e.order_id IN "));
                push_list!(query, order_ids);
                query.push(" ORDER BY e.seq");
                let mut conn = self.lane.get().await?;
                let fetched = query.build().fetch_all(&mut *conn).await;
                let rows = conn.read(fetched)?;
                Ok(rows.iter().map(TimelineRow::from_row).collect::<Result<_, _>>()?)
            }

            async fn order_page(&self, page: &OrderPage) -> Result<Vec<OrderWithTimeline>, StoreError> {
                // The page's orders, each joined with its events: one statement for the page.
                let mut query = QueryBuilder::<$db>::new(concat!("WITH page AS (SELECT ", order_columns!(), " FROM orders"));
                push_page(&mut query, page);
                query.push(concat!(
                    ") SELECT page.*, ", timeline_columns!(),
                    " FROM page LEFT JOIN outbox e ON e.order_id = page.id ORDER BY page.seq DESC, e.seq"
                ));
                let rows = query.build().fetch_all(&self.reader).await?;
                let mut orders: Vec<OrderWithTimeline> = Vec::new();
                for row in &rows {
                    let seq: i64 = row.try_get("seq")?;
                    if orders.last().is_none_or(|o| o.order.seq != seq) {
                        orders.push(OrderWithTimeline { order: OrderRow::from_row(row)?, timeline: Vec::new() });
                    }
                    let event: Option<String> = row.try_get("event_id")?;
                    if event.is_some()
                        && let Some(last) = orders.last_mut()
                    {
                        last.timeline.push(TimelineRow::from_row(row)?);
                    }
                }
                Ok(orders)
            }

            async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let applied = Self::apply_transitions(&mut *tx, std::slice::from_ref(transition), None, &self.relay).await?.is_empty();
                tx.commit().await?;
                Ok(applied)
            }

            async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
                let mut conn = self.lane.get().await?;
                let fetched = sqlx::query("SELECT sku, available, reserved, sold, seq FROM stock WHERE sku = $1")
                    .bind(sku)
                    .fetch_optional(&mut *conn).await;
                let row = conn.read(fetched)?;
                row.as_ref().map(StockRow::from_row)
                .transpose()
                .map_err(|e: sqlx::Error| e.into())
            }

            async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
                let rows =
                    sqlx::query("SELECT status, COUNT(*) FROM orders GROUP BY status").fetch_all(&self.reader).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn overdue_orders(&self, placed_before_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM orders WHERE status = 'pending' AND created_at_ms <= $1 \
                     ORDER BY created_at_ms LIMIT $2",
                )
                .bind(placed_before_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                Ok(ids)
            }

            async fn stalled_orders(
                &self,
                now_ms: i64,
                stall_ms: i64,
                since_ms: i64,
                limit: u32,
            ) -> Result<Vec<CheckedOrder>, StoreError> {
                // `redrives = -1`: found complete since its last change (a transition sets 0).
                let rows = sqlx::query(
                    "UPDATE orders SET redrives = redrives + 1, next_redrive_at_ms = $1 + $2 * (redrives + 1) \
                     WHERE id IN (SELECT id FROM orders WHERE redrives >= 0 AND updated_at_ms <= $1 - $2 \
                     AND updated_at_ms >= $4 AND COALESCE(next_redrive_at_ms, 0) <= $1 \
                     ORDER BY updated_at_ms LIMIT $3) RETURNING id, status, updated_at_ms",
                )
                .bind(now_ms)
                .bind(stall_ms)
                .bind(i64::from(limit))
                .bind(since_ms)
                .fetch_all(&self.writer)
                .await?;
                rows.iter()
                    .map(|r| Ok(CheckedOrder { id: r.try_get(0)?, status: r.try_get(1)?, updated_at_ms: r.try_get(2)? }))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(Into::into)
            }

            async fn events_of(&self, order_ids: &[String], since_ms: i64) -> Result<Vec<StoredEvent>, StoreError> {
                let mut events = Vec::new();
                for chunk in order_ids.chunks(500) {
                    let mut query = QueryBuilder::<$db>::new(concat!("SELECT ", event_columns!(), " FROM outbox WHERE "));
                    query.push("relayed_at_ms IS NOT NULL AND occurred_at_ms >= ").push_bind(since_ms);
                    query.push(" AND order_id IN ");
                    push_list!(query, chunk);
                    query.push(" ORDER BY seq");
                    let rows = query.build().fetch_all(&self.reader).await?;
                    for row in &rows {
                        events.push(stored_event(row)?);
                    }
                }
                Ok(events)
            }

            async fn mark_checked(&self, orders: &[CheckedOrder]) -> Result<(), StoreError> {
                for chunk in orders.chunks(200) {
                    // Only if unchanged since the check: a later transition needs a check of its own.
                    let mut query = QueryBuilder::<$db>::new("UPDATE orders SET redrives = -1 WHERE ");
                    for (i, order) in chunk.iter().enumerate() {
                        if i > 0 {
                            query.push(" OR ");
                        }
                        query.push("(id = ").push_bind(&order.id);
                        query.push(" AND updated_at_ms = ").push_bind(order.updated_at_ms).push(")");
                    }
                    query.build().execute(&self.writer).await?;
                }
                Ok(())
            }
        }
    };
}

for_both!(orders);
