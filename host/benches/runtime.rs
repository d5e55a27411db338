//! `cargo xtask bench runtime`: the cost of running a step as a component.
//!
//! Per event and step: a fresh instance plus `handle` with its state calls, through the
//! async API, beside the same step logic compiled natively into this binary, measured
//! in one run so the ratio holds on a noisy machine. Also: pooling against on-demand
//! allocation, the cost of epoch interruption, compile and cached load times, and swap
//! latency under load. Writes markdown and JSON under `WASAGA_BENCH_RESULTS`.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasaga_host::archive::{Archive, ObjectArchive};
use wasaga_host::registry::{Source, StepRegistry};
use wasaga_host::runtime::{
    Allocator, CallInput, LoadedStep, MemoryState, Network, Origin, Runtime, RuntimeConfig, StepState,
};
use wasaga_sdk::{Context, Event, MemoryHost, Step};

struct Env {
    components: PathBuf,
    results: PathBuf,
    events: usize,
}

fn env() -> Env {
    let var = |name: &str| {
        std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set: run `cargo xtask bench runtime`"))
    };
    Env {
        components: PathBuf::from(var("WASAGA_BENCH_COMPONENTS")),
        results: PathBuf::from(var("WASAGA_BENCH_RESULTS")),
        events: std::env::var("WASAGA_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000),
    }
}

/// Latencies of one series, in nanoseconds.
#[derive(Debug, Clone)]
struct Series {
    p50_ns: u64,
    p99_ns: u64,
    per_sec: f64,
}

fn summarize(mut samples: Vec<u64>, wall: Duration) -> Series {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Series { p50_ns: at(0.50), p99_ns: at(0.99), per_sec: samples.len() as f64 / wall.as_secs_f64() }
}

/// The events each step handles in the benchmark: a steady mix for distinct orders.
fn events_for(step: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let order = format!("o-{i}");
            let sku = format!("SKU-{}", i % 10);
            let (kind, payload) = match step {
                "inventory" => match i % 2 {
                    0 => ("order.placed", json!({"customer_id": "c", "items": [{"sku": sku, "quantity": 1, "unit_price_cents": 100}], "total_cents": 100, "payment": {"card_token": "tok_ok"}})),
                    _ => ("order.completed", json!({})),
                },
                "payment" => ("stock.reserved", json!({"items": [{"sku": sku, "quantity": 1, "unit_price_cents": 100}], "total_cents": 100, "payment": {"card_token": "tok_ok"}, "levels": []})),
                _ => ("order.placed", json!({"customer_id": "c", "items": [{"sku": sku, "quantity": 1, "unit_price_cents": 100}], "total_cents": 100, "payment": {"card_token": "tok_ok"}})),
            };
            // Inventory completes the order it placed one event earlier.
            let order = if step == "inventory" && i % 2 == 1 { format!("o-{}", i - 1) } else { order };
            Event { id: format!("ev-{i}"), kind: kind.to_owned(), order_id: order, occurred_at_ms: 1_764_115_200_000 + i as u64, payload: payload.to_string() }
        })
        .collect()
}

fn stocked() -> Vec<Event> {
    (0..10)
        .map(|i| Event {
            id: format!("stock-{i}"),
            kind: "stock.set".to_owned(),
            order_id: String::new(),
            occurred_at_ms: 0,
            payload: json!({"sku": format!("SKU-{i}"), "available": 1_000_000_000u64}).to_string(),
        })
        .collect()
}

/// A step's logic, called natively.
type HandleFn = fn(&mut dyn wasaga_sdk::Host, &Context, &Event) -> Result<Vec<wasaga_sdk::Emit>, wasaga_sdk::StepError>;

