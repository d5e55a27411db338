//! Steps outside the workspace, in Rust, Python or JavaScript: every folder of `steps/`
//! and each `--step DIR`. The language is read from the folder (`Cargo.toml`, `app.py`,
//! `step.js`); the toolchains for Python (componentize-py, in a venv) and JavaScript
//! (componentize-js, from npm) are installed under the cache folder on first use.

use crate::services::cache_dir;
use crate::util::{cargo, root, run as run_cmd, target_dir};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
/// Calls componentize-js's API (`jco componentize` cannot take a WIT folder).
const BUILD_JS: &str = r#"// Written by cargo xtask build-plugins: node build.mjs SOURCE WIT WORLD OUT
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
const [source, wit, world, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: source,
  witPath: wit,
  worldName: world,
  // The default build serves HTTP requests (fetch-event), which a step may not; "http"
  // (fetch) is off too, as the templates do not call out: drop it to call out through
  // the host (`[steps.NAME] outbound`).
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
"#;

/// A step's language, read from its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Python,
    Js,
}

fn lang_of(dir: &Path) -> anyhow::Result<Lang> {
    if dir.join("Cargo.toml").exists() {
        Ok(Lang::Rust)
    } else if dir.join("app.py").exists() {
        Ok(Lang::Python)
    } else if dir.join("step.js").exists() {
        Ok(Lang::Js)
    } else {
        bail!(
            "{}: not a step folder (no Cargo.toml, app.py or step.js); `cargo xtask new-step` writes one",
            dir.display()
        )
    }
}

/// Every folder of `steps/`, then `extra`.
pub fn step_dirs(extra: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root().join("steps")) {
        let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        found.sort();
        dirs.extend(found);
    }
    for dir in extra {
        if !dir.is_dir() {
            bail!("--step {}: no such folder", dir.display());
        }
        dirs.push(dir.clone());
    }
    Ok(dirs)
}

/// Build the step in `dir`; the component's path and the name it installs as.
pub fn build(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: the folder's name is the step's name", dir.display()))?
        .to_owned();
    let out_dir = target_dir().join("steps").join(&name);
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(format!("{name}.wasm"));
    let wit = root().join("wit");
    match lang_of(dir)? {
        Lang::Rust => {
            let mut cmd = cargo();
            cmd.args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "plugin",
                "--message-format=json-render-diagnostics",
            ])
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir().join("steps"));
            let built = crate::build_plugins::build_artifacts(&mut cmd)?
                .into_iter()
                .find(|(target, _)| *target == name.replace('-', "_"))
                .map(|(_, path)| path)
                .with_context(|| format!("cargo built no component named {name} in {}", dir.display()))?;
            return Ok((built, name));
        }
        Lang::Python => {
            let componentize = componentize_py()?;
            eprintln!("$ componentize-py … componentize --stub-wasi app ({name}, about 30 s)");
            run_cmd(
                Command::new(componentize)
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", "step", "componentize", "--stub-wasi", "app", "-p"])
                    .arg(dir)
                    .arg("-o")
                    .arg(&out),
            )
            .with_context(|| format!("building the Python step in {}", dir.display()))?;
        }
        Lang::Js => {
            let script = componentize_js()?;
            eprintln!("$ componentize-js {} ({name}, about 10 s)", dir.join("step.js").display());
            run_cmd(Command::new("node").arg(&script).arg(dir.join("step.js")).arg(&wit).arg("step").arg(&out))
                .with_context(|| format!("building the JavaScript step in {}", dir.display()))?;
        }
    }
    Ok((out, name))
}

/// componentize-py in a venv under the cache folder.
fn componentize_py() -> anyhow::Result<PathBuf> {
    crate::services::python_tool("componentize-py", COMPONENTIZE_PY, "componentize-py")
}

/// componentize-js from npm under the cache folder, and the script that calls it.
fn componentize_js() -> anyhow::Result<PathBuf> {
    let prefix = cache_dir().join("tools").join("componentize-js");
    let script = prefix.join("build.mjs");
    let stamp = prefix.join(format!("{}.installed", COMPONENTIZE_JS.replace(['@', '/'], "-")));
    if !stamp.exists() {
        eprintln!("installing {COMPONENTIZE_JS} into {}: once, under a minute", prefix.display());
        std::fs::create_dir_all(&prefix)?;
        run_cmd(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--no-save", "--loglevel", "error", "--prefix"])
                .arg(&prefix)
                .arg(COMPONENTIZE_JS),
        )
        .context("installing componentize-js (npm, from Node.js, is needed)")?;
        std::fs::write(&stamp, COMPONENTIZE_JS)?;
    }
    // The script sits beside node_modules, so its import resolves there.
    std::fs::write(&script, BUILD_JS)?;
    Ok(script)
}
