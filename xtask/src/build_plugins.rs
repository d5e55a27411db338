//! `cargo xtask build-plugins`: every step (and, with --fixtures, every test fixture)
//! built in the `plugin` profile for wasm32-wasip2, then the steps of `steps/` and of
//! `--step DIR` in their own languages (`polyglot.rs`), each installed as `<name>.wasm`
//! by write-then-rename so a watching host never reads half a file.

use crate::flags::{BuildPlugins, Lang};
use crate::util::{cargo, root, target_dir};
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

/// Each builds alone: an SDK feature (`http` for payment, `archive` for analytics) must
/// not reach the other steps, which would then import what they never use.
const STEPS: &[Build] = &[
    Build { packages: &["inventory"], features: &[], installs: &[("inventory", "inventory")] },
    Build { packages: &["payment"], features: &[], installs: &[("payment", "payment")] },
    Build { packages: &["analytics"], features: &[], installs: &[("analytics", "analytics")] },
];

/// `hostile` builds alone too: it uses the SDK's `archive` feature.
const FIXTURES: &[Build] = &[
    Build { packages: &["hostile"], features: &[], installs: &[("hostile", "hostile")] },
    Build {
        packages: &["hostile"],
        features: &["hostile/slow-describe"],
        installs: &[("hostile", "hostile-slow-describe")],
    },
    Build {
        packages: &["sockets", "echo", "observer"],
        features: &[],
        installs: &[("sockets", "sockets"), ("echo", "echo-v1"), ("observer", "observer")],
    },
    Build { packages: &["echo"], features: &["echo/v2"], installs: &[("echo", "echo-v2")] },
    Build { packages: &["hostile"], features: &["hostile/forger"], installs: &[("hostile", "forger")] },
    Build { packages: &["payment"], features: &["payment/v2"], installs: &[("payment", "payment-v2")] },
    Build { packages: &["payment"], features: &["payment/strict"], installs: &[("payment", "payment-strict")] },
    Build { packages: &["payment"], features: &["payment/half-trap"], installs: &[("payment", "payment-half-trap")] },
    Build { packages: &["payment"], features: &["payment/fixed"], installs: &[("payment", "payment-fixed")] },
    // Built against the frozen wasaga:saga@0.1.0, as a step from before 0.2.0.
    Build {
        packages: &["inventory"],
        features: &["inventory/contract-0-1"],
        installs: &[("inventory", "inventory-0-1")],
    },
];

pub fn run(args: &BuildPlugins) -> anyhow::Result<()> {
    check_target()?;
    let out = args.out.clone().unwrap_or_else(|| root().join("dist/plugins"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let builds = STEPS.iter().chain(if args.fixtures { FIXTURES } else { &[] });
    for build in builds {
        let mut cmd = cargo();
        // Cargo's progress goes to stderr; the JSON on stdout names the outputs.
        cmd.args(["build", "--target", TARGET, "--profile", "plugin", "--message-format=json-render-diagnostics"]);
        for package in build.packages {
            cmd.args(["-p", package]);
        }
        if !build.features.is_empty() {
            cmd.args(["--features", &build.features.join(",")]);
        }
        let artifacts = build_artifacts(&mut cmd)?;
        for (output, name) in build.installs {
            let built = artifacts
                .iter()
                .find(|(target, _)| target == output)
                .map(|(_, path)| path.clone())
                .with_context(|| format!("cargo reported no component for {output}"))?;
            install(&built, &out, name)?;
        }
    }
    for dir in crate::polyglot::step_dirs(&args.step)? {
        let (built, name) = crate::polyglot::build(&dir)?;
        install(&built, &out, &name)?;
    }
    if args.fixtures {
        // The templates of `cargo xtask new-step`, built with the real toolchains.
        for (lang, name) in TEMPLATE_FIXTURES {
            let dir = target_dir().join("templates").join(name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
            }
            crate::new_step::write(lang, name, &dir)?;
            let (built, name) = crate::polyglot::build(&dir)?;
            install(&built, &out, &name)?;
        }
    }
    Ok(())
}

/// The `new-step` templates built as fixtures, one per language.
const TEMPLATE_FIXTURES: [(Lang, &str); 3] =
    [(Lang::Rust, "rs-counter"), (Lang::Python, "py-counter"), (Lang::Js, "js-counter")];

/// Run a cargo build and return (target name, path) of each `.wasm` it produced, as
/// cargo reports them, so the install never guesses at output paths.
pub fn build_artifacts(cmd: &mut std::process::Command) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!("$ cargo {}", args.join(" "));
    let output = cmd.stderr(std::process::Stdio::inherit()).output().context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    let mut artifacts = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let name = message["target"]["name"].as_str().unwrap_or_default().to_owned();
        for file in message["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str()) {
            if file.ends_with(".wasm") {
                artifacts.push((name.clone(), PathBuf::from(file)));
            }
        }
    }
    Ok(artifacts)
}

fn check_target() -> anyhow::Result<()> {
    let output = std::process::Command::new("rustc")
        .current_dir(root())
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return Ok(());
    }
    // rust-toolchain.toml names the target, but rustup adds it only when it installs the
    // toolchain; on a machine that already had the toolchain, add it now.
    eprintln!("installing the {TARGET} target (rustup target add {TARGET})");
    let added = std::process::Command::new("rustup").current_dir(root()).args(["target", "add", TARGET]).status();
    if added.is_ok_and(|s| s.success()) && sysroot.join("lib/rustlib").join(TARGET).exists() {
        return Ok(());
    }
    bail!("the {TARGET} target is not installed and `rustup target add {TARGET}` failed")
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
