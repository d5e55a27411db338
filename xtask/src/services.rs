//! The services wasaga runs against. The machine's own PostgreSQL and RabbitMQ are
//! started with the machine's commands if they do not answer; tansu (Kafka) and Azurite
//! (Azure Blob) are installed once under the cache folder and started from there.

use anyhow::{Context, bail};
use std::net::TcpStream;
use std::path::PathBuf;
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
    if wait_for(POSTGRES, Duration::from_secs(60)) {
        return Ok(());
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

/// Where installed tools and running services' files live: outside the clone, so a
/// fresh clone (and CI) reuses them.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASAGA_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("wasaga")
}

/// The Kafka-compatible broker and the Azure Blob emulator, installed once.
pub struct Tools {
    pub tansu: PathBuf,
    pub azurite: PathBuf,
}

/// What the browser tests need, installed once.
pub struct BrowserTools {
    /// The npm prefix holding `node_modules/playwright-core`.
    pub playwright: PathBuf,
    /// Debian's Chromium.
    pub chromium: PathBuf,
}

const TANSU_VERSION: &str = "0.6.0";
/// `libsql` gives tansu a SQLite log, so a restarted broker keeps its topics and offsets.
const TANSU_FEATURES: &str = "dynostore,postgres,libsql";
/// The newest Azurite whose `engines` accepts Node.js 20 (3.36 and later need 21+).
const AZURITE_PACKAGE: &str = "azurite@3.35.0";
/// Drives the system's Chromium in the browser tests; it downloads no browser.
const PLAYWRIGHT_PACKAGE: &str = "playwright-core@1.57.0";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Install tansu (cargo install) and Azurite (npm) under the cache folder unless there.
///
/// Both installs depend only on what xtask itself provides: tansu is built with this
/// checkout's toolchain (named in `RUSTUP_TOOLCHAIN`, so a dependency's own
/// `rust-toolchain.toml` cannot ask for another) and `--locked` versions; Azurite is an
/// exact npm version in a prefix of its own.
pub fn install_tools() -> anyhow::Result<Tools> {
    let tools = cache_dir().join("tools");
    let tansu = tools.join("bin").join("tansu");
    let stamp = tools.join(format!("tansu-{TANSU_VERSION}-{}.installed", TANSU_FEATURES.replace(',', "-")));
    if !tansu.exists() || !stamp.exists() {
        let toolchain = crate::util::toolchain()?;
        eprintln!(
            "installing tansu {TANSU_VERSION} (Kafka) into {} with the {toolchain} toolchain: once, about 10 minutes on 2 cores",
            tools.display()
        );
        let mut install = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        install
            .args(["install", "tansu", "--version", TANSU_VERSION, "--locked", "--features", TANSU_FEATURES])
            .arg("--root")
            .arg(&tools)
            .arg("--target-dir")
            .arg(cache_dir().join("tools-build"))
            .env_remove("CARGO_TARGET_DIR")
            .env("RUSTUP_TOOLCHAIN", &toolchain);
        crate::util::run(&mut install).context("installing tansu")?;
        std::fs::write(&stamp, TANSU_FEATURES)?;
    }
    let azurite_dir = tools.join("azurite");
    let azurite = azurite_dir.join("node_modules").join(".bin").join("azurite-blob");
    let azurite_stamp = azurite_dir.join(format!("{}.installed", AZURITE_PACKAGE.replace('@', "-")));
    if !azurite.exists() || !azurite_stamp.exists() {
        eprintln!("installing {AZURITE_PACKAGE} (Azure Blob) into {}: once, under a minute", azurite_dir.display());
        std::fs::create_dir_all(&azurite_dir)?;
        let mut install = Command::new("npm");
        install
            .args(["install", "--no-audit", "--no-fund", "--no-save", "--loglevel", "error", "--prefix"])
            .arg(&azurite_dir)
            .arg(AZURITE_PACKAGE);
        crate::util::run(&mut install).context("installing Azurite (npm, from Node.js, is needed)")?;
        if !azurite.exists() {
            bail!("npm install {AZURITE_PACKAGE} did not install {}", azurite.display());
        }
        std::fs::write(&azurite_stamp, AZURITE_PACKAGE)?;
    }
    Ok(Tools { tansu, azurite })
}

