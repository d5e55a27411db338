//! `cargo xtask test`: formatting and lints, the components, then every test of the
//! workspace with the components' folder passed to the host's integration tests.

use crate::build_plugins;
use crate::flags::{BuildPlugins, Test};
use crate::services;
use crate::util::{cargo, run as run_cmd, target_dir};

pub fn run(args: &Test) -> anyhow::Result<()> {
    if !args.no_lint {
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run_cmd(cargo().args(["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"]))?;
    }
    services::check_compose(&crate::util::root())?;
    if std::env::var_os("WASAGA_TEST_PG_URL").is_none() {
        services::ensure_postgres()?;
    }
    services::ensure_rabbitmq()?;
    let tools = services::install_tools()?;
    let components = target_dir().join("wasaga-test-components");
    build_plugins::run(&BuildPlugins { out: Some(components.clone()), fixtures: true })?;
    let mut cmd = cargo();
    // The broker tests start their own tansu and Azurite (random ports, killed and
    // restarted by the fault tests) from these binaries, and use the machine's RabbitMQ.
    cmd.args(["test", "--workspace"])
        .env("WASAGA_TEST_COMPONENTS", &components)
        .env("WASAGA_TANSU_BIN", &tools.tansu)
        .env("WASAGA_AZURITE_BIN", &tools.azurite);
    if let Some(filter) = &args.filter {
        cmd.args(["--", filter]);
    }
    run_cmd(&mut cmd)
}
