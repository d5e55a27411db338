//! Every xtask command and its options, in one place.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Project commands for wasaga.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build every step to a wasm32-wasip2 component and install it where the host watches.
    BuildPlugins(BuildPlugins),
    /// Write a new step (manifest, handler, test) in Rust, Python or JavaScript.
    NewStep(NewStep),
    /// Build the plugins if needed and start `wasaga serve` on the embedded defaults.
    Run(Run),
    /// Check formatting and lints, build the components, and run every test.
    Test(Test),
    /// Run a benchmark and write its report under bench/results/.
    Bench(Bench),
    /// Fuzz the HTTP API against its OpenAPI description with schemathesis, on SQLite and
    /// on PostgreSQL: no 5xx, every response as described.
    Fuzz(Fuzz),
    /// Install (once) and start tansu (Kafka) and Azurite, check PostgreSQL and RabbitMQ,
    /// and print the environment that points wasaga at them.
    Services(Services),
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ServicesAction {
    /// Install what is missing, start what is not running, print the environment.
    #[default]
    Start,
    /// Stop the services this command started.
    Stop,
    /// Print the environment only, as `export` lines.
    Env,
}

#[derive(Debug, Clone, Args)]
pub struct Services {
    #[arg(value_enum, default_value_t)]
    pub action: ServicesAction,
}

#[derive(Debug, Clone, Args)]
pub struct BuildPlugins {
    /// Install into this folder instead of dist/plugins.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also build the test fixtures (hostile, sockets, echo v1 and v2, observer, and the
    /// new-step templates in Rust, Python and JavaScript).
    #[arg(long)]
    pub fixtures: bool,
    /// Also build the step in this folder (Rust, Python or JavaScript); every folder of
    /// `steps/` is built anyway.
    #[arg(long = "step", value_name = "DIR")]
    pub step: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct NewStep {
    /// The step's name: lowercase letters, digits and '-' (its file is NAME.wasm).
    pub name: String,
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Where to write it (default: steps/NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The languages a step can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Run {
    /// Build the host in release mode.
    #[arg(long)]
    pub release: bool,
    /// Run on PostgreSQL + RabbitMQ + Kafka (tansu) + Azure Blob (Azurite), started as by
    /// `cargo xtask services`, instead of the embedded defaults.
    #[arg(long)]
    pub services: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Test {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Prove the first-run path: run in an empty cache folder (tools, build outputs,
    /// services), as a new machine would; the cargo registry is reused. Run it after any
    /// change to xtask, tool versions or install steps.
    #[arg(long)]
    pub fresh: bool,
    /// Passed to `cargo test` as a test name filter.
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchKind {
    /// Per-event instantiate + handle, native ratio, allocators, compile and swap times.
    Runtime,
    /// Orders/s and POST → completed latency on SQLite and PostgreSQL, WASM vs native steps.
    Saga,
    /// Orders/s, latency, CPU per order and conflict re-runs with 1, 2 and 3 hosts on
    /// PostgreSQL + RabbitMQ (+ Kafka and Azure Blob with --services).
    Fleet,
}

#[derive(Debug, Clone, Args)]
pub struct Bench {
    pub kind: BenchKind,
    /// Events per measurement (runtime benchmark).
    #[arg(long, default_value_t = 20_000)]
    pub events: u32,
    /// Orders per run (saga benchmark).
    #[arg(long, default_value_t = 2_000)]
    pub orders: u32,
    /// Saga benchmark: also run on PostgreSQL + RabbitMQ + Kafka + Azurite.
    #[arg(long)]
    pub services: bool,
    /// Saga benchmark: only the runs from outside (`wasaga serve` driven by wrk).
    #[arg(long)]
    pub external_only: bool,
    /// Profile with `perf` and draw flame graphs: the saga benchmark's server at
    /// saturation as `bench/results/flame-<LABEL>.svg`; the fleet benchmark's hosts, side
    /// by side, per run with 100 SKUs as `bench/results/flame-fleet-<LABEL>-<run>.svg`
    /// (the profiled runs' figures carry perf's own cost).
    #[arg(long, value_name = "LABEL")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct Fuzz {
    /// Only this store.
    #[arg(long, value_enum)]
    pub backend: Option<FuzzBackend>,
    /// Examples generated per operation.
    #[arg(long, default_value_t = 100)]
    pub examples: u32,
    /// The folder of built components (default: the test components under the target folder).
    #[arg(long)]
    pub components: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FuzzBackend {
    Sqlite,
    Postgres,
}
