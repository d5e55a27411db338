//! The fleet's side of the registry: versions, slots and history in the store shared by
//! every host. Writes are compare-and-set on a slot's generation, so two hosts changing
//! the same step at once cannot lose either change silently: the loser re-reads and
//! tries again. Every host syncs its local registry from the slots every
//! [`SYNC_INTERVAL`], so a change made on one host serves everywhere within about that.

use super::{RegistryError, Rollout, RolloutMode, Slot, Source, StepRegistry};
use crate::event::{Digest, now_ms};
use crate::runtime::LoadedStep;
use crate::store::{FleetStore, HistoryRow, RolloutRow, SlotRow, VersionRow};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// How often a host compares its registry with the fleet's.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Compare-and-set rounds before giving up on a step many hosts change at once.
const CAS_ROUNDS: usize = 8;

/// History entries read to tell whether the fleet has seen a digest.
const HISTORY_LOOKBACK: u32 = 10_000;

/// The store holding the fleet's registry, and who this host is.
#[derive(Clone)]
pub struct Fleet {
    store: Arc<dyn FleetStore>,
    host_id: String,
}

impl Fleet {
    pub fn new(store: Arc<dyn FleetStore>, host_id: String) -> Fleet {
        Fleet { store, host_id }
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    pub fn store(&self) -> &Arc<dyn FleetStore> {
        &self.store
    }

    async fn slot(&self, name: &str) -> Result<Option<SlotRow>, RegistryError> {
        Ok(self.store.slots().await?.into_iter().find(|slot| slot.name == name))
    }

    async fn keep_version(&self, name: &str, loaded: &LoadedStep) -> Result<(), RegistryError> {
        self.store
            .put_version(&VersionRow {
                digest: loaded.digest.to_string(),
                name: name.to_owned(),
                version: loaded.version.clone(),
                subscribes: loaded.subscribes.clone(),
                bytes: loaded.bytes.to_vec(),
                created_at_ms: now_ms(),
            })
            .await?;
        Ok(())
    }

    /// Change the slot of `name` with `change` (given the current slot, the next one,
    /// or an error), compare-and-set, re-reading after a lost race. Then record `action`.
    async fn change_slot(
        &self,
        name: &str,
        action: &str,
        reason: &str,
        recorded: Option<&str>,
        change: impl Fn(&SlotRow) -> Result<SlotRow, RegistryError>,
    ) -> Result<SlotRow, RegistryError> {
        for _ in 0..CAS_ROUNDS {
            let slot = self.slot(name).await?.ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
            let mut next = change(&slot)?;
            next.generation = slot.generation + 1;
            next.updated_at_ms = now_ms();
            if self.store.set_slot(&next, slot.generation).await? {
                let digest = next.rollout.as_ref().map_or(next.current.clone(), |r| r.digest.clone());
                self.record(name, action, recorded.unwrap_or(&digest), reason).await;
                return Ok(next);
            }
        }
        Err(RegistryError::Contended(name.to_owned()))
    }

    /// Keep `candidate` and start rolling it out as `mode` in the fleet.
    pub(super) async fn record_rollout(
        &self,
        name: &str,
        candidate: &LoadedStep,
        mode: &RolloutMode,
        started_at_ms: i64,
    ) -> Result<(), RegistryError> {
        self.keep_version(name, candidate).await?;
        let rollout = RolloutRow {
            mode: mode.name().to_owned(),
            digest: candidate.digest.to_string(),
            percent: i64::from(mode.percent()),
            started_at_ms,
        };
        let reason = format!("{} {}%", mode.name(), mode.percent());
        self.change_slot(name, mode.name(), &reason, None, |slot| {
            Ok(SlotRow { rollout: Some(rollout.clone()), ..slot.clone() })
        })
        .await
        .map(|_| ())
    }

    /// Make the rollout's candidate (`digest`) the fleet's serving version.
    pub(super) async fn record_promote(&self, name: &str, digest: &str) -> Result<(), RegistryError> {
        self.change_slot(name, "promote", "", None, |slot| match &slot.rollout {
            Some(rollout) if rollout.digest == digest => Ok(SlotRow {
                current: rollout.digest.clone(),
                previous: Some(slot.current.clone()),
                rollout: None,
                ..slot.clone()
            }),
            _ => Err(RegistryError::NoRollout(name.to_owned())),
        })
        .await
        .map(|_| ())
    }

    /// Stop the fleet's rollout of `digest`.
    pub(super) async fn record_abort(
        &self,
        name: &str,
        digest: &str,
        action: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        self.change_slot(name, action, reason, Some(digest), |slot| match &slot.rollout {
            Some(rollout) if rollout.digest == digest => Ok(SlotRow { rollout: None, ..slot.clone() }),
            _ => Err(RegistryError::NoRollout(name.to_owned())),
        })
        .await
        .map(|_| ())
    }

    /// Keep `loaded` and make it the fleet's serving version of `name`.
    pub(super) async fn record_install(
        &self,
        name: &str,
        loaded: &LoadedStep,
        source: Source,
    ) -> Result<(), RegistryError> {
        self.keep_version(name, loaded).await?;
        for _ in 0..CAS_ROUNDS {
            let slot = self.slot(name).await?;
            let (expected, generation, previous) = match &slot {
                Some(slot) if slot.current == *loaded.digest => return Ok(()),
                Some(slot) => (slot.generation, slot.generation + 1, Some(slot.current.clone())),
                None => (0, 1, None),
            };
            let next = SlotRow {
                name: name.to_owned(),
                current: loaded.digest.to_string(),
                previous,
                generation,
                updated_at_ms: now_ms(),
                rollout: None,
            };
            if self.store.set_slot(&next, expected).await? {
                self.record(name, "install", &loaded.digest, source.as_str()).await;
                return Ok(());
            }
        }
        Err(RegistryError::Contended(name.to_owned()))
    }

    /// Swap the fleet's serving and previous versions of `name`; the slot to serve.
    pub(super) async fn record_rollback(
        &self,
        name: &str,
        local: &Slot,
        registry: &StepRegistry,
    ) -> Result<Slot, RegistryError> {
        for _ in 0..CAS_ROUNDS {
            let slot = self.slot(name).await?.ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
            let previous = slot.previous.clone().ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
            let current = registry.version_of(name, &previous, Some(local)).await?;
            let demoted = registry.version_of(name, &slot.current, Some(local)).await?;
            let next = SlotRow {
                name: name.to_owned(),
                current: previous.clone(),
                previous: Some(slot.current.clone()),
                generation: slot.generation + 1,
                updated_at_ms: now_ms(),
                rollout: None,
            };
            if self.store.set_slot(&next, slot.generation).await? {
                self.record(name, "rollback", &previous, "").await;
                return Ok(Slot::serving(current, Some(demoted)));
            }
        }
        Err(RegistryError::Contended(name.to_owned()))
    }

    /// Reject `digest` of `name` for the fleet, once: abort its rollout if it is the
    /// candidate, or serve the previous version if it serves (dropping it from the slot, so
    /// no later rollback serves it again). A compare-and-set on the digest: false when it
    /// no longer runs (another host or an operator decided first).
    pub(super) async fn reject(&self, name: &str, digest: &str, reason: &str) -> Result<bool, RegistryError> {
        for _ in 0..CAS_ROUNDS {
            let slot = self.slot(name).await?.ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
            let mut next = if slot.rollout.as_ref().is_some_and(|r| r.digest == digest) {
                SlotRow { rollout: None, ..slot.clone() }
            } else if slot.current == digest {
                let Some(previous) = slot.previous.clone() else { return Ok(false) };
                SlotRow { current: previous, previous: None, rollout: None, ..slot.clone() }
            } else {
                return Ok(false);
            };
            next.generation = slot.generation + 1;
            next.updated_at_ms = now_ms();
            if self.store.set_slot(&next, slot.generation).await? {
                self.record(name, "auto-rollback", digest, reason).await;
                return Ok(true);
            }
        }
        Err(RegistryError::Contended(name.to_owned()))
    }

    /// Versions of `name` the history says were rejected (rolled back by a host or
    /// aborted), so a restarted host releases pins to them too.
    pub(super) async fn rejected(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let entries = self.store.history(name, 1000).await?;
        Ok(entries
            .into_iter()
            .filter(|h| matches!(h.action.as_str(), "auto-rollback" | "rollout-aborted"))
            .map(|h| h.digest)
            .collect())
    }

    /// Add to the history; a failure only loses the entry, so it is logged.
    pub(super) async fn record(&self, name: &str, action: &str, digest: &str, reason: &str) {
        let entry = HistoryRow {
            name: name.to_owned(),
            action: action.to_owned(),
            digest: digest.to_owned(),
            reason: reason.to_owned(),
            host_id: self.host_id.clone(),
            at_ms: now_ms(),
        };
        if let Err(error) = self.store.add_history(&entry).await {
            tracing::warn!(step = %name, %error, "cannot record the registry history");
        }
    }

    /// Whether the fleet has seen `digest` as a version of `name`: kept in its versions,
    /// or named by its history (which outlives versions pruned as no longer needed). A
    /// refusal does not count: refused bytes were never a version.
    pub(super) async fn has_seen(&self, name: &str, digest: &Digest) -> Result<bool, RegistryError> {
        if self.store.version_digests(name).await?.iter().any(|kept| *digest == **kept) {
            return Ok(true);
        }
        let history = self.store.history(name, HISTORY_LOOKBACK).await?;
        Ok(history.iter().any(|entry| *digest == *entry.digest && entry.action != "refused"))
    }

    /// Serve what the fleet serves: load every slot this host does not match yet.
    pub async fn sync(&self, registry: &StepRegistry) -> Result<(), RegistryError> {
        for slot in self.store.slots().await? {
            let local = registry.snapshot().get(&slot.name).cloned();
            let matches = local.as_ref().is_some_and(|local| {
                *local.current.digest == slot.current
                    && local.previous.as_ref().map(|p| p.digest.to_string()) == slot.previous
                    && local.rollout.as_ref().map(|r| (r.mode.name(), r.candidate.digest.to_string()))
                        == slot.rollout.as_ref().map(|r| (r.mode.as_str(), r.digest.clone()))
            });
            if matches {
                continue;
            }
            let current = match registry.version_of(&slot.name, &slot.current, local.as_ref()).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::error!(step = %slot.name, digest = %slot.current, %error,
                        "cannot serve the fleet's version here");
                    continue;
                }
            };
            let previous = match &slot.previous {
                Some(digest) => registry.version_of(&slot.name, digest, local.as_ref()).await.ok(),
                None => None,
            };
            let rollout = match &slot.rollout {
                Some(row) => match registry.version_of(&slot.name, &row.digest, local.as_ref()).await {
                    Ok(candidate) => Some(Rollout {
                        mode: match row.mode.as_str() {
                            "shadow" => RolloutMode::Shadow,
                            _ => RolloutMode::Canary { percent: u8::try_from(row.percent.clamp(0, 100)).unwrap_or(0) },
                        },
                        candidate,
                        started_at_ms: row.started_at_ms,
                    }),
                    Err(error) => {
                        tracing::error!(step = %slot.name, digest = %row.digest, %error,
                            "cannot run the fleet's rollout candidate here");
                        None
                    }
                },
                None => None,
            };
            // The fleet's time of the change that made this version serve, not this host's.
            let since_ms = match &local {
                Some(local) if *local.current.digest == slot.current => local.since_ms,
                _ => slot.updated_at_ms,
            };
            registry.adopt(&slot.name, Slot { current, previous, rollout, since_ms }).await;
        }
        Ok(())
    }

    /// Sync every [`SYNC_INTERVAL`] until `stopped`.
    pub async fn run_sync(registry: Arc<StepRegistry>, stopped: crate::shutdown::Shutdown) {
        let Some(fleet) = registry.fleet().cloned() else { return };
        loop {
            if !stopped.pause(SYNC_INTERVAL).await {
                return;
            }
            if let Err(error) = fleet.sync(&registry).await {
                tracing::warn!(%error, "cannot read the fleet's registry; retrying");
            }
        }
    }
}

impl StepRegistry {
    /// The loaded version `digest` of `name`: the one already in `local` if it is there,
    /// otherwise its bytes from the fleet's store, loaded (the compile cache makes that
    /// quick after the first time on a machine).
    pub(super) async fn version_of(
        &self,
        name: &str,
        digest: &str,
        local: Option<&Slot>,
    ) -> Result<Arc<LoadedStep>, RegistryError> {
        if let Some(local) = local {
            let rollout = local.rollout.iter().map(|r| &r.candidate);
            for known in std::iter::once(&local.current).chain(local.previous.iter()).chain(rollout) {
                if *known.digest == *digest {
                    return Ok(known.clone());
                }
            }
        }
        let fleet = self.fleet.as_ref().ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
        let row = fleet.store.version(digest).await?.ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
        Ok(Arc::new(self.runtime.load(name, Bytes::from(row.bytes)).await?))
    }
}
