//! Claims on the embedded transport's deliveries, as the store keeps them (rows on
//! PostgreSQL, memory on SQLite, which one process owns): a claimed delivery goes to no
//! one else until it is settled, rescheduled, released or its claim ends by the store's
//! clock; a claim is renewed while its batch runs; a settle touches only what its host
//! still claims; and the next due time never points at a delivery someone holds (a
//! consumer would spin on it).

use crate::helpers::*;
use std::time::Duration;
use wasaga_host::event::now_ms;
use wasaga_host::store::RetryRow;

on_every_store!(a_claimed_delivery_waits_for_its_holder);

async fn a_claimed_delivery_waits_for_its_holder(db: Db) {
    let (store, _dir) = test_store(db).await;
    let rows: Vec<_> = (1..=3).map(|n| ("c".to_owned(), format!("e-{n}"), format!("wire-{n}"))).collect();
    store.enqueue(&rows, 1, None).await.expect("queues");
    let ids =
        |claimed: &[wasaga_host::store::DeliveryRow]| claimed.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>();

    let started = now_ms();
    let first = store.claim("c", "h", started, 60_000, 2).await.expect("claims");
    assert_eq!(ids(&first), ["e-1", "e-2"], "{db:?}: in queue order, up to the limit");
    let second = store.claim("c", "h", started, 60_000, 10).await.expect("claims");
    assert_eq!(ids(&second), ["e-3"], "{db:?}: what the first claim holds is skipped");
    assert!(store.claim("c", "h", started, 60_000, 10).await.expect("claims").is_empty());
    let ends = store.next_due_at("c").await.expect("due").expect("claims end");
    assert!(ends >= started + 59_000 && ends <= now_ms() + 60_000, "{db:?}: due when the claims end: {ends}");
    assert!(store.claim("other", "h", started, 60_000, 10).await.expect("claims").is_empty(), "{db:?}: per consumer");
    if !store.exclusive() {
        // A host whose clock runs far ahead still sees the claims live: the store's
        // clock decides.
        let ahead = store.claim("c", "h2", i64::MAX / 4, 60_000, 10).await.expect("claims");
        assert!(ahead.is_empty(), "{db:?}: a host's clock ended another's claim: {ahead:?}");
    }

    // A retry drops its claim and is due again later, with its attempt counted.
    store
        .settle("h", &[], &[RetryRow { id: first[0].id, due_at_ms: 500, error: "flaky".to_owned(), counted: true }])
        .await
        .expect("settles");
    assert_eq!(store.next_due_at("c").await.expect("due"), Some(500));
    assert!(store.claim("c", "h", 400, 60_000, 10).await.expect("claims").is_empty(), "{db:?}: not due yet");
    let retried = store.claim("c", "h", 600, 60_000, 10).await.expect("claims");
    assert_eq!(ids(&retried), ["e-1"]);
    assert_eq!(retried[0].attempts, 1);

    // A restarted host drops its claims: everything unsettled is due at once, and what
    // its earlier run settles late (no longer claimed) stays queued.
    store.release_claims("h").await.expect("releases");
    let unclaimed: Vec<i64> = first.iter().chain(&second).map(|d| d.id).collect();
    store.settle("h", &unclaimed, &[]).await.expect("settles");
    store
        .settle("h", &[], &[RetryRow { id: first[1].id, due_at_ms: 1, error: "late".to_owned(), counted: true }])
        .await
        .expect("settles");
    let again = store.claim("c", "h", now_ms(), 200, 10).await.expect("claims");
    assert_eq!(ids(&again), ["e-2", "e-3", "e-1"], "{db:?}: in (due, id) order, none settled");
    assert_eq!(again[0].attempts, 0, "{db:?}: a late retry counted nothing");

    // Short claims end by themselves (by the store's clock); renewed ones later.
    eventually(Duration::from_secs(10), "ended claims are taken again", async || {
        store.claim("c", "h", now_ms(), 60_000, 10).await.expect("claims").len() == 3
    })
    .await;
    let before = now_ms();
    store.renew_claims("h", 120_000).await.expect("renews");
    let ends = store.next_due_at("c").await.expect("due").expect("claims end");
    assert!(ends >= before + 119_000, "{db:?}: renewed claims end later: {ends}");

    // A settle by another host leaves the deliveries alone (on SQLite one process owns
    // the store, so there is no other host); the holder's settles them.
    let all: Vec<i64> = again.iter().map(|d| d.id).collect();
    if !store.exclusive() {
        store.settle("h2", &all, &[]).await.expect("settles");
        assert!(store.next_due_at("c").await.expect("due").is_some(), "{db:?}: another host settled our claims");
    }
    store.settle("h", &all, &[]).await.expect("settles");
    assert_eq!(store.next_due_at("c").await.expect("due"), None, "{db:?}: nothing queued");
}