/// playwright-core (npm, under the cache folder) and Debian's Chromium.
pub fn install_browser_tools() -> anyhow::Result<BrowserTools> {
    let playwright = cache_dir().join("tools").join("playwright");
    let playwright_stamp = playwright.join(format!("{}.installed", PLAYWRIGHT_PACKAGE.replace('@', "-")));
    if !playwright_stamp.exists() {
        eprintln!("installing {PLAYWRIGHT_PACKAGE} (browser tests) into {}: once, seconds", playwright.display());
        std::fs::create_dir_all(&playwright)?;
        let mut install = Command::new("npm");
        install
            .args(["install", "--no-audit", "--no-fund", "--no-save", "--loglevel", "error", "--prefix"])
            .arg(&playwright)
            .arg(PLAYWRIGHT_PACKAGE);
        crate::util::run(&mut install).context("installing playwright-core (npm, from Node.js, is needed)")?;
        std::fs::write(&playwright_stamp, PLAYWRIGHT_PACKAGE)?;
    }
    let chromium = ensure_chromium()?;
    Ok(BrowserTools { playwright, chromium })
}

/// Debian's `chromium` package, installed with apt when missing.
fn ensure_chromium() -> anyhow::Result<PathBuf> {
    ensure_debian_package("chromium", CHROMIUM, "for the browser tests: once, about a minute")
}

/// Debian's `wrk`, the saga benchmark's load generator, installed with apt when missing.
pub fn ensure_wrk() -> anyhow::Result<PathBuf> {
    ensure_debian_package("wrk", "/usr/bin/wrk", "the saga benchmark's load generator")
}

/// inferno's flame graph tools, installed (once) under the cache folder.
const INFERNO_VERSION: &str = "0.12.8";

/// Draw `perf_data` (a `perf record --call-graph` file) as a flame graph at `svg`, with
/// Debian's `perf` and inferno (installed under the cache folder when missing).
pub fn flame_graph(perf_data: &std::path::Path, svg: &std::path::Path) -> anyhow::Result<()> {
    let folded = folded_stacks(perf_data)?;
    draw_flame_graph(&folded, "wasaga serve at saturation", svg)?;
    // The folded stacks, for reading shares off without a browser.
    std::fs::write(perf_data.with_extension("folded"), folded)?;
    Ok(())
}

/// One flame graph at `svg` of several processes' profiles, each stack under its
/// process's label (`host1`, `host2`, …): a fleet's hosts side by side, each as wide as
/// the CPU it used. The folded stacks go beside the first profile.
pub fn fleet_flame_graph(
    profiles: &[(String, std::path::PathBuf)],
    title: &str,
    svg: &std::path::Path,
) -> anyhow::Result<()> {
    let mut merged = Vec::new();
    for (label, perf_data) in profiles {
        for line in folded_stacks(perf_data)?.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            merged.extend_from_slice(label.as_bytes());
            merged.push(b';');
            merged.extend_from_slice(line);
            merged.push(b'\n');
        }
    }
    draw_flame_graph(&merged, title, svg)?;
    if let Some((_, first)) = profiles.first() {
        std::fs::write(first.with_extension("folded"), merged)?;
    }
    Ok(())
}

/// The stacks of a `perf record` file, folded by inferno (one line per stack and count).
fn folded_stacks(perf_data: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let (collapse, _) = inferno()?;
    if !on_path("perf") {
        ensure_debian_package("linux-perf", "/usr/bin/perf", "to profile the server")?;
    }
    let script = Command::new("perf").arg("script").arg("-i").arg(perf_data).output().context("perf script")?;
    if !script.status.success() {
        bail!("perf script failed: {}", String::from_utf8_lossy(&script.stderr));
    }
    run_with_input(&mut Command::new(&collapse), &script.stdout)
}

fn draw_flame_graph(folded: &[u8], title: &str, svg: &std::path::Path) -> anyhow::Result<()> {
    let (_, draw) = inferno()?;
    let drawn = run_with_input(Command::new(&draw).args(["--title", title, "--minwidth", "0.2"]), folded)?;
    std::fs::write(svg, drawn)?;
    Ok(())
}