fn native(step: &str, events: &[Event]) -> Series {
    let handle: HandleFn = match step {
        "inventory" => inventory::Inventory::handle,
        "payment" => payment::Payment::handle,
        _ => analytics::Analytics::handle,
    };
    let mut host = MemoryHost::default();
    let ctx = Context { attempt: 1 };
    for event in stocked() {
        let _ = handle(&mut host, &ctx, &event);
    }
    let mut samples = Vec::with_capacity(events.len());
    let wall = Instant::now();
    for event in events {
        let start = Instant::now();
        let out = handle(&mut host, &ctx, event);
        samples.push(start.elapsed().as_nanos() as u64);
        assert!(out.is_ok(), "{step} native failed: {out:?}");
    }
    summarize(samples, wall.elapsed())
}

async fn wasm(runtime: &Runtime, loaded: &LoadedStep, events: &[Event]) -> Series {
    let state: Arc<dyn StepState> = Arc::new(MemoryState::default());
    let archive: Arc<dyn Archive> = Arc::new(ObjectArchive::from_url("memory://").unwrap());
    let origin = Origin { step: "host".to_owned(), step_version: "bench".to_owned() };
    let input = |event| input_of(event, &origin);
    let stock = stocked();
    for event in &stock {
        if loaded.subscribes_to(&event.kind) {
            runtime.call(loaded, input(event), state.clone(), Some(archive.clone())).await.unwrap();
        }
    }
    // Warm the pool's slots and the caches.
    for event in events.iter().take(200) {
        let _ = runtime.call(loaded, input(event), Arc::new(MemoryState::default()), Some(archive.clone())).await;
    }
    let mut samples = Vec::with_capacity(events.len());
    let wall = Instant::now();
    for event in events {
        let start = Instant::now();
        let out = runtime.call(loaded, input(event), state.clone(), Some(archive.clone())).await;
        samples.push(start.elapsed().as_nanos() as u64);
        assert!(out.is_ok(), "{} wasm failed: {out:?}", loaded.name);
    }
    summarize(samples, wall.elapsed())
}

/// `order.completed` for `n` distinct orders: what the templates subscribe to.
fn completed(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            id: format!("e-{i}"),
            kind: "order.completed".to_owned(),
            order_id: format!("o-{i}"),
            occurred_at_ms: 0,
            payload: "{}".to_owned(),
        })
        .collect()
}

fn input_of<'a>(event: &'a Event, origin: &'a Origin) -> CallInput<'a> {
    CallInput {
        id: &event.id,
        kind: &event.kind,
        order_id: &event.order_id,
        occurred_at_ms: event.occurred_at_ms,
        payload: &event.payload,
        origin,
        attempt: 1,
        network: Network::Live,
    }
}

