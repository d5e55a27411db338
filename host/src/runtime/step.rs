//! A loaded step version, and the two things done with it: loading (validate, compile,
//! describe) and calling (a fresh instance per event).

use super::bindings::{Handler, handler, provenance};
use super::host::{CallLabels, CallParts, StepStore};
use super::limits::{CallBudget, CallLimiter, LimitExceeded};
use super::outbound::{CallNet, Network};
use super::recorder::Recorder;
use super::state::{MemoryState, StateError, StepState};
use super::validate::{check_binary, check_imports, check_world, subscription_known, valid_kind};
use super::{CallError, LoadError, Runtime};
use crate::archive::Archive;
use crate::event::Digest;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use wasmtime::Store;
use wasmtime::component::Component;

/// One version of a step, ready to instantiate.
pub struct LoadedStep {
    /// The name it is installed under.
    pub name: Arc<str>,
    /// The semantic version from its manifest.
    pub version: String,
    /// `sha256:<hex>` of the component bytes: the version recorded with every event.
    pub digest: Arc<str>,
    /// Event kinds it subscribes to.
    pub subscribes: Vec<String>,
    pub loaded_at: OffsetDateTime,
    /// The component, kept to persist it and to roll back to it.
    pub bytes: Bytes,
    /// Whether the machine code came from the compile cache.
    pub from_cache: bool,
    /// The contract version it was built against (`wasaga:saga@…`).
    pub contract: &'static str,
    /// Time to compile or to load from the cache.
    pub compile_time: Duration,
    /// The machine code calls run: Winch's at first for a large component, replaced by
    /// Cranelift's in place (for every holder of this version) once it is compiled.
    code: Arc<ArcSwap<Code>>,
}

/// Which compiler made the code a version runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Winch: compiled fast, runs slower; serves until Cranelift's code is ready.
    Baseline,
    /// Cranelift.
    Optimized,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }
}

/// A compiled component, ready to instantiate on its engine.
struct Code {
    tier: Tier,
    engine: wasmtime::Engine,
    pre: Handler,
}

impl std::fmt::Debug for LoadedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedStep")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("contract", &self.contract)
            .finish_non_exhaustive()
    }
}

impl LoadedStep {
    /// Subscribes to every kind (`*`): an observer, like analytics, that drives no order
    /// and reads the event stream when one is configured.
    pub fn observes_all(&self) -> bool {
        self.subscribes.iter().any(|pattern| pattern == "*")
    }

    /// Whether this step handles events of `kind`.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        crate::event::subscribed(&self.subscribes, kind)
    }

    /// The compiler whose code serves now.
    pub fn tier(&self) -> Tier {
        self.code.load().tier
    }
}

/// Who emitted an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub step: String,
    pub step_version: String,
}

impl Origin {
    /// The emitter of `event`.
    pub fn of(event: &crate::event::StoredEvent) -> Origin {
        Origin { step: event.step.clone(), step_version: event.step_version.clone() }
    }
}

/// One delivery of one event.
#[derive(Debug, Clone, Copy)]
pub struct CallInput<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub order_id: &'a str,
    pub occurred_at_ms: u64,
    pub payload: &'a str,
    pub origin: &'a Origin,
    /// 1 on first delivery.
    pub attempt: u32,
    /// Where the step's HTTP requests go: nowhere unless the caller says otherwise.
    pub network: Network<'a>,
}

impl<'a> CallInput<'a> {
    /// Delivery `attempt` of a stored `event`, emitted by `origin` (`Origin::of(event)`).
    pub fn of(event: &'a crate::event::StoredEvent, origin: &'a Origin, attempt: u32) -> CallInput<'a> {
        CallInput {
            id: &event.id,
            kind: &event.kind,
            order_id: &event.order_id,
            occurred_at_ms: u64::try_from(event.occurred_at_ms).unwrap_or(0),
            payload: &event.payload,
            origin,
            attempt,
            network: Network::Closed("this call may not reach the network"),
        }
    }

    /// The same delivery, its requests sent: the live call.
    pub fn live(self) -> CallInput<'a> {
        CallInput { network: Network::Live, ..self }
    }

    /// The same delivery, its requests sent `network`'s way.
    pub fn network(self, network: Network<'a>) -> CallInput<'a> {
        CallInput { network, ..self }
    }
}

