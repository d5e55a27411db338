//! Two writers racing on every guarded write of the store, as two hosts of a fleet do:
//! an insert that must happen once (idempotency key, delivery, inbox row, fresh state key,
//! pin, lease, plugin version, slot) and an upsert that must leave one row with the value
//! it promises (state, stock level, override, heartbeat, requeue). On SQLite, on
//! PostgreSQL, and on SQL Server where `WASAGA_TEST_MSSQL_URL` names one: there the
//! outcome must not depend on table hints an engine may ignore.

use crate::helpers::*;
use std::sync::Arc;
use std::time::Duration;
use wasaga_host::store::{
    BatchCommit, Created, HostRow, SlotRow, StockRow, Store, StoreError, StoredEvent, VersionRow,
};

/// Rounds per race, each on fresh keys: one round may not overlap the two writers.
const ROUNDS: usize = 6;

on_every_store!(
    racing_inserts_happen_once,
    racing_upserts_keep_one_row,
    batches_that_read_absent_what_the_other_writes_take_turns,
    a_batch_that_reads_many_absent_keys_commits_and_takes_turns
);

/// Run `a` and `b` at the same time on the runtime's two threads.
async fn race<T: Send + 'static>(
    a: impl Future<Output = T> + Send + 'static,
    b: impl Future<Output = T> + Send + 'static,
) -> (T, T) {
    let (a, b) = tokio::join!(tokio::spawn(a), tokio::spawn(b));
    (a.expect("racer a"), b.expect("racer b"))
}

fn event(id: &str, order_id: &str) -> StoredEvent {
    stored_event(id, "order.placed", order_id)
}

/// A batch of `consumer` that handled `event_id`, with `edit` applied.
fn batch(consumer: &str, event_id: &str, edit: impl FnOnce(&mut BatchCommit)) -> BatchCommit {
    let mut batch = BatchCommit {
        consumer: consumer.to_owned(),
        inbox: vec![(event_id.to_owned(), "1".to_owned())],
        ..BatchCommit::default()
    };
    edit(&mut batch);
    batch
}

/// Exactly one of two outcomes is a success.
fn one_wins<T: std::fmt::Debug>(what: &str, a: &Result<T, StoreError>, b: &Result<T, StoreError>) -> bool {
    assert!(a.is_ok() != b.is_ok(), "{what}: exactly one racer wins: {a:?} / {b:?}");
    a.is_ok()
}

/// An order keyed by the Idempotency-Key `key` (body digest `h`).
fn keyed(id: &str, key: &str, placed: wasaga_host::event::StoredEvent) -> wasaga_host::store::NewOrder {
    let idempotency = wasaga_host::store::Idempotency { key: key.to_owned(), body_hash: "h".to_owned() };
    wasaga_host::store::NewOrder { idempotency: Some(idempotency), ..new_order(id, placed) }
}

