//! The one backoff rule of every retry loop: delays double from a base up to a cap;
//! retries of messages get ±25% jitter so many failures do not come back in step.

use rand::Rng;
use std::time::Duration;

/// The wait after `current`: doubled, at most `cap`.
pub fn next(current: Duration, cap: Duration) -> Duration {
    current.saturating_mul(2).min(cap)
}

/// The wait before delivery `attempt + 1`, after `attempt` failed deliveries: `base`
/// doubled per attempt, capped, with ±25% jitter.
pub fn jittered(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(cap);
    let jitter = rand::rng().random_range(0.75..=1.25);
    capped.mul_f64(jitter)
}

/// A loop's current delay: starts at `base`, doubles on each failure up to `cap`, and
/// returns to `base` on success.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, current: base }
    }

    /// The delay to wait now; the next one is doubled.
    pub fn failed(&mut self) -> Duration {
        let wait = self.current;
        self.current = next(self.current, self.cap);
        wait
    }

    /// The delay [`Backoff::failed`] would return next.
    pub fn peek(&self) -> Duration {
        self.current
    }

    pub fn succeeded(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for (attempt, low, high) in [(1, 75, 125), (2, 150, 250), (3, 300, 500), (10, 3750, 6250), (40, 3750, 6250)] {
            let wait = jittered(attempt, base, cap).as_millis();
            assert!((low..=high).contains(&wait), "attempt {attempt}: {wait} ms");
        }
    }

    #[test]
    fn a_loop_backs_off_and_recovers() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        backoff.succeeded();
        assert_eq!(backoff.failed().as_millis(), 100);
    }
}
