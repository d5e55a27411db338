//! Backoff between deliveries of a failing message: exponential from a base, capped,
//! with ±25% jitter so retries of many messages do not arrive in step.

use rand::Rng;
use std::time::Duration;

/// The wait before delivery `attempt + 1`, after `attempt` failed deliveries.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(cap);
    let jitter = rand::rng().random_range(0.75..=1.25);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for (attempt, low, high) in [(1, 75, 125), (2, 150, 250), (3, 300, 500), (10, 3750, 6250), (40, 3750, 6250)] {
            let wait = backoff(attempt, base, cap).as_millis();
            assert!((low..=high).contains(&wait), "attempt {attempt}: {wait} ms");
        }
    }
}
