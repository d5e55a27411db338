//! `cargo xtask new-step NAME --lang rust|python|js`: a ready step in `steps/NAME` (or
//! `--dir`): its manifest, one handler, and a test (a recording replayed on it), built
//! by `cargo xtask build-plugins` with the right flags for its language.

use crate::flags::{Lang, NewStep};
use crate::util::root;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

const RECORDING: &str = include_str!("../templates/recording.json");
const RUST_CARGO: &str = include_str!("../templates/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../templates/rust/src/lib.rs");
const RUST_TEST: &str = include_str!("../templates/rust/tests/recordings.rs");
const PYTHON_APP: &str = include_str!("../templates/python/app.py");
const JS_STEP: &str = include_str!("../templates/js/step.js");

/// The recording every template ships as its first test.
pub const RECORDING_FILE: &str = "tests/recordings/forty-second-order.json";

pub fn run(args: &NewStep) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args.dir.clone().unwrap_or_else(|| root().join("steps").join(&args.name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another name or --dir", dir.display());
    }
    let files = write(args.lang, &args.name, &dir)?;
    println!("wrote a {} step in {}:", args.lang.name(), dir.display());
    for (path, _) in &files {
        println!("  {path}");
    }
    println!();
    println!("build it (and every step) into dist/plugins/, where `cargo xtask run` serves it:");
    println!("  cargo xtask build-plugins --step {}", dir.display());
    println!("test it: {}", test_command(args.lang, &args.name, &dir));
    Ok(())
}

/// Write the template of `lang` for step `name` into `dir`; the files written.
pub fn write(lang: Lang, name: &str, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let files = files(lang, name, dir)?;
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}

/// Step names are what the host accepts: lowercase letters, digits and `-`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!("NAME {name:?}: a step name is 1 to 64 lowercase letters, digits and '-', starting with a letter");
    }
    if ["host", "inventory", "payment", "analytics"].contains(&name) {
        bail!("NAME {name:?} is taken by the saga; choose another");
    }
    Ok(())
}

fn test_command(lang: Lang, name: &str, dir: &Path) -> String {
    match lang {
        Lang::Rust => format!("cargo test --manifest-path {}", dir.join("Cargo.toml").display()),
        Lang::Python | Lang::Js => {
            format!("wasaga replay {} --plugin dist/plugins/{name}.wasm", dir.join("tests/recordings").display())
        }
    }
}

fn fill(template: &str, name: &str) -> String {
    template.replace("{{name}}", name).replace("{{crate}}", &name.replace('-', "_"))
}

/// The SDK as a path dependency: relative inside this checkout, absolute elsewhere.
fn sdk_path(dir: &Path) -> anyhow::Result<String> {
    let sdk = root().join("plugins").join("sdk");
    let dir = std::path::absolute(dir)?;
    if let Ok(inside) = dir.strip_prefix(root()) {
        let up: PathBuf = inside.components().map(|_| "..").collect();
        return Ok(up.join("plugins").join("sdk").display().to_string());
    }
    Ok(sdk.display().to_string())
}

fn files(lang: Lang, name: &str, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = vec![(RECORDING_FILE.to_owned(), fill(RECORDING, name))];
    match lang {
        Lang::Rust => {
            let cargo = fill(RUST_CARGO, name).replace("{{sdk}}", &sdk_path(dir)?);
            files.push(("Cargo.toml".to_owned(), cargo));
            files.push(("src/lib.rs".to_owned(), fill(RUST_LIB, name)));
            files.push(("tests/recordings.rs".to_owned(), fill(RUST_TEST, name)));
        }
        Lang::Python => files.push(("app.py".to_owned(), fill(PYTHON_APP, name))),
        Lang::Js => files.push(("step.js".to_owned(), fill(JS_STEP, name))),
    }
    files.push(("README.md".to_owned(), readme(lang, name, dir)));
    Ok(files)
}

fn readme(lang: Lang, name: &str, dir: &Path) -> String {
    let (source, notes) = match lang {
        Lang::Rust => (
            "src/lib.rs",
            "Built for wasm32-wasip2 in the `plugin` profile. A panic is a trap; return\n\
             `StepError::Retryable` or `StepError::Fatal` to fail on purpose.",
        ),
        Lang::Python => (
            "app.py",
            "Built with componentize-py 0.25 `--stub-wasi` (its default build imports\n\
             `wasi:sockets`, which steps may not use); `print()` goes to the host's log through\n\
             the writer at the top of app.py. Fail with `raise Err(StepError_Retryable(\"…\"))` or\n\
             `raise Err(StepError_Fatal(\"…\"))`; any other exception is a trap.",
        ),
        Lang::Js => (
            "step.js",
            "Built with componentize-js 0.23 with `disableFeatures: [\"http\", \"fetch-event\"]`\n\
             (a step serves no requests; to call out with `fetch`, keep `\"http\"` enabled and list\n\
             the targets in `[steps.NAME] outbound`: the host sends each request). WIT names are\n\
             camelCase (`event.orderId`); `console.log` goes to the host's log. Fail with\n\
             `throw { tag: \"retryable\", val: \"…\" }` or `{ tag: \"fatal\", … }`.",
        ),
    };
    format!(
        "# {name}\n\nA wasaga step in {lang}: `{source}`. It subscribes to `order.completed`, keeps a count in\n\
         its state and emits `{name}.counted`. Payloads are JSON text; state values are bytes.\n\n\
         {notes}\n\n```sh\ncargo xtask build-plugins --step {dir}   # → dist/plugins/{name}.wasm\n{test}\n```\n\n\
         The test replays `tests/recordings/*.json`: an event, the state the call read, the host\n\
         calls it made and what it returned. Save a dead letter's recording there with\n\
         `wasaga dead-letters recording ID -o tests/recordings/ID.json` to keep it fixed.\n",
        lang = lang.name(),
        dir = dir.display(),
        test = test_command(lang, name, dir),
    )
}
