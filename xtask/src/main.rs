//! `cargo xtask`: the project's own commands (build the plugins, run, test, bench, fuzz).
//! Every command is declared in [`flags`]; each has its own module.

mod bench;
mod build_plugins;
mod flags;
mod fuzz;
mod http;
mod new_step;
mod polyglot;
mod run;
mod services;
mod test;
mod util;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let flags = flags::Xtask::parse();
    match flags.command {
        flags::Command::BuildPlugins(args) => build_plugins::run(&args),
        flags::Command::NewStep(args) => new_step::run(&args),
        flags::Command::Run(args) => run::run(&args),
        flags::Command::Test(args) => test::run(&args),
        flags::Command::Bench(args) => bench::run(&args),
        flags::Command::Fuzz(args) => fuzz::run(&args),
        flags::Command::Services(args) => match args.action {
            flags::ServicesAction::Start => services::start(),
            flags::ServicesAction::Stop => services::stop(),
            flags::ServicesAction::Env => {
                services::print_env();
                Ok(())
            }
        },
    }
}
