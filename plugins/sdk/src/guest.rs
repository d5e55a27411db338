//! The component side: WIT imports as a [`Host`], and the conversions behind
//! [`crate::export_step!`].

use crate::bindings::exports::wasaga::saga::handler as wit;
#[cfg(feature = "archive")]
use crate::bindings::wasaga::saga::{archive, provenance};
use crate::bindings::wasaga::saga::{log, state};
use crate::{Context, Event, Host, Level, Origin, Step, StepError};

/// The WIT imports as a [`Host`].
pub struct WitHost;

impl Host for WitHost {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        state::put(key, value)
    }

    fn delete(&mut self, key: &str) {
        state::delete(key)
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message)
    }

    #[cfg(feature = "archive")]
    fn archive_put(&mut self, name: &str, body: &[u8], content_type: &str) -> Result<(), String> {
        archive::put(name, body, content_type)
    }

    #[cfg(not(feature = "archive"))]
    fn archive_put(&mut self, _: &str, _: &[u8], _: &str) -> Result<(), String> {
        Err("this step targets the `step` world: enable wasaga-sdk's `archive` feature".to_owned())
    }

    #[cfg(feature = "archive")]
    fn origin(&self) -> Origin {
        let origin = provenance::current();
        Origin { step: origin.step, step_version: origin.step_version }
    }

    #[cfg(not(feature = "archive"))]
    fn origin(&self) -> Origin {
        Origin { step: String::new(), step_version: String::new() }
    }
}

/// `describe` for step `S`.
pub fn describe<S: Step>() -> wit::Manifest {
    let manifest = S::manifest();
    wit::Manifest { name: manifest.name, version: manifest.version, subscribes: manifest.subscribes }
}

/// `handle` for step `S`.
pub fn handle<S: Step>(ctx: wit::Context, event: wit::Event) -> Result<Vec<wit::Emit>, wit::StepError> {
    let ctx = Context { attempt: ctx.attempt };
    let event = Event {
        id: event.id,
        kind: event.kind,
        order_id: event.order_id,
        occurred_at_ms: event.occurred_at_ms,
        payload: event.payload,
    };
    match S::handle(&mut WitHost, &ctx, &event) {
        Ok(emits) => Ok(emits.into_iter().map(|e| wit::Emit { kind: e.kind, payload: e.payload }).collect()),
        Err(StepError::Retryable(reason)) => Err(wit::StepError::Retryable(reason)),
        Err(StepError::Fatal(reason)) => Err(wit::StepError::Fatal(reason)),
    }
}
