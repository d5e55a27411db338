//! Crash safety: the `wasaga` binary killed with SIGKILL in the middle of traffic, at
//! several moments, then started again on the same store. Every order ends terminal,
//! the invariants hold, and no step handled an event twice.

use crate::helpers::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A `wasaga serve` process.
pub(crate) struct Server {
    child: Child,
    pub(crate) api: Api,
    /// The last lines the server logged, shown when a test fails with it running.
    log: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// Lines of a server's log kept for a failing test.
const LOG_TAIL: usize = 300;

impl Server {
    fn start(dir: &Path, store_url: Option<&str>, token: &str) -> Server {
        Server::start_with(dir, store_url, None, token)
    }

    /// Start `wasaga serve` with extra environment (the brokers to use).
    pub(crate) fn start_env(dir: &Path, store_url: Option<&str>, token: &str, env: &[(&str, String)]) -> Server {
        Server::spawn(dir, store_url, None, token, env)
    }

    /// Start `wasaga serve`, with a settings file if given.
    pub(crate) fn start_with(dir: &Path, store_url: Option<&str>, config: Option<&Path>, token: &str) -> Server {
        Server::spawn(dir, store_url, config, token, &[])
    }

    /// Start `wasaga serve` with a settings file if given, and extra environment.
    pub(crate) fn spawn(
        dir: &Path,
        store_url: Option<&str>,
        config: Option<&Path>,
        token: &str,
        env: &[(&str, String)],
    ) -> Server {
        let mut command = Command::new(wasaga_bin());
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .env("WASAGA_HTTP_ADDR", "127.0.0.1:0")
            .env("WASAGA_DATA_DIR", dir.join("data"))
            .env("WASAGA_PLUGINS_DIR", dir.join("plugins"))
            .env("WASAGA_ADMIN_TOKEN", token)
            .env("WASAGA_RETRY_BASE_MS", "10")
            .env("WASAGA_STEP_CONCURRENCY", "8")
            .env("RUST_LOG", "info")
            .env_remove("WASAGA_TEST_COMPONENTS")
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = store_url {
            command.env("WASAGA_STORE_URL", url);
        }
        let mut child = command.spawn().expect("wasaga starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let log: Arc<std::sync::Mutex<std::collections::VecDeque<String>>> = Arc::default();
        let kept = log.clone();
        std::thread::spawn(move || {
            let echo = std::env::var_os("TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[wasaga] {line}");
                }
                if let Ok(mut kept) = kept.lock() {
                    if kept.len() == LOG_TAIL {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                if line.contains("wasaga is listening")
                    && let Some(addr) = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).expect("wasaga says where it listens");
        let api = Api {
            addr: addr.parse().expect("address"),
            token: token.to_owned(),
            http: reqwest::Client::new(),
            data_dir: dir.join("data"),
        };
        Server { child, api, log }
    }

    /// SIGTERM, then wait up to `timeout` for the process to exit; its status if it did.
    pub(crate) fn terminate_and_wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The last lines the server logged.
    pub(crate) fn log_tail(&self) -> Vec<String> {
        self.log.lock().map(|log| log.iter().cloned().collect()).unwrap_or_default()
    }

    /// SIGKILL (dropping a server does the same).
    pub(crate) fn kill(self) {
        drop(self);
    }
}

/// Hosts of one fleet on a fresh PostgreSQL database and a RabbitMQ namespace of their
/// own, sharing one archive folder, as a fleet shares one.
pub(crate) struct RabbitFleet {
    pub(crate) dirs: Vec<tempfile::TempDir>,
    store: String,
    token: String,
    env: Vec<(&'static str, String)>,
    _archive: tempfile::TempDir,
}

impl RabbitFleet {
    pub(crate) async fn new(hosts: usize) -> RabbitFleet {
        let archive = tempfile::tempdir().expect("archive");
        let env = vec![
            ("WASAGA_TRANSPORT_URL", crate::brokers::amqp_url()),
            ("WASAGA_NAMESPACE", format!("t{}", rand_id())),
            ("WASAGA_ARCHIVE_URL", format!("file://{}", archive.path().display())),
        ];
        RabbitFleet {
            dirs: host_dirs(hosts),
            store: fresh_pg_database().await,
            token: format!("t-{}", rand_id()),
            env,
            _archive: archive,
        }
    }

    /// Start host `i` with the settings file `config`.
    pub(crate) fn start(&self, i: usize, config: &Path) -> Server {
        Server::spawn(self.dirs[i].path(), Some(&self.store), Some(config), &self.token, &self.env)
    }

    /// Start every host and wait until each is ready.
    pub(crate) async fn start_all(&self, config: &Path) -> Vec<Server> {
        let servers: Vec<Server> = (0..self.dirs.len()).map(|i| self.start(i, config)).collect();
        for server in &servers {
            server.api.wait_ready().await;
        }
        servers
    }
}

impl Drop for Server {
    /// A test that fails half-way leaves no process behind.
    fn drop(&mut self) {
        // SIGKILL: no shutdown code runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the server it ran last said.
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            eprintln!("--- the last {} lines of wasaga {} ---", log.len(), self.api.addr);
            for line in log.iter() {
                eprintln!("[wasaga] {line}");
            }
        }
    }
}

/// Start a server, stock it, then for each count in `kill_after`: place orders until that
/// many were accepted in all, SIGKILL the server and start it again. Returns the last one.
pub(crate) async fn kill_mid_traffic(
    start: impl Fn() -> Server,
    stocked: &BTreeMap<String, u64>,
    kill_after: &[usize],
) -> Server {
    let mut server = start();
    for (sku, n) in stocked {
        server.api.stock_up(sku, *n).await;
    }
    let accepted = Arc::new(AtomicUsize::new(0));
    for &target in kill_after {
        let loader = load(server.api.clone(), accepted.clone());
        eventually(Duration::from_secs(60), "orders are accepted", async || accepted.load(Ordering::Relaxed) >= target)
            .await;
        server.kill();
        loader.abort();
        server = start();
    }
    server
}

const TOKENS: [&str; 6] = ["tok_ok", "tok_ok", "tok_decline", "tok_flaky_2", "tok_trap", "tok_ok"];

/// Place orders until aborted, counting those the server accepted.
fn load(api: Api, accepted: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0usize.. {
            let batch = (0..8).map(|j| {
                let body = order_body(&[("SKU-1", 1 + (j % 2) as u32), ("SKU-2", 1)], TOKENS[(i + j) % TOKENS.len()]);
                let api = api.clone();
                // The server may be killed at any moment: a failed request is expected.
                async move { api.http.post(api.url("/api/orders")).json(&body).send().await }
            });
            for result in futures::future::join_all(batch).await {
                if result.is_ok_and(|r| r.status() == 202) {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

async fn killed_mid_traffic(db: Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let url = store_url(db).await;
    let token = format!("t-{}", rand_id());
    let stocked = BTreeMap::from([("SKU-1".to_owned(), 400), ("SKU-2".to_owned(), 300)]);
    // Kill at different moments: right after start, and later under more load.
    let start = || Server::start(dir.path(), url.as_deref(), &token);
    let server = kill_mid_traffic(start, &stocked, &[8, 40, 90]).await;
    server.api.assert_invariants(&stocked).await;
    let orders = server.api.all_orders().await;
    assert!(orders.len() >= 90, "only {} orders", orders.len());
    let completed = orders.iter().filter(|o| o["status"] == "completed").count();
    eprintln!(
        "{db:?}: 3 SIGKILLs, {} orders, {completed} completed, the rest cancelled; invariants hold",
        orders.len()
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill_mid_traffic() {
    killed_mid_traffic(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill_mid_traffic() {
    killed_mid_traffic(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SQL Server: set WASAGA_TEST_MSSQL_URL"]
async fn mssql_survives_sigkill_mid_traffic() {
    assert!(
        mssql_admin_url().is_some(),
        "set WASAGA_TEST_MSSQL_URL=mssql://sa:…@host:1433/master?trust_server_certificate=true"
    );
    killed_mid_traffic(Db::Mssql).await;
}