async fn racing_inserts_happen_once(db: Db) {
    let (store, _dir) = test_store(db).await;
    for round in 0..ROUNDS {
        // The same Idempotency-Key on two hosts: one order, the other host answers with it.
        let key = format!("key-{round}");
        let (a, b) = race(
            {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    let placed = event(&format!("placed-a-{round}"), &format!("o-a-{round}"));
                    store.create_order(&keyed(&format!("o-a-{round}"), &key, placed), None).await
                }
            },
            {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    let placed = event(&format!("placed-b-{round}"), &format!("o-b-{round}"));
                    store.create_order(&keyed(&format!("o-b-{round}"), &key, placed), None).await
                }
            },
        )
        .await;
        let (a, b) = (a.expect("racer a places or finds"), b.expect("racer b places or finds"));
        let (winner, loser) = match (&a, &b) {
            (Created::New, Created::Existing { order_id, .. }) => (format!("o-a-{round}"), order_id.clone()),
            (Created::Existing { order_id, .. }, Created::New) => (format!("o-b-{round}"), order_id.clone()),
            _ => panic!("{db:?}: one order per key: {a:?} / {b:?}"),
        };
        assert_eq!(winner, loser, "{db:?}: the second host answers with the first order");
        let placed = [format!("o-a-{round}"), format!("o-b-{round}")];
        let mut stored = 0;
        for id in &placed {
            stored += usize::from(store.order(id).await.expect("reads").is_some());
        }
        assert_eq!(stored, 1, "{db:?}: one order stored for the key");

        // The same delivery queued twice: one delivery.
        let delivery = vec![("c".to_owned(), format!("e-{round}"), "wire".to_owned())];
        let (a, b) = race(
            {
                let (store, delivery) = (store.clone(), delivery.clone());
                async move { store.enqueue(&delivery, 1, None).await }
            },
            {
                let (store, delivery) = (store.clone(), delivery.clone());
                async move { store.enqueue(&delivery, 1, None).await }
            },
        )
        .await;
        a.expect("racer a queues");
        b.expect("racer b queues");
        let claimed = store.claim("c", "h", i64::MAX / 4, 60_000, 100).await.expect("claims");
        assert_eq!(claimed.len(), 1, "{db:?}: one delivery: {claimed:?}");
        store.settle("h", &[claimed[0].id], &[]).await.expect("settles");

        // The same event handled on two hosts: one commit, the other a conflict.
        let (a, b) = commit_both(
            &store,
            batch("step", &format!("e-{round}"), |_| ()),
            batch("step", &format!("e-{round}"), |_| ()),
        )
        .await;
        one_wins("inbox", &a, &b);
        let loser = if a.is_ok() { b } else { a };
        assert!(matches!(loser, Err(StoreError::Conflict(_))), "{db:?}: the loser conflicts: {loser:?}");

        // A state key both saw absent: one creates it, the other conflicts.
        let key = format!("k-{round}");
        let create = |event: &str, value: &str| {
            let key = key.clone();
            let value = value.as_bytes().to_vec();
            batch("step", event, move |b| {
                b.state = vec![(key.clone(), Some(value))];
                b.state_reads = vec![(key, None)];
            })
        };
        let (a, b) =
            commit_both(&store, create(&format!("s-a-{round}"), "a"), create(&format!("s-b-{round}"), "b")).await;
        let a_won = one_wins("state created", &a, &b);
        let loser = if a_won { b } else { a };
        assert!(matches!(loser, Err(StoreError::Conflict(_))), "{db:?}: the loser conflicts: {loser:?}");
        let stored = store.state_get("step", &key).await.expect("reads").expect("created");
        assert_eq!(stored.value, if a_won { b"a" } else { b"b" }, "{db:?}: the winner's value");

        // Two hosts pinning the same order: the first pin stays.
        let order_id = format!("pinned-{round}");
        let pin = |event: &str, digest: &str| {
            let pins = vec![(order_id.clone(), digest.to_owned())];
            batch("payment", event, move |b| b.pins = pins)
        };
        let (a, b) =
            commit_both(&store, pin(&format!("p-a-{round}"), "sha256:a"), pin(&format!("p-b-{round}"), "sha256:b"))
                .await;
        a.expect("racer a commits");
        b.expect("racer b commits");
        let pins = store.pins("payment", std::slice::from_ref(&order_id)).await.expect("reads");
        assert!(matches!(pins.get(&order_id).map(String::as_str), Some("sha256:a" | "sha256:b")), "{db:?}: {pins:?}");

        // Two hosts taking the same free lease: one holds it.
        let lease = format!("lease-{round}");
        let (a, b) = race(
            {
                let (store, lease) = (store.clone(), lease.clone());
                async move { store.try_lease(&lease, "host-a", 60_000).await }
            },
            {
                let (store, lease) = (store.clone(), lease.clone());
                async move { store.try_lease(&lease, "host-b", 60_000).await }
            },
        )
        .await;
        let (a, b) = (a.expect("racer a asks"), b.expect("racer b asks"));
        assert!(a != b, "{db:?}: exactly one host holds the lease: {a} / {b}");

        // The same plugin version uploaded to two hosts: stored once, both succeed.
        let version = VersionRow {
            digest: format!("sha256:{round}"),
            name: "payment".to_owned(),
            version: "1.0.0".to_owned(),
            subscribes: vec!["order.placed".to_owned()],
            bytes: vec![0, 97, 115, 109],
            created_at_ms: 1,
        };
        let (a, b) = race(
            {
                let (store, version) = (store.clone(), version.clone());
                async move { store.put_version(&version).await }
            },
            {
                let (store, version) = (store.clone(), version.clone());
                async move { store.put_version(&version).await }
            },
        )
        .await;
        a.expect("racer a uploads");
        b.expect("racer b uploads");
        let stored = store.version(&version.digest).await.expect("reads").expect("stored");
        assert_eq!(stored.bytes, version.bytes, "{db:?}: the version's bytes");

        // Two hosts creating the same slot: one wins, the slot is the winner's.
        let slot = |current: &str| SlotRow {
            name: format!("slot-{round}"),
            current: current.to_owned(),
            previous: None,
            generation: 1,
            updated_at_ms: 1,
            rollout: None,
        };
        let (a, b) = race(
            {
                let (store, slot) = (store.clone(), slot("sha256:a"));
                async move { store.set_slot(&slot, 0).await }
            },
            {
                let (store, slot) = (store.clone(), slot("sha256:b"));
                async move { store.set_slot(&slot, 0).await }
            },
        )
        .await;
        let (a, b) = (a.expect("racer a sets"), b.expect("racer b sets"));
        assert!(a != b, "{db:?}: exactly one host creates the slot: {a} / {b}");
        let slots = store.slots().await.expect("reads");
        let created = slots.iter().find(|s| s.name == format!("slot-{round}")).expect("slot exists");
        assert_eq!(created.current, if a { "sha256:a" } else { "sha256:b" }, "{db:?}: the winner's slot");

        // Two hosts declaring the same subscriptions: each pattern once.
        let patterns = vec!["order.*".to_owned(), "payment.*".to_owned()];
        let consumer = format!("sub-{round}");
        let (a, b) = race(
            {
                let (store, consumer, patterns) = (store.clone(), consumer.clone(), patterns.clone());
                async move { store.set_subscriptions(&consumer, &patterns).await }
            },
            {
                let (store, consumer, patterns) = (store.clone(), consumer.clone(), patterns.clone());
                async move { store.set_subscriptions(&consumer, &patterns).await }
            },
        )
        .await;
        a.expect("racer a declares");
        b.expect("racer b declares");
        let declared: Vec<String> = store
            .subscriptions()
            .await
            .expect("reads")
            .into_iter()
            .filter(|(c, _)| *c == consumer)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(declared, patterns, "{db:?}: each pattern once");
    }
}

