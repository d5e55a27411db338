//! The inventory step: reserves an order's stock, commits it when the order completes and
//! returns it when the order is cancelled.
//!
//! State, in this step's namespace:
//! - `sku/{sku}`: the SKU's [`StockLevel`]; `seq` grows by one on every change.
//! - `order/{order_id}`: an [`OrderRecord`], what this step did for the order. It makes
//!   every event idempotent without the host's dedupe, and a `released` record written by
//!   a cancel that arrives first stops a late `order.placed` from reserving anything.
//!
//! Order events only move units between `available`, `reserved` and `sold`, so their sum
//! per SKU changes only through `stock.set`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wasaga_sdk::events::{
    OrderPlaced, Shortage, StockCommitted, StockLevel, StockReleased, StockReserved, StockSet, StockUnavailable,
    StockUpdated, kinds,
};
use wasaga_sdk::{Context, Emit, Event, Host, HostExt, Manifest, Step, StepError};

/// What this step did for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// Where the order's units are now.
    pub status: OrderStatus,
    /// Units per SKU, summed over the order's lines.
    pub items: BTreeMap<String, u64>,
}

/// Where an order's units are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Held for the order.
    Reserved,
    /// Nothing was reserved: some line was short.
    Unavailable,
    /// Counted as sold: the order completed.
    Sold,
    /// Back in `available`, or never taken (a cancel that came before the order).
    Released,
}

/// The inventory step.
pub struct Inventory;

impl Step for Inventory {
    fn manifest() -> Manifest {
        Manifest::new(
            "inventory",
            "0.1.0",
            [kinds::ORDER_PLACED, kinds::ORDER_COMPLETED, kinds::ORDER_CANCELLED, kinds::STOCK_SET],
        )
    }