fn config(allocator: Allocator, epoch: bool, cache: Option<PathBuf>) -> RuntimeConfig {
    RuntimeConfig {
        allocator,
        epoch_interruption: epoch,
        cache_dir: cache,
        concurrency: 16,
        ..RuntimeConfig::default()
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn main() {
    let env = env();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let component = |name: &str| Bytes::from(std::fs::read(env.components.join(format!("{name}.wasm"))).unwrap());
    let steps = ["inventory", "payment", "analytics"];
    let mut md = String::new();
    let mut report = json!({"events_per_series": env.events, "steps": {}, "allocators": {}, "epoch": {}, "load": {}, "swap": {}, "compilers": {}});
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    md.push_str(&format!("# Runtime benchmark\n\n{} events per series, one async task on a current-thread runtime; CPU: {cpu}; {} cores.\n\n", env.events, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));

    // Profiling mode (`perf record`): only the inventory step's loop.
    if std::env::var_os("WASAGA_BENCH_PROFILE").is_some() {
        let runtime = Runtime::new(config(Allocator::Pooling, true, None)).unwrap();
        let loaded = rt.block_on(runtime.load("inventory", component("inventory"))).unwrap();
        let s = rt.block_on(wasm(&runtime, &loaded, &events_for("inventory", env.events)));
        println!("inventory p50 {} µs p99 {} µs", us(s.p50_ns), us(s.p99_ns));
        return;
    }

    // 1. Each step: wasm (fresh instance per event) against native.
    md.push_str("## Per event: fresh instance + handle with state calls, against native\n\n| step | wasm p50 µs | wasm p99 µs | wasm events/s | native p50 µs | native p99 µs | native events/s | wasm/native throughput |\n|---|---|---|---|---|---|---|---|\n");
    let pooled = Runtime::new(config(Allocator::Pooling, true, None)).unwrap();
    for step in steps {
        let loaded = rt.block_on(pooled.load(step, component(step))).unwrap();
        let events = events_for(step, env.events);
        let w = rt.block_on(wasm(&pooled, &loaded, &events));
        let n = native(step, &events);
        let ratio = w.per_sec / n.per_sec;
        md.push_str(&format!(
            "| {step} | {} | {} | {:.0} | {} | {} | {:.0} | {:.3} |\n",
            us(w.p50_ns),
            us(w.p99_ns),
            w.per_sec,
            us(n.p50_ns),
            us(n.p99_ns),
            n.per_sec,
            ratio
        ));
        report["steps"][step] = json!({"wasm": {"p50_ns": w.p50_ns, "p99_ns": w.p99_ns, "per_sec": w.per_sec}, "native": {"p50_ns": n.p50_ns, "p99_ns": n.p99_ns, "per_sec": n.per_sec}, "throughput_ratio": ratio});
    }

    // 2. Allocators and epoch interruption, on the inventory step.
    md.push_str("\n## Allocation strategy and epoch interruption (inventory)\n\n| setup | p50 µs | p99 µs | events/s |\n|---|---|---|---|\n");
    let events = events_for("inventory", env.events);
    for (label, allocator, epoch) in [
        ("pooling, epoch on (production)", Allocator::Pooling, true),
        ("pooling, epoch off", Allocator::Pooling, false),
        ("on-demand, epoch on", Allocator::OnDemand, true),
    ] {
        let runtime = Runtime::new(config(allocator, epoch, None)).unwrap();
        let loaded = rt.block_on(runtime.load("inventory", component("inventory"))).unwrap();
        let s = rt.block_on(wasm(&runtime, &loaded, &events));
        md.push_str(&format!("| {label} | {} | {} | {:.0} |\n", us(s.p50_ns), us(s.p99_ns), s.per_sec));
        report["allocators"][label] = json!({"p50_ns": s.p50_ns, "p99_ns": s.p99_ns, "per_sec": s.per_sec});
    }

    // 3. Two cores: two tasks on a two-thread runtime.
    {
        let mt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let runtime = Runtime::new(config(Allocator::Pooling, true, None)).unwrap();
        let loaded = Arc::new(mt.block_on(runtime.load("inventory", component("inventory"))).unwrap());
        let wall = Instant::now();
        let per_task = env.events;
        mt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..2 {
                let (runtime, loaded) = (runtime.clone(), loaded.clone());
                let events = events_for("inventory", per_task)
                    .into_iter()
                    .map(|mut e| {
                        e.order_id = format!("{t}-{}", e.order_id);
                        e
                    })
                    .collect::<Vec<_>>();
                tasks.push(tokio::spawn(async move { wasm(&runtime, &loaded, &events).await }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let rate = (2 * (per_task + 210)) as f64 / wall.elapsed().as_secs_f64();
        md.push_str(&format!("| pooling, 2 tasks on 2 threads (total) | | | {rate:.0} |\n"));
        report["allocators"]["pooling, 2 threads"] = json!({"per_sec": rate});
    }

    // 4. Compile and cached load per component.
    md.push_str("\n## Load time per component (validate + compile or cache load + describe)\n\n| component | size KiB | compile ms | cached load ms |\n|---|---|---|---|\n");
    let cache = tempfile::tempdir().unwrap();
    for step in steps {
        let bytes = component(step);
        let cold = Runtime::new(config(Allocator::Pooling, true, Some(cache.path().to_owned()))).unwrap();
        let start = Instant::now();
        let first = rt.block_on(cold.load(step, bytes.clone())).unwrap();
        let compile = start.elapsed();
        assert!(!first.from_cache);
        let warm = Runtime::new(config(Allocator::Pooling, true, Some(cache.path().to_owned()))).unwrap();
        let start = Instant::now();
        let second = rt.block_on(warm.load(step, bytes.clone())).unwrap();
        let cached = start.elapsed();
        assert!(second.from_cache);
        md.push_str(&format!(
            "| {step} | {:.0} | {:.1} | {:.2} |\n",
            bytes.len() as f64 / 1024.0,
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3
        ));
        report["load"][step] = json!({"bytes": bytes.len(), "compile_ms": compile.as_secs_f64() * 1e3, "cached_ms": cached.as_secs_f64() * 1e3});
    }

    // 5. Swap latency under load: upload accepted → next call on the new version.
    md.push_str("\n## Hot swap under load (2 callers on one thread, echo v1 ↔ v2, 20 swaps)\n\nUpload = validate + compile (or cache load) + describe; accepted → first call = from the install returning to the first call served by the new version.\n\n| compile cache | upload p50 ms | upload max ms | accepted → first call p50 ms | max ms | calls | failed calls |\n|---|---|---|---|---|---|---|\n");
    for cached in [false, true] {
        let s = rt.block_on(swap_latency(&component, cached));
        let label = if cached { "warm (versions seen before)" } else { "none (every upload compiles)" };
        md.push_str(&format!(
            "| {label} | {:.2} | {:.2} | {:.3} | {:.3} | {} | {} |\n",
            s.upload_p50_ms, s.upload_max_ms, s.visible_p50_ms, s.visible_max_ms, s.calls, s.failed
        ));
        report["swap"][if cached { "cached" } else { "compiling" }] = json!({"upload_p50_ms": s.upload_p50_ms, "upload_max_ms": s.upload_max_ms, "visible_p50_ms": s.visible_p50_ms, "visible_max_ms": s.visible_max_ms, "calls": s.calls, "failed_calls": s.failed});
    }

    // 6. The two compilers on the templates, in the three languages.
    md.push_str("\n## The two compilers on the new-step templates (order.completed, fresh instance per call)\n\nServing = validate + compile + describe, from the upload to the version serving; first call = the first `handle` after it. Winch's code serves a component of 4 MiB or more until Cranelift's replaces it.\n\n| template | size KiB | compiler | serving ms | first call ms | call p50 µs | call p99 µs | calls/s |\n|---|---|---|---|---|---|---|---|\n");
    let calls = (env.events / 20).clamp(50, 1000);
    for template in ["rs-counter", "py-counter", "js-counter"] {
        let Ok(bytes) = std::fs::read(env.components.join(format!("{template}.wasm"))) else {
            md.push_str(&format!("| {template} | not built | | | | | | |\n"));
            continue;
        };
        let bytes = Bytes::from(bytes);
        for (compiler, baseline) in [("Winch", true), ("Cranelift", false)] {
            let config = RuntimeConfig {
                memory_mib: 128,
                baseline_min_bytes: baseline.then_some(0),
                baseline_only: baseline,
                ..config(Allocator::Pooling, true, None)
            };
            let runtime = Runtime::new(config).unwrap();
            let start = Instant::now();
            let loaded = rt.block_on(runtime.load(template, bytes.clone())).unwrap();
            let serving = start.elapsed();
            let events = completed(calls);
            let origin = Origin { step: "host".to_owned(), step_version: "bench".to_owned() };
            let start = Instant::now();
            rt.block_on(runtime.call(&loaded, input_of(&events[0], &origin), Arc::new(MemoryState::default()), None))
                .unwrap();
            let first = start.elapsed();
            let s = rt.block_on(wasm(&runtime, &loaded, &events));
            md.push_str(&format!(
                "| {template} | {:.0} | {compiler} | {:.0} | {:.1} | {} | {} | {:.0} |\n",
                bytes.len() as f64 / 1024.0,
                serving.as_secs_f64() * 1e3,
                first.as_secs_f64() * 1e3,
                us(s.p50_ns),
                us(s.p99_ns),
                s.per_sec
            ));
            report["compilers"][template][compiler] = json!({
                "bytes": bytes.len(), "serving_ms": serving.as_secs_f64() * 1e3,
                "first_call_ms": first.as_secs_f64() * 1e3, "p50_us": s.p50_ns as f64 / 1e3,
                "p99_us": s.p99_ns as f64 / 1e3, "per_sec": s.per_sec,
            });
        }
    }

    std::fs::create_dir_all(&env.results).unwrap();
    let stamp = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    report["at"] = Value::String(stamp.clone());
    md.push_str(&format!("\nMeasured {stamp}.\n"));
    std::fs::write(env.results.join("runtime.md"), &md).unwrap();
    std::fs::write(env.results.join("runtime.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{md}");
    println!("written to {}", env.results.join("runtime.md").display());
}

struct Swap {
    upload_p50_ms: f64,
    upload_max_ms: f64,
    visible_p50_ms: f64,
    visible_max_ms: f64,
    calls: u64,
    failed: u64,
}

fn p50_max(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[values.len() - 1])
}

async fn swap_latency(component: &dyn Fn(&str) -> Bytes, cached: bool) -> Swap {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(config(Allocator::Pooling, true, cached.then(|| cache.path().to_owned()))).unwrap();
    let registry = StepRegistry::new(runtime);
    let (v1, v2) = (component("echo-v1"), component("echo-v2"));
    if cached {
        // Both versions compiled once before, as after a rollback or a re-deploy.
        registry.install("echo", v2.clone(), Source::Upload).await.unwrap();
    }
    registry.install("echo", v1.clone(), Source::Upload).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen_version = Arc::new(std::sync::Mutex::new((String::new(), Instant::now())));
    let mut callers = Vec::new();
    for _ in 0..2 {
        let (registry, stop, calls, failed, seen_version) =
            (registry.clone(), stop.clone(), calls.clone(), failed.clone(), seen_version.clone());
        callers.push(tokio::spawn(async move {
            let origin = Origin { step: "host".to_owned(), step_version: "bench".to_owned() };
            let state: Arc<dyn StepState> = Arc::new(MemoryState::default());
            while !stop.load(Ordering::Relaxed) {
                let step = registry.current("echo").unwrap();
                let input = CallInput {
                    id: "e",
                    kind: "echo.ping",
                    order_id: "o",
                    occurred_at_ms: 0,
                    payload: "{}",
                    origin: &origin,
                    attempt: 1,
                    network: Network::Live,
                };
                match registry.runtime().call(&step, input, state.clone(), None).await {
                    Ok(_) => {
                        let mut seen = seen_version.lock().unwrap();
                        if seen.0 != step.version {
                            *seen = (step.version.clone(), Instant::now());
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    let (mut uploads, mut visible) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let (bytes, version) = if i % 2 == 0 { (v2.clone(), "2.0.0") } else { (v1.clone(), "1.0.0") };
        let started = Instant::now();
        registry.install("echo", bytes, Source::Upload).await.unwrap();
        let accepted = Instant::now();
        uploads.push((accepted - started).as_secs_f64() * 1e3);
        loop {
            let seen = seen_version.lock().unwrap().clone();
            if seen.0 == version {
                visible.push(seen.1.saturating_duration_since(accepted).as_secs_f64() * 1e3);
                break;
            }
            drop(seen);
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let (upload_p50_ms, upload_max_ms) = p50_max(uploads);
    let (visible_p50_ms, visible_max_ms) = p50_max(visible);
    Swap {
        upload_p50_ms,
        upload_max_ms,
        visible_p50_ms,
        visible_max_ms,
        calls: calls.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    }
}
