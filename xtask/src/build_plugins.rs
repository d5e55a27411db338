//! `cargo xtask build-plugins`: every step (and, with --fixtures, every test fixture)
//! built in the `plugin` profile for wasm32-wasip2, installed as `<name>.wasm` by
//! write-then-rename so a watching host never reads half a file.

use crate::flags::BuildPlugins;
use crate::util::{cargo, root, run as run_cmd, target_dir};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const TARGET: &str = "wasm32-wasip2";

/// One cargo invocation: packages, features, and the name each output is installed as.
struct Build {
    packages: &'static [&'static str],
    features: &'static [&'static str],
    /// (crate output name, installed name)
    installs: &'static [(&'static str, &'static str)],
}

/// `analytics` builds alone: its SDK feature `archive` must not reach the other steps.
const STEPS: &[Build] = &[
    Build {
        packages: &["inventory", "payment"],
        features: &[],
        installs: &[("inventory", "inventory"), ("payment", "payment")],
    },
    Build { packages: &["analytics"], features: &[], installs: &[("analytics", "analytics")] },
];

const FIXTURES: &[Build] = &[
    Build {
        packages: &["hostile", "sockets", "echo"],
        features: &[],
        installs: &[("hostile", "hostile"), ("sockets", "sockets"), ("echo", "echo-v1")],
    },
    Build { packages: &["echo"], features: &["echo/v2"], installs: &[("echo", "echo-v2")] },
    Build { packages: &["payment"], features: &["payment/v2"], installs: &[("payment", "payment-v2")] },
];

pub fn run(args: &BuildPlugins) -> anyhow::Result<()> {
    check_target()?;
    let out = args.out.clone().unwrap_or_else(|| root().join("dist/plugins"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let builds = STEPS.iter().chain(if args.fixtures { FIXTURES } else { &[] });
    for build in builds {
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "--target", TARGET, "--profile", "plugin"]);
        for package in build.packages {
            cmd.args(["-p", package]);
        }
        if !build.features.is_empty() {
            cmd.args(["--features", &build.features.join(",")]);
        }
        run_cmd(&mut cmd)?;
        for (output, name) in build.installs {
            let built = target_dir().join(TARGET).join("plugin").join(format!("{output}.wasm"));
            install(&built, &out, name)?;
        }
    }
    Ok(())
}

fn check_target() -> anyhow::Result<()> {
    let output = std::process::Command::new("rustc")
        .current_dir(root())
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !sysroot.join("lib/rustlib").join(TARGET).exists() {
        bail!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}

fn install(built: &Path, out: &Path, name: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(built).with_context(|| format!("reading {}", built.display()))?;
    let target = out.join(format!("{name}.wasm"));
    let tmp = out.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("installing {}", target.display()))?;
    println!(
        "{name:<12} {:>8} bytes  sha256:{}  {}",
        bytes.len(),
        hex::encode(Sha256::digest(&bytes)),
        target.display()
    );
    Ok(())
}
