//! The store's roles: one trait per part of the schema, so a caller names only the part it
//! uses (the registry a [`FleetStore`], the relay an [`OutboxStore`]). [`Store`] is all of
//! them, what a backend implements.

use super::*;
use async_trait::async_trait;

/// Orders, their timelines and the stock read model: what the API shows and the host's
/// order logic changes.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Insert the order, its idempotency key and its `order.placed` event atomically.
    /// With `queued`, `placed`'s deliveries are queued in the same transaction (see
    /// [`BatchCommit::queued`]).
    async fn create_order(&self, order: &NewOrder, queued: Option<&[Queued]>) -> Result<Created, StoreError>;
    async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError>;
    /// A page of orders without their events.
    async fn orders(&self, page: &OrderPage) -> Result<Vec<OrderRow>, StoreError>;
    /// The events of `order_ids` in this store, oldest first, in one query.
    async fn timelines(&self, order_ids: &[String]) -> Result<Vec<TimelineRow>, StoreError>;
    /// A page of orders with their events in this store, in one query.
    async fn order_page(&self, page: &OrderPage) -> Result<Vec<OrderWithTimeline>, StoreError>;
    /// Apply one transition (an API cancel); true if it applied.
    async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError>;
    async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError>;
    /// Orders per status, for metrics.
    async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Orders of any status unchanged for `stall_ms` but changed since `since_ms` whose
    /// check is due and that were not found complete since their last change; each
    /// returned order's next check is pushed back by `stall_ms` × its checks.
    /// Up to `limit` orders still pending that were placed at or before `placed_before_ms`,
    /// oldest first.
    async fn overdue_orders(&self, placed_before_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;

    async fn stalled_orders(
        &self,
        now_ms: i64,
        stall_ms: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CheckedOrder>, StoreError>;
    /// The relayed events of `order_ids` that occurred since `since_ms`, for the redrive
    /// to compare with its consumers' inboxes.
    async fn events_of(&self, order_ids: &[String], since_ms: i64) -> Result<Vec<StoredEvent>, StoreError>;
    /// Record that every event of these ended orders was handled or dead-lettered by all
    /// its consumers: no more checks until the order changes again.
    async fn mark_checked(&self, orders: &[CheckedOrder]) -> Result<(), StoreError>;
}

/// The outbox: events written with the change that caused them, read by the relays.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Write one event of the host (e.g. `stock.set`) to the outbox.
    async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError>;
    /// Outbox rows not yet relayed to `channel`, oldest first.
    async fn unrelayed(&self, channel: Channel, limit: u32) -> Result<Vec<(i64, StoredEvent)>, StoreError>;
    async fn mark_relayed(&self, channel: Channel, seqs: &[i64], now_ms: i64) -> Result<(), StoreError>;
    async fn outbox_lag(&self, channel: Channel) -> Result<OutboxLag, StoreError>;
    /// Move up to `limit` timers due by the store's clock into the outbox, each in the
    /// same transaction as its removal, so a timer fires once however many hosts try at
    /// once. Returns how many moved.
    async fn fire_timers(&self, limit: u32) -> Result<usize, StoreError>;
    /// The timers of `order_ids` not fired yet, soonest first.
    async fn pending_timers(&self, order_ids: &[String]) -> Result<Vec<PendingTimer>, StoreError>;
}

/// The embedded transport's deliveries: queued per consumer, claimed, settled.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Whether this store queues [`BatchCommit::queued`] deliveries with the events.
    fn queues_with_commit(&self) -> bool {
        false
    }
    /// Replace the kinds `consumer` receives on the embedded transport. Kept in the
    /// consumer's store, so events for a step that is not loaded wait for it.
    async fn set_subscriptions(&self, consumer: &str, patterns: &[String]) -> Result<(), StoreError>;
    /// Every (consumer, pattern) of this store.
    async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Queue `(consumer, event id, wire JSON)` deliveries; one already queued is kept.
    /// With `relayed`, the outbox rows they came from are marked relayed on that
    /// channel in the same transaction.
    async fn enqueue(
        &self,
        deliveries: &[(String, String, String)],
        now_ms: i64,
        relayed: Option<(Channel, &[i64])>,
    ) -> Result<(), StoreError>;
    /// Claim up to `limit` deliveries of `consumer` due by `now_ms` for `holder`, for
    /// `lease_ms`; a delivery claimed by someone else is skipped until its claim expires.
    /// Claims start and expire by the store's clock, so hosts whose clocks disagree
    /// agree on them. Returned in queue order.
    async fn claim(
        &self,
        consumer: &str,
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Drop every claim of `holder` (at its start: the claims of its previous run).
    async fn release_claims(&self, holder: &str) -> Result<(), StoreError>;
    /// Extend every claim of `holder` to `lease_ms` from now (store clock): a batch
    /// that runs longer than a lease keeps its deliveries.
    async fn renew_claims(&self, holder: &str, lease_ms: i64) -> Result<(), StoreError>;
    /// When the next delivery of `consumer` falls due (or its claim expires).
    async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError>;
    /// Remove acknowledged deliveries and reschedule failed ones
    /// `(id, due at, error, whether the attempt counts)`, dropping their claims. Only
    /// deliveries `holder` still claims are touched: one whose claim passed to another
    /// host is that host's to settle.
    async fn settle(&self, holder: &str, acked: &[i64], retries: &[RetryRow]) -> Result<(), StoreError>;
}

