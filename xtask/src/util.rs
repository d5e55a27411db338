//! Shared helpers: the workspace root, the target folder, running commands.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Run `cmd`, failing with its rendering if it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("command failed ({status}): {shown}");
    }
    Ok(())
}