async fn racing_upserts_keep_one_row(db: Db) {
    let (store, _dir) = test_store(db).await;
    for round in 0..ROUNDS {
        // Blind state writes of a new key: both commit, one value stays.
        let key = format!("k-{round}");
        let put = |event: &str, value: &str| {
            let state = vec![(key.clone(), Some(value.as_bytes().to_vec()))];
            batch("step", event, move |b| b.state = state)
        };
        let (a, b) = commit_both(&store, put(&format!("a-{round}"), "a"), put(&format!("b-{round}"), "b")).await;
        a.expect("racer a commits");
        b.expect("racer b commits");
        let stored = store.state_get("step", &key).await.expect("reads").expect("written");
        assert!(matches!(stored.value.as_slice(), b"a" | b"b"), "{db:?}: {:?}", stored.value);

        // Stock levels of a new SKU from two commits: the later level (higher seq) stays,
        // whichever commits first.
        let sku = format!("SKU-{round}");
        let level = |event: &str, seq: i64| {
            let stock = vec![StockRow { sku: sku.clone(), available: 100 - seq, reserved: seq, sold: 0, seq }];
            batch("inventory", event, move |b| b.stock = stock)
        };
        let (a, b) = commit_both(&store, level(&format!("l1-{round}"), 1), level(&format!("l2-{round}"), 2)).await;
        a.expect("racer a commits");
        b.expect("racer b commits");
        let stored = store.stock(&sku).await.expect("reads").expect("written");
        assert_eq!(stored.seq, 2, "{db:?}: the later level stays: {stored:?}");

        // Two replays of one dead letter choosing a version: one override stays.
        let event_id = format!("dl-{round}");
        let (a, b) = race(
            {
                let (store, event_id) = (store.clone(), event_id.clone());
                async move { store.set_override("payment", &event_id, "sha256:a").await }
            },
            {
                let (store, event_id) = (store.clone(), event_id.clone());
                async move { store.set_override("payment", &event_id, "sha256:b").await }
            },
        )
        .await;
        a.expect("racer a overrides");
        b.expect("racer b overrides");
        let overrides = store.overrides("payment", std::slice::from_ref(&event_id)).await.expect("reads");
        assert_eq!(overrides.len(), 1, "{db:?}: {overrides:?}");

        // A host's first heartbeat sent twice (a retried call): one row.
        let host = HostRow {
            host_id: format!("host-{round}"),
            http_addr: "127.0.0.1:1".to_owned(),
            started_at_ms: 1,
            seen_at_ms: 1,
            steps: "{}".to_owned(),
        };
        let (a, b) = race(
            {
                let (store, host) = (store.clone(), host.clone());
                async move { store.heartbeat(&host).await }
            },
            {
                let (store, host) = (store.clone(), host.clone());
                async move { store.heartbeat(&host).await }
            },
        )
        .await;
        a.expect("racer a beats");
        b.expect("racer b beats");
        let hosts = store.hosts(0).await.expect("reads");
        assert_eq!(hosts.iter().filter(|h| h.host_id == host.host_id).count(), 1, "{db:?}: {hosts:?}");

        // One dead letter replayed from two consoles: one delivery.
        let event_id = format!("rq-{round}");
        let (a, b) = race(
            {
                let (store, event_id) = (store.clone(), event_id.clone());
                async move { store.requeue("rq", &event_id, "wire", 1).await }
            },
            {
                let (store, event_id) = (store.clone(), event_id.clone());
                async move { store.requeue("rq", &event_id, "wire", 1).await }
            },
        )
        .await;
        a.expect("racer a requeues");
        b.expect("racer b requeues");
        let claimed = store.claim("rq", "h", i64::MAX / 4, 60_000, 100).await.expect("claims");
        assert_eq!(claimed.len(), 1, "{db:?}: one delivery: {claimed:?}");
        store.settle("h", &[claimed[0].id], &[]).await.expect("settles");
    }
}

