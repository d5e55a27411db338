//! The machine's own services the tests need: PostgreSQL must answer on 127.0.0.1:5432.
//! If it does not, start it with the machine's own command and wait for it.

use anyhow::bail;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const POSTGRES: &str = "127.0.0.1:5432";

fn answers(addr: &str) -> bool {
    addr.parse().ok().is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// Make sure PostgreSQL is up, starting the local cluster if needed.
pub fn ensure_postgres() -> anyhow::Result<()> {
    if answers(POSTGRES) {
        return Ok(());
    }
    eprintln!("PostgreSQL does not answer on {POSTGRES}; starting the local cluster");
    let versions = std::fs::read_dir("/etc/postgresql")
        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default();
    for version in versions {
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version.to_string_lossy(), "main", "start"])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if answers(POSTGRES) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "PostgreSQL is not reachable on {POSTGRES} and could not be started: the PostgreSQL tests need it (set WASAGA_TEST_PG_URL to use another server)"
    )
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Check compose.yml with Debian's `docker-compose` (installed here if missing: no Docker
/// engine is needed to validate the file).
pub fn check_compose(root: &std::path::Path) -> anyhow::Result<()> {
    if !on_path("docker-compose") {
        eprintln!("installing docker-compose to validate compose.yml");
        let _ = Command::new("apt-get").args(["update", "-q"]).stdout(std::process::Stdio::null()).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "docker-compose"])
            .stdout(std::process::Stdio::null())
            .status();
        if !on_path("docker-compose") {
            eprintln!("docker-compose is not available: compose.yml not validated");
            return Ok(());
        }
    }
    let status =
        Command::new("docker-compose").current_dir(root).args(["-f", "compose.yml", "config", "-q"]).status()?;
    if !status.success() {
        bail!("compose.yml is not valid (docker-compose -f compose.yml config)");
    }
    eprintln!("compose.yml is valid");
    Ok(())
}
