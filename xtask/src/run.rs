//! `cargo xtask run`: build the plugins, start `wasaga serve` on the embedded defaults,
//! and say how to reach it once it answers.

use crate::build_plugins;
use crate::flags::{BuildPlugins, Run};
use crate::util::{cargo, root, run as run_cmd};
use anyhow::Context;
use std::time::{Duration, Instant};

pub fn run(args: &Run) -> anyhow::Result<()> {
    build_plugins::run(&BuildPlugins { out: None, fixtures: false })?;
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "wasaga-host", "--bin", "wasaga"]);
    if args.release {
        build.arg("--release");
    }
    run_cmd(&mut build)?;

    let addr = std::env::var("WASAGA_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let data_dir = std::env::var("WASAGA_DATA_DIR").unwrap_or_else(|_| "./data".to_owned());
    let mut serve = cargo();
    serve.args(["run", "--quiet", "-p", "wasaga-host", "--bin", "wasaga"]);
    if args.release {
        serve.arg("--release");
    }
    serve.args(["--", "serve"]);
    let mut child = serve.spawn().context("cannot start wasaga serve")?;

    let url = format!("http://{addr}");
    if wait_until_healthy(&addr, &mut child)? {
        let token_file = root().join(&data_dir).join("admin-token");
        println!();
        println!("wasaga is running at {url}  (Ctrl-C stops it)");
        println!(
            "admin token: {}",
            if std::env::var("WASAGA_ADMIN_TOKEN").is_ok() {
                "$WASAGA_ADMIN_TOKEN".to_owned()
            } else {
                token_file.display().to_string()
            }
        );
        println!("steps:");
        println!("  curl -s -H \"Authorization: Bearer $(cat {})\" {url}/api/admin/plugins", token_file.display());
        println!();
    }
    let status = child.wait().context("waiting for wasaga")?;
    if !status.success() {
        anyhow::bail!("wasaga exited with {status}");
    }
    Ok(())
}

/// Poll `/healthz` until it answers, the server exits, or a minute passes.
fn wait_until_healthy(addr: &str, child: &mut std::process::Child) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return Ok(true);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(false)
}