/// inferno's collapse and draw tools, installed under the cache folder when missing.
fn inferno() -> anyhow::Result<(PathBuf, PathBuf)> {
    let tools = cache_dir().join("tools");
    let collapse = tools.join("bin").join("inferno-collapse-perf");
    let draw = tools.join("bin").join("inferno-flamegraph");
    if !collapse.exists() || !draw.exists() {
        eprintln!("installing inferno {INFERNO_VERSION} (flame graphs) into {}: once, about a minute", tools.display());
        let mut install = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        install
            .args(["install", "inferno", "--version", INFERNO_VERSION, "--locked", "--root"])
            .arg(&tools)
            .arg("--target-dir")
            .arg(cache_dir().join("tools-build"))
            .env_remove("CARGO_TARGET_DIR");
        crate::util::run(&mut install).context("installing inferno")?;
    }
    Ok((collapse, draw))
}

/// Run `command` with `input` on its standard input; its standard output.
fn run_with_input(command: &mut Command, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("writing to {command:?} panicked"))??;
    if !output.status.success() {
        bail!("{command:?} failed");
    }
    Ok(output.stdout)
}

/// `binary`, installing Debian's `package` with apt (as root, or with sudo) when missing.
fn ensure_debian_package(package: &str, binary: &str, why: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(binary);
    if path.exists() {
        return Ok(path);
    }
    eprintln!("installing Debian's {package} package, {why}");
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let mut install = if root { Command::new("apt-get") } else { Command::new("sudo") };
    if !root {
        install.args(["-n", "apt-get"]);
    }
    install.args(["install", "-y", "--no-install-recommends", package]).env("DEBIAN_FRONTEND", "noninteractive");
    crate::util::run(&mut install).with_context(|| {
        format!("installing {package} (run `apt-get install {package}` as root once, then try again)")
    })?;
    if !path.exists() {
        bail!("apt-get installed {package} but {binary} is missing");
    }
    Ok(path)
}

/// Make sure RabbitMQ is up, starting the machine's server if needed.
pub fn ensure_rabbitmq() -> anyhow::Result<()> {
    if answers(RABBITMQ) {
        return Ok(());
    }
    eprintln!("RabbitMQ does not answer on {RABBITMQ}; starting it");
    let _ = Command::new("rabbitmq-server").arg("-detached").status();
    if wait_for(RABBITMQ, Duration::from_secs(90)) {
        return Ok(());
    }
    bail!("RabbitMQ is not reachable on {RABBITMQ} and could not be started (rabbitmq-server -detached)")
}

