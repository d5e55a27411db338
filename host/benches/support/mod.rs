//! What the benchmarks share: latencies read off the orders' timelines, percentiles,
//! a process's CPU time, the archive's lag behind the saga, a fresh PostgreSQL database per run.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// User plus system CPU seconds of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may hold spaces, start after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// POST → completed of every completed order, in ms, sorted, from the orders' timelines.
pub async fn latencies(http: &reqwest::Client, base: &str) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(c) => format!("{base}/api/orders?status=completed&limit=500&after={c}"),
            None => format!("{base}/api/orders?status=completed&limit=500"),
        };
        let page: Value = http.get(url).bearer_auth("bench").send().await.unwrap().json().await.unwrap();
        for order in page["orders"].as_array().unwrap() {
            let at = |kind: &str| {
                order["timeline"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["kind"] == kind)
                    .and_then(|t| t["at"].as_str())
                    .map(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap())
            };
            if let (Some(placed), Some(done)) = (at("order.placed"), at("order.completed")) {
                latencies.push((done - placed).as_seconds_f64() * 1000.0);
            }
        }
        match page["next"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// Wait until no order is pending.
pub async fn drain(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let page: Value = http
            .get(format!("{base}/api/orders?status=pending&limit=1"))
            .bearer_auth("bench")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["orders"].as_array().is_some_and(|o| o.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "orders still pending after 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events in a PostgreSQL store's outbox that the analytics step has not handled (no
/// inbox row): how far the archive lags the saga.
pub async fn unarchived_events(url: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let (left,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM outbox o WHERE NOT EXISTS \
         (SELECT 1 FROM inbox i WHERE i.consumer = 'analytics' AND i.event_id = o.event_id)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    left
}

/// A new PostgreSQL database beside `admin`'s, for one run.
pub async fn fresh_pg(admin: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    let name = format!("wasaga_bench_{:x}", rand::random::<u32>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await.unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

/// Drop a database made by [`fresh_pg`] (its connections too).
pub async fn drop_pg(admin: &str, url: &str) {
    use sqlx::Connection;
    let name = url.rsplit('/').next().unwrap();
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut conn)
        .await;
}
