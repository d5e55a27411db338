//! `cargo xtask bench`: build what the benchmark needs, run it in release mode, and
//! leave its report (markdown and JSON) under bench/results/.

use crate::build_plugins;
use crate::flags::{Bench, BenchKind, BuildPlugins};
use crate::util::{cargo, root, run as run_cmd, target_dir};

pub fn run(args: &Bench) -> anyhow::Result<()> {
    match args.kind {
        BenchKind::Runtime => {
            let components = target_dir().join("wasaga-bench-components");
            build_plugins::run(&BuildPlugins { out: Some(components.clone()), fixtures: true })?;
            let results = root().join("bench/results");
            std::fs::create_dir_all(&results)?;
            run_cmd(
                cargo()
                    .args(["bench", "-p", "wasaga-host", "--bench", "runtime"])
                    .env("WASAGA_BENCH_COMPONENTS", &components)
                    .env("WASAGA_BENCH_RESULTS", &results)
                    .env("WASAGA_BENCH_EVENTS", args.events.to_string()),
            )
        }
    }
}
