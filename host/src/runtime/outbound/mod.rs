//! Outbound HTTP of steps (`wasi:http/outgoing-handler`): the host sends each request
//! itself, only to the step's allow-list, inside the call's deadline and budgets, with an
//! idempotency key it makes and secret headers the component never sees; and records
//! every exchange. Calls that must not reach the network (dry runs, shadows, replays)
//! answer from a recording or refuse as "would call out".
//!
//! **Architecture Invariant:** only a call made with [`Network::Live`] sends anything.

mod call;
mod policy;

pub(crate) use call::{CallNet, Hooks};
pub(crate) use policy::StepNet;
pub use policy::{OutboundPolicy, Target};
use wasaga_sdk::recording::HostCall;

/// The header whose value the host makes unless the step set one.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Where a call's requests go.
#[derive(Debug, Clone, Copy)]
pub enum Network<'a> {
    /// Nowhere: a request fails the call as "would call out", saying why.
    Closed(&'static str),
    /// Out: the live call.
    Live,
    /// Answered from these recorded calls (their `Http` ones); nothing is sent. The
    /// allow-list was checked when they were made. `settings` replaces the step's
    /// configured ones (a replay runs with the recording's).
    Recorded { calls: &'a [HostCall], settings: Option<&'a [(String, String)]> },
}
