//! Shared helpers: the workspace root, the target folder, the toolchain, running commands
//! and timing the stages of a long command.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace root (the parent of xtask/). `cargo run` sets CARGO_MANIFEST_DIR when it
/// starts xtask, which names this checkout even when another checkout sharing the target
/// folder built the binary last; the compile-time value is only the fallback.
pub fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Cargo's target folder, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root().join(dir) }
        }
        None => root().join("target"),
    }
}

/// `cargo` as invoked by the user (the rustup proxy respects rust-toolchain.toml).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The rustup toolchain this checkout builds with, as a name `RUSTUP_TOOLCHAIN` accepts.
///
/// Tools are installed with it too: rustup otherwise resolves the toolchain from the folder
/// cargo runs rustc in, and a dependency that ships its own `rust-toolchain.toml` (tansu's
/// `convert_case` pins 1.91.1) would ask for a toolchain this machine does not have.
pub fn toolchain() -> anyhow::Result<String> {
    if let Some(name) = std::env::var("RUSTUP_TOOLCHAIN").ok().filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    let output =
        Command::new("rustc").current_dir(root()).args(["--print", "sysroot"]).output().context("cannot run rustc")?;
    if !output.status.success() {
        bail!("rustc --print sysroot failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    // rustup keeps each toolchain in a folder named after it (`stable-x86_64-unknown-linux-gnu`).
    match sysroot.file_name().and_then(|n| n.to_str()) {
        Some(name) if sysroot.parent().is_some_and(|p| p.ends_with("toolchains")) => Ok(name.to_owned()),
        // Not a rustup toolchain (a distribution's rustc): the folder itself names it.
        _ => Ok(sysroot.to_string_lossy().into_owned()),
    }
}

/// Render a command as it would be typed.
pub fn shown(cmd: &Command) -> String {
    let program = cmd.get_program().to_string_lossy();
    let program = if program.ends_with("cargo") { "cargo".into() } else { program };
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{program} {}", args.join(" "))
}

/// Run `cmd`, failing with its rendering if it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = shown(cmd);
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("command failed ({status}): {shown}");
    }
    Ok(())
}

/// The wall-clock time of each stage of a long command, printed as they end and once
/// more as a table at the end, so a slow first run says where its time went.
#[derive(Default)]
pub struct Stages {
    done: Vec<(String, Duration)>,
    started: Option<Instant>,
}

impl Stages {
    pub fn new() -> Self {
        Self { done: Vec::new(), started: Some(Instant::now()) }
    }

    /// Run one stage, announcing it and recording how long it took (failed or not).
    pub fn run<T>(&mut self, name: &str, stage: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = stage();
        let took = started.elapsed();
        let outcome = if result.is_ok() { "done" } else { "FAILED" };
        eprintln!("<== {name}: {outcome} in {}", human(took));
        self.done.push((name.to_owned(), took));
        result
    }

    /// The table of stages and the total.
    pub fn summary(&self) -> String {
        let mut out = String::from("stage timings:\n");
        for (name, took) in &self.done {
            out.push_str(&format!("  {name:<44} {:>9}\n", human(*took)));
        }
        if let Some(started) = self.started {
            out.push_str(&format!("  {:<44} {:>9}\n", "total", human(started.elapsed())));
        }
        out
    }
}

/// `4 min 12 s`, `8.3 s`.
pub fn human(took: Duration) -> String {
    let secs = took.as_secs_f64();
    if secs >= 60.0 {
        format!("{} min {:02} s", took.as_secs() / 60, took.as_secs() % 60)
    } else {
        format!("{secs:.1} s")
    }
}
