//! Rolling a version out safely: a canary takes a stable share of orders (by order id,
//! the same on every host), a shadow runs beside the serving version on the same events
//! with its effects discarded; either is promoted or aborted, and a candidate (or a
//! version just swapped in) whose failure rate breaches a threshold is rolled back by
//! the host itself. Every change goes through the fleet's registry first.

use super::{RegistryError, Slot, Source, StepRegistry};
use crate::runtime::LoadedStep;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How a candidate runs beside the serving version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutMode {
    /// Handles `percent`% of orders.
    Canary { percent: u8 },
    /// Runs on the same events as the serving version; its effects are discarded.
    Shadow,
}

impl RolloutMode {
    pub fn name(&self) -> &'static str {
        match self {
            RolloutMode::Canary { .. } => "canary",
            RolloutMode::Shadow => "shadow",
        }
    }

    pub fn percent(&self) -> u8 {
        match self {
            RolloutMode::Canary { percent } => *percent,
            RolloutMode::Shadow => 0,
        }
    }
}

/// A candidate version being rolled out.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub mode: RolloutMode,
    pub candidate: Arc<LoadedStep>,
    pub started_at_ms: i64,
}

/// Which bucket (0–99) an order falls in: the same on every host and every run.
pub fn bucket(order_id: &str) -> u8 {
    let digest = Sha256::digest(order_id.as_bytes());
    let n =
        u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    u8::try_from(n % 100).unwrap_or(0)
}

/// When a new version is rolled back by the host itself.
#[derive(Debug, Clone, Copy)]
pub struct AutoRollback {
    /// Failures / calls above which a version is rolled back.
    pub failure_rate: f64,
    /// Calls a version must have made before its rate counts.
    pub min_calls: u64,
    /// How long after a swap a version counts as new (a canary is new until promoted).
    pub window: Duration,
}

impl Default for AutoRollback {
    fn default() -> Self {
        AutoRollback { failure_rate: 0.2, min_calls: 20, window: Duration::from_secs(300) }
    }
}

impl StepRegistry {
    /// The version that handles an event of `order_id` for `name` now: the canary's
    /// candidate for its share of orders, otherwise the serving version.
    pub fn route(&self, name: &str, order_id: &str) -> Option<Arc<LoadedStep>> {
        let steps = self.snapshot.load();
        let slot = steps.get(name)?;
        if let Some(Rollout { mode: RolloutMode::Canary { percent }, candidate, .. }) = &slot.rollout
            && !order_id.is_empty()
            && bucket(order_id) < *percent
        {
            return Some(candidate.clone());
        }
        Some(slot.current.clone())
    }

    /// The shadow candidate of `name`, if one runs.
    pub fn shadow(&self, name: &str) -> Option<Arc<LoadedStep>> {
        let steps = self.snapshot.load();
        match &steps.get(name)?.rollout {
            Some(Rollout { mode: RolloutMode::Shadow, candidate, .. }) => Some(candidate.clone()),
            _ => None,
        }
    }

    /// Validate `bytes` and roll them out as `mode` beside the serving version of `name`.
    pub async fn start_rollout(&self, name: &str, bytes: Bytes, mode: RolloutMode) -> Result<Slot, RegistryError> {
        let current = self.current(name).ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
        let digest = crate::runtime::digest_of(&bytes);
        let candidate = match self.runtime.load(name, bytes).await {
            Ok(loaded) => Arc::new(loaded),
            Err(error) => {
                self.refused(name, &digest, &error.to_string(), Source::Upload).await;
                return Err(error.into());
            }
        };
        if candidate.digest == current.digest {
            return Err(RegistryError::Refused(crate::runtime::LoadError::Contract(
                "this version already serves: nothing to roll out".to_owned(),
            )));
        }
        let started_at_ms = crate::event::now_ms();
        if let Some(fleet) = &self.fleet {
            fleet.record_rollout(name, &candidate, &mode, started_at_ms).await?;
        }
        self.stats.reset(&candidate.digest);
        let mut slot =
            self.snapshot.load().get(name).cloned().ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
        slot.rollout = Some(Rollout { mode, candidate, started_at_ms });
        self.set_slot(name, slot.clone()).await;
        tracing::info!(step = %name, rollout = ?slot.rollout.as_ref().map(|r| r.mode.name()), "rollout started");
        Ok(slot)
    }

    /// Make the rollout's candidate the serving version of `name`.
    pub async fn promote(&self, name: &str) -> Result<Slot, RegistryError> {
        let slot =
            self.snapshot.load().get(name).cloned().ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
        let rollout = slot.rollout.clone().ok_or_else(|| RegistryError::NoRollout(name.to_owned()))?;
        if let Some(fleet) = &self.fleet {
            fleet.record_promote(name, &rollout.candidate.digest).await?;
        }
        let promoted = Slot { current: rollout.candidate.clone(), previous: Some(slot.current.clone()), rollout: None };
        self.set_slot(name, promoted.clone()).await;
        tracing::info!(step = %name, step_version = %rollout.candidate.digest, "rollout promoted");
        Ok(promoted)
    }

