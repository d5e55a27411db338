//! Upkeep that keeps a long-running fleet healthy: each host's heartbeat; and, on one
//! host at a time (the holder of the `maintenance` lease in the host store), the redrive
//! of stalled orders and the retention job.
//!
//! **Redrive:** an order of any status unchanged for `redrive_after` has its events
//! compared with the inboxes of every consumer subscribed to them; an event a consumer
//! has neither handled nor dead-lettered (a message a broker lost: a deleted queue, a
//! broker restarted without its log) is published again to that consumer alone. A
//! stream reader's (analytics on Kafka) is published again to the stream, which every
//! group reads and whose other groups' inboxes drop it, once the reader's group has
//! settled every message on the stream: before that, the event may still be on its way. A
//! pending order is checked again later, each time waiting longer; an ended order found
//! complete is not checked again until it changes. Only events younger than half the
//! inbox retention are looked at, so an event published again still has its inbox row
//! wherever it was handled: nothing is handled twice.
//!
//! **Deadlines:** with `order_deadline_secs`, an order still pending that long after it
//! was placed is cancelled (`cancel_reason: "deadline"`) and compensated like any cancel.
//!
//! **Retention:** handled inbox rows, relayed outbox rows and idempotency keys older than
//! their settings are removed in bounded chunks; so are the per-order state of finished
//! orders past both (steps that allow it), plugin versions nothing can need any more,
//! and hosts gone for an hour; dead letters and their inbox marks never are. Compiled components no loaded version uses are removed from the compile cache.

use super::SagaContext;
use crate::event::StoredEvent;
use crate::event::now_ms;
use crate::shutdown::Shutdown;
use crate::store::{CheckedOrder, Cutoffs, HostRow};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How often a host says it is alive; hosts not seen for [`HOST_TTL`] are not listed.
const HEARTBEAT: Duration = Duration::from_secs(2);
pub const HOST_TTL: Duration = Duration::from_secs(10);
/// Rows of each kind one retention round removes per store.
const PRUNE_CHUNK: u32 = 10_000;
/// Orders one redrive round looks at.
const REDRIVE_BATCH: u32 = 200;
/// Host rows not seen for this long (and leases ended this long ago) are removed.
const DEAD_HOSTS: Duration = Duration::from_secs(3600);
/// Compile cache entries younger than this are kept even if unused (an upload in flight).
const CACHE_GRACE: Duration = Duration::from_secs(3600);

pub(super) async fn run(ctx: Arc<SagaContext>, stopped: Shutdown) {
    let mut last_upkeep = tokio::time::Instant::now();
    // A swap is reported at once, so the fleet's list of hosts says what each serves.
    let mut swaps = ctx.registry.watch();
    loop {
        renew_host_id(&ctx).await;
        heartbeat(&ctx).await;
        if last_upkeep.elapsed() >= ctx.config.maintenance_every {
            last_upkeep = tokio::time::Instant::now();
            if holds_lease(&ctx).await {
                expire(&ctx).await;
                redrive(&ctx).await;
                prune(&ctx).await;
            }
            prune_compile_cache(&ctx);
        }
        tokio::select! {
            () = stopped.stopping() => break,
            _ = swaps.changed() => {}
            () = tokio::time::sleep(HEARTBEAT.min(ctx.config.maintenance_every)) => {}
        }
    }
    // A clean stop leaves the list at once; a killed host ages out of it.
    let _ = ctx.host_store().remove_host(&ctx.host_id).await;
    let _ = ctx.host_store().release_lease(&identity_lease(&ctx.host_id), &ctx.instance).await;
}

/// How long a host id stays taken after its process last renewed it: a host killed
/// without a clean stop frees its id after this.
pub const IDENTITY_TTL: Duration = Duration::from_secs(8);

