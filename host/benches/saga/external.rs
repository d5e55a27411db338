//! The saga measured from outside, as users run it: the `wasaga` binary in its own
//! process on the embedded default (SQLite, embedded transport, local archive), driven
//! over HTTP by `wrk` with a Lua script. Closed loop at saturation, then paced loads;
//! latency is each order's own timeline (`order.placed` → `order.completed`), CPU is the
//! server process's own (`/proc/<pid>/stat`).

use crate::support::{cpu_seconds, latencies, percentile};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Varies the SKU per request; paces each connection when `WASAGA_WRK_DELAY_MS` is set
/// (wrk asks whether `delay` exists before it runs any per-thread code, so the choice is
/// made at the top level from the environment).
const SCRIPT: &str = r#"
local n = 0
local pause = tonumber(os.getenv("WASAGA_WRK_DELAY_MS") or "0")
local headers = { ["Content-Type"] = "application/json" }
request = function()
  n = n + 1
  local body = string.format('{"customer_id":"c","items":[{"sku":"SKU-%d","quantity":1,"unit_price_cents":100}],"payment":{"card_token":"tok_ok"}}', n % 10)
  return wrk.format("POST", "/api/orders", headers, body)
end
if pause > 0 then
  delay = function() return pause end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WASAGA {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// How a run loads the server.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// As fast as `connections` keep it busy, each waiting for its answer.
    Saturate { connections: u32 },
    /// About `per_sec` orders a second, spread over a few paced connections.
    Paced { per_sec: f64 },
}

/// One run's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Figures {
    pub accepted: u64,
    pub refused: u64,
    pub accepted_per_sec: f64,
    /// Accepted orders over the time until none is pending.
    pub completed_per_sec: f64,
    pub completed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The server's CPU time (user + system) per accepted order.
    pub cpu_ms_per_order: f64,
}

/// What every run needs: the binary, the load generator, the components.
pub struct Rig {
    pub bin: PathBuf,
    pub wrk: PathBuf,
    pub components: PathBuf,
}

/// Folders of the runs done, removed only once the benchmark ends ([`remove_spent`]):
/// a run leaves a hundred thousand archive files, and after deleting that many, ext4
/// (without a journal, as here) skips the freed inodes as recently deleted for one to
/// six minutes, which made creating files several times dearer in the runs that followed.
static SPENT: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

/// Keep `dir` until [`remove_spent`].
pub fn spent(dir: tempfile::TempDir) {
    if let Ok(mut spent) = SPENT.lock() {
        spent.push(dir);
    }
}

/// Remove the folders of every run.
pub fn remove_spent() {
    if let Ok(mut spent) = SPENT.lock() {
        spent.clear();
    }
}

