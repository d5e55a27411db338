//! `cargo xtask run`: build the plugins, start the card gateway simulator and `wasaga
//! serve` on the embedded defaults (the payment step calling the simulator), stock a SKU,
//! and print how to place an order once the server answers. Ctrl-C or SIGTERM to xtask
//! stops what it started.

use crate::build_plugins;
use crate::flags::{BuildPlugins, Run};
use crate::http::request;
use crate::services;
use crate::util::{Stages, cargo, root, run as run_cmd, target_dir};
use anyhow::Context;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn run(args: &Run) -> anyhow::Result<()> {
    let profile_dir = if args.release { "release" } else { "debug" };
    let binary = target_dir().join(profile_dir).join("wasaga");
    if !binary.exists() {
        eprintln!(
            "first run: building the wasm32-wasip2 steps, then the host ({profile_dir}), takes about 12 minutes on 2 cores; later runs start in seconds"
        );
    }
    let mut stages = Stages::new();
    stages.run("components: inventory, payment, analytics", || {
        build_plugins::run(&BuildPlugins { out: None, fixtures: false, step: Vec::new() })
    })?;
    let profile: &[&str] = if args.release { &["--release"] } else { &[] };
    // The embedded default needs no broker's, cloud's or other database's client: most
    // of a first build's time goes into those.
    let features: &[&str] = if args.services { &[] } else { &["--no-default-features"] };
    stages.run("host: wasaga, and the gateway simulator", || {
        run_cmd(
            cargo()
                .args([
                    "build",
                    "-p",
                    "wasaga-host",
                    "--bin",
                    "wasaga",
                    "-p",
                    "wasaga-gateway",
                    "--bin",
                    "wasaga-gateway",
                ])
                .args(profile)
                .args(features),
        )
    })?;
    if args.services {
        stages.run("services", services::start)?;
    }

    let addr = std::env::var("WASAGA_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let data_dir = root().join(std::env::var("WASAGA_DATA_DIR").unwrap_or_else(|_| "data".to_owned()));
    let mut serve = Command::new(&binary);
    serve.current_dir(root()).arg("serve");
    // The payment step calls the simulator, unless the user brings settings of their own.
    let gateway = match std::env::var_os("WASAGA_CONFIG") {
        Some(_) => None,
        None => {
            let hooks = format!("http://{addr}/api/hooks/payment");
            let gateway = Gateway::start(&target_dir().join(profile_dir).join("wasaga-gateway"), &data_dir, &hooks)?;
            serve
                .arg("--config")
                .arg(&gateway.config)
                .env(GATEWAY_AUTH_VAR, format!("Bearer {}", gateway.key))
                .env(HOOK_SECRET_VAR, &gateway.hook_secret);
            Some(gateway)
        }
    };
    if args.services {
        // The variables the user set win over the services' defaults.
        for (name, value) in services::service_env() {
            if std::env::var_os(name).is_none() {
                serve.env(name, value);
            }
        }
    }
    let mut child = serve.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
    forward_termination(child.id())?;

    if wait_until_ready(&addr, &mut child)? {
        print_welcome(&addr, &data_dir, args.services);
        if let Some(gateway) = &gateway {
            println!("card gateway simulator: {0}   (charges and refunds: curl -s {0}/v1/ledger)", gateway.url);
            println!("settings it was started with: {}", gateway.config.display());
            println!();
        }
    }
    let status = child.wait().context("waiting for wasaga")?;
    drop(gateway);
    if !status.success() {
        anyhow::bail!("wasaga exited with {status}");
    }
    Ok(())
}

/// The environment variable the gateway's credentials reach the server through.
const GATEWAY_AUTH_VAR: &str = "WASAGA_RUN_GATEWAY_AUTH";
/// The environment variable the secret of the gateway's webhooks reaches the server through.
const HOOK_SECRET_VAR: &str = "WASAGA_RUN_HOOK_SECRET";

/// The card gateway simulator, on a free port, and the settings that point the payment
/// step at it. Stopped when dropped.
struct Gateway {
    child: std::process::Child,
    url: String,
    key: String,
    hook_secret: String,
    config: std::path::PathBuf,
}

impl Gateway {
    /// Start the simulator, its webhooks (`tok_3ds`) going to `hooks`.
    fn start(binary: &std::path::Path, data_dir: &std::path::Path, hooks: &str) -> anyhow::Result<Gateway> {
        use std::io::BufRead;
        let key = format!("sk_run_{:016x}", rand_u64());
        let hook_secret = format!("whsec_run_{:016x}", rand_u64());
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--webhook-url", hooks])
            .env("WASAGA_GATEWAY_API_KEY", &key)
            .env("WASAGA_GATEWAY_WEBHOOK_SECRET", &hook_secret)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("the gateway's stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).context("reading the gateway's address")?;
        let addr = line
            .split("addr=")
            .nth(1)
            .map(str::trim)
            .with_context(|| format!("the gateway did not say where it listens: {line:?}"))?;
        let url = format!("http://{addr}");
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let config = data_dir.join("xtask-run.toml");
        let settings = format!(
            "# Written by `cargo xtask run`: the payment step calls the gateway simulator.\n\
             [steps.payment]\n\
             outbound = [\"{url}\"]\n\
             hook_secret = \"env:{HOOK_SECRET_VAR}\"\n\
             hook_order_id = \"/data/order_id\"\n\n\
             [steps.payment.env]\n\
             WASAGA_GATEWAY_URL = \"{url}\"\n\n\
             [steps.payment.outbound_headers]\n\
             authorization = \"env:{GATEWAY_AUTH_VAR}\"\n"
        );
        std::fs::write(&config, settings).with_context(|| format!("writing {}", config.display()))?;
        Ok(Gateway { child, url, key, hook_secret, config })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A random number from the clock and the process id: a key for one local run.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Ctrl-C reaches the server through the terminal's process group; SIGTERM is sent to
/// xtask alone, so pass it on. xtask then exits when the server has stopped.
fn forward_termination(pid: u32) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("server pid out of range")?);
    ctrlc::set_handler(move || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    })
    .context("cannot install the signal handler")
}

fn print_welcome(addr: &str, data_dir: &std::path::Path, services: bool) {
    let token_file = data_dir.join("admin-token");
    let token = match std::env::var("WASAGA_ADMIN_TOKEN") {
        Ok(token) => token,
        Err(_) => std::fs::read_to_string(&token_file).unwrap_or_default().trim().to_owned(),
    };
    let stocked = request(
        addr,
        "PUT",
        "/api/stock/SKU-1",
        &[("Authorization", &format!("Bearer {token}")), ("Content-Type", "application/json")],
        r#"{"available":1000}"#,
    );
    let url = format!("http://{addr}");
    println!();
    println!("wasaga is running at {url}   (Ctrl-C stops it)");
    println!("console: {url}/ui   (sign in with the admin token below)");
    match stocked {
        Ok((202, _)) => println!("stocked SKU-1 with 1000 units"),
        other => println!("could not stock SKU-1: {other:?}"),
    }
    println!("admin token: {}", token_file.display());
    println!();
    println!("place an order:");
    println!(
        "  curl -si -X POST {url}/api/orders -H 'content-type: application/json' \\\n    -d '{{\"customer_id\":\"c-1\",\"items\":[{{\"sku\":\"SKU-1\",\"quantity\":2,\"unit_price_cents\":1250}}],\"payment\":{{\"card_token\":\"tok_ok\"}}}}'"
    );
    println!("then follow it (the Location header):");
    println!("  curl -s {url}/api/orders/<order_id>");
    if services {
        println!("watch it on the brokers:");
        println!("  rabbitmqctl list_queues name messages consumers   # wasaga.<step> queues");
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {})\" '{url}/api/admin/archive?order_id=<order_id>'",
            token_file.display()
        );
    }
    println!("steps, as an administrator:");
    println!("  curl -s -H \"Authorization: Bearer $(cat {})\" {url}/api/admin/plugins", token_file.display());
    println!();
}

/// Poll `/readyz` until it answers 200, the server exits, or two minutes pass.
fn wait_until_ready(addr: &str, child: &mut std::process::Child) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if let Ok((200, _)) = request(addr, "GET", "/readyz", &[], "") {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("wasaga did not become ready within two minutes; see its log above");
    Ok(false)
}
