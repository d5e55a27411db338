//! The WebAssembly runtime: one wasmtime engine with a pooling allocator, a linker that
//! grants only the contract, and a fresh instance per call under a deadline and a
//! memory cap.
//!
//! **Architecture Invariant:** a step does I/O only through the WIT imports bound in
//! [`host::StepStore`] and outbound HTTP the host sends for it (`outbound/`); the WASI
//! context it links against holds only its configured settings.

mod bindings;
mod cache;
mod host;
mod limits;
mod outbound;
mod recorder;
mod state;
mod step;
mod validate;

pub use cache::CompileCache;
pub use limits::{CallLimits, LimitExceeded};
pub use outbound::{IDEMPOTENCY_KEY, Network, OutboundPolicy, Target};
pub use recorder::{Recorder, redact_recording};
pub use state::{MemoryState, StateError, StepState};
pub use step::{CallInput, Emitted, LoadedStep, Origin, Tier, digest_of};
pub use validate::{HANDLER_EXPORT, component_imports, import_allowed, subscription_known, valid_kind};

use crate::archive::Archive;
use host::StepStore;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are rounded up to whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How instance memory is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved slots reused across instances (the production setting).
    Pooling,
    /// mmap per instance (for comparison in benchmarks).
    OnDemand,
}

/// Limits and tuning of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Wall-clock budget of one call (and of `describe()`), time spent in imports included.
    pub deadline: Duration,
    /// Linear memory cap of one instance.
    pub memory_mib: u64,
    /// Instances alive at once; calls beyond it wait for a slot.
    pub concurrency: u32,
    /// Instances one step may hold at once, so no component takes the whole pool.
    pub per_step_concurrency: u32,
    /// Per component: core instances, memories and tables it may define. A component
    /// over any of them is refused at validation; the pool is sized from them.
    pub core_instances_per_component: u32,
    pub memories_per_component: u32,
    pub tables_per_component: u32,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    pub allocator: Allocator,
    /// Deadlines need epoch interruption; benchmarks turn it off to measure its cost.
    pub epoch_interruption: bool,
    /// What one call may make the host hold.
    pub limits: CallLimits,
    /// Largest component accepted (uploads and files).
    pub max_component_bytes: usize,
    /// Per step: the targets it may call, its secret headers, its settings.
    pub outbound: std::collections::BTreeMap<String, OutboundPolicy>,
    /// Longest a compilation may take before the component is refused.
    pub compile_timeout: Duration,
    /// Compilations that may run at once (see `compile_with` in `step.rs`).
    pub compile_slots: usize,
    /// Components of at least this size serve first on Winch's code, then on
    /// Cranelift's once compiled; `None` compiles everything with Cranelift alone.
    pub baseline_min_bytes: Option<usize>,
    /// Keep serving the baseline compiler's code, never swapping in Cranelift's: for
    /// measuring Winch's code on its own.
    pub baseline_only: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline: Duration::from_millis(1000),
            memory_mib: 64,
            concurrency: 32,
            per_step_concurrency: 16,
            core_instances_per_component: 64,
            memories_per_component: 2,
            tables_per_component: 4,
            cache_dir: None,
            allocator: Allocator::Pooling,
            epoch_interruption: true,
            limits: CallLimits::default(),
            max_component_bytes: 64 * 1024 * 1024,
            outbound: std::collections::BTreeMap::new(),
            compile_timeout: Duration::from_secs(120),
            compile_slots: 2,
            baseline_min_bytes: Some(4 * 1024 * 1024),
            baseline_only: false,
        }
    }
}