fn identity_lease(host_id: &str) -> String {
    format!("host.{host_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "another host is running with WASAGA_HOST_ID={0} on this store (it renewed its id within the last {1} s): \
         give every host its own WASAGA_HOST_ID, or stop the other one first"
    )]
    Taken(String, u64),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Take `host_id` in the fleet for this process: its lease in the store (by the store's
/// clock) names a fresh instance, renewed with every heartbeat. Two processes sharing an
/// id would share every claim, lease and Kafka membership, so a second one is refused.
/// An id still held by a process that stopped without releasing it (killed) is free once
/// its lease ends, so a restart after a crash waits at most [`IDENTITY_TTL`]. Returns the
/// instance.
pub async fn claim_host_id(store: &Arc<dyn crate::store::Store>, host_id: &str) -> Result<String, IdentityError> {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let instance = hex::encode(bytes);
    if store.exclusive() {
        // One process owns the store: no other host can share it, nor the id.
        return Ok(instance);
    }
    let lease = identity_lease(host_id);
    let ttl = i64::try_from(IDENTITY_TTL.as_millis()).unwrap_or(8_000);
    // Held for a whole TTL by someone else means renewed meanwhile: a live process.
    let give_up = tokio::time::Instant::now() + IDENTITY_TTL + HEARTBEAT;
    let mut said = false;
    loop {
        if store.try_lease(&lease, &instance, ttl).await? {
            return Ok(instance);
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(IdentityError::Taken(host_id.to_owned(), IDENTITY_TTL.as_secs()));
        }
        if !said {
            said = true;
            tracing::warn!(%host_id, "this host id is held by another process (or by this host's run before a crash); \
                waiting for its lease to end");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Renew this process's hold on its host id; losing it means another process took the
/// id while this one did not renew (paused, cut off from the store).
async fn renew_host_id(ctx: &SagaContext) {
    if ctx.host_store().exclusive() {
        return;
    }
    let ttl = i64::try_from(IDENTITY_TTL.as_millis()).unwrap_or(8_000);
    match ctx.host_store().try_lease(&identity_lease(&ctx.host_id), &ctx.instance, ttl).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(host_id = %ctx.host_id,
            "another process now runs with this host id: give every host its own WASAGA_HOST_ID"),
        Err(error) => tracing::warn!(%error, "cannot renew this host's id"),
    }
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
    ctx.host_store().try_lease("maintenance", &ctx.host_id, ttl).await.unwrap_or(false)
}

/// Orders one deadline round cancels.
const DEADLINE_BATCH: u32 = 500;

/// Cancel the orders still pending past `order_deadline` (each compensated like any
/// cancel). The cancel is a compare-and-set from pending: a completion racing it wins or
/// loses, and a host that lost the lease midway cancels nothing twice.
async fn expire(ctx: &SagaContext) {
    let Some(deadline) = ctx.config.order_deadline else { return };
    let cutoff = now_ms().saturating_sub(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX));
    let overdue = match ctx.host_store().overdue_orders(cutoff, DEADLINE_BATCH).await {
        Ok(overdue) => overdue,
        Err(error) => {
            tracing::warn!(%error, "cannot look for orders past their deadline");
            return;
        }
    };
    for order_id in overdue {
        if let Err(error) = super::orders::cancel_overdue(ctx, &order_id).await {
            tracing::warn!(%order_id, %error, "cannot cancel an order past its deadline; trying again later");
        }
    }
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
        let missing: Vec<&&StoredEvent> = events.iter().filter(|e| !handled.contains(&e.id)).collect();
        incomplete.extend(missing.iter().map(|e| e.order_id.as_str()));
        if missing.is_empty() || !lost(ctx, consumer).await {
            continue;
        }
        for event in missing {
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

/// Whether `consumer`'s unhandled events are lost rather than on their way. A stream
/// reader may lag far behind the saga: its events are lost only once its group has
/// settled the whole stream. Until then their orders are checked again later, and
/// nothing is published.
async fn lost(ctx: &SagaContext, consumer: &str) -> bool {
    let Some(stream) = ctx.stream.as_ref().filter(|_| ctx.reads_stream(consumer)) else {
        return true;
    };
    stream.caught_up(consumer).await.unwrap_or_else(|error| {
        tracing::warn!(%consumer, %error, "cannot read the stream's offsets for the redrive");
        false
    })
}

/// The consumers subscribed to `kind`: the steps and the host's order logic.
fn consumers_of(ctx: &SagaContext, kind: &str) -> Vec<String> {
    let mut consumers: Vec<String> = ctx.registry.subscribers(kind).iter().map(|step| step.name.to_string()).collect();
    if super::orders::HOST_KINDS.contains(&kind) {
        consumers.push(super::HOST_CONSUMER.to_owned());
    }
    consumers
}

async fn prune(ctx: &SagaContext) {
    let before = |keep: Duration| now_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let pins_before_ms = before(ctx.config.retain_pins);
    let stores = ctx.stores.all();
    let cutoffs = Cutoffs {
        inbox_before_ms: before(ctx.config.retain_inbox),
        outbox_before_ms: before(ctx.config.retain_outbox),
        idempotency_before_ms: before(ctx.config.retain_idempotency),
        pins_before_ms,
        stream: ctx.stream.is_some(),
        // Past both retentions no event of the order is delivered or redriven again:
        // its state cannot be asked for.
        finished_before_ms: before(ctx.config.retain_inbox.max(ctx.config.retain_outbox)),
        order_state: ctx.config.order_state.clone(),
        // Pins and overrides are kept in each step's store: with one store, every
        // reference to a version is seen by the statement that removes it.
        versions_before_ms: (stores.len() == 1).then_some(pins_before_ms),
        hosts_before_ms: before(DEAD_HOSTS),
    };
    for store in stores {
        match store.prune(&cutoffs, PRUNE_CHUNK).await {
            Ok(pruned) if pruned != Default::default() => {
                for (table, n) in [
                    ("inbox", pruned.inbox),
                    ("outbox", pruned.outbox),
                    ("idempotency_keys", pruned.idempotency_keys),
                    ("step_state", pruned.step_state),
                    ("plugin_versions", pruned.plugin_versions),
                    ("hosts", pruned.hosts),
                ] {
                    metrics::counter!("wasaga_pruned_rows_total", "table" => table).increment(n);
                }
                tracing::info!(
                    inbox = pruned.inbox,
                    outbox = pruned.outbox,
                    idempotency_keys = pruned.idempotency_keys,
                    step_state = pruned.step_state,
                    plugin_versions = pruned.plugin_versions,
                    hosts = pruned.hosts,
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