/// A `wasaga serve` process on a fresh folder.
struct Server {
    child: Child,
    base: String,
    root: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some(dir) = self.dir.take() {
            spent(dir);
        }
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(rig: &Rig, extra_env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["inventory", "payment", "analytics"] {
        std::fs::copy(rig.components.join(format!("{name}.wasm")), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut command = Command::new(&rig.bin);
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WASAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WASAGA_DATA_DIR", dir.path().join("data"))
        .env("WASAGA_PLUGINS_DIR", &plugins)
        .env("WASAGA_ADMIN_TOKEN", "bench")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    // A setting under comparison is passed on (runs alternate with and without it).
    if let Some(linger) = std::env::var_os("WASAGA_BATCH_LINGER_MS") {
        command.env("WASAGA_BATCH_LINGER_MS", linger);
    }
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", rig.bin.display()));
    let root = dir.path().to_owned();
    let server = Server { child, base: format!("http://127.0.0.1:{port}"), root, dir: Some(dir) };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = http.get(format!("{}/readyz", server.base)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not become ready; see its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..10 {
        let put = http
            .put(format!("{}/api/stock/SKU-{i}", server.base))
            .bearer_auth("bench")
            .json(&json!({"available": 100_000_000}))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "stocking failed: {}", put.status());
    }
    for i in 0..10 {
        while http.get(format!("{}/api/stock/SKU-{i}", server.base)).send().await.unwrap().status() != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    server
}

/// Run `wrk` against a fresh server for `seconds` under `load`.
pub async fn run(rig: &Rig, load: Load, seconds: u32, extra_env: &[(&str, &str)]) -> Figures {
    let server = start(rig, extra_env).await;
    let http = reqwest::Client::new();
    let script = server.root.join("orders.lua");
    std::fs::write(&script, SCRIPT).unwrap();
    let (connections, pause_ms) = match load {
        Load::Saturate { connections } => (connections, 0),
        Load::Paced { per_sec } => {
            // Connections that each send one order every `pause` ms and then wait for
            // the answer: at 20 orders/s each, the answer's own time (a few ms) slows
            // the rate little, so the load stays close to the one asked for.
            let connections = (per_sec / 20.0).ceil().clamp(1.0, 32.0) as u32;
            (connections, (f64::from(connections) * 1000.0 / per_sec).round().max(1.0) as u64)
        }
    };
    let threads = connections.min(2);
    let cpu_before = cpu_seconds(server.child.id());
    // Profile the server while the load runs, when asked (`cargo xtask bench saga --profile`).
    let perf = match (std::env::var_os("WASAGA_BENCH_PERF_DATA"), load) {
        (Some(out), Load::Saturate { .. }) => Command::new("perf")
            .args(["record", "-F", "199", "--call-graph", "dwarf,16384", "-p", &server.child.id().to_string(), "-o"])
            .arg(out)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok(),
        _ => None,
    };
    let started = Instant::now();
    let output = Command::new(&rig.wrk)
        .args(["-t", &threads.to_string(), "-c", &connections.to_string(), "-d", &format!("{seconds}s")])
        .arg("-s")
        .arg(&script)
        .arg(&server.base)
        .env("WASAGA_WRK_DELAY_MS", pause_ms.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", rig.wrk.display()));
    if let Some(mut perf) = perf {
        let _ = perf.wait();
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let summary: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("WASAGA "))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("wrk printed no summary: {text}{}", String::from_utf8_lossy(&output.stderr)));
    let count = |k: &str| summary[k].as_u64().unwrap_or(0);
    let refused = count("status") + count("connect") + count("read") + count("write") + count("timeout");
    let accepted = count("requests").saturating_sub(count("status"));
    let load_secs = count("duration_us") as f64 / 1e6;
    crate::support::drain(&http, &server.base).await;
    let until_done = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.child.id()) - cpu_before;
    let latencies = latencies(&http, &server.base).await;
    Figures {
        accepted,
        refused,
        accepted_per_sec: accepted as f64 / load_secs,
        completed_per_sec: latencies.len() as f64 / until_done,
        completed: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        cpu_ms_per_order: cpu * 1000.0 / (accepted.max(1) as f64),
    }
}

/// The runs of the report: saturation, half of the peak completed rate, and 10 orders/s.
pub async fn report(rig: &Rig, store_alone: f64) -> (String, Value) {
    let saturated = run(rig, Load::Saturate { connections: 32 }, 8, &[]).await;
    let half_rate = (saturated.completed_per_sec / 2.0).max(1.0);
    let half = run(rig, Load::Paced { per_sec: half_rate }, 8, &[]).await;
    let slow = run(rig, Load::Paced { per_sec: 10.0 }, 6, &[]).await;
    // The same saturation with the payment step charging the gateway simulator over HTTP
    // through the host: one local round trip per capture, made and recorded by the host.
    let gateway = wasaga_gateway::Gateway::new(Duration::from_secs(30));
    let (gateway_url, gateway_task) = wasaga_gateway::serve(gateway.clone()).await.unwrap();
    let settings_dir = tempfile::tempdir().unwrap();
    let settings = settings_dir.path().join("gateway.toml");
    std::fs::write(
        &settings,
        format!(
            "[steps.payment]\noutbound = [\"{gateway_url}\"]\n\n[steps.payment.env]\nWASAGA_GATEWAY_URL = \"{gateway_url}\"\n"
        ),
    )
    .unwrap();
    let settings_path = settings.to_str().unwrap();
    let remote = run(rig, Load::Saturate { connections: 32 }, 8, &[("WASAGA_CONFIG", settings_path)]).await;
    let ledger = gateway.ledger();
    let charged: Vec<&str> =
        ledger["charges"].as_array().into_iter().flatten().filter_map(|c| c["order_id"].as_str()).collect();
    let charges = charged.len();
    // Every charge must be of a different order: the host's keys make retries free.
    let charged_orders = charged.iter().collect::<std::collections::BTreeSet<_>>().len();
    gateway_task.abort();
    let mut md = String::from(
        "## From outside: `wasaga serve` driven by wrk (embedded default)\n\n\
         SQLite (`synchronous=FULL`), embedded transport, local archive; `wrk` posts `tok_ok` orders over \
         HTTP from its own process on the same 2 cores. Completed/s is accepted orders over the time until \
         none is pending. Latency: each order's timeline, `order.placed` → `order.completed`. CPU: the \
         server process's user + system time per accepted order.\n\n\
         | load | accepted | accepted/s | completed/s | p50 ms | p99 ms | p99.9 ms | CPU ms/order |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let rows = [
        ("saturation, 32 connections, 8 s".to_owned(), &saturated),
        (format!("half of peak, {half_rate:.0}/s paced, 8 s"), &half),
        ("10/s paced, 6 s".to_owned(), &slow),
        ("saturation, payment charging the gateway simulator over HTTP, 32 connections, 8 s".to_owned(), &remote),
    ];
    for (label, f) in &rows {
        md.push_str(&format!(
            "| {label} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
            f.accepted, f.accepted_per_sec, f.completed_per_sec, f.p50_ms, f.p99_ms, f.p999_ms, f.cpu_ms_per_order
        ));
    }
    md.push_str(&format!(
        "\nStore alone in the same run (SQLite, 6 transactions per order via sqlx): {store_alone:.0} orders/s; \
         wasaga at saturation / store alone: {:.2}.\n",
        saturated.completed_per_sec / store_alone
    ));
    md.push_str(&format!(
        "\nPayment over HTTP / in-process (same run): {:.2} completed/s, {:.2}x the CPU per order; the simulator \
         (in the benchmark's process) holds {charges} charges of {charged_orders} distinct orders ({} orders \
         accepted within wrk's run; a few more are answered after it stops).\n",
        remote.completed_per_sec / saturated.completed_per_sec,
        remote.cpu_ms_per_order / saturated.cpu_ms_per_order,
        remote.accepted
    ));
    let json = json!({
        "saturated": saturated,
        "half": half,
        "half_rate": half_rate,
        "ten_per_sec": slow,
        "payment_over_http": remote,
        "payment_over_http_charges": charges,
        "payment_over_http_charged_orders": charged_orders,
        "store_alone_orders_per_sec": store_alone,
    });
    (md, json)
}

/// The load generator: Debian's `wrk`, found on the PATH or named by `WASAGA_WRK`.
pub fn find_wrk() -> Option<PathBuf> {
    let named = std::env::var_os("WASAGA_WRK").map(PathBuf::from);
    named.into_iter().chain([PathBuf::from("/usr/bin/wrk")]).find(|p| Path::new(p).exists())
}