/// Why a component was refused; the message is shown to whoever installed it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly file: it does not start with the \\0asm header")]
    NotWasm,
    #[error("a core WebAssembly module, not a component: build the step for wasm32-wasip2")]
    CoreModule,
    #[error("the component is {bytes} bytes; the limit is {limit} (WASAGA_MAX_COMPONENT_MIB)")]
    TooLarge { bytes: usize, limit: usize },
    #[error("invalid component: {0}")]
    Compile(String),
    #[error("compiling took longer than {0:?}: refused")]
    CompileTimeout(Duration),
    #[error("every compile slot stayed busy for {0:?} (earlier compiles still running): try again later")]
    CompilesBusy(Duration),
    #[error(
        "imports `{0}`, which steps may not use (allowed: wasaga:saga/* and wasi:cli, io, clocks, random, filesystem, http/outgoing-handler @0.2){hint}",
        hint = forbidden_import_hint(.0)
    )]
    ForbiddenImport(String),
    #[error(
        "does not export wasaga:saga/handler@0.2.0 or @0.1.0 (it exports {exports}): build it against the `step` or `archiving-step` world"
    )]
    MissingHandler { exports: String },
    #[error("does not match the wasaga:saga contract it exports (0.2.0 or 0.1.0): {0}")]
    Contract(String),
    #[error("has {found} {what}; a step may have at most {limit}")]
    TooComplex { what: &'static str, found: u32, limit: u32 },
    #[error("starts with {needs_mib} MiB of memory, more than WASAGA_STEP_MEMORY_MIB ({cap_mib}) allows")]
    MemoryTooSmall { needs_mib: u64, cap_mib: u64 },
    #[error("describe() failed: {0}")]
    Describe(CallError),
    #[error("describe() names the step {found:?}, but it is installed as {expected:?}")]
    NameMismatch { expected: String, found: String },
    #[error("describe() gives version {version:?}, which is not a semantic version ({reason})")]
    BadVersion { version: String, reason: String },
    #[error("describe() subscribes to {kind:?}, which is not a known event kind")]
    UnknownKind { kind: String },
    #[error("describe() subscribes to nothing")]
    NoSubscriptions,
    #[error(transparent)]
    Name(#[from] crate::event::NameError),
}

/// What removes a network import, for the toolchains whose default builds have one.
fn forbidden_import_hint(import: &str) -> &'static str {
    if import.starts_with("wasi:sockets/") {
        "; componentize-py: build with `--stub-wasi`; Rust: do not use std::net"
    } else if import.starts_with("wasi:http/incoming-handler") {
        "; a step serves no requests: componentize-js: pass disableFeatures: [\"fetch-event\"]"
    } else {
        ""
    }
}

/// Why one call failed. Each is confined to that call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("step returned a retryable error: {0}")]
    Retryable(String),
    #[error("step returned a fatal error: {0}")]
    Fatal(String),
    #[error("step trapped: {0}")]
    Trap(String),
    #[error("step exceeded its deadline of {deadline_ms} ms")]
    Timeout { deadline_ms: u128 },
    #[error("step exceeded its memory limit of {mib} MiB")]
    MemoryLimit { mib: u64 },
    #[error("step went past a limit: {0}")]
    Limit(String),
    /// A request the host would not send: outside the allow-list, to an internal address,
    /// or from a call that may not reach the network.
    #[error("outbound request refused: {0}")]
    Outbound(String),
    #[error("step returned too much: {0}")]
    TooLarge(String),
    #[error("step emitted an invalid event kind {0:?}")]
    InvalidKind(String),
    #[error("step emitted {0} with a payload that is not JSON")]
    InvalidPayload(String),
    /// Every kind has one owner (`event::owner`); a step emitting another's could, say,
    /// complete an order by itself.
    #[error("step emitted {kind}, a kind it does not own: {owner} owns it")]
    NotOwner { kind: String, owner: String },
    #[error("host failed during the call: {0}")]
    Host(String),
}

impl CallError {
    /// Whether delivering the same event again might succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            CallError::Fatal(_)
                | CallError::TooLarge(_)
                | CallError::InvalidKind(_)
                | CallError::InvalidPayload(_)
                | CallError::NotOwner { .. }
                | CallError::Outbound(_)
        )
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Retryable(_) => "retryable",
            CallError::Fatal(_) => "fatal",
            CallError::Trap(_) => "trap",
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory",
            CallError::Limit(_) => "limit",
            CallError::Outbound(_) => "outbound",
            CallError::TooLarge(_) => "too_large",
            CallError::InvalidKind(_) => "invalid_kind",
            CallError::InvalidPayload(_) => "invalid_payload",
            CallError::NotOwner { .. } => "not_owner",
            CallError::Host(_) => "host",
        }
    }
}

