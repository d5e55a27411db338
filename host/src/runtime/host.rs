//! The data of one call's wasmtime `Store`: the WASI context (the step's settings and
//! nothing else), the limits and the call's budget, outbound HTTP, and the host side of
//! the `state`, `log`, `archive` and `provenance` imports.

use super::bindings::{archive, log, provenance, state, types};
use super::limits::{CallBudget, CallLimiter, truncate};
use super::outbound::{CallNet, Hooks};
use super::recorder::Recorder;
use super::state::{StateError, StepState};
use crate::archive::{Archive, ArchiveError};
use bytes::Bytes;
use std::sync::Arc;
use wasaga_sdk::recording::{Bytes as RecordedBytes, HostCall};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of stdout and stderr kept per call; a guest printing more gets a write error.
const STDIO_CAPACITY: usize = 64 * 1024;

/// Who is running, for the log lines a step writes.
#[derive(Debug, Clone)]
pub struct CallLabels {
    pub step: Arc<str>,
    pub step_version: Arc<str>,
    pub event_id: String,
}

/// Everything a step instance can reach during one call.
pub struct StepStore {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    pub(super) hooks: Hooks,
    pub(super) limiter: CallLimiter,
    pub(super) budget: CallBudget,
    /// Set when a state or archive import met an outage of its storage: a deadline that
    /// passes in such a call is the host's failure. Any other time, even time spent
    /// serving the step's imports, is the step's.
    pub(super) host_outage: bool,
    /// When the import waiting for its storage now started waiting: one answer that
    /// takes most of the deadline is the storage's slowness, many quick ones the step's.
    pub(super) waiting_since: Option<std::time::Instant>,
    state: Arc<dyn StepState>,
    archive: Option<Arc<dyn Archive>>,
    origin: provenance::Origin,
    labels: CallLabels,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    recorder: Option<Arc<Recorder>>,
}

/// What a call's store is made of, besides its limits.
pub(super) struct CallParts {
    pub state: Arc<dyn StepState>,
    pub archive: Option<Arc<dyn Archive>>,
    pub origin: provenance::Origin,
    pub labels: CallLabels,
    pub recorder: Option<Arc<Recorder>>,
    pub net: Arc<CallNet>,
}

impl StepStore {
    pub(super) fn new(limiter: CallLimiter, budget: CallBudget, parts: CallParts) -> Self {
        let CallParts { state, archive, origin, labels, recorder, net } = parts;
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // No preopens, arguments or sockets; the environment is the step's settings.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).envs(net.settings()).build();
        StepStore {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: Hooks { call: net },
            limiter,
            budget,
            host_outage: false,
            waiting_since: None,
            state,
            archive,
            origin,
            labels,
            stdout,
            stderr,
            recorder,
        }
    }

    fn record(&self, call: impl FnOnce() -> HostCall) {
        if let Some(recorder) = &self.recorder {
            recorder.record(call());
        }
    }

    /// Forward what the guest printed to the log, once the call is over, and say how
    /// many log lines were dropped.
    pub(super) fn flush_stdio(&self) {
        let CallLabels { step, step_version, event_id } = &self.labels;
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(&bytes);
                tracing::info!(%step, %step_version, %event_id, stream, output = %text.trim_end(), "step output");
            }
        }
        if self.budget.log_dropped > 0 {
            metrics::counter!("wasaga_step_log_dropped_total", "step" => step.to_string())
                .increment(self.budget.log_dropped as u64);
            tracing::warn!(%step, %step_version, %event_id, dropped = self.budget.log_dropped,
                "the step wrote more log lines than one call may; the rest were dropped");
        }
    }

    /// The last line the guest wrote to stderr, if any (a panic message, usually).
    pub(super) fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        // Rust's panic hook ends with a hint about backtraces: the message is above it.
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .map(|l| truncate(l, 512).into_owned())
    }
}

impl WasiView for StepStore {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StepStore {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

impl types::Host for StepStore {}

impl state::Host for StepStore {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        // Reads have budgets as writes do: the host's memory must not follow the guest.
        self.budget.state_read_key(&key)?;
        if key.contains('\0') {
            return Err(wasmtime::Error::new(StateError::Refused(format!(
                "state key \"{}\" holds a NUL character, which no store can hold",
                key.replace('\0', "\\0")
            ))));
        }
        self.waiting_since = Some(std::time::Instant::now());
        let value = self.state.get(&key).await;
        self.waiting_since = None;
        self.host_outage |= matches!(value, Err(StateError::Unavailable(_)));
        let value = value?;
        self.budget.state_read_bytes(value.as_ref().map_or(0, Vec::len))?;
        self.record(|| HostCall::StateGet { key, value: value.clone().map(RecordedBytes) });
        Ok(value)
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.budget.state_write(&key, Some(value.len()))?;
        self.record(|| HostCall::StatePut { key: key.clone(), value: RecordedBytes(value.clone()) });
        Ok(self.state.put(&key, value).await?)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.budget.state_write(&key, None)?;
        self.record(|| HostCall::StateDelete { key: key.clone() });
        Ok(self.state.delete(&key).await?)
    }
}

impl log::Host for StepStore {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let Some(max) = self.budget.log_line() else {
            return Ok(());
        };
        let message = truncate(&message, max);
        let name = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.record(|| HostCall::Log { level: name.to_owned(), message: message.to_string() });
        let CallLabels { step, step_version, event_id } = &self.labels;
        match level {
            log::Level::Debug => tracing::debug!(%step, %step_version, %event_id, "{message}"),
            log::Level::Info => tracing::info!(%step, %step_version, %event_id, "{message}"),
            log::Level::Warn => tracing::warn!(%step, %step_version, %event_id, "{message}"),
            log::Level::Error => tracing::error!(%step, %step_version, %event_id, "{message}"),
        }
        Ok(())
    }
}

impl archive::Host for StepStore {
    async fn put(&mut self, name: String, body: Vec<u8>, content_type: String) -> wasmtime::Result<Result<(), String>> {
        let Some(archive) = self.archive.clone() else {
            return Ok(Err("no archive is configured for this host".to_owned()));
        };
        self.budget.archive_put(body.len())?;
        let size = body.len();
        self.waiting_since = Some(std::time::Instant::now());
        let put = archive.put_once(&name, Bytes::from(body), &content_type).await;
        self.waiting_since = None;
        self.host_outage |= matches!(put, Err(ArchiveError::Storage(_)));
        let error = put.as_ref().err().map(ToString::to_string);
        self.record(|| HostCall::ArchivePut { name, bytes: size, content_type, error });
        match put {
            Ok(()) => Ok(Ok(())),
            // Storage being down is the host's failure, not the step's: the call fails
            // as a host error, retried without using up the step's attempts.
            Err(error @ ArchiveError::Storage(_)) => Err(wasmtime::Error::new(error)),
            Err(error) => Ok(Err(error.to_string())),
        }
    }
}

impl provenance::Host for StepStore {
    async fn current(&mut self) -> wasmtime::Result<provenance::Origin> {
        Ok(self.origin.clone())
    }
}
