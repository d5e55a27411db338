//! `cargo xtask test`: formatting and lints, the components, then every test of the
//! workspace with the components' folder passed to the host's integration tests, and
//! schemathesis against the API's OpenAPI description.
//! `--fresh` runs the same in an empty cache folder, as a machine that never ran it would.

use crate::build_plugins;
use crate::flags::{BuildPlugins, Fuzz, Test};
use crate::services;
use crate::util::{Stages, cargo, human, run as run_cmd, target_dir};
use anyhow::Context;
use std::time::Instant;

pub fn run(args: &Test) -> anyhow::Result<()> {
    if args.fresh {
        return fresh(args);
    }
    let mut stages = Stages::new();
    let result = stages_of_test(args, &mut stages);
    eprint!("{}", stages.summary());
    result
}

fn stages_of_test(args: &Test, stages: &mut Stages) -> anyhow::Result<()> {
    if !args.no_lint {
        stages.run("cargo fmt --check", || run_cmd(cargo().args(["fmt", "--all", "--", "--check"])))?;
        stages.run("clippy (first run: about 6 minutes on 2 cores)", || {
            run_cmd(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        })?;
        // What `cargo xtask run` builds: the host without its optional backends.
        stages.run("clippy on the embedded-only host", || {
            run_cmd(cargo().args([
                "clippy",
                "-p",
                "wasaga-host",
                "--no-default-features",
                "--lib",
                "--bins",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
    }
    stages.run("compose.yml", || services::check_compose(&crate::util::root()))?;
    stages.run("PostgreSQL and RabbitMQ", || {
        if std::env::var_os("WASAGA_TEST_PG_URL").is_none() {
            services::ensure_postgres()?;
        }
        services::ensure_rabbitmq()
    })?;
    let tools = stages.run("tools: tansu and Azurite (first run: about 15 minutes)", services::install_tools)?;
    let browser = stages.run("browser tests: playwright-core and Chromium", services::install_browser_tools)?;
    let components = target_dir().join("wasaga-test-components");
    stages.run("components: steps and fixtures (first run: about 3 minutes)", || {
        build_plugins::run(&BuildPlugins { out: Some(components.clone()), fixtures: true, step: Vec::new() })
    })?;
    stages.run("a dead letter as a step's regression test (payment, fixed build)", || {
        // The recorded trap must pass on the fix as well as reproduce on the release.
        run_cmd(cargo().args(["test", "-p", "payment", "--features", "fixed", "--test", "recordings"]))
    })?;
    stages.run("the Rust template's recording on its native build", || {
        // What `cargo xtask new-step --lang rust` writes must pass its own test as written.
        let manifest = target_dir().join("templates").join("rs-counter").join("Cargo.toml");
        run_cmd(
            cargo()
                .arg("test")
                .arg("--manifest-path")
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", target_dir().join("steps")),
        )
    })?;
    stages.run("cargo test --workspace (first run builds the host: about 13 minutes)", || {
        let mut cmd = cargo();
        // The broker tests start their own tansu and Azurite (random ports, killed and
        // restarted by the fault tests) from these binaries, and use the machine's RabbitMQ.
        cmd.args(["test", "--workspace"])
            .env("WASAGA_TEST_COMPONENTS", &components)
            .env("WASAGA_TANSU_BIN", &tools.tansu)
            .env("WASAGA_AZURITE_BIN", &tools.azurite)
            .env("WASAGA_PLAYWRIGHT_DIR", &browser.playwright)
            .env("WASAGA_CHROMIUM", &browser.chromium)
            .env("WASAGA_TEST_SCREENSHOTS", target_dir().join("console-screenshots"));
        cmd.arg("--");
        if let Some(filter) = &args.filter {
            cmd.arg(filter);
        }
        // The only ignored tests are SQL Server's; they run where a server is named.
        let mssql = std::env::var_os("WASAGA_TEST_MSSQL_URL").is_some_and(|url| !url.is_empty());
        if mssql {
            cmd.arg("--include-ignored");
        }
        let result = run_cmd(&mut cmd);
        if !mssql {
            eprintln!(
                "note: the SQL Server tests (saga::mssql::*, racers::mssql::*, claims::mssql::*, fleet::*_on_mssql, crash::mssql_*, polyglot::orders_on_sql_server_*) did not run (shown as ignored): WASAGA_TEST_MSSQL_URL is not set"
            );
        }
        result
    })?;
    if args.filter.is_none() {
        stages.run("schemathesis: the API against its OpenAPI description, SQLite and PostgreSQL", || {
            crate::fuzz::run(&Fuzz { backend: None, examples: 100, components: Some(components.clone()) })
        })?;
    }
    Ok(())
}

/// `cargo xtask test --fresh`: the whole test command again in a child process whose
/// cache folder and target folder are new and empty (xtask itself is rebuilt there too,
/// as in a fresh clone). The folder is removed after a success and kept after a failure.
fn fresh(args: &Test) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("wasaga-fresh-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "fresh run in {}: tools, build outputs and services start empty (about 45 minutes on 2 cores)",
        dir.display()
    );
    let mut cmd = cargo();
    cmd.args(["run", "--package", "xtask", "--", "test"])
        .env("WASAGA_CACHE_DIR", &dir)
        .env("CARGO_TARGET_DIR", dir.join("target"));
    if args.no_lint {
        cmd.arg("--no-lint");
    }
    if let Some(filter) = &args.filter {
        cmd.arg(filter);
    }
    let started = Instant::now();
    let result = run_cmd(&mut cmd);
    eprintln!("fresh run: {} in all", human(started.elapsed()));
    match result {
        Ok(()) => {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            Ok(())
        }
        Err(err) => Err(err.context(format!("the fresh run failed; its folder is kept: {}", dir.display()))),
    }
}