    /// Stop the rollout of `name`; the serving version is untouched.
    pub async fn abort_rollout(&self, name: &str, action: &str, reason: &str) -> Result<Slot, RegistryError> {
        let slot =
            self.snapshot.load().get(name).cloned().ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
        let rollout = slot.rollout.clone().ok_or_else(|| RegistryError::NoRollout(name.to_owned()))?;
        if let Some(fleet) = &self.fleet {
            fleet.record_abort(name, &rollout.candidate.digest, action, reason).await?;
        }
        let aborted = Slot { rollout: None, ..slot };
        self.set_slot(name, aborted.clone()).await;
        tracing::warn!(step = %name, step_version = %rollout.candidate.digest, %reason, "rollout stopped");
        Ok(aborted)
    }

    /// Count a call of `step` and roll the version back if it is new and failing. The
    /// decision is each host's, on its own calls; the first host to decide changes the
    /// fleet, and the others follow on their next sync.
    pub fn observe(self: &Arc<Self>, step: &LoadedStep, failed: bool, took: Duration, policy: &AutoRollback) {
        let stats = self.stats.record(&step.digest, failed, took);
        if stats.calls < policy.min_calls || (stats.failures as f64) / (stats.calls as f64) <= policy.failure_rate {
            return;
        }
        let steps = self.snapshot.load();
        let Some(slot) = steps.get(&*step.name) else { return };
        let is_candidate = slot.rollout.as_ref().is_some_and(|r| r.candidate.digest == step.digest);
        let is_new_current = slot.current.digest == step.digest
            && slot.previous.is_some()
            && time::OffsetDateTime::now_utc() - step.loaded_at < policy.window;
        if !is_candidate && !is_new_current {
            return;
        }
        let reason = format!(
            "failure rate {:.0}% over {} calls is above {:.0}%",
            100.0 * stats.failures as f64 / stats.calls as f64,
            stats.calls,
            100.0 * policy.failure_rate
        );
        let registry = self.clone();
        let (name, digest) = (step.name.to_string(), step.digest.to_string());
        // Once per version: a fresh count starts if it is ever rolled out again.
        self.stats.reset(&digest);
        tokio::spawn(async move {
            let breached = std::time::Instant::now();
            let result = if is_candidate {
                registry.abort_rollout(&name, "auto-rollback", &reason).await.map(|_| ())
            } else {
                registry.auto_rollback_current(&name, &digest, &reason).await
            };
            match result {
                Ok(()) => {
                    metrics::counter!("wasaga_auto_rollbacks_total", "step" => name.clone()).increment(1);
                    tracing::warn!(step = %name, step_version = %digest, %reason,
                        took_ms = breached.elapsed().as_millis() as u64, "rolled back automatically");
                }
                Err(error) => tracing::warn!(step = %name, %error, "automatic rollback failed"),
            }
        });
    }

    async fn auto_rollback_current(&self, name: &str, digest: &str, reason: &str) -> Result<(), RegistryError> {
        if self.current(name).is_none_or(|c| *c.digest != *digest) {
            return Ok(());
        }
        let rolled = self.rollback(name).await?;
        if let Some(fleet) = &self.fleet {
            fleet.record(name, "auto-rollback", &rolled.current.digest, reason).await;
        }
        Ok(())
    }

    /// Version `digest` of `name`, for a pinned order or a replay: loaded from the
    /// serving slot, the versions kept here, or the fleet's store.
    pub async fn retained(&self, name: &str, digest: &str) -> Result<Arc<LoadedStep>, RegistryError> {
        let slot = self.snapshot.load().get(name).cloned();
        if let Some(slot) = &slot {
            let known = std::iter::once(&slot.current)
                .chain(slot.previous.iter())
                .chain(slot.rollout.iter().map(|r| &r.candidate));
            for step in known {
                if *step.digest == *digest {
                    return Ok(step.clone());
                }
            }
        }
        if let Some(step) = self.retained.lock().iter().find(|s| *s.digest == *digest && *s.name == *name) {
            return Ok(step.clone());
        }
        let loaded = self
            .version_of(name, digest, None)
            .await
            .map_err(|_| RegistryError::VersionGone { name: name.to_owned(), digest: digest.to_owned() })?;
        let mut retained = self.retained.lock();
        if retained.len() >= RETAINED_LOADED {
            retained.pop_front();
        }
        retained.push_back(loaded.clone());
        Ok(loaded)
    }
}

/// Versions other than the slot's kept loaded for pinned orders and replays.
const RETAINED_LOADED: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("order-1"), bucket("order-1"));
        let mut counts = [0usize; 100];
        for i in 0..10_000 {
            counts[bucket(&format!("{i:016x}")) as usize] += 1;
        }
        // Each bucket near 100; a uniform spread stays well within these bounds.
        assert!(counts.iter().all(|&c| (50..=160).contains(&c)), "{counts:?}");
    }
}
