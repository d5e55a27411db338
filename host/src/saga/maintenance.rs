//! Upkeep that keeps a long-running fleet healthy: each host's heartbeat; and, on one
//! host at a time (the holder of the `maintenance` lease in the host store), the redrive
//! of stalled orders and the retention job.
//!
//! **Redrive:** an order of any status unchanged for `redrive_after` has its events
//! compared with the inboxes of every consumer subscribed to them; an event a consumer
//! has neither handled nor dead-lettered (a message a broker lost: a deleted queue, a
//! broker restarted without its log) is published again to that consumer alone. A
//! pending order is checked again later, each time waiting longer; an ended order found
//! complete is not checked again until it changes. Only events younger than half the
//! inbox retention are looked at, so an event published again still has its inbox row
//! wherever it was handled: nothing is handled twice.
//!
//! **Retention:** handled inbox rows, relayed outbox rows and idempotency keys older than
//! their settings are removed in bounded chunks; dead letters and their inbox marks never
//! are. Compiled components no loaded version uses are removed from the compile cache.

use super::SagaContext;
use crate::event::StoredEvent;
use crate::event::now_ms;
use crate::store::{CheckedOrder, Cutoffs, HostRow};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a host says it is alive; hosts not seen for [`HOST_TTL`] are not listed.
const HEARTBEAT: Duration = Duration::from_secs(2);
pub const HOST_TTL: Duration = Duration::from_secs(10);
/// Rows of each kind one retention round removes per store.
const PRUNE_CHUNK: u32 = 10_000;
/// Orders one redrive round looks at.
const REDRIVE_BATCH: u32 = 200;
/// Compile cache entries younger than this are kept even if unused (an upload in flight).
const CACHE_GRACE: Duration = Duration::from_secs(3600);

pub(super) async fn run(ctx: Arc<SagaContext>, mut stopped: watch::Receiver<bool>) {
    let mut last_upkeep = tokio::time::Instant::now();
    // A swap is reported at once, so the fleet's list of hosts says what each serves.
    let mut swaps = ctx.registry.watch();
    loop {
        heartbeat(&ctx).await;
        if last_upkeep.elapsed() >= ctx.config.maintenance_every {
            last_upkeep = tokio::time::Instant::now();
            if holds_lease(&ctx).await {
                redrive(&ctx).await;
                prune(&ctx).await;
            }
            prune_compile_cache(&ctx);
        }
        tokio::select! {
            _ = stopped.changed() => break,
            _ = swaps.changed() => {}
            () = tokio::time::sleep(HEARTBEAT.min(ctx.config.maintenance_every)) => {}
        }
    }
    // A clean stop leaves the list at once; a killed host ages out of it.
    let _ = ctx.host_store().remove_host(&ctx.host_id).await;
}

async fn heartbeat(ctx: &SagaContext) {
    let steps: serde_json::Map<String, serde_json::Value> = ctx
        .registry
        .snapshot()
        .iter()
        .map(|(name, slot)| (name.clone(), serde_json::Value::String(slot.current.digest.to_string())))
        .collect();
    let row = HostRow {
        host_id: ctx.host_id.clone(),
        http_addr: ctx.http_addr.clone(),
        started_at_ms: ctx.started_at_ms,
        seen_at_ms: now_ms(),
        steps: serde_json::Value::Object(steps).to_string(),
    };
    if let Err(error) = ctx.host_store().heartbeat(&row).await {
        tracing::warn!(%error, "cannot record this host's heartbeat");
    }
}

async fn holds_lease(ctx: &SagaContext) -> bool {
    let ttl = i64::try_from((ctx.config.maintenance_every * 3).as_millis()).unwrap_or(i64::MAX);
    ctx.host_store().try_lease("maintenance", &ctx.host_id, now_ms(), ttl).await.unwrap_or(false)
}