/// A charge and the webhook that confirms it, handled on two hosts (payment's `stock.reserved`
/// and `payment.hook`): the charge reads the order's record and the early-hook note absent
/// and creates the record; the hook reads the record absent and, finding none, writes the
/// note. Were both to commit, the note would wait for a record that never reads it and
/// the charge would wait for a confirmation that came: a write skew. One of them must
/// commit, and the other re-run on what the first wrote.
async fn batches_that_read_absent_what_the_other_writes_take_turns(db: Db) {
    charge_and_hook_take_turns(db, 0).await;
}

/// The same race, with the charge's batch also reading 20,000 other keys absent (a step
/// may read 10,000 per call, and a batch holds many calls): more names than PostgreSQL's
/// lock table holds (64 per connection by default), were each locked alone. The batch
/// must commit, and still take turns with the webhook.
async fn a_batch_that_reads_many_absent_keys_commits_and_takes_turns(db: Db) {
    charge_and_hook_take_turns(db, 20_000).await;
}

/// A charge reading `filler` more keys absent races its webhook, in rounds, then each
/// commits after the other.
async fn charge_and_hook_take_turns(db: Db, filler: usize) {
    let (store, _dir) = test_store(db).await;
    let charge = |round: usize| {
        let (record, note) = (format!("payment/o-{round}"), format!("payment/o-{round}/hook"));
        batch("payment", &format!("charge-{round}"), move |b| {
            b.state_reads = vec![(record.clone(), None), (note, None)];
            b.state_reads.extend((0..filler).map(|n| (format!("payment/x-{round}-{n}"), None)));
            b.state = vec![(record, Some(b"awaiting_action".to_vec()))];
        })
    };
    let hook = |round: usize| {
        let (record, note) = (format!("payment/o-{round}"), format!("payment/o-{round}/hook"));
        batch("payment", &format!("hook-{round}"), move |b| {
            b.state_reads = vec![(record, None)];
            b.state = vec![(note, Some(b"succeeded".to_vec()))];
        })
    };
    for round in 0..ROUNDS {
        let (a, b) = commit_both(&store, charge(round), hook(round)).await;
        one_wins(&format!("{db:?}: a charge and its webhook, round {round}"), &a, &b);
    }
    // One after the other, either way round: the later one read before the earlier committed.
    for (round, charge_first) in [(ROUNDS, true), (ROUNDS + 1, false)] {
        let (first, second) = if charge_first { (charge(round), hook(round)) } else { (hook(round), charge(round)) };
        store.commit_batch(&first).await.expect("the first commits");
        let late = store.commit_batch(&second).await;
        assert!(matches!(late, Err(StoreError::Conflict(_))), "{db:?}: a stale absent read commits: {late:?}");
        let note = store.state_get("payment", &format!("payment/o-{round}/hook")).await.expect("reads");
        let record = store.state_get("payment", &format!("payment/o-{round}")).await.expect("reads");
        assert!(note.is_some() != record.is_some(), "{db:?}: only the first batch's write is kept");
    }
}

