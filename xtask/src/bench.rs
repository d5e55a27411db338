//! `cargo xtask bench`: build what the benchmark needs, run it in release mode, and
//! leave its report (markdown and JSON) under bench/results/.

use crate::build_plugins;
use crate::flags::{Bench, BenchKind, BuildPlugins};
use crate::services;
use crate::util::{cargo, root, run as run_cmd, target_dir};

pub fn run(args: &Bench) -> anyhow::Result<()> {
    let components = target_dir().join("wasaga-bench-components");
    // The runtime benchmark also measures the templates (fixtures); the others need only the steps.
    let fixtures = matches!(args.kind, BenchKind::Runtime);
    build_plugins::run(&BuildPlugins { out: Some(components.clone()), fixtures, step: Vec::new() })?;
    let results = root().join("bench/results");
    std::fs::create_dir_all(&results)?;
    let name = match args.kind {
        BenchKind::Runtime => "runtime",
        BenchKind::Saga => {
            services::ensure_postgres()?;
            "saga"
        }
        BenchKind::Fleet => {
            services::ensure_postgres()?;
            services::ensure_rabbitmq()?;
            "fleet"
        }
    };
    let mut bench = cargo();
    if let BenchKind::Saga = args.kind {
        // The runs from outside drive the server binary (built by cargo beside the
        // benchmark) with wrk, as users run it.
        bench.env("WASAGA_WRK", services::ensure_wrk()?);
        if args.external_only {
            bench.env("WASAGA_BENCH_EXTERNAL_ONLY", "1");
        }
        if args.profile.is_some() {
            bench.env("WASAGA_BENCH_PERF_DATA", target_dir().join("saga-perf.data"));
        }
    }
    if args.services {
        services::start()?;
        bench.env("WASAGA_BENCH_SERVICES", "1");
        for (name, value) in services::service_env() {
            bench.env(name, value);
        }
    }
    let ran = run_cmd(
        bench
            .args(["bench", "-p", "wasaga-host", "--bench", name])
            // With backtraces on, wasmtime captures one for an error it makes internally on
            // every call (about 4 µs); production runs without, so the benchmark does too.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("WASAGA_BENCH_COMPONENTS", &components)
            .env("WASAGA_BENCH_RESULTS", &results)
            .env("WASAGA_BENCH_EVENTS", args.events.to_string())
            .env("WASAGA_BENCH_ORDERS", args.orders.to_string()),
    );
    ran?;
    if let (BenchKind::Saga, Some(label)) = (args.kind, &args.profile) {
        let svg = results.join(format!("flame-{label}.svg"));
        services::flame_graph(&target_dir().join("saga-perf.data"), &svg)?;
        eprintln!("flame graph: {}", svg.display());
    }
    Ok(())
}
