//! The read side: what the API, the console and the CLI show. Reads only, each in as few
//! queries as it needs (a page of orders with their timelines is one per store), so no
//! caller reaches into the saga's stores.

use crate::store::{
    Channel, HistoryRow, HostRow, OrderPage, OrderRow, OrderWithTimeline, OutboxLag, PendingTimer, RecordingRow,
    StockRow, StoreError, Stores, TimelineRow,
};
use std::sync::Arc;

/// Reads of the saga's stores.
#[derive(Debug, Clone)]
pub struct Query {
    stores: Arc<Stores>,
}

impl Query {
    pub fn new(stores: Arc<Stores>) -> Query {
        Query { stores }
    }

    /// An order with its events from every store.
    pub async fn order(&self, id: &str) -> Result<Option<OrderWithTimeline>, StoreError> {
        let Some(order) = self.stores.host().order(id).await? else {
            return Ok(None);
        };
        let timeline = self.timeline(id).await?;
        Ok(Some(OrderWithTimeline { order, timeline }))
    }

    /// An order's timers not fired yet, from every store, soonest first.
    pub async fn pending_timers(&self, id: &str) -> Result<Vec<PendingTimer>, StoreError> {
        let ids = [id.to_owned()];
        let mut timers = Vec::new();
        for store in self.stores.all() {
            timers.extend(store.pending_timers(&ids).await?);
        }
        timers.sort_by(|a, b| (a.due_at_ms, &a.event_id).cmp(&(b.due_at_ms, &b.event_id)));
        Ok(timers)
    }

    /// An order without its events.
    pub async fn order_row(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
        self.stores.host().order(id).await
    }

    /// An order's events from every store, oldest first.
    pub async fn timeline(&self, id: &str) -> Result<Vec<TimelineRow>, StoreError> {
        let ids = [id.to_owned()];
        let mut rows = Vec::new();
        for store in self.stores.all() {
            rows.extend(store.timelines(&ids).await?);
        }
        sort(&mut rows);
        Ok(rows)
    }

    /// A page of orders with their timelines: one query on the orders' store, and one on
    /// each other store for the events kept there.
    pub async fn order_page(&self, page: &OrderPage) -> Result<Vec<OrderWithTimeline>, StoreError> {
        let host = self.stores.host();
        let mut orders = host.order_page(page).await?;
        let others: Vec<_> = self.stores.all().into_iter().filter(|s| !Arc::ptr_eq(s, host)).collect();
        if others.is_empty() || orders.is_empty() {
            return Ok(orders);
        }
        let ids: Vec<String> = orders.iter().map(|o| o.order.id.clone()).collect();
        let mut by_order: std::collections::HashMap<String, Vec<TimelineRow>> = Default::default();
        for store in others {
            for row in store.timelines(&ids).await? {
                by_order.entry(row.order_id.clone()).or_default().push(row);
            }
        }
        for order in &mut orders {
            if let Some(rows) = by_order.remove(&order.order.id) {
                order.timeline.extend(rows);
                sort(&mut order.timeline);
            }
        }
        Ok(orders)
    }

    /// A page of orders without their events (the console's list).
    pub async fn orders(&self, page: &OrderPage) -> Result<Vec<OrderRow>, StoreError> {
        self.stores.host().orders(page).await
    }

    /// Orders per status.
    pub async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.stores.host().order_counts().await
    }

    pub async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
        self.stores.host().stock(sku).await
    }

    /// Hosts seen since `seen_after_ms`.
    pub async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError> {
        self.stores.host().hosts(seen_after_ms).await
    }

    /// The newest changes of a step's versions, newest first.
    pub async fn history(&self, step: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
        self.stores.host().history(step, limit).await
    }

    /// A step's sampled recordings, from the store that holds its state.
    pub async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError> {
        self.stores.for_consumer(step).recordings(step, limit).await
    }

    /// Dead letters in every store.
    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let mut count = 0;
        for store in self.stores.all() {
            count += store.dead_letters().await?.len() as i64;
        }
        Ok(count)
    }

    /// Each store's backend and outbox lag on `channel`, the default store first.
    pub async fn outbox_lags(&self, channel: Channel) -> Vec<(&'static str, Result<OutboxLag, StoreError>)> {
        let mut lags = Vec::new();
        for store in self.stores.all() {
            lags.push((store.backend(), store.outbox_lag(channel).await));
        }
        lags
    }
}

/// Event ids are time-ordered (UUIDv7), which breaks ties within a millisecond.
fn sort(rows: &mut [TimelineRow]) {
    rows.sort_by(|a, b| (a.at_ms, &a.event_id).cmp(&(b.at_ms, &b.event_id)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewOrder, StoreOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the statements sqlx runs on the orders and the outbox.
    struct Statements(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Summary(bool);
            impl tracing::field::Visit for Summary {
                fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                    if field.name() == "summary" {
                        let text = format!("{value:?}");
                        self.0 |= text.contains("orders") || text.contains("outbox") || text.contains("page");
                    }
                }
            }
            if event.metadata().target() == "sqlx::query" {
                let mut summary = Summary(false);
                event.record(&mut summary);
                if summary.0 {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn event(kind: &str, order_id: &str, at_ms: i64) -> crate::event::StoredEvent {
        crate::event::StoredEvent {
            id: crate::event::new_event_id(),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            payload: "{}".to_owned(),
            step: "host".to_owned(),
            step_version: "test".to_owned(),
            occurred_at_ms: at_ms,
            attempt: 1,
            trace: None,
        }
    }

    #[tokio::test]
    async fn a_page_of_orders_with_their_timelines_is_one_statement() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("orders.db").display());
        let options = StoreOptions { sqlite_synchronous: crate::store::SqliteSync::Normal, ..StoreOptions::default() };
        let store = crate::store::open(&url, &options).await.expect("store");
        for n in 0..500_i64 {
            let id = format!("o-{n:03}");
            let order = NewOrder {
                id: id.clone(),
                customer_id: "c".to_owned(),
                items: "[]".to_owned(),
                total_cents: n,
                created_at_ms: n,
                idempotency: None,
                placed: event("order.placed", &id, n),
            };
            store.create_order(&order, None).await.expect("order");
            store.emit(&event("payment.captured", &id, n + 1)).await.expect("event");
        }
        let counted = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Statements(counted.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of these tests");
        let query = Query::new(Stores::single(store));

        let page = query.order_page(&OrderPage { status: None, limit: 500, before_seq: None }).await.expect("page");

        assert_eq!(counted.load(Ordering::SeqCst), 1, "statements for a page of 500 orders with their timelines");
        assert_eq!(page.len(), 500);
        assert_eq!(page[0].order.id, "o-499", "newest first");
        for order in &page {
            let kinds: Vec<&str> = order.timeline.iter().map(|t| t.kind.as_str()).collect();
            assert_eq!(kinds, ["order.placed", "payment.captured"], "{}", order.order.id);
            assert!(order.timeline.iter().all(|t| t.order_id == order.order.id));
        }
        let older = OrderPage { status: None, limit: 10, before_seq: Some(page[9].order.seq) };
        let next = query.order_page(&older).await.expect("next page");
        assert_eq!(next.first().map(|o| o.order.id.as_str()), Some("o-489"), "the page after the tenth order");
        let none = OrderPage { status: Some("completed".to_owned()), limit: 10, before_seq: None };
        assert!(query.order_page(&none).await.expect("filtered").is_empty());
    }
}