/// Runs one event through a loaded step. The runtime is the executor in production;
/// benchmarks substitute the steps' native logic to measure what the sandbox costs.
#[async_trait::async_trait]
pub trait StepExecutor: Send + Sync {
    /// Run one event; every host call is recorded into `recorder` when one is given.
    async fn call(
        &self,
        step: &LoadedStep,
        input: CallInput<'_>,
        state: Arc<dyn StepState>,
        archive: Option<Arc<dyn Archive>>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<Vec<Emitted>, CallError>;
}

#[async_trait::async_trait]
impl StepExecutor for Runtime {
    async fn call(
        &self,
        step: &LoadedStep,
        input: CallInput<'_>,
        state: Arc<dyn StepState>,
        archive: Option<Arc<dyn Archive>>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<Vec<Emitted>, CallError> {
        Runtime::call_recorded(self, step, input, state, archive, recorder).await
    }
}

/// The engine, the linker and the limits shared by every loaded step.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepStore>,
    /// Winch's engine, for large components to serve while Cranelift compiles them.
    baseline: Option<Baseline>,
    config: RuntimeConfig,
    deadline_ticks: u64,
    permits: Semaphore,
    /// Compile slots: a compile holds one until its thread really ends (see
    /// `compile_with` in `step.rs`).
    compiles: Arc<Semaphore>,
    /// Each step's share of the pool.
    step_permits: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    /// Each step's outbound policy and client, made when first needed.
    nets: Mutex<HashMap<Arc<str>, Arc<outbound::StepNet>>>,
    cache: Option<CompileCache>,
    _ticker: Option<EpochTicker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The baseline compiler's engine: Winch compiles in a fraction of Cranelift's time, so
/// a large component serves at once and is swapped for Cranelift's code when ready.
/// Instances come from the on-demand allocator: these versions serve only briefly.
pub(crate) struct Baseline {
    engine: Engine,
    linker: Linker<StepStore>,
    _ticker: Option<EpochTicker>,
}

impl Baseline {
    fn new(config: &RuntimeConfig) -> Result<Baseline, RuntimeError> {
        let mut cfg = Config::new();
        cfg.strategy(wasmtime::Strategy::Winch);
        cfg.epoch_interruption(config.epoch_interruption);
        cfg.max_wasm_stack(512 * 1024);
        let engine = Engine::new(&cfg).map_err(|e| RuntimeError(format!("the baseline compiler: {e}")))?;
        let linker = linker_for(&engine)?;
        let ticker = match config.epoch_interruption {
            true => Some(EpochTicker::start(engine.clone())?),
            false => None,
        };
        Ok(Baseline { engine, linker, _ticker: ticker })
    }
}

fn linker_for(engine: &Engine) -> Result<Linker<StepStore>, RuntimeError> {
    let mut linker: Linker<StepStore> = Linker::new(engine);
    // Every WASI 0.2 interface is linked, but the context behind them is empty, and
    // validation refuses components that import sockets or anything else outside
    // the allowed list before they are ever instantiated.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError(e.to_string()))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| RuntimeError(e.to_string()))?;
    bindings::add_to_linker(&mut linker).map_err(|e| RuntimeError(e.to_string()))?;
    Ok(linker)
}

/// Building the engine failed: a configuration this machine cannot provide.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly runtime: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Arc<Runtime>, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)).map_err(|e| RuntimeError(e.to_string()))?;
        let linker = linker_for(&engine)?;
        let baseline = match config.baseline_min_bytes {
            // Without it every component compiles with Cranelift alone: slower to serve,
            // never wrong, so a machine Winch cannot target still runs.
            Some(_) => Baseline::new(&config)
                .inspect_err(|error| tracing::warn!(%error, "large components will wait for Cranelift"))
                .ok(),
            None => None,
        };
        // The wall clock decides a deadline; the epoch (a tick later) stops code that
        // spins without ever yielding to it.
        let tick_ms = EPOCH_TICK.as_millis().max(1);
        let deadline_ticks =
            u64::try_from(config.deadline.as_millis().div_ceil(tick_ms)).unwrap_or(u64::MAX).saturating_add(2);
        let ticker = match config.epoch_interruption {
            true => Some(EpochTicker::start(engine.clone())?),
            false => None,
        };
        let cache = config.cache_dir.as_deref().map(|dir| CompileCache::new(dir, &engine));
        Ok(Arc::new(Runtime {
            permits: Semaphore::new(config.concurrency as usize),
            compiles: Arc::new(Semaphore::new(config.compile_slots.max(1))),
            step_permits: Mutex::new(HashMap::new()),
            nets: Mutex::new(HashMap::new()),
            engine,
            linker,
            baseline,
            deadline_ticks,
            cache,
            config,
            _ticker: ticker,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compilations running now, including ones given up on that have not ended yet.
    pub fn compiles_running(&self) -> usize {
        self.config.compile_slots.max(1).saturating_sub(self.compiles.available_permits())
    }

    /// The compile cache, if there is one.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// The semaphore bounding `step`'s instances.
    fn step_permits(&self, step: &Arc<str>) -> Arc<Semaphore> {
        let mut permits = self.step_permits.lock();
        let share = self.config.per_step_concurrency.clamp(1, self.config.concurrency.max(1)) as usize;
        permits.entry(step.clone()).or_insert_with(|| Arc::new(Semaphore::new(share))).clone()
    }

    /// `step`'s outbound policy and client.
    fn net(&self, step: &Arc<str>) -> Result<Arc<outbound::StepNet>, CallError> {
        let mut nets = self.nets.lock();
        if let Some(net) = nets.get(step) {
            return Ok(net.clone());
        }
        let policy = self.config.outbound.get(&**step).cloned().unwrap_or_default();
        let net = Arc::new(outbound::StepNet::new(step, policy).map_err(CallError::Host)?);
        nets.insert(step.clone(), net.clone());
        Ok(net)
    }

    /// Validate, compile (or load from the cache) and describe a component installed
    /// under `name`. Nothing changes anywhere if this fails.
    pub async fn load(self: &Arc<Self>, name: &str, bytes: bytes::Bytes) -> Result<LoadedStep, LoadError> {
        step::load(self, name, bytes).await
    }

    /// Load version `digest` of `name` from the compile cache alone (offline tools).
    pub async fn load_cached(
        self: &Arc<Self>,
        name: &str,
        digest: &crate::event::Digest,
    ) -> Result<LoadedStep, LoadError> {
        step::load_cached(self, name, digest).await
    }

    /// Run one event through `step` in a fresh instance.
    pub async fn call(
        &self,
        step: &LoadedStep,
        input: CallInput<'_>,
        state: Arc<dyn StepState>,
        archive: Option<Arc<dyn Archive>>,
    ) -> Result<Vec<Emitted>, CallError> {
        self.call_recorded(step, input, state, archive, None).await
    }

    /// [`Runtime::call`], recording every host call into `recorder`.
    pub async fn call_recorded(
        &self,
        step: &LoadedStep,
        input: CallInput<'_>,
        state: Arc<dyn StepState>,
        archive: Option<Arc<dyn Archive>>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<Vec<Emitted>, CallError> {
        let started = std::time::Instant::now();
        let result = step::call(self, step, input, state, archive, recorder).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        metrics::histogram!("wasaga_step_call_seconds", "step" => step.name.to_string(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut cfg = Config::new();
    cfg.epoch_interruption(config.epoch_interruption);
    cfg.max_wasm_stack(512 * 1024);
    let memory_bytes = usize::try_from(config.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    if config.allocator == Allocator::Pooling {
        let slots = config.concurrency.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // Size every pool to the concurrency times what one component may define, so
        // each slot can always be filled and no component can hold more than its own.
        pool.total_component_instances(slots)
            .max_core_instances_per_component(config.core_instances_per_component)
            .max_memories_per_component(config.memories_per_component)
            .max_tables_per_component(config.tables_per_component)
            .max_memories_per_module(config.memories_per_component)
            .max_tables_per_module(config.tables_per_component)
            .total_core_instances(slots.saturating_mul(config.core_instances_per_component))
            .total_memories(slots.saturating_mul(config.memories_per_component))
            .total_tables(slots.saturating_mul(config.tables_per_component))
            .total_stacks(slots)
            .max_memory_size(memory_bytes)
            // Keep the first pages of each slot resident and reset them with memset:
            // the next instance then starts without page faults.
            .linear_memory_keep_resident(4 * 1024 * 1024)
            .table_keep_resident(64 * 1024)
            .async_stack_keep_resident(64 * 1024)
            .pagemap_scan(Enabled::Auto);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    cfg
}

/// Advances the engine's epoch on a background thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<EpochTicker, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasaga-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
