//! Fault classes seen from outside: what is the step's, the event's or the host's fault
//! decides whether an attempt is used, an event alone fails, or the batch waits.

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;
use wasaga_host::saga::SagaContext;

const WAIT: Duration = Duration::from_secs(90);

async fn dead_letters(api: &Api) -> Vec<Value> {
    api.admin_get("/api/admin/dead-letters").await.json().await.expect("dead letters are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_name_the_storage_refuses_fails_its_event_alone() {
    let (app, store) = pg_app(&["hostile"], |_| {}).await;
    store.emit(&SagaContext::host_event("hostile.long-name", "o-poison", "{}".to_owned())).await.expect("emit");
    let ids: Vec<String> = (0..20).map(|i| format!("o-{i}")).collect();
    for id in &ids {
        store.emit(&SagaContext::host_event("hostile.archive", id, "{}".to_owned())).await.expect("emit");
    }
    for id in &ids {
        eventually(WAIT, "the event beside the poison is archived", async || {
            store.timelines(&[id.to_string()]).await.expect("timeline").iter().any(|t| t.kind == "hostile.archived")
        })
        .await;
    }
    eventually(WAIT, "the poison is dead-lettered", async || {
        dead_letters(&app).await.iter().any(|d| d["event"]["kind"] == "hostile.long-name")
    })
    .await;
    let dead = dead_letters(&app).await;
    let poison = dead.iter().find(|d| d["event"]["kind"] == "hostile.long-name").expect("dead letter");
    assert!(poison["error"].as_str().unwrap_or_default().contains("refused"), "{poison}");
    assert_eq!(dead.len(), 1, "only the poison: {dead:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_refusals_inside_host_calls_are_the_steps_and_end_in_a_dead_letter() {
    let (app, store) = pg_app(&["hostile"], |s| {
        s.max_attempts = 3;
        // Reads are bounded too; here the deadline must come first.
        s.step_max_state_reads = 1_000_000;
    })
    .await;
    let kinds = ["hostile.read-many", "hostile.read-big", "hostile.nul-read"];
    for kind in kinds {
        let order_id = format!("o-{kind}");
        let start = SagaContext::host_event("test.nothing", &order_id, "{}".to_owned());
        store.create_order(&new_order(&order_id, start.clone()), None).await.expect("order");
        store.emit(&SagaContext::host_event(kind, &order_id, "{}".to_owned())).await.expect("emit");
    }
    for kind in kinds {
        eventually(WAIT, &format!("{kind} is dead-lettered"), async || {
            dead_letters(&app).await.iter().any(|d| d["event"]["kind"] == kind)
        })
        .await;
        let dead = dead_letters(&app).await;
        let letter = dead.iter().find(|d| d["event"]["kind"] == kind).expect("dead letter");
        assert_eq!(letter["attempts"], 3, "every attempt was used, none spared as the host's: {letter}");
        let order = format!("o-{kind}");
        eventually(WAIT, "its order is cancelled", async || app.order(&order).await["status"] == "cancelled").await;
    }
    let errors: Vec<String> =
        dead_letters(&app).await.iter().map(|d| d["error"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(errors.iter().any(|e| e.contains("deadline")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("WASAGA_STEP_MAX_STATE_READ_BYTES")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("NUL")), "{errors:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensations_lost_for_ended_orders_are_published_again() {
    let (app, _store) = pg_app(&["hostile"], |s| {
        s.redrive_after_ms = 2000;
        s.maintenance_interval_ms = 500;
    })
    .await;
    app.stock_up("SKU-1", 100).await;
    let ids: Vec<String> = futures::future::join_all((0..10).map(|_| app.place(&[("SKU-1", 1)], "tok_ok"))).await;
    for id in &ids {
        eventually(WAIT, "the order completes", async || app.order(id).await["status"] == "completed").await;
    }
    // The broker loses every order.cancelled meant for payment and inventory (as a deleted
    // queue would): the orders are cancelled, but nobody refunds or restocks.
    let url = app.store_url.clone().expect("a PostgreSQL store");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
    sqlx::query("DELETE FROM subscriptions WHERE pattern = 'order.cancelled'")
        .execute(&mut conn)
        .await
        .expect("unsubscribe");
    for id in &ids {
        assert_eq!(app.cancel(id).await, 202, "cancel {id}");
    }
    for id in &ids {
        eventually(WAIT, "the refund and the restock come by the redrive", async || {
            let order = app.order(id).await;
            let kinds: Vec<String> = order["timeline"]
                .as_array()
                .map(|t| t.iter().filter_map(|e| e["kind"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            kinds.iter().any(|k| k == "payment.refunded") && kinds.iter().any(|k| k == "stock.released")
        })
        .await;
    }
    eventually(WAIT, "every unit is back in stock", async || {
        let stock = app.stock("SKU-1").await.expect("stock");
        (stock["available"].as_u64(), stock["reserved"].as_u64()) == (Some(100), Some(0))
    })
    .await;
    app.stop().await;
}

/// A host replaced by one with a new id and a fresh folder (the first one gone for good,
/// SIGKILLed) while orders flow: the new host takes the stream's partitions over, and
/// every event is archived once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_replaced_by_one_with_a_new_id_keeps_the_archive_complete() {
    use crate::brokers::{Brokers, RABBIT};
    use crate::crash::Server;
    let _shared = RABBIT.read().await;
    let brokers = Brokers::start(true).await;
    let url = fresh_pg_database().await;
    let token = format!("t-{}", rand_id());
    let folder = || {
        let dir = tempfile::tempdir().expect("temp dir");
        install_saga_steps(&dir.path().join("plugins"));
        dir
    };
    let (first_dir, second_dir) = (folder(), folder());
    let env_of = |id: &str| {
        let mut env = brokers.env();
        env.push(("WASAGA_HOST_ID", id.to_owned()));
        env
    };
    let first = Server::start_env(first_dir.path(), Some(&url), &token, &env_of("first"));
    first.api.wait_ready().await;
    let stocked = std::collections::BTreeMap::from([("SKU-1".to_owned(), 200)]);
    first.api.stock_up("SKU-1", 200).await;
    let before: Vec<String> =
        futures::future::join_all((0..15).map(|_| first.api.place(&[("SKU-1", 1)], "tok_ok"))).await;
    for id in &before {
        eventually(WAIT, "the order completes", async || first.api.order(id).await["status"] == "completed").await;
    }
    first.kill();
    let second = Server::start_env(second_dir.path(), Some(&url), &token, &env_of("second"));
    second.api.wait_ready().await;
    let after: Vec<String> =
        futures::future::join_all((0..15).map(|_| second.api.place(&[("SKU-1", 1)], "tok_ok"))).await;
    for id in &after {
        eventually(WAIT, "the order completes", async || second.api.order(id).await["status"] == "completed").await;
    }
    // Every event of every order, before and after the replacement, archived once.
    second.api.assert_invariants(&stocked).await;
    second.kill();
}