/// What a consumer keeps: its inbox, its state, pins and overrides of versions, and its
/// handled batches, committed whole.
#[async_trait]
pub trait ConsumerStore: Send + Sync {
    /// Which of `event_ids` `consumer` has already handled.
    async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError>;
    async fn state_get(&self, step: &str, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Whether [`ConsumerStore::state_get_many`] reads its keys in one round trip (not
    /// one per key): only then is reading ahead worth its guesses.
    fn reads_many_at_once(&self) -> bool {
        false
    }
    /// The present ones of `keys`, as [`ConsumerStore::state_get`] would read each.
    async fn state_get_many(&self, step: &str, keys: &[String]) -> Result<HashMap<String, Versioned>, StoreError> {
        let mut found = HashMap::new();
        for key in keys {
            if let Some(versioned) = self.state_get(step, key).await? {
                found.insert(key.clone(), versioned);
            }
        }
        Ok(found)
    }
    /// Commit a handled batch: inbox, state, outbox, order transitions, stock, dead
    /// letters. [`StoreError::Conflict`] when another writer handled one of its events or
    /// changed state it read: nothing is committed, and the batch is run again.
    async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError>;
    /// The versions that handled the first event of each of `order_ids` for `step`.
    async fn pins(&self, step: &str, order_ids: &[String]) -> Result<HashMap<String, String>, StoreError>;
    /// Version overrides (a dead letter replayed on a chosen version) of `event_ids`.
    async fn overrides(&self, consumer: &str, event_ids: &[String]) -> Result<HashMap<String, String>, StoreError>;
    async fn set_override(&self, consumer: &str, event_id: &str, digest: &str) -> Result<(), StoreError>;
    /// The newest `limit` sampled recordings of `step`.
    async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError>;
}

/// Deliveries a consumer gave up on, with the recording of their last attempt.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError>;
    /// Remove a dead letter and return it (for replay or discard).
    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
    /// Make a dead letter's event deliverable again: remove the consumer's inbox mark
    /// for it and return the dead letter, which stays listed until `take_dead_letter`.
    async fn reopen_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
    /// Queue `event` for `consumer` with a fresh attempt count, replacing a queued one.
    async fn requeue(&self, consumer: &str, event_id: &str, event: &str, now_ms: i64) -> Result<(), StoreError>;
    /// The recording kept with a dead letter.
    async fn dead_letter_recording(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// A dead letter (without its recording).
    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError>;
}

/// What the hosts of a fleet share: leases, the registry of versions, its history, and
/// the hosts themselves.
#[async_trait]
pub trait FleetStore: Send + Sync {
    /// Whether one process owns this store (SQLite's lock file), so no other host can
    /// share it.
    fn exclusive(&self) -> bool {
        false
    }
    /// Take or renew the lease `name` for `holder` for `ttl_ms`, by the store's clock
    /// (hosts' clocks may disagree); true if held.
    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Give the lease up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Keep a component version (a version already kept is left as it is).
    async fn put_version(&self, version: &VersionRow) -> Result<(), StoreError>;
    async fn version(&self, digest: &str) -> Result<Option<VersionRow>, StoreError>;
    /// Digests of every kept version of `name`.
    async fn version_digests(&self, name: &str) -> Result<Vec<String>, StoreError>;
    async fn slots(&self) -> Result<Vec<SlotRow>, StoreError>;
    /// Set `slot` if the stored generation is `expected` (0: no slot yet); true if set.
    async fn set_slot(&self, slot: &SlotRow, expected: i64) -> Result<bool, StoreError>;
    async fn add_history(&self, entry: &HistoryRow) -> Result<(), StoreError>;
    /// The newest `limit` history entries of `name`, newest first.
    async fn history(&self, name: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError>;
    /// Record that `host` is alive.
    async fn heartbeat(&self, host: &HostRow) -> Result<(), StoreError>;
    /// Hosts seen at or after `seen_after_ms`.
    async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError>;
    /// Remove a host's row (at a clean stop).
    async fn remove_host(&self, host_id: &str) -> Result<(), StoreError>;
}

/// A whole store: every role, and what spans them.
#[async_trait]
pub trait Store: OrderStore + OutboxStore + DeliveryStore + ConsumerStore + DeadLetterStore + FleetStore {
    /// A short name of the backend, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Remove rows older than the cutoffs, at most `limit` of each kind per call.
    async fn prune(&self, cutoffs: &Cutoffs, limit: u32) -> Result<Pruned, StoreError>;
}