/// An event a step returned, checked against the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub kind: String,
    pub payload: String,
    /// A durable timer: publish this long after the commit (0.2.0's `delay-ms`).
    pub delay_ms: Option<u64>,
}

/// The `sha256:<hex>` digest of component bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

pub(super) async fn load(runtime: &Arc<Runtime>, name: &str, bytes: Bytes) -> Result<LoadedStep, LoadError> {
    crate::event::check_step_name(name)?;
    if bytes.len() > runtime.config.max_component_bytes {
        return Err(LoadError::TooLarge { bytes: bytes.len(), limit: runtime.config.max_component_bytes });
    }
    check_binary(&bytes)?;
    // Imports and shape are read before compiling: a refusal costs milliseconds, not a
    // compile.
    check_imports(&bytes)?;
    check_shape(&runtime.config, &bytes)?;
    let cache_key = Digest::of(&bytes);
    let digest = cache_key.to_string();
    let started = Instant::now();
    let cached = {
        let runtime = runtime.clone();
        let cache_key = cache_key.clone();
        tokio::task::spawn_blocking(move || runtime.cache.as_ref().and_then(|c| c.load(&runtime.engine, &cache_key)))
            .await
            .ok()
            .flatten()
    };
    if let Some(component) = cached {
        let code = optimized(runtime, &component)?;
        return prepare(runtime, name, code, bytes, digest, true, started.elapsed()).await;
    }
    let large = runtime.config.baseline_min_bytes.is_some_and(|min| bytes.len() >= min);
    if let Some(baseline) = runtime.baseline.as_ref().filter(|_| large) {
        match compile_with(runtime, &baseline.engine, bytes.clone()).await {
            Ok(component) => {
                let code = Code {
                    tier: Tier::Baseline,
                    pre: instance_pre(&baseline.linker, &component)?,
                    engine: baseline.engine.clone(),
                };
                let loaded = prepare(runtime, name, code, bytes.clone(), digest, false, started.elapsed()).await?;
                // Cranelift compiles in the background; the version serves meanwhile.
                if !runtime.config.baseline_only {
                    tokio::spawn(optimize(runtime.clone(), loaded.code.clone(), loaded.name.clone(), bytes, cache_key));
                }
                return Ok(loaded);
            }
            // A feature Winch lacks (exceptions, say): Cranelift alone, as for any other.
            Err(error) => tracing::info!(step = name, %error, "the baseline compiler cannot take it; compiling once"),
        }
    }
    let component = compile_with(runtime, &runtime.engine, bytes.clone()).await?;
    let compile_time = started.elapsed();
    let loaded = prepare(runtime, name, optimized(runtime, &component)?, bytes, digest, false, compile_time).await?;
    if let Some(cache) = &runtime.cache {
        cache.store(&component, &cache_key);
    }
    Ok(loaded)
}

/// Compile on `engine` off the async workers (seconds for a large component), giving up
/// on one that takes too long.
///
/// Giving up cannot stop the compiler: Cranelift has no interruption (epochs and fuel
/// apply to running code, not to compiling it), and a thread cannot be killed. So each
/// compile holds one of a few slots until its thread really ends, not until it is given
/// up on: repeated uploads of a component that compiles for minutes wait for a slot (at
/// most `compile_timeout` again) and are refused as busy, instead of piling up threads.
/// Every compile does end, since a component's size is bounded
/// (`WASAGA_MAX_COMPONENT_MIB`). A child process would free the slot at once, at the
/// cost of a second engine and a process per compile; the slots bound the same harm.
async fn compile_with(runtime: &Runtime, engine: &wasmtime::Engine, bytes: Bytes) -> Result<Component, LoadError> {
    let timeout = runtime.config.compile_timeout;
    let slot = tokio::time::timeout(timeout, runtime.compiles.clone().acquire_owned())
        .await
        .map_err(|_| LoadError::CompilesBusy(timeout))?
        .map_err(|_| LoadError::CompilesBusy(timeout))?;
    let engine = engine.clone();
    let compile = tokio::task::spawn_blocking(move || {
        let compiled = Component::new(&engine, &bytes).map_err(|e| LoadError::Compile(error_chain(&e)));
        drop(slot);
        compiled
    });
    match tokio::time::timeout(timeout, compile).await {
        Err(_) => Err(LoadError::CompileTimeout(timeout)),
        Ok(joined) => joined.map_err(|e| LoadError::Compile(format!("compiler task failed: {e}")))?,
    }
}

