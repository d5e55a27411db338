//! Polyglot persistence: each step on its own store (orders and inventory on SQLite, or
//! on SQL Server as in `examples/polyglot.toml` where `WASAGA_TEST_MSSQL_URL` names one;
//! payment and analytics on two PostgreSQL databases), events crossing stores only
//! through the transport; the invariants hold, also across a SIGKILL of the host.

use crate::crash::{Server, kill_mid_traffic};
use crate::helpers::*;
use std::collections::BTreeMap;

/// Write a `wasaga.toml` mapping payment and analytics to two fresh PostgreSQL
/// databases; the orders and inventory stay in the main store.
async fn polyglot_config(dir: &std::path::Path) -> std::path::PathBuf {
    let payments = fresh_pg_database().await;
    let analytics = fresh_pg_database().await;
    let toml = format!(
        "[stores.payments]\nurl = \"{payments}\"\n\n[stores.analytics]\nurl = \"{analytics}\"\n\n\
         [steps.payment]\nstore = \"payments\"\n\n[steps.analytics]\nstore = \"analytics\"\n"
    );
    let path = dir.join("wasaga.toml");
    std::fs::write(&path, toml).expect("write settings");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_on_three_stores_keep_the_invariants() {
    steps_on_three_stores(Db::Sqlite).await;
}

/// The seed's layout: orders and inventory on SQL Server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SQL Server: set WASAGA_TEST_MSSQL_URL"]
async fn orders_on_sql_server_steps_on_postgres_keep_the_invariants() {
    assert!(
        mssql_admin_url().is_some(),
        "set WASAGA_TEST_MSSQL_URL=mssql://sa:…@host:1433/master?trust_server_certificate=true"
    );
    steps_on_three_stores(Db::Mssql).await;
}

/// Orders and inventory on `db`, payment and analytics on PostgreSQL.
async fn steps_on_three_stores(db: Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let config = polyglot_config(dir.path()).await;
    let mut settings = test_settings(&dir, store_url(db).await);
    let file = wasaga_host::config::Settings::load(Some(&config)).expect("settings file");
    settings.stores = file.stores;
    settings.steps = file.steps;
    let app = spawn_with(dir, settings).await;
    app.stock_up("SKU-1", 30).await;
    let tokens = ["tok_ok", "tok_decline", "tok_flaky_2", "tok_trap", "tok_ok"];
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(app.place(&[("SKU-1", 1 + (i % 2) as u32)], tokens[i % tokens.len()]).await);
    }
    app.cancel(&ids[0]).await;
    app.assert_invariants(&BTreeMap::from([("SKU-1".to_owned(), 30)])).await;
    // Payment's events live in its own database and still make up the order's timeline.
    let order = app.order(&ids[1]).await;
    let steps: Vec<&str> =
        order["timeline"].as_array().expect("timeline").iter().filter_map(|t| t["step"].as_str()).collect();
    assert!(steps.contains(&"payment") && steps.contains(&"inventory"), "{steps:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polyglot_survives_sigkill_mid_traffic() {
    survives_sigkill_mid_traffic(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SQL Server: set WASAGA_TEST_MSSQL_URL"]
async fn orders_on_sql_server_survive_sigkill_mid_traffic() {
    assert!(
        mssql_admin_url().is_some(),
        "set WASAGA_TEST_MSSQL_URL=mssql://sa:…@host:1433/master?trust_server_certificate=true"
    );
    survives_sigkill_mid_traffic(Db::Mssql).await;
}

async fn survives_sigkill_mid_traffic(db: Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let config = polyglot_config(dir.path()).await;
    let token = format!("t-{}", rand_id());
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 400), ("SKU-2".to_owned(), 300)]);
    let store = store_url(db).await;
    let start = || Server::start_with(dir.path(), store.as_deref(), Some(&config), &token);
    let server = kill_mid_traffic(start, &stocked, &[10, 50]).await;
    server.api.assert_invariants(&stocked).await;
    server.kill();
}
