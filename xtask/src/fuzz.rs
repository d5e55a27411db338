//! `cargo xtask fuzz`: schemathesis against `GET /api/openapi.json` of a running
//! wasaga, once on SQLite and once on PostgreSQL. Every generated request must get an
//! answer that is not a 5xx and that matches the described schema.
//!
//! schemathesis lives in a Python venv under the cache folder, created on first use.

use crate::flags::{Fuzz, FuzzBackend};
use crate::http::request;
use crate::util::{cargo, run as run_cmd, target_dir};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const CHECKS: &str = "not_a_server_error,response_schema_conformance";
const FUZZ_DATABASE: &str = "wasaga_fuzz";

pub fn run(args: &Fuzz) -> anyhow::Result<()> {
    let st = install_schemathesis()?;
    run_cmd(cargo().args(["build", "-p", "wasaga-host", "--bin", "wasaga"]))?;
    let components = args.components.clone().unwrap_or_else(|| target_dir().join("wasaga-test-components"));
    let backends: Vec<(&str, Option<String>)> = match args.backend {
        Some(FuzzBackend::Sqlite) => vec![("sqlite", None)],
        Some(FuzzBackend::Postgres) => vec![("postgres", Some(fresh_database()?))],
        None => vec![("sqlite", None), ("postgres", Some(fresh_database()?))],
    };
    for (name, store_url) in backends {
        eprintln!("schemathesis on {name}: {CHECKS}, {} examples per operation", args.examples);
        fuzz_one(&st, &components, store_url.as_deref(), args.examples)
            .with_context(|| format!("schemathesis on {name}"))?;
    }
    Ok(())
}

/// The `st` executable of a venv kept under the cache folder.
fn install_schemathesis() -> anyhow::Result<PathBuf> {
    crate::services::python_tool("schemathesis", SCHEMATHESIS, "st")
}

/// A new, empty PostgreSQL database for this run.
fn fresh_database() -> anyhow::Result<String> {
    crate::services::ensure_postgres()?;
    let status = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
        .arg(format!("DROP DATABASE IF EXISTS {FUZZ_DATABASE} WITH (FORCE)"))
        .status()
        .context("cannot run psql")?;
    if !status.success() {
        bail!("cannot drop the PostgreSQL database {FUZZ_DATABASE}");
    }
    crate::services::ensure_database(FUZZ_DATABASE)?;
    Ok(format!("postgres://postgres@127.0.0.1:5432/{FUZZ_DATABASE}"))
}

/// A wasaga server on a free port, in a temporary folder, stopped when dropped.
struct Server {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_server(components: &Path, store_url: Option<&str>, token: &str) -> anyhow::Result<Server> {
    let dir = std::env::temp_dir().join(format!("wasaga-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for step in ["inventory", "payment", "analytics"] {
        let from = components.join(format!("{step}.wasm"));
        std::fs::copy(&from, plugins.join(format!("{step}.wasm")))
            .with_context(|| format!("{} (cargo xtask build-plugins --fixtures --out …)", from.display()))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(target_dir().join("debug").join("wasaga"));
    command
        .arg("serve")
        .env("WASAGA_HTTP_ADDR", &addr)
        .env("WASAGA_DATA_DIR", dir.join("data"))
        .env("WASAGA_PLUGINS_DIR", &plugins)
        .env("WASAGA_ADMIN_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("wasaga.log"))?);
    if let Some(url) = store_url {
        command.env("WASAGA_STORE_URL", url);
    }
    let mut child = command.spawn().context("starting wasaga")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("wasaga.log")).unwrap_or_default();
            bail!("wasaga exited before it was ready: {status}\n{log}");
        }
        if let Ok((200, _)) = request(&addr, "GET", "/readyz", &[], "") {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("wasaga was not ready within two minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Server { child, addr, dir })
}

fn fuzz_one(st: &Path, components: &Path, store_url: Option<&str>, examples: u32) -> anyhow::Result<()> {
    let token = format!("fuzz-{}", std::process::id());
    let server = start_server(components, store_url, &token)?;
    // Known stock and a placed order give the generated reads something to find.
    let auth = format!("Bearer {token}");
    request(
        &server.addr,
        "PUT",
        "/api/stock/SKU-1",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        r#"{"available":1000}"#,
    )?;
    // Settings and hooks: xtask/fuzz/.
    let settings = crate::util::root().join("xtask").join("fuzz");
    let mut cmd = Command::new(st);
    cmd.arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{}/api/openapi.json", server.addr))
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Authorization: {auth}")])
        .args(["--max-examples", &examples.to_string()])
        .args(["--workers", "1"])
        // Its cache of found failures goes with the server's temporary folder.
        .current_dir(&server.dir)
        .env("PYTHONPATH", &settings)
        .env("SCHEMATHESIS_HOOKS", "wasaga_fuzz_hooks");
    let result = run_cmd(&mut cmd);
    if result.is_err() {
        let log = std::fs::read_to_string(server.dir.join("wasaga.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("the server's last log lines:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
    result
}