/// Check a compiled component against the contract, then link it.
fn instance_pre(linker: &wasmtime::component::Linker<StepStore>, component: &Component) -> Result<Handler, LoadError> {
    // First, so a component without the handler is told so, not that linking failed.
    let export = check_world(linker.engine(), component)?;
    let instance_pre = linker.instantiate_pre(component).map_err(|e| LoadError::Contract(error_chain(&e)))?;
    let contract = |e: wasmtime::Error| LoadError::Contract(error_chain(&e));
    match export {
        super::bindings::HANDLER_V0_1 => {
            super::bindings::v0_1::ArchivingStepPre::new(instance_pre).map(Handler::V0_1).map_err(contract)
        }
        _ => super::bindings::current::ArchivingStepPre::new(instance_pre).map(Handler::Current).map_err(contract),
    }
}

fn optimized(runtime: &Runtime, component: &Component) -> Result<Code, LoadError> {
    Ok(Code { tier: Tier::Optimized, pre: instance_pre(&runtime.linker, component)?, engine: runtime.engine.clone() })
}

/// Compile with Cranelift and swap the code in for every holder of the version.
async fn optimize(runtime: Arc<Runtime>, code: Arc<ArcSwap<Code>>, name: Arc<str>, bytes: Bytes, cache_key: Digest) {
    let started = Instant::now();
    let result = compile_with(&runtime, &runtime.engine, bytes)
        .await
        .and_then(|component| optimized(&runtime, &component).map(|code| (component, code)));
    match result {
        Ok((component, optimized)) => {
            code.store(Arc::new(optimized));
            tracing::info!(step = %name, compile_ms = started.elapsed().as_millis() as u64,
                "Cranelift's code serves now, in place of the baseline compiler's");
            if let Some(cache) = &runtime.cache {
                cache.store(&component, &cache_key);
            }
        }
        // The baseline code goes on serving; a restart tries again.
        Err(error) => {
            tracing::warn!(step = %name, %error, "Cranelift could not compile it; the baseline code serves on")
        }
    }
}

/// Refuse a component the instance pool could never hold.
fn check_shape(config: &super::RuntimeConfig, bytes: &[u8]) -> Result<(), LoadError> {
    let shape = super::validate::component_shape(bytes)?;
    for (what, found, limit) in [
        ("core module instances", shape.core_instances, config.core_instances_per_component),
        ("linear memories", shape.memories, config.memories_per_component),
        ("tables", shape.tables, config.tables_per_component),
    ] {
        if found > limit {
            return Err(LoadError::TooComplex { what, found, limit });
        }
    }
    let cap = config.memory_mib.saturating_mul(1024 * 1024);
    if shape.largest_memory_bytes > cap {
        return Err(LoadError::MemoryTooSmall {
            needs_mib: shape.largest_memory_bytes.div_ceil(1024 * 1024),
            cap_mib: config.memory_mib,
        });
    }
    Ok(())
}

/// Load a version from the compile cache alone, by digest (no component bytes): for
/// offline tools that find the compiled code of a recorded version but not its file.
pub(super) async fn load_cached(runtime: &Arc<Runtime>, name: &str, digest: &Digest) -> Result<LoadedStep, LoadError> {
    crate::event::check_step_name(name)?;
    let component = runtime
        .cache
        .as_ref()
        .and_then(|cache| cache.load(&runtime.engine, digest))
        .ok_or_else(|| LoadError::Compile(format!("{digest} is not in the compile cache")))?;
    let code = optimized(runtime, &component)?;
    prepare(runtime, name, code, Bytes::new(), digest.to_string(), true, Duration::ZERO).await
}

/// Describe a linked component and make it ready.
async fn prepare(
    runtime: &Arc<Runtime>,
    name: &str,
    code: Code,
    bytes: Bytes,
    digest: String,
    from_cache: bool,
    compile_time: Duration,
) -> Result<LoadedStep, LoadError> {
    let labels = CallLabels { step: name.into(), step_version: digest.as_str().into(), event_id: String::new() };
    let manifest = describe(runtime, &code, labels).await.map_err(LoadError::Describe)?;
    if manifest.name != name {
        return Err(LoadError::NameMismatch { expected: name.to_owned(), found: manifest.name });
    }
    if let Err(e) = semver::Version::parse(&manifest.version) {
        return Err(LoadError::BadVersion { version: manifest.version, reason: e.to_string() });
    }
    if manifest.subscribes.is_empty() {
        return Err(LoadError::NoSubscriptions);
    }
    if let Some(kind) = manifest.subscribes.iter().find(|kind| !subscription_known(name, kind)) {
        return Err(LoadError::UnknownKind { kind: kind.clone() });
    }
    Ok(LoadedStep {
        contract: code.pre.contract(),
        name: name.into(),
        version: manifest.version,
        digest: digest.into(),
        subscribes: manifest.subscribes,
        loaded_at: OffsetDateTime::now_utc(),
        bytes,
        from_cache,
        compile_time,
        code: Arc::new(ArcSwap::from_pointee(code)),
    })
}