fn wait_for(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if answers(addr) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

const RABBITMQ: &str = "127.0.0.1:5672";
const KAFKA: &str = "127.0.0.1:9092";
const AZURITE: &str = "127.0.0.1:10000";

/// The folder of the services `cargo xtask services` started: pid files, logs, data.
fn run_dir() -> PathBuf {
    cache_dir().join("services")
}

/// Start `program` detached (its own process group, so Ctrl-C on xtask leaves it
/// running), logging to `<name>.log` and recording its pid in `<name>.pid`.
fn spawn_detached(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let dir = run_dir();
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = cmd
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(())
}

/// What `cargo xtask services` prints and `run --services` uses.
pub fn service_env() -> Vec<(&'static str, String)> {
    vec![
        ("WASAGA_STORE_URL", "postgres://postgres@127.0.0.1:5432/wasaga".to_owned()),
        ("WASAGA_TRANSPORT_URL", "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        ("WASAGA_STREAM_BROKERS", KAFKA.to_owned()),
        ("WASAGA_ARCHIVE_URL", "az://wasaga".to_owned()),
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_owned()),
    ]
}

/// `cargo xtask services`: install and start tansu and Azurite, check PostgreSQL and
/// RabbitMQ, wait until each answers, and print the environment to use.
pub fn start() -> anyhow::Result<()> {
    let mut stages = crate::util::Stages::new();
    let result = start_stages(&mut stages);
    eprint!("{}", stages.summary());
    result
}

fn start_stages(stages: &mut crate::util::Stages) -> anyhow::Result<()> {
    let tools = stages.run("tools: tansu and Azurite (first run: about 10 minutes)", install_tools)?;
    stages.run("PostgreSQL (database wasaga) and RabbitMQ", || {
        ensure_postgres()?;
        ensure_database("wasaga")?;
        ensure_rabbitmq()
    })?;
    stages.run("tansu and Azurite started", || start_brokers(&tools))?;
    println!("# services are up: PostgreSQL 127.0.0.1:5432, RabbitMQ {RABBITMQ}, tansu {KAFKA}, Azurite {AZURITE}");
    println!("# use them with:  eval \"$(cargo xtask services env)\"  or  cargo xtask run --services");
    print_env();
    Ok(())
}

fn start_brokers(tools: &Tools) -> anyhow::Result<()> {
    if answers(KAFKA) {
        eprintln!("a Kafka broker already answers on {KAFKA}");
    } else {
        eprintln!("starting tansu on {KAFKA} (log: {})", run_dir().join("tansu.log").display());
        // In memory: tansu's SQLite storage stops answering under sustained load. A
        // restart of tansu therefore starts an empty log; the outbox is not replayed.
        // tansu 0.6.0's in-memory log also skips the rest of a record batch when a
        // consumer resumes inside it (a host restarted): fine for a development broker.
        spawn_detached(
            "tansu",
            Command::new(&tools.tansu).args([
                "broker",
                "--listener-url",
                &format!("tcp://{KAFKA}"),
                "--advertised-listener-url",
                &format!("tcp://{KAFKA}"),
                "--storage-engine",
                "memory://tansu/",
            ]),
        )?;
    }
    if answers(AZURITE) {
        eprintln!("Azure Blob already answers on {AZURITE}");
    } else {
        let data = run_dir().join("azurite");
        std::fs::create_dir_all(&data)?;
        eprintln!("starting Azurite on {AZURITE} (log: {})", run_dir().join("azurite.log").display());
        spawn_detached(
            "azurite",
            Command::new(&tools.azurite)
                .args(["--blobHost", "127.0.0.1", "--blobPort", "10000", "--disableTelemetry", "--location"])
                .arg(&data),
        )?;
    }
    for (name, addr) in [("tansu", KAFKA), ("Azurite", AZURITE)] {
        if !wait_for(addr, Duration::from_secs(60)) {
            bail!("{name} did not answer on {addr} within a minute; see {}", run_dir().display());
        }
    }
    Ok(())
}

pub fn print_env() {
    for (name, value) in service_env() {
        println!("export {name}='{value}'");
    }
}

/// `cargo xtask services stop`: stop what `services` started (not the machine's own).
pub fn stop() -> anyhow::Result<()> {
    for name in ["tansu", "azurite"] {
        let pid_file = run_dir().join(format!("{name}.pid"));
        let Ok(pid) = std::fs::read_to_string(&pid_file) else {
            eprintln!("{name}: not started by xtask");
            continue;
        };
        let pid = pid.trim();
        // The process group, so Azurite's node child goes too.
        let _ = Command::new("kill").args(["--", &format!("-{pid}")]).status();
        let _ = std::fs::remove_file(&pid_file);
        eprintln!("{name}: stopped (pid {pid})");
    }
    Ok(())
}

/// Create a PostgreSQL database unless it exists.
pub fn ensure_database(name: &str) -> anyhow::Result<()> {
    let exists = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc"])
        .arg(format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))
        .output()
        .context("cannot run psql")?;
    if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
        return Ok(());
    }
    let status = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .status()?;
    if !status.success() {
        bail!("cannot create the PostgreSQL database {name}");
    }
    Ok(())
}

/// `bin` from a venv `tools/<dir>` under the cache folder, with `spec` installed by pip
/// once (a stamp file names the version, so a new pin reinstalls).
pub fn python_tool(dir: &str, spec: &str, bin: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let venv = cache_dir().join("tools").join(dir);
    let exe = venv.join("bin").join(bin);
    let stamp = venv.join(format!("{}.installed", spec.replace("==", "-")));
    if exe.exists() && stamp.exists() {
        return Ok(exe);
    }
    eprintln!("installing {spec} into {}: once, about a minute", venv.display());
    crate::util::run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("creating a Python venv (python3 with the venv module is needed)")?;
    crate::util::run(
        std::process::Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(spec),
    )
    .with_context(|| format!("installing {spec} with pip"))?;
    std::fs::write(&stamp, spec)?;
    Ok(exe)
}
