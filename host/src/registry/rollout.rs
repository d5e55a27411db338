//! Rolling a version out safely: a canary takes a stable share of orders (by order id,
//! the same on every host), a shadow runs beside the serving version on the same events
//! with its effects discarded; either is promoted or aborted, and a candidate (or a
//! version just swapped in) whose failure rate breaches a threshold is rolled back by
//! the host itself. Every change goes through the fleet's registry first.

use super::{RegistryError, Slot, Source, StepRegistry};
use crate::runtime::LoadedStep;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
        let promoted = Slot::serving(rollout.candidate.clone(), Some(slot.current.clone()));
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
        // An aborted candidate's pinned orders go on on the serving version.
        self.mark_rejected(&rollout.candidate.digest);
        let aborted = Slot { rollout: None, ..slot };
        self.set_slot(name, aborted.clone()).await;
        tracing::warn!(step = %name, step_version = %rollout.candidate.digest, %reason, "rollout stopped");
        Ok(aborted)
    }

    /// The version `step` is judged against, while it is new: the serving version for a
    /// rollout's candidate, the version it replaced for a serving version swapped in
    /// within `policy.window` (by the fleet's clock of the change, not this host's load).
    pub fn baseline(&self, step: &LoadedStep, policy: &AutoRollback) -> Option<Arc<LoadedStep>> {
        let steps = self.snapshot.load();
        let slot = steps.get(&*step.name)?;
        if slot.rollout.as_ref().is_some_and(|r| r.candidate.digest == step.digest) {
            return Some(slot.current.clone());
        }
        let age = crate::event::now_ms().saturating_sub(slot.since_ms);
        let new = u128::try_from(age).unwrap_or(0) < policy.window.as_millis();
        match &slot.previous {
            Some(previous) if slot.current.digest == step.digest && new && previous.digest != step.digest => {
                Some(previous.clone())
            }
            _ => None,
        }
    }

    /// Count a call of `step`: `failed` by the step's fault, `regressed` when its baseline
    /// handled the same event without failing. A new version whose regressions breach
    /// the policy is rolled back (a candidate aborted) with one compare-and-set on its
    /// digest, so however many hosts decide at once, it happens once; the version is
    /// marked rejected and no automatic step serves it again.
    pub fn observe(
        self: &Arc<Self>,
        step: &LoadedStep,
        failed: bool,
        regressed: bool,
        took: Duration,
        policy: &AutoRollback,
    ) {
        let stats = self.stats.record(&step.digest, failed, regressed, took);
        if !regressed
            || stats.calls < policy.min_calls
            || (stats.regressions as f64) / (stats.calls as f64) <= policy.failure_rate
        {
            return;
        }
        let steps = self.snapshot.load();
        let Some(slot) = steps.get(&*step.name) else { return };
        let is_candidate = slot.rollout.as_ref().is_some_and(|r| r.candidate.digest == step.digest);
        if !is_candidate && self.baseline(step, policy).is_none() {
            return;
        }
        let reason = format!(
            "failure rate {:.0}% over {} calls is above {:.0}%, counting only events the {} handled",
            100.0 * stats.regressions as f64 / stats.calls as f64,
            stats.calls,
            100.0 * policy.failure_rate,
            if is_candidate { "serving version" } else { "version it replaced" },
        );
        let registry = self.clone();
        let (name, digest) = (step.name.to_string(), step.digest.to_string());
        // Once per version: a fresh count starts if it is ever rolled out again.
        self.stats.reset(&digest);
        tokio::spawn(async move {
            let breached = std::time::Instant::now();
            let result = if is_candidate {
                registry.reject_candidate(&name, &digest, &reason).await
            } else {
                registry.reject_current(&name, &digest, &reason).await
            };
            match result {
                Ok(true) => {
                    metrics::counter!("wasaga_auto_rollbacks_total", "step" => name.clone()).increment(1);
                    tracing::warn!(step = %name, step_version = %digest, %reason,
                        took_ms = breached.elapsed().as_millis() as u64, "rolled back automatically");
                }
                Ok(false) => tracing::info!(step = %name, step_version = %digest,
                    "already rolled back (by another host or an operator)"),
                Err(error) => tracing::warn!(step = %name, %error, "automatic rollback failed"),
            }
        });
    }

    /// Abort the rollout of candidate `digest`, if it still runs: false if another host
    /// or an operator got there first.
    async fn reject_candidate(&self, name: &str, digest: &str, reason: &str) -> Result<bool, RegistryError> {
        let running = |slot: &Slot| slot.rollout.as_ref().is_some_and(|r| *r.candidate.digest == *digest);
        if let Some(fleet) = &self.fleet {
            if !fleet.reject(name, digest, reason).await? {
                self.mark_rejected(digest);
                return Ok(false);
            }
        } else if !self.snapshot.load().get(name).is_some_and(running) {
            return Ok(false);
        }
        self.mark_rejected(digest);
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        if let Some(slot) = steps.get_mut(name)
            && running(slot)
        {
            slot.rollout = None;
            slot.since_ms = crate::event::now_ms();
            self.publish(steps);
        }
        Ok(true)
    }

    /// Serve the previous version instead of `digest`, if `digest` still serves; the
    /// rejected version is dropped from the slot, so no later rollback brings it back.
    async fn reject_current(&self, name: &str, digest: &str, reason: &str) -> Result<bool, RegistryError> {
        if let Some(fleet) = &self.fleet {
            let rejected = fleet.reject(name, digest, reason).await?;
            self.mark_rejected(digest);
            // Serve what the fleet decided, whoever decided it.
            fleet.sync(self).await?;
            return Ok(rejected);
        }
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        let Some(slot) = steps.get(name) else { return Ok(false) };
        let (true, Some(previous)) = (*slot.current.digest == *digest, slot.previous.clone()) else {
            return Ok(false);
        };
        self.mark_rejected(digest);
        steps.insert(name.to_owned(), Slot::serving(previous, None));
        self.publish(steps);
        Ok(true)
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
