//! Host bindings generated from `wit/`: the `archiving-step` world is a superset of
//! `step`, so one set of bindings instantiates components of either world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "archiving-step",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::wasaga::saga::handler;
pub use wasaga::saga::{archive, log, provenance, state, types};
