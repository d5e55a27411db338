//! Host bindings generated from `wit/`, one module per contract version the host serves:
//! `wit/saga.wit` (`wasaga:saga@0.2.0`, the current contract) and the frozen
//! `wit/v0.1/saga.wit` (`0.1.0`). Each version's `archiving-step` world is a superset of
//! its `step`, so one set of bindings per version instantiates components of either.
//!
//! The host side of each import is written once, for the current version (`host.rs`);
//! an older version's imports delegate to it here. A future 0.3 is one more module, its
//! imports delegating the same way, and one more arm in [`Handler`].

/// `wasaga:saga@0.2.0`.
pub mod current {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "archiving-step",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `wasaga:saga@0.1.0`: no timers (`emit` has no delay).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "archiving-step",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use current::exports::wasaga::saga::handler;
pub use current::wasaga::saga::{archive, log, provenance, state, types};

use super::host::StepStore;
use v0_1::wasaga::saga as old;

/// The handler export of the current contract.
pub const HANDLER_CURRENT: &str = "wasaga:saga/handler@0.2.0";
/// The handler export of 0.1.0.
pub const HANDLER_V0_1: &str = "wasaga:saga/handler@0.1.0";
/// The contract versions the host serves, newest first: the handler export of each.
pub const HANDLER_EXPORTS: [&str; 2] = [HANDLER_CURRENT, HANDLER_V0_1];

/// A linked component of one contract version.
pub enum Handler {
    Current(current::ArchivingStepPre<StepStore>),
    V0_1(v0_1::ArchivingStepPre<StepStore>),
}

impl Handler {
    /// The contract version (`wasaga:saga@…`) the component was built against.
    pub fn contract(&self) -> &'static str {
        match self {
            Handler::Current(_) => "0.2.0",
            Handler::V0_1(_) => "0.1.0",
        }
    }

    /// Instantiate and call `describe`, in the current version's types.
    pub async fn describe(&self, store: &mut wasmtime::Store<StepStore>) -> wasmtime::Result<handler::Manifest> {
        match self {
            Handler::Current(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.wasaga_saga_handler().call_describe(&mut *store).await
            }
            Handler::V0_1(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                let m = instance.wasaga_saga_handler().call_describe(&mut *store).await?;
                Ok(handler::Manifest { name: m.name, version: m.version, subscribes: m.subscribes })
            }
        }
    }

    /// Instantiate and call `handle`, in the current version's types: an older
    /// version's events carry no delay.
    pub async fn handle(
        &self,
        store: &mut wasmtime::Store<StepStore>,
        ctx: handler::Context,
        event: &handler::Event,
    ) -> wasmtime::Result<Result<Vec<handler::Emit>, handler::StepError>> {
        match self {
            Handler::Current(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.wasaga_saga_handler().call_handle(&mut *store, ctx, event).await
            }
            Handler::V0_1(pre) => {
                use v0_1::exports::wasaga::saga::handler as h;
                let instance = pre.instantiate_async(&mut *store).await?;
                let event = h::Event {
                    id: event.id.clone(),
                    kind: event.kind.clone(),
                    order_id: event.order_id.clone(),
                    occurred_at_ms: event.occurred_at_ms,
                    payload: event.payload.clone(),
                };
                let ctx = h::Context { attempt: ctx.attempt };
                let result = instance.wasaga_saga_handler().call_handle(&mut *store, ctx, &event).await?;
                Ok(match result {
                    Ok(emits) => Ok(emits
                        .into_iter()
                        .map(|e| handler::Emit { kind: e.kind, payload: e.payload, delay_ms: None })
                        .collect()),
                    Err(h::StepError::Retryable(reason)) => Err(handler::StepError::Retryable(reason)),
                    Err(h::StepError::Fatal(reason)) => Err(handler::StepError::Fatal(reason)),
                })
            }
        }
    }
}

/// Link every contract version's imports.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StepStore>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    current::ArchivingStep::add_to_linker::<StepStore, HasSelf<StepStore>>(linker, |s| s)?;
    v0_1::ArchivingStep::add_to_linker::<StepStore, HasSelf<StepStore>>(linker, |s| s)?;
    Ok(())
}

// 0.1.0's imports: the current ones, unchanged but for their types' names.

impl old::types::Host for StepStore {}

impl old::state::Host for StepStore {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        state::Host::get(self, key).await
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        state::Host::put(self, key, value).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        state::Host::delete(self, key).await
    }
}

impl old::log::Host for StepStore {
    async fn log(&mut self, level: old::log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            old::log::Level::Debug => log::Level::Debug,
            old::log::Level::Info => log::Level::Info,
            old::log::Level::Warn => log::Level::Warn,
            old::log::Level::Error => log::Level::Error,
        };
        log::Host::log(self, level, message).await
    }
}

impl old::archive::Host for StepStore {
    async fn put(&mut self, name: String, body: Vec<u8>, content_type: String) -> wasmtime::Result<Result<(), String>> {
        archive::Host::put(self, name, body, content_type).await
    }
}

impl old::provenance::Host for StepStore {
    async fn current(&mut self) -> wasmtime::Result<old::provenance::Origin> {
        let origin = provenance::Host::current(self).await?;
        Ok(old::provenance::Origin { step: origin.step, step_version: origin.step_version })
    }
}