    fn handle(host: &mut dyn Host, _ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError> {
        match event.kind.as_str() {
            kinds::ORDER_PLACED => order_placed(host, event),
            kinds::ORDER_COMPLETED => order_completed(host, event),
            kinds::ORDER_CANCELLED => order_cancelled(host, event),
            kinds::STOCK_SET => stock_set(host, event),
            _ => Ok(vec![]),
        }
    }
}

wasaga_sdk::export_step!(Inventory);

fn sku_key(sku: &str) -> String {
    format!("sku/{sku}")
}

/// The order's record key; an order event without an order id cannot be handled.
fn order_key(event: &Event) -> Result<String, StepError> {
    if event.order_id.is_empty() {
        return Err(StepError::Fatal(format!("{} without an order id", event.kind)));
    }
    Ok(format!("order/{}", event.order_id))
}

fn load_level(host: &dyn Host, sku: &str) -> Result<StockLevel, StepError> {
    Ok(host
        .get_json::<StockLevel>(&sku_key(sku))?
        .unwrap_or_else(|| StockLevel { sku: sku.to_owned(), ..StockLevel::default() }))
}

/// Store a changed level with the next `seq` and return it for the event.
fn save_level(host: &mut dyn Host, mut level: StockLevel) -> Result<StockLevel, StepError> {
    level.seq += 1;
    host.put_json(&sku_key(&level.sku), &level)?;
    Ok(level)
}

/// Subtract without wrapping: a shortfall here means the stored state is inconsistent.
fn take(from: u64, units: u64, what: &str, sku: &str) -> Result<u64, StepError> {
    from.checked_sub(units).ok_or_else(|| StepError::Fatal(format!("{sku}: {what} {from} is less than {units}")))
}

fn order_placed(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = order_key(event)?;
    // A duplicate, or an order already cancelled (tombstone): nothing to do.
    if host.get_json::<OrderRecord>(&key)?.is_some() {
        return Ok(vec![]);
    }
    let placed: OrderPlaced = event.payload()?;
    let mut items = BTreeMap::<String, u64>::new();
    for line in &placed.items {
        *items.entry(line.sku.clone()).or_default() += u64::from(line.quantity);
    }

    let mut levels = Vec::with_capacity(items.len());
    let mut short = Vec::new();
    for (sku, &units) in &items {
        let level = load_level(host, sku)?;
        if level.available < units {
            short.push(Shortage {
                sku: sku.clone(),
                requested: u32::try_from(units).unwrap_or(u32::MAX),
                available: level.available,
            });
        }
        levels.push(level);
    }

    // All or nothing: one short line leaves every SKU untouched.
    if !short.is_empty() {
        let record = OrderRecord { status: OrderStatus::Unavailable, items };
        host.put_json(&key, &record)?;
        return Ok(vec![Emit::json(kinds::STOCK_UNAVAILABLE, &StockUnavailable { short })?]);
    }

    let mut changed = Vec::with_capacity(levels.len());
    for mut level in levels {
        let units = items.get(&level.sku).copied().unwrap_or(0);
        level.available = take(level.available, units, "available", &level.sku)?;
        level.reserved += units;
        changed.push(save_level(host, level)?);
    }
    host.put_json(&key, &OrderRecord { status: OrderStatus::Reserved, items })?;
    let reserved = StockReserved {
        items: placed.items,
        total_cents: placed.total_cents,
        payment: placed.payment,
        levels: changed,
    };
    Ok(vec![Emit::json(kinds::STOCK_RESERVED, &reserved)?])
}

fn order_completed(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = order_key(event)?;
    let Some(mut record) = host.get_json::<OrderRecord>(&key)? else {
        return Ok(vec![]);
    };
    if record.status != OrderStatus::Reserved {
        return Ok(vec![]);
    }
    let mut levels = Vec::with_capacity(record.items.len());
    for (sku, &units) in &record.items {
        let mut level = load_level(host, sku)?;
        level.reserved = take(level.reserved, units, "reserved", sku)?;
        level.sold += units;
        levels.push(save_level(host, level)?);
    }
    record.status = OrderStatus::Sold;
    host.put_json(&key, &record)?;
    Ok(vec![Emit::json(kinds::STOCK_COMMITTED, &StockCommitted { levels })?])
}

fn order_cancelled(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = order_key(event)?;
    let Some(mut record) = host.get_json::<OrderRecord>(&key)? else {
        // The cancel overtook the order: leave a tombstone so it reserves nothing later.
        let tombstone = OrderRecord { status: OrderStatus::Released, items: BTreeMap::new() };
        host.put_json(&key, &tombstone)?;
        return Ok(vec![]);
    };
    let restocked = match record.status {
        OrderStatus::Reserved => false,
        OrderStatus::Sold => true,
        OrderStatus::Released | OrderStatus::Unavailable => return Ok(vec![]),
    };
    let mut levels = Vec::with_capacity(record.items.len());
    for (sku, &units) in &record.items {
        let mut level = load_level(host, sku)?;
        if restocked {
            level.sold = take(level.sold, units, "sold", sku)?;
        } else {
            level.reserved = take(level.reserved, units, "reserved", sku)?;
        }
        level.available += units;
        levels.push(save_level(host, level)?);
    }
    record.status = OrderStatus::Released;
    host.put_json(&key, &record)?;
    Ok(vec![Emit::json(kinds::STOCK_RELEASED, &StockReleased { restocked, levels })?])
}

fn stock_set(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let set: StockSet = event.payload()?;
    if set.sku.is_empty() {
        return Err(StepError::Fatal("stock.set without a sku".to_owned()));
    }
    let stored = host.get_json::<StockLevel>(&sku_key(&set.sku))?;
    // A repeated stock.set changes nothing, so `seq` must not move either. A SKU seen
    // for the first time is announced even at 0, so readers learn it exists.
    if stored.as_ref().is_some_and(|level| level.available == set.available) {
        return Ok(vec![]);
    }
    let mut level = stored.unwrap_or_else(|| StockLevel { sku: set.sku.clone(), ..StockLevel::default() });
    level.available = set.available;
    let level = save_level(host, level)?;
    Ok(vec![Emit::json(kinds::STOCK_UPDATED, &StockUpdated { levels: vec![level] })?])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use wasaga_sdk::MemoryHost;

    fn event(kind: &str, order_id: &str, payload: Value) -> Event {
        Event {
            id: format!("{kind}-{order_id}"),
            kind: kind.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: 0,
            payload: payload.to_string(),
        }
    }

    fn placed(order_id: &str, lines: &[(&str, u32)]) -> Event {
        let items: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity, "unit_price_cents": 100}))
            .collect();
        let total: u32 = lines.iter().map(|(_, q)| q * 100).sum();
        let payload = json!({"customer_id": "c-1", "items": items, "total_cents": total,
            "payment": {"card_token": "tok_ok"}});
        event(kinds::ORDER_PLACED, order_id, payload)
    }

    fn set(sku: &str, available: u64) -> Event {
        event(kinds::STOCK_SET, "", json!({"sku": sku, "available": available}))
    }

    fn completed(order_id: &str) -> Event {
        event(kinds::ORDER_COMPLETED, order_id, json!({}))
    }

    fn cancelled(order_id: &str) -> Event {
        event(kinds::ORDER_CANCELLED, order_id, json!({"reason": "customer_request"}))
    }

    fn run(host: &mut MemoryHost, event: &Event) -> Vec<Emit> {
        Inventory::handle(host, &Context { attempt: 1 }, event).unwrap()
    }

    /// A host with the given SKUs stocked.
    fn stocked(stock: &[(&str, u64)]) -> MemoryHost {
        let mut host = MemoryHost::default();
        for (sku, available) in stock {
            run(&mut host, &set(sku, *available));
        }
        host
    }

    /// (available, reserved, sold) of a SKU.
    fn level(host: &MemoryHost, sku: &str) -> (u64, u64, u64) {
        let level = load_level(host, sku).unwrap();
        (level.available, level.reserved, level.sold)
    }

    fn kinds_of(emits: &[Emit]) -> Vec<&str> {
        emits.iter().map(|e| e.kind.as_str()).collect()
    }

    /// Run `events` on a host stocked with `stock`; expect the kinds emitted by the last
    /// event and each SKU's (available, reserved, sold) afterwards.
    fn check(
        stock: &[(&str, u64)],
        events: &[Event],
        last_kinds: &[&str],
        levels: &[(&str, (u64, u64, u64))],
    ) -> Vec<Emit> {
        let mut host = stocked(stock);
        let mut emits = vec![];
        for event in events {
            emits = run(&mut host, event);
        }
        assert_eq!(kinds_of(&emits), last_kinds, "after {events:?}");
        for (sku, expected) in levels {
            assert_eq!(level(&host, sku), *expected, "{sku} after {events:?}");
        }
        emits
    }

    #[test]
    fn manifest_names_the_step() {
        let manifest = Inventory::manifest();
        assert_eq!(manifest.name, "inventory");
        assert_eq!(manifest.version, "0.1.0");
        assert_eq!(manifest.subscribes.len(), 4);
    }

    /// Order o1 (2 A + 1 B) against a stock of 10 A and 5 B: run the events named in
    /// `history`, expect the kind emitted by the last one (`-` for none) and the levels
    /// (available, reserved, sold) of A and B.
    fn lifecycle(history: &str, last_kind: &str, a: (u64, u64, u64), b: (u64, u64, u64)) {
        let events: Vec<Event> = history
            .split_whitespace()
            .map(|name| match name {
                "place" => placed("o1", &[("A", 2), ("B", 1)]),
                "complete" => completed("o1"),
                "cancel" => cancelled("o1"),
                other => panic!("unknown event {other}"),
            })
            .collect();
        let last_kinds: &[&str] = if last_kind == "-" { &[] } else { &[last_kind] };
        check(&[("A", 10), ("B", 5)], &events, last_kinds, &[("A", a), ("B", b)]);
    }

    #[test]
    fn lifecycle_table() {
        let stocked = ((10, 0, 0), (5, 0, 0));
        let reserved = ((8, 2, 0), (4, 1, 0));
        let sold = ((8, 0, 2), (4, 0, 1));
        for (history, last_kind, (a, b)) in [
            ("place", "stock.reserved", reserved),
            ("place place", "-", reserved),
            ("place complete", "stock.committed", sold),
            ("place complete complete", "-", sold),
            ("place complete place", "-", sold),
            ("place cancel", "stock.released", stocked),
            ("place cancel cancel", "-", stocked),
            // A completed order that is cancelled restocks its sold units, once.
            ("place complete cancel", "stock.released", stocked),
            ("place complete cancel cancel", "-", stocked),
            ("place complete cancel complete", "-", stocked),
            // A released order stays released.
            ("place cancel complete", "-", stocked),
            ("place cancel place", "-", stocked),
            // Cancel before placed: a tombstone, and the late order reserves nothing.
            ("cancel", "-", stocked),
            ("cancel place", "-", stocked),
            ("cancel place complete", "-", stocked),
            ("complete", "-", stocked),
            ("complete place", "stock.reserved", reserved),
        ] {
            lifecycle(history, last_kind, a, b);
        }
    }

    #[test]
    fn released_payload_says_whether_it_restocked() {
        let stock = [("A", 3)];
        let p = placed("o1", &[("A", 1)]);
        let emits = check(&stock, &[p.clone(), cancelled("o1")], &["stock.released"], &[]);
        let released: StockReleased = serde_json::from_str(&emits[0].payload).unwrap();
        assert!(!released.restocked);
        let emits = check(&stock, &[p, completed("o1"), cancelled("o1")], &["stock.released"], &[]);
        let released: StockReleased = serde_json::from_str(&emits[0].payload).unwrap();
        assert!(released.restocked);
        assert_eq!(released.levels[0].available, 3);
        assert_eq!(released.levels[0].seq, 4, "set, reserve, commit, release");
    }

    #[test]
    fn reserved_forwards_the_order_and_changed_levels() {
        let emits = check(
            &[("A", 10), ("B", 5), ("C", 1)],
            &[placed("o1", &[("A", 2), ("B", 1), ("A", 3)])],
            &["stock.reserved"],
            &[("A", (5, 5, 0)), ("B", (4, 1, 0)), ("C", (1, 0, 0))],
        );
        let reserved: StockReserved = serde_json::from_str(&emits[0].payload).unwrap();
        assert_eq!(reserved.items.len(), 3, "lines are forwarded as placed");
        assert_eq!(reserved.total_cents, 600);
        assert_eq!(reserved.payment.card_token, "tok_ok");
        let skus: Vec<_> = reserved.levels.iter().map(|l| (l.sku.as_str(), l.reserved)).collect();
        assert_eq!(skus, [("A", 5), ("B", 1)]);
    }

    #[test]
    fn out_of_stock_lists_every_short_line_and_reserves_nothing() {
        let emits = check(
            &[("A", 10), ("B", 1), ("C", 0)],
            // A is fine, B is short only once its two lines are summed, C and D are short.
            &[placed("o1", &[("A", 2), ("B", 1), ("B", 1), ("C", 1), ("D", 4)])],
            &["stock.unavailable"],
            &[("A", (10, 0, 0)), ("B", (1, 0, 0)), ("C", (0, 0, 0))],
        );
        let unavailable: StockUnavailable = serde_json::from_str(&emits[0].payload).unwrap();
        let short: Vec<_> = unavailable.short.iter().map(|s| (s.sku.as_str(), s.requested, s.available)).collect();
        assert_eq!(short, [("B", 2, 1), ("C", 1, 0), ("D", 4, 0)]);
        // An unavailable order stays so: no later reservation, commit or release.
        for later in [placed("o1", &[("A", 20)]), completed("o1"), cancelled("o1")] {
            check(&[("A", 10)], &[placed("o1", &[("A", 20)]), set("A", 50), later], &[], &[("A", (50, 0, 0))]);
        }
    }

    #[test]
    fn stock_set_is_idempotent_and_keeps_seq() {
        let mut host = MemoryHost::default();
        let first = run(&mut host, &set("A", 7));
        assert_eq!(kinds_of(&first), ["stock.updated"]);
        assert!(run(&mut host, &set("A", 7)).is_empty());
        assert_eq!(load_level(&host, "A").unwrap().seq, 1);
        let second = run(&mut host, &set("A", 9));
        let updated: StockUpdated = serde_json::from_str(&second[0].payload).unwrap();
        assert_eq!(updated.levels, [StockLevel { sku: "A".into(), available: 9, reserved: 0, sold: 0, seq: 2 }]);
        // A new SKU is announced even at 0.
        assert_eq!(kinds_of(&run(&mut host, &set("Z", 0))), ["stock.updated"]);
    }

    #[test]
    fn bad_input_is_fatal() {
        let mut host = MemoryHost::default();
        let ctx = Context { attempt: 1 };
        let bad = event(kinds::ORDER_PLACED, "o1", json!({"items": 3}));
        assert!(matches!(Inventory::handle(&mut host, &ctx, &bad), Err(StepError::Fatal(_))));
        let no_order = placed("", &[("A", 1)]);
        assert!(matches!(Inventory::handle(&mut host, &ctx, &no_order), Err(StepError::Fatal(_))));
        let no_sku = set("", 1);
        assert!(matches!(Inventory::handle(&mut host, &ctx, &no_sku), Err(StepError::Fatal(_))));
        assert!(host.state.is_empty(), "a failed event leaves no state");
    }

    /// One step of a random history: which order, and what happens to it.
    #[derive(Debug, Clone)]
    enum Op {
        Place(usize, Vec<(usize, u32)>),
        Complete(usize),
        Cancel(usize),
    }

    const SKUS: [&str; 3] = ["A", "B", "C"];

    fn op() -> impl Strategy<Value = Op> {
        let lines = prop::collection::vec((0..SKUS.len(), 1..4u32), 0..4);
        prop_oneof![
            (0..4usize, lines).prop_map(|(o, l)| Op::Place(o, l)),
            (0..4usize).prop_map(Op::Complete),
            (0..4usize).prop_map(Op::Cancel),
        ]
    }

    proptest! {
        /// Any history of order events, with duplicates and in any order, conserves every
        /// SKU's total; `seq` only grows; the levels in events match the state; and once
        /// every order is ended nothing stays reserved.
        #[test]
        fn order_events_conserve_stock(
            stock in prop::collection::vec(0..8u64, SKUS.len()),
            ops in prop::collection::vec(op(), 0..40),
        ) {
            let stock: Vec<_> = SKUS.iter().copied().zip(stock).collect();
            let mut host = stocked(&stock);
            let mut seen: BTreeMap<String, StockLevel> = BTreeMap::new();
            let mut observe = |emits: Vec<Emit>| {
                for emit in emits {
                    let value: Value = serde_json::from_str(&emit.payload).unwrap();
                    let Some(levels) = value.get("levels") else { continue };
                    for level in serde_json::from_value::<Vec<StockLevel>>(levels.clone()).unwrap() {
                        if let Some(old) = seen.get(&level.sku) {
                            assert!(level.seq > old.seq, "seq went back: {old:?} -> {level:?}");
                        }
                        seen.insert(level.sku.clone(), level);
                    }
                }
            };
            for op in &ops {
                let event = match op {
                    Op::Place(o, lines) => {
                        let lines: Vec<_> = lines.iter().map(|(s, q)| (SKUS[*s], *q)).collect();
                        placed(&format!("o{o}"), &lines)
                    }
                    Op::Complete(o) => completed(&format!("o{o}")),
                    Op::Cancel(o) => cancelled(&format!("o{o}")),
                };
                observe(run(&mut host, &event));
                for (sku, total) in &stock {
                    let (a, r, s) = level(&host, sku);
                    prop_assert_eq!(a + r + s, *total, "{} after {:?}", sku, op);
                }
            }
            for o in 0..4 {
                observe(run(&mut host, &cancelled(&format!("o{o}"))));
            }
            for (sku, total) in &stock {
                prop_assert_eq!(level(&host, sku), (*total, 0, 0));
                if let Some(level) = seen.get(*sku) {
                    prop_assert_eq!(level, &load_level(&host, sku).unwrap());
                }
            }
        }
    }
}
