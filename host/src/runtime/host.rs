//! The data of one call's wasmtime `Store`: the empty WASI context, the limits, and the
//! host side of the `state`, `log`, `archive` and `provenance` imports.

use super::bindings::{archive, log, provenance, state, types};
use super::limits::CallLimiter;
use super::state::StepState;
use crate::archive::{Archive, ArchiveError};
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
    pub(super) limiter: CallLimiter,
    state: Arc<dyn StepState>,
    archive: Option<Arc<dyn Archive>>,
    origin: provenance::Origin,
    labels: CallLabels,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl StepStore {
    pub(super) fn new(
        limiter: CallLimiter,
        state: Arc<dyn StepState>,
        archive: Option<Arc<dyn Archive>>,
        origin: provenance::Origin,
        labels: CallLabels,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // No preopens, environment, arguments or network: the context grants nothing.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        StepStore { wasi, table: ResourceTable::new(), limiter, state, archive, origin, labels, stdout, stderr }
    }

    /// Forward what the guest printed to the log, once the call is over.
    pub(super) fn flush_stdio(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if !bytes.is_empty() {
                tracing::info!(
                    step = %self.labels.step,
                    step_version = %self.labels.step_version,
                    event_id = %self.labels.event_id,
                    stream,
                    output = %String::from_utf8_lossy(&bytes).trim_end(),
                    "step output"
                );
            }
        }
    }
}

impl WasiView for StepStore {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for StepStore {}

impl state::Host for StepStore {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.state.get(&key).await?)
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        Ok(self.state.put(&key, value).await?)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        Ok(self.state.delete(&key).await?)
    }
}

impl log::Host for StepStore {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
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
        let Some(archive) = &self.archive else {
            return Ok(Err("no archive is configured for this host".to_owned()));
        };
        match archive.put_once(&name, Bytes::from(body), &content_type).await {
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