fn new_store(runtime: &Runtime, engine: &wasmtime::Engine, parts: CallParts) -> Store<StepStore> {
    let max_memory = usize::try_from(runtime.config.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let budget = CallBudget::new(runtime.config.limits);
    let data = StepStore::new(CallLimiter::new(max_memory), budget, parts);
    let mut store = Store::new(engine, data);
    store.limiter(|data| &mut data.limiter);
    if runtime.config.epoch_interruption {
        store.set_epoch_deadline(runtime.deadline_ticks);
    }
    store
}

/// Slots for one instance of `step`: its share of the pool, then a slot of the pool.
/// Waiting here is the host being busy, so the deadline starts only afterwards.
async fn permits<'a>(
    runtime: &'a Runtime,
    step: &Arc<str>,
) -> Result<(tokio::sync::OwnedSemaphorePermit, tokio::sync::SemaphorePermit<'a>), CallError> {
    let share = runtime.step_permits(step).acquire_owned().await.map_err(|e| CallError::Host(e.to_string()))?;
    let slot = runtime.permits.acquire().await.map_err(|e| CallError::Host(e.to_string()))?;
    Ok((share, slot))
}

async fn describe(runtime: &Runtime, code: &Code, labels: CallLabels) -> Result<handler::Manifest, CallError> {
    let origin = provenance::Origin { step: "host".to_owned(), step_version: String::new() };
    let _permits = permits(runtime, &labels.step).await?;
    let net = CallNet::new(
        runtime.net(&labels.step)?,
        "describe",
        Network::Closed("describe() may not reach the network"),
        std::time::Instant::now() + runtime.config.deadline,
        runtime.config.limits,
        None,
    );
    let parts =
        CallParts { state: Arc::new(MemoryState::default()), archive: None, origin, labels, recorder: None, net };
    let mut store = new_store(runtime, &code.engine, parts);
    let result = tokio::time::timeout(runtime.config.deadline, code.pre.describe(&mut store)).await;
    store.data().flush_stdio();
    match result {
        Ok(Ok(manifest)) => Ok(manifest),
        Ok(Err(error)) => Err(classify(runtime, &store, error)),
        Err(_) => Err(CallError::Timeout { deadline_ms: runtime.config.deadline.as_millis() }),
    }
}

pub(super) async fn call(
    runtime: &Runtime,
    step: &LoadedStep,
    input: CallInput<'_>,
    state: Arc<dyn StepState>,
    archive: Option<Arc<dyn Archive>>,
    recorder: Option<Arc<Recorder>>,
) -> Result<Vec<Emitted>, CallError> {
    let origin =
        provenance::Origin { step: input.origin.step.clone(), step_version: input.origin.step_version.clone() };
    let labels =
        CallLabels { step: step.name.clone(), step_version: step.digest.clone(), event_id: input.id.to_owned() };
    let _permits = permits(runtime, &step.name).await?;
    let net = CallNet::new(
        runtime.net(&step.name)?,
        input.id,
        input.network,
        std::time::Instant::now() + runtime.config.deadline,
        runtime.config.limits,
        recorder.clone(),
    );
    // The code at the start of the call serves the whole call, even if swapped meanwhile.
    let code = step.code.load_full();
    let mut store = new_store(runtime, &code.engine, CallParts { state, archive, origin, labels, recorder, net });
    let ctx = handler::Context { attempt: input.attempt };
    let event = handler::Event {
        id: input.id.to_owned(),
        kind: input.kind.to_owned(),
        order_id: input.order_id.to_owned(),
        occurred_at_ms: input.occurred_at_ms,
        payload: input.payload.to_owned(),
    };
    // Wall-clock: a guest blocked in a WASI clock or poll is stopped like a spinning one.
    let result = tokio::time::timeout(runtime.config.deadline, code.pre.handle(&mut store, ctx, &event)).await;
    store.data().flush_stdio();
    // A request the host refused fails the call, whatever the step made of its error.
    if let Some(failure) = store.data().hooks.call.failure() {
        return Err(failure);
    }
    let emits = match result {
        Ok(Ok(Ok(emits))) => emits,
        Ok(Ok(Err(handler::StepError::Retryable(reason)))) => return Err(CallError::Retryable(reason)),
        Ok(Ok(Err(handler::StepError::Fatal(reason)))) => return Err(CallError::Fatal(reason)),
        Ok(Err(error)) => return Err(classify(runtime, &store, error)),
        Err(_) if store.data().host_outage || waited_most_of(&store, runtime.config.deadline) => {
            // The storage reported an outage in this call, or one answer took most of
            // the deadline: the host's failure. Time spent in many quick imports is the step's.
            return Err(CallError::Host("the store did not answer within the step's deadline".to_owned()));
        }
        Err(_) => return Err(CallError::Timeout { deadline_ms: runtime.config.deadline.as_millis() }),
    };
    check_emits(runtime, emits)
}