async fn redrive(ctx: &SagaContext) {
    let stall = i64::try_from(ctx.config.redrive_after.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let since = now.saturating_sub(i64::try_from((ctx.config.retain_inbox / 2).as_millis()).unwrap_or(i64::MAX));
    let orders = match ctx.host_store().stalled_orders(now, stall, since, REDRIVE_BATCH).await {
        Ok(orders) if orders.is_empty() => return,
        Ok(orders) => orders,
        Err(error) => {
            tracing::warn!(%error, "cannot look for orders to check");
            return;
        }
    };
    let ids: Vec<String> = orders.iter().map(|o| o.id.clone()).collect();
    let mut events = Vec::new();
    for store in ctx.stores.all() {
        match store.events_of(&ids, since).await {
            Ok(found) => events.extend(found),
            Err(error) => {
                tracing::warn!(%error, "cannot read the events of orders to check");
                return;
            }
        }
    }
    // Event ids by the consumer that should have handled them.
    let mut expected: BTreeMap<String, Vec<&StoredEvent>> = BTreeMap::new();
    for event in &events {
        for consumer in consumers_of(ctx, &event.kind) {
            expected.entry(consumer).or_default().push(event);
        }
    }
    let mut incomplete: HashSet<&str> = HashSet::new();
    let mut published = 0u64;
    for (consumer, events) in &expected {
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let handled = match ctx.stores.for_consumer(consumer).handled(consumer, &ids).await {
            Ok(handled) => handled,
            Err(error) => {
                tracing::warn!(%consumer, %error, "cannot read a consumer's inbox for the redrive");
                events.iter().for_each(|e| _ = incomplete.insert(&e.order_id));
                continue;
            }
        };
        for event in events.iter().filter(|e| !handled.contains(&e.id)) {
            incomplete.insert(&event.order_id);
            match ctx.source_for(consumer).redeliver(consumer, event).await {
                Ok(()) => published += 1,
                Err(error) => {
                    tracing::warn!(%consumer, event_id = %event.id, %error, "cannot publish a lost event again")
                }
            }
        }
    }
    // Ended orders whose every event is handled need no check until they change again.
    let complete: Vec<CheckedOrder> = orders
        .into_iter()
        .filter(|o| o.status != super::orders::PENDING && !incomplete.contains(o.id.as_str()))
        .collect();
    if let Err(error) = ctx.host_store().mark_checked(&complete).await {
        tracing::warn!(%error, "cannot record checked orders; they will be checked again");
    }
    if published > 0 {
        metrics::counter!("wasaga_redriven_events_total").increment(published);
        tracing::warn!(
            orders = incomplete.len(),
            events = published,
            "events no consumer handled were published again to their consumers"
        );
    }
}

/// The consumers subscribed to `kind`: the steps (those reading the transport) and the
/// host's order logic.
fn consumers_of(ctx: &SagaContext, kind: &str) -> Vec<String> {
    let mut consumers: Vec<String> = ctx
        .registry
        .subscribers(kind)
        .iter()
        .map(|step| step.name.to_string())
        .filter(|step| !ctx.reads_stream(step))
        .collect();
    if super::orders::HOST_KINDS.contains(&kind) {
        consumers.push(super::HOST_CONSUMER.to_owned());
    }
    consumers
}

async fn prune(ctx: &SagaContext) {
    let before = |keep: Duration| now_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let cutoffs = Cutoffs {
        inbox_before_ms: before(ctx.config.retain_inbox),
        outbox_before_ms: before(ctx.config.retain_outbox),
        idempotency_before_ms: before(ctx.config.retain_idempotency),
        pins_before_ms: before(ctx.config.retain_pins),
        stream: ctx.stream.is_some(),
    };
    for store in ctx.stores.all() {
        match store.prune(&cutoffs, PRUNE_CHUNK).await {
            Ok(pruned) if pruned != Default::default() => {
                metrics::counter!("wasaga_pruned_rows_total", "table" => "inbox").increment(pruned.inbox);
                metrics::counter!("wasaga_pruned_rows_total", "table" => "outbox").increment(pruned.outbox);
                metrics::counter!("wasaga_pruned_rows_total", "table" => "idempotency_keys")
                    .increment(pruned.idempotency_keys);
                tracing::info!(
                    inbox = pruned.inbox,
                    outbox = pruned.outbox,
                    idempotency_keys = pruned.idempotency_keys,
                    "retention removed old rows"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention could not prune a store"),
        }
    }
}

/// Each host's own compile cache: entries of versions it no longer has loaded.
fn prune_compile_cache(ctx: &SagaContext) {
    let in_use: Vec<String> = ctx
        .registry
        .snapshot()
        .values()
        .flat_map(|slot| std::iter::once(&slot.current).chain(slot.previous.iter()))
        .map(|step| step.digest.trim_start_matches("sha256:").to_owned())
        .collect();
    if let Some(cache) = ctx.registry.runtime().cache() {
        let removed = cache.prune(&in_use, CACHE_GRACE);
        if removed > 0 {
            tracing::info!(removed, "removed compiled components no version uses");
        }
    }
}
