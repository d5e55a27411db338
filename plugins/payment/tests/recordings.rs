//! Dead letters as regression tests: the recording of a real `tok_trap` dead letter
//! (saved with `wasaga dead-letters recording ID -o …`) replayed through this step's
//! native build. The released step traps on that card by contract, so the recording is
//! reproduced; the `fixed` test build (what a fix would look like) captures instead.

use payment::Payment;
use wasaga_sdk::testing::replay;

const TRAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recordings/tok_trap.json");

#[test]
#[cfg(not(feature = "fixed"))]
fn the_released_step_reproduces_the_trap_of_the_recorded_dead_letter() {
    let run = replay::<Payment>(TRAP);
    assert!(!run.succeeded(), "{run}");
    assert_eq!(run.outcome.label(), "trap", "{run}");
    assert_eq!(run.divergence(), None, "{run}");
}

#[test]
#[cfg(feature = "fixed")]
fn the_fixed_step_captures_the_recorded_dead_letter() {
    let run = replay::<Payment>(TRAP);
    assert!(run.succeeded(), "{run}");
    assert_eq!(run.emits()[0].kind, "payment.captured", "{run}");
}
