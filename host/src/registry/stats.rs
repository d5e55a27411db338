//! Calls, failures and latency of each version on this host since it was loaded: what
//! the plugin list shows per version and what automatic rollback decides on.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Latencies kept per version for its p99.
const WINDOW: usize = 1024;

/// Statistics of every version, by digest.
#[derive(Debug, Default)]
pub struct Stats {
    versions: Mutex<HashMap<Arc<str>, VersionStats>>,
}

/// One version's numbers.
#[derive(Debug, Default, Clone)]
pub struct VersionStats {
    pub calls: u64,
    /// Calls that failed by the step's fault: trap, timeout, memory, limit, fatal,
    /// invalid output (not a `retryable` answer, which is a business outcome).
    pub failures: u64,
    /// Failures on events the version it is judged against did not fail: what
    /// automatic rollback counts. An input that fails on every version is no regression.
    pub regressions: u64,
    latencies: VecDeque<Duration>,
}

/// What the API shows of a version.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct VersionSummary {
    pub calls: u64,
    pub failures: u64,
    /// Failures the baseline version did not have on the same event.
    pub regressions: u64,
    pub p99_ms: Option<f64>,
}

impl Stats {
    /// Count one call of `digest` that took `took`; `failed` when it failed by the step's
    /// fault, `regressed` when the baseline did not fail the same event.
    pub fn record(&self, digest: &Arc<str>, failed: bool, regressed: bool, took: Duration) -> VersionStats {
        let mut versions = self.versions.lock();
        let stats = versions.entry(digest.clone()).or_default();
        stats.calls += 1;
        stats.failures += u64::from(failed);
        stats.regressions += u64::from(failed && regressed);
        if stats.latencies.len() == WINDOW {
            stats.latencies.pop_front();
        }
        stats.latencies.push_back(took);
        stats.clone()
    }

    pub fn summary(&self, digest: &str) -> VersionSummary {
        let versions = self.versions.lock();
        let Some(stats) = versions.get(digest) else { return VersionSummary::default() };
        let mut sorted: Vec<Duration> = stats.latencies.iter().copied().collect();
        sorted.sort();
        let p99 = sorted.get(((sorted.len() as f64 - 1.0) * 0.99).round() as usize).map(|d| d.as_secs_f64() * 1000.0);
        VersionSummary { calls: stats.calls, failures: stats.failures, regressions: stats.regressions, p99_ms: p99 }
    }

    /// Forget a version's numbers (it starts again, as a fresh rollout does).
    pub fn reset(&self, digest: &str) {
        self.versions.lock().remove(digest);
    }
}
