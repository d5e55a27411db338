//! Claims on the embedded transport's deliveries, as the store keeps them (rows on
//! PostgreSQL, memory on SQLite, which one process owns): a claimed delivery goes to no
//! one else until it is settled, rescheduled, released or its claim ends, and the next
//! due time never points at a delivery someone holds (a consumer would spin on it).

use crate::helpers::*;

on_every_store!(a_claimed_delivery_waits_for_its_holder);

async fn a_claimed_delivery_waits_for_its_holder(db: Db) {
    let (store, _dir) = test_store(db).await;
    let rows: Vec<_> = (1..=3).map(|n| ("c".to_owned(), format!("e-{n}"), format!("wire-{n}"))).collect();
    store.enqueue(&rows, 1, None).await.expect("queues");
    let ids =
        |claimed: &[wasaga_host::store::DeliveryRow]| claimed.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>();

    let first = store.claim("c", "h", 10, 1_000, 2).await.expect("claims");
    assert_eq!(ids(&first), ["e-1", "e-2"], "{db:?}: in queue order, up to the limit");
    let second = store.claim("c", "h", 10, 1_000, 10).await.expect("claims");
    assert_eq!(ids(&second), ["e-3"], "{db:?}: what the first claim holds is skipped");
    assert!(store.claim("c", "h", 10, 1_000, 10).await.expect("claims").is_empty());
    assert_eq!(store.next_due_at("c").await.expect("due"), Some(1_010), "{db:?}: due when the claims end");
    assert!(store.claim("other", "h", 10, 1_000, 10).await.expect("claims").is_empty(), "{db:?}: per consumer");

    // A retry drops its claim and is due again later, with its attempt counted.
    store.settle(&[], &[(first[0].id, 500, "flaky".to_owned(), true)]).await.expect("settles");
    assert_eq!(store.next_due_at("c").await.expect("due"), Some(500));
    assert!(store.claim("c", "h", 400, 1_000, 10).await.expect("claims").is_empty(), "{db:?}: not due yet");
    let retried = store.claim("c", "h", 600, 1_000, 10).await.expect("claims");
    assert_eq!(ids(&retried), ["e-1"]);
    assert_eq!(retried[0].attempts, 1);

    // Claims end: e-2 and e-3 (held until 1,010) go to whoever claims after that.
    let after = store.claim("c", "h", 1_100, 1_000, 10).await.expect("claims");
    assert_eq!(ids(&after), ["e-2", "e-3"], "{db:?}: ended claims are taken again");

    // A restarted host drops its claims: everything unsettled is due at once.
    store.release_claims("h").await.expect("releases");
    let again = store.claim("c", "h", 1_200, 1_000, 10).await.expect("claims");
    assert_eq!(ids(&again), ["e-2", "e-3", "e-1"], "{db:?}: in (due, id) order");

    // Settled deliveries are gone, claimed or not.
    let all: Vec<i64> = again.iter().map(|d| d.id).collect();
    store.settle(&all, &[]).await.expect("settles");
    assert!(store.claim("c", "h", 5_000, 1_000, 10).await.expect("claims").is_empty());
    assert_eq!(store.next_due_at("c").await.expect("due"), None, "{db:?}: nothing queued");
}
