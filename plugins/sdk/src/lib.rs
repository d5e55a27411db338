//! # wasaga-sdk: write a saga step as a short, plain Rust file
//!
//! A step is a type implementing [`Step`]: a [`Manifest`] and one pure `handle`
//! function that reads and writes its state through a [`Host`] and returns the events
//! to publish. [`export_step!`] turns it into a WebAssembly component for the host;
//! natively, [`MemoryHost`] runs the same logic in unit tests and benchmarks.
//!
//! ```
//! use wasaga_sdk::{events::*, Context, Emit, Event, Host, HostExt, Manifest, Step, StepError};
//!
//! pub struct Echo;
//! impl Step for Echo {
//!     fn manifest() -> Manifest { Manifest::new("echo", "1.0.0", ["order.placed"]) }
//!     fn handle(host: &mut dyn Host, _ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError> {
//!         wasaga_sdk::info!(host, "saw {}", event.id);
//!         Ok(vec![])
//!     }
//! }
//! wasaga_sdk::export_step!(Echo);
//! ```
#![deny(missing_docs)]

pub mod archive;
pub mod events;
mod host;
pub mod http;
mod memory;
pub mod recording;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use host::{Host, HostExt};
pub use memory::MemoryHost;
pub use types::{Context, Emit, Event, Level, Manifest, Origin, StepError};

/// The component glue: bindings generated from the workspace's `wit/` (the current
/// contract), or from the frozen `wit/v0.1/` with the `wit-0-1` feature.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    #[cfg(all(feature = "archive", not(feature = "wit-0-1")))]
    wit_bindgen::generate!({
        world: "archiving-step",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "wasaga_sdk::bindings",
        export_macro_name: "export",
    });
    #[cfg(all(not(feature = "archive"), not(feature = "wit-0-1")))]
    wit_bindgen::generate!({
        world: "step",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "wasaga_sdk::bindings",
        export_macro_name: "export",
    });
    #[cfg(all(feature = "archive", feature = "wit-0-1"))]
    wit_bindgen::generate!({
        world: "archiving-step",
        path: "../../wit/v0.1",
        pub_export_macro: true,
        default_bindings_module: "wasaga_sdk::bindings",
        export_macro_name: "export",
    });
    #[cfg(all(not(feature = "archive"), feature = "wit-0-1"))]
    wit_bindgen::generate!({
        world: "step",
        path: "../../wit/v0.1",
        pub_export_macro: true,
        default_bindings_module: "wasaga_sdk::bindings",
        export_macro_name: "export",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// A business step of the saga.
pub trait Step {
    /// Name, version and subscriptions; the name must equal the file name it ships as.
    fn manifest() -> Manifest;

    /// Handle one event inside the host's transaction.
    ///
    /// Business outcomes are events in the returned list; `Err` is for technical
    /// failures only ([`StepError::Retryable`] or [`StepError::Fatal`]).
    fn handle(host: &mut dyn Host, ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError>;
}

/// Export a [`Step`] implementation as the component's `handler`.
///
/// On targets other than `wasm32` it expands to nothing, so the step's crate also builds
/// natively for tests and benchmarks.
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        #[cfg(target_arch = "wasm32")]
        struct WasagaExportedStep;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::wasaga::saga::handler::Guest for WasagaExportedStep {
            fn describe() -> $crate::bindings::exports::wasaga::saga::handler::Manifest {
                $crate::guest::describe::<$step>()
            }

            fn handle(
                ctx: $crate::bindings::exports::wasaga::saga::handler::Context,
                event: $crate::bindings::exports::wasaga::saga::handler::Event,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::bindings::exports::wasaga::saga::handler::Emit>,
                $crate::bindings::exports::wasaga::saga::handler::StepError,
            > {
                $crate::guest::handle::<$step>(ctx, event)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(WasagaExportedStep with_types_in $crate::bindings);
    };
}

/// Log at a level through the host: `log!(host, Level::Info, "reserved {n} units")`.
#[macro_export]
macro_rules! log {
    ($host:expr, $level:expr, $($arg:tt)+) => {
        $crate::Host::log(&*$host, $level, &::std::format!($($arg)+))
    };
}

/// Log at debug level through the host.
#[macro_export]
macro_rules! debug {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Debug, $($arg)+) };
}

/// Log at info level through the host.
#[macro_export]
macro_rules! info {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Info, $($arg)+) };
}

/// Log at warn level through the host.
#[macro_export]
macro_rules! warn {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Warn, $($arg)+) };
}

/// Log at error level through the host.
#[macro_export]
macro_rules! error {
    ($host:expr, $($arg:tt)+) => { $crate::log!($host, $crate::Level::Error, $($arg)+) };
}