/// A step's name is its author's choice. One whose name shares a 32-bit hash with another
/// step's, while its commit holds its whole step (it read more than 256 keys absent),
/// must not make the other step's commits wait: on PostgreSQL the step's lock is keyed by
/// a 64-bit hash of its name. The big commit is held mid-way by a row lock it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_locking_itself_does_not_hold_a_step_whose_name_shares_its_hash() {
    use sqlx::Connection;
    let url = store_url(Db::Postgres).await.expect("PostgreSQL");
    let store = wasaga_host::store::open(&url, &Default::default()).await.expect("store");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connects");
    // Two names with one `hashtext` (a search of this size finds several).
    let (loud, quiet): (String, String) = sqlx::query_as(
        "SELECT min(n), max(n) FROM (SELECT 's' || g AS n, hashtext('s' || g) AS h \
         FROM generate_series(1, 300000) AS g) AS names GROUP BY h HAVING count(*) > 1 LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("two names sharing a hash");
    store
        .commit_batch(&batch(&loud, "seed", |b| b.state = vec![("k".to_owned(), Some(b"1".to_vec()))]))
        .await
        .expect("seeds");
    let seen = store.state_get(&loud, "k").await.expect("reads").expect("seeded").version;
    // Hold `k`'s row: the big commit locks its step, then waits here for the row.
    let mut holder = conn.begin().await.expect("begins");
    sqlx::query("SELECT 1 FROM step_state WHERE step = $1 AND key = 'k' FOR UPDATE")
        .bind(&loud)
        .execute(&mut *holder)
        .await
        .expect("locks the row");
    let big = batch(&loud, "big", |b| {
        b.state_reads = (0..300).map(|n| (format!("absent-{n}"), None)).collect();
        b.state_reads.push(("k".to_owned(), Some(seen)));
        b.state = vec![("k".to_owned(), Some(b"2".to_vec()))];
    });
    let big = tokio::spawn({
        let store = store.clone();
        async move { store.commit_batch(&big).await }
    });
    let mut watcher = sqlx::PgConnection::connect(&url).await.expect("connects");
    eventually(Duration::from_secs(30), "the big commit waits for the row", async || {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("reads the activity");
        waiting > 0
    })
    .await;
    let small = batch(&quiet, "small", |b| {
        b.state_reads = vec![("note".to_owned(), None)];
        b.state = vec![("note".to_owned(), Some(b"x".to_vec()))];
    });
    let small = tokio::time::timeout(Duration::from_secs(20), store.commit_batch(&small)).await;
    assert!(!big.is_finished(), "the big commit was still held");
    holder.rollback().await.expect("releases the row");
    assert!(matches!(small, Ok(Ok(()))), "the other step's commit waited for the big one: {small:?}");
    big.await.expect("joins").expect("the big commit goes on once the row is free");
}

/// Commit two batches at the same time.
async fn commit_both(
    store: &Arc<dyn Store>,
    a: BatchCommit,
    b: BatchCommit,
) -> (Result<(), StoreError>, Result<(), StoreError>) {
    race(
        {
            let store = store.clone();
            async move { store.commit_batch(&a).await }
        },
        {
            let store = store.clone();
            async move { store.commit_batch(&b).await }
        },
    )
    .await
}
