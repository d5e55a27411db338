//! [`OrderStore`] on SQL Server.

use super::*;

#[async_trait]
impl OrderStore for MssqlStore {
    // `queued` is never given: this store does not queue with a commit (`queues_with_commit`).
    async fn create_order(&self, order: &NewOrder, _queued: Option<&[Queued]>) -> Result<Created, StoreError> {
        in_tx!(self, |conn| {
            if let Some(Idempotency { key, body_hash: hash }) = &order.idempotency {
                let inserted =
                    insert_guarded(conn, sql::INSERT_IDEMPOTENCY, &[key, hash, &order.id, &order.created_at_ms])
                        .await?;
                if inserted == 0 {
                    let found = rows(conn, sql::SELECT_IDEMPOTENCY, &[key]).await?;
                    let row = found.first().ok_or_else(|| StoreError::Query("idempotency key vanished".into()))?;
                    return Ok(Created::Existing { order_id: text(row, 0)?, body_hash: text(row, 1)? });
                }
            }
            exec(
                conn,
                sql::INSERT_ORDER,
                &[&order.id, &order.customer_id, &order.total_cents, &order.items, &order.created_at_ms],
            )
            .await?;
            insert_event(conn, &order.placed).await?;
            Ok(Created::New)
        })
    }

    async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_ORDER, &[&id]).await?;
        found.first().map(|r| OrderRow::from_columns(r, 0)).transpose()
    }

    async fn orders(&self, page: &OrderPage) -> Result<Vec<OrderRow>, StoreError> {
        let (limit, status) = (i64::from(page.limit), or_empty(page.status.as_deref()));
        let found = rows(&mut *self.conn().await?, sql::SELECT_ORDERS, &[&limit, &status, &page.before_seq]).await?;
        all(&found)
    }

    async fn timelines(&self, order_ids: &[String]) -> Result<Vec<TimelineRow>, StoreError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_list(order_ids);
        let found = rows(&mut *self.conn().await?, sql::SELECT_TIMELINES, &[&ids]).await?;
        all(&found)
    }

    async fn order_page(&self, page: &OrderPage) -> Result<Vec<OrderWithTimeline>, StoreError> {
        let (limit, status) = (i64::from(page.limit), or_empty(page.status.as_deref()));
        let found =
            rows(&mut *self.conn().await?, sql::SELECT_ORDER_PAGE, &[&limit, &status, &page.before_seq]).await?;
        let mut orders: Vec<OrderWithTimeline> = Vec::new();
        for row in &found {
            let seq = int(row, 0)?;
            if orders.last().is_none_or(|o| o.order.seq != seq) {
                orders.push(OrderWithTimeline { order: OrderRow::from_columns(row, 0)?, timeline: Vec::new() });
            }
            if opt_text(row, 10)?.is_some()
                && let Some(last) = orders.last_mut()
            {
                last.timeline.push(TimelineRow::from_columns(row, 9)?);
            }
        }
        Ok(orders)
    }

    async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError> {
        in_tx!(self, |conn| { apply_transition(conn, transition).await })
    }

    async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_STOCK, &[&sku]).await?;
        found.first().map(|r| StockRow::from_columns(r, 0)).transpose()
    }

    async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::ORDER_COUNTS, &[]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, int(r, 1)?))).collect()
    }

    async fn overdue_orders(&self, placed_before_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::OVERDUE_ORDERS, &[&placed_before_ms, &limit]).await?;
        found.iter().map(|row| text(row, 0)).collect()
    }

    async fn stalled_orders(
        &self,
        now_ms: i64,
        stall_ms: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CheckedOrder>, StoreError> {
        let limit = i64::from(limit);
        let args: [&dyn tiberius::ToSql; 4] = [&now_ms, &stall_ms, &limit, &since_ms];
        let found = rows(&mut *self.conn().await?, sql::STALLED_ORDERS, &args).await?;
        all(&found)
    }

    async fn events_of(&self, order_ids: &[String], since_ms: i64) -> Result<Vec<StoredEvent>, StoreError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = rows(&mut *self.conn().await?, sql::EVENTS_OF_ORDERS, &[&json_list(order_ids), &since_ms]).await?;
        all(&found)
    }

    async fn mark_checked(&self, orders: &[CheckedOrder]) -> Result<(), StoreError> {
        if orders.is_empty() {
            return Ok(());
        }
        let list: Vec<serde_json::Value> =
            orders.iter().map(|o| serde_json::json!({ "id": o.id, "updated_at_ms": o.updated_at_ms })).collect();
        let list = serde_json::Value::Array(list).to_string();
        exec(&mut *self.conn().await?, sql::MARK_CHECKED, &[&list]).await.map(|_| ())
    }
}
