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
    let fleet_perf = target_dir().join("fleet-perf");
    if let (BenchKind::Fleet, Some(_)) = (args.kind, &args.profile) {
        // A fresh folder: the flame graphs are drawn from what this run recorded.
        let _ = std::fs::remove_dir_all(&fleet_perf);
        std::fs::create_dir_all(&fleet_perf)?;
        bench.env("WASAGA_BENCH_PERF_DIR", &fleet_perf);
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
    if let (BenchKind::Fleet, Some(label)) = (args.kind, &args.profile) {
        fleet_flame_graphs(&fleet_perf, label, &results)?;
    }
    Ok(())
}

/// One flame graph per profiled fleet run (`<run>-host<N>.data` files), its hosts side by side.
fn fleet_flame_graphs(dir: &std::path::Path, label: &str, results: &std::path::Path) -> anyhow::Result<()> {
    let mut runs: std::collections::BTreeMap<String, Vec<(String, std::path::PathBuf)>> = Default::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(stem) =
            path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|e| e == "data"))
        else {
            continue;
        };
        if let Some((run, host)) = stem.rsplit_once('-') {
            runs.entry(run.to_owned()).or_default().push((host.to_owned(), path.clone()));
        }
    }
    for (run, mut hosts) in runs {
        hosts.sort();
        let svg = results.join(format!("flame-fleet-{label}-{run}.svg"));
        services::fleet_flame_graph(&hosts, &format!("wasaga fleet: {run}"), &svg)?;
        eprintln!("flame graph: {}", svg.display());
    }
    Ok(())
}