fn check_emits(runtime: &Runtime, emits: Vec<handler::Emit>) -> Result<Vec<Emitted>, CallError> {
    let limits = &runtime.config.limits;
    if emits.len() > limits.emits {
        return Err(CallError::TooLarge(format!("{} events, the limit is {}", emits.len(), limits.emits)));
    }
    let total: usize = emits.iter().map(|e| e.payload.len() + e.kind.len()).sum();
    if total > limits.emit_bytes {
        return Err(CallError::TooLarge(format!("{total} bytes of events, the limit is {}", limits.emit_bytes)));
    }
    emits
        .into_iter()
        .map(|e| {
            if !valid_kind(&e.kind) || crate::event::host_owned_kind(&e.kind) {
                // `order.*` and `step.*` are the host's: a step emitting one could
                // complete or cancel orders by itself.
                return Err(CallError::InvalidKind(e.kind));
            }
            if serde_json::from_str::<serde::de::IgnoredAny>(&e.payload).is_err() {
                return Err(CallError::InvalidPayload(e.kind));
            }
            if let Some(delay) = e.delay_ms.filter(|delay| *delay > limits.timer_delay_ms) {
                return Err(CallError::TooLarge(format!(
                    "a timer of {delay} ms for {}, the limit is {} ms (WASAGA_STEP_MAX_TIMER_SECS)",
                    e.kind, limits.timer_delay_ms
                )));
            }
            Ok(Emitted { kind: e.kind, payload: e.payload, delay_ms: e.delay_ms })
        })
        .collect()
}

/// Whether the import waiting when the deadline passed had waited for most of it.
fn waited_most_of(store: &Store<StepStore>, deadline: std::time::Duration) -> bool {
    store.data().waiting_since.is_some_and(|since| since.elapsed() * 2 >= deadline)
}

/// Name what went wrong in a failed call.
fn classify(runtime: &Runtime, store: &Store<StepStore>, error: wasmtime::Error) -> CallError {
    match error.downcast_ref::<StateError>() {
        Some(outage @ StateError::Unavailable(_)) => return CallError::Host(outage.to_string()),
        Some(refused @ StateError::Refused(_)) => return CallError::Limit(refused.to_string()),
        None => {}
    }
    if let Some(archive_error) = error.downcast_ref::<crate::archive::ArchiveError>() {
        return CallError::Host(archive_error.to_string());
    }
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return CallError::Limit(limit.to_string());
    }
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        // Every slot is taken: the host is busy, the step did nothing wrong.
        return CallError::Host(error_chain(&error));
    }
    if store.data().limiter.memory_limit_hit {
        return CallError::MemoryLimit { mib: runtime.config.memory_mib };
    }
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return CallError::Timeout { deadline_ms: runtime.config.deadline.as_millis() };
    }
    match store.data().last_stderr_line() {
        Some(line) => CallError::Trap(format!("{}; the step's last stderr line: {line}", error_chain(&error))),
        None => CallError::Trap(error_chain(&error)),
    }
}

/// The error and its causes on one line, without the wasm backtrace.
fn error_chain(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let first_line = text.lines().next().unwrap_or_default().to_owned();
        if !first_line.is_empty() && !parts.contains(&first_line) {
            parts.push(first_line);
        }
    }
    parts.join(": ")
}
