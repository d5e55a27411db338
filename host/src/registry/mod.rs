//! The step registry: which version of each step serves, behind one atomic pointer.
//!
//! Readers take a snapshot with one atomic load and keep the `Arc<LoadedStep>` they got
//! for the whole call, so a swap never disturbs a call in flight: it finishes on the
//! version it started with. Writers (file watcher, admin upload, rollback, the fleet
//! sync) are serialised by a mutex, build a new snapshot and publish it with one store.
//!
//! With a store attached (every server has one) the registry is the fleet's: component
//! bytes, manifests, the serving and previous version of each step and the history of
//! changes live in the store (`fleet.rs`). A change on any host is written there first
//! (compare-and-set on the slot's generation), then served locally; every other host
//! sees it on its next sync and serves it too.

mod fleet;
mod rollout;
mod stats;
mod watch;

pub use fleet::{Fleet, SYNC_INTERVAL};
pub use rollout::{AutoRollback, Rollout, RolloutMode, bucket};
pub use stats::{VersionStats, VersionSummary};
pub use watch::{StepWatcher, WatchError};

use crate::runtime::{LoadError, LoadedStep, Runtime};
use crate::store::StoreError;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A step's serving version, the one it replaced, and a candidate being rolled out.
#[derive(Debug, Clone)]
pub struct Slot {
    pub current: Arc<LoadedStep>,
    pub previous: Option<Arc<LoadedStep>>,
    pub rollout: Option<Rollout>,
    /// When the slot last changed (the fleet's record of it when there is a fleet): a
    /// version is new, and judged against the one it replaced, for a while after.
    pub since_ms: i64,
}

impl Slot {
    fn serving(current: Arc<LoadedStep>, previous: Option<Arc<LoadedStep>>) -> Slot {
        Slot { current, previous, rollout: None, since_ms: crate::event::now_ms() }
    }
}

/// Where a new version came from (for the log and the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Found in the plugins folder at start.
    Startup,
    /// A file written into the plugins folder while running.
    File,
    /// `PUT /api/admin/plugins/{name}`.
    Upload,
    /// Another host of the fleet changed it.
    Fleet,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Startup => "startup",
            Source::File => "file",
            Source::Upload => "upload",
            Source::Fleet => "fleet",
        }
    }
}

/// What an install did.
#[derive(Debug, Clone)]
pub enum Installed {
    /// The step now serves this new version.
    Swapped(Slot),
    /// The same bytes were already serving; nothing changed.
    Unchanged(Slot),
}

impl Installed {
    pub fn slot(&self) -> &Slot {
        match self {
            Installed::Swapped(slot) | Installed::Unchanged(slot) => slot,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Refused(#[from] LoadError),
    #[error("step {0:?} is not loaded")]
    UnknownStep(String),
    #[error("step {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("the fleet's registry is unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("step {0:?} was changed by another host at the same time; try again")]
    Contended(String),
    #[error("step {0:?} has no rollout to promote")]
    NoRollout(String),
    #[error("version {digest} of {name:?} is not kept any more")]
    VersionGone { name: String, digest: String },
}

/// A version that was refused, kept so an operator (or a test) can see why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub digest: String,
    pub reason: String,
    pub source: Source,
}

/// Step name → serving version.
pub struct StepRegistry {
    runtime: Arc<Runtime>,
    refusals: parking_lot::Mutex<BTreeMap<String, Vec<Refusal>>>,
    snapshot: ArcSwap<BTreeMap<String, Slot>>,
    write: tokio::sync::Mutex<()>,
    /// Bumped whenever the snapshot changes.
    changes: tokio::sync::watch::Sender<u64>,
    /// The fleet's registry in the store; `None` for a registry of this process only.
    fleet: Option<Fleet>,
    /// Versions loaded for pinned orders and replays, by digest (bounded).
    retained: parking_lot::Mutex<std::collections::VecDeque<Arc<LoadedStep>>>,
    /// Calls, failures and latency per version since it was loaded here.
    stats: stats::Stats,
    /// Versions rolled back or aborted (by a host's decision or an operator's): orders
    /// pinned to one go on on the serving version.
    rejected: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for StepRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRegistry").field("steps", &self.snapshot.load().keys()).finish_non_exhaustive()
    }
}

impl StepRegistry {
    /// A registry of this process only (tests, benchmarks, offline tools).
    pub fn new(runtime: Arc<Runtime>) -> Arc<StepRegistry> {
        StepRegistry::build(runtime, None)
    }

    /// The fleet's registry, kept in `fleet`'s store.
    pub fn with_fleet(runtime: Arc<Runtime>, fleet: Fleet) -> Arc<StepRegistry> {
        StepRegistry::build(runtime, Some(fleet))
    }

    fn build(runtime: Arc<Runtime>, fleet: Option<Fleet>) -> Arc<StepRegistry> {
        Arc::new(StepRegistry {
            runtime,
            snapshot: ArcSwap::from_pointee(BTreeMap::new()),
            refusals: parking_lot::Mutex::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
            fleet,
            retained: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            stats: stats::Stats::default(),
            rejected: parking_lot::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Remember that `digest` was rejected: no pin holds an order to it any more.
    pub(crate) fn mark_rejected(&self, digest: &str) {
        self.rejected.lock().insert(digest.to_owned());
    }

    /// Whether `digest` was rolled back or aborted (here, or by the fleet).
    pub fn is_rejected(&self, digest: &str) -> bool {
        self.rejected.lock().contains(digest)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// Every step and its versions, by name.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Slot>> {
        self.snapshot.load_full()
    }

    /// The serving version of `name`.
    pub fn current(&self, name: &str) -> Option<Arc<LoadedStep>> {
        self.snapshot.load().get(name).map(|slot| slot.current.clone())
    }

    /// A receiver that sees every change of the snapshot (a swap, a new step, a rollback).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn publish(&self, steps: BTreeMap<String, Slot>) {
        self.snapshot.store(Arc::new(steps));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Versions refused for `name` since start, oldest first.
    pub fn refusals(&self, name: &str) -> Vec<Refusal> {
        self.lock_refusals().get(name).cloned().unwrap_or_default()
    }

    fn lock_refusals(&self) -> parking_lot::MutexGuard<'_, BTreeMap<String, Vec<Refusal>>> {
        self.refusals.lock()
    }

    /// The serving versions of every step subscribed to `kind`.
    pub fn subscribers(&self, kind: &str) -> Vec<Arc<LoadedStep>> {
        self.snapshot
            .load()
            .values()
            .filter(|slot| slot.current.subscribes_to(kind))
            .map(|slot| slot.current.clone())
            .collect()
    }

    /// Load the fleet's versions (if any), then every `<name>.wasm` in `dir`: a file with
    /// bytes new to the fleet is installed for the fleet; one the fleet has seen before
    /// (an older file on a restarted host) is left alone, so it cannot roll the fleet
    /// back (`watch.rs`, the same rule as for a change while running). Components load
    /// concurrently; a refused one is logged and skipped.
    pub async fn load_dir(&self, dir: &Path) -> Vec<(String, RegistryError)> {
        let mut refused = Vec::new();
        if let Some(fleet) = &self.fleet {
            if let Err(error) = fleet.sync(self).await {
                refused.push(("*".to_owned(), error));
            }
            for name in self.snapshot().keys() {
                match fleet.rejected(name).await {
                    Ok(digests) => digests.iter().for_each(|d| self.mark_rejected(d)),
                    Err(error) => tracing::warn!(step = %name, %error, "cannot read which versions were rejected"),
                }
            }
        }
        let files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => {
                tracing::warn!(dir = %dir.display(), "plugins folder is missing");
                Vec::new()
            }
        };
        let loads = files.into_iter().filter_map(|path| watch::step_name(&path).map(|name| (name, path))).map(
            |(name, path)| async move {
                let bytes = match watch::read_component(&path, self.runtime.config().max_component_bytes).await {
                    Ok(bytes) => bytes,
                    Err(error) => return Some((name, error)),
                };
                self.install_from_folder(&name, &path, bytes, Source::Startup).await.err().map(|error| (name, error))
            },
        );
        refused.extend(futures::future::join_all(loads).await.into_iter().flatten());
        refused
    }

    /// Validate and compile `bytes`, then make them the serving version of `name`, for
    /// the whole fleet when there is one. A refusal leaves the serving version untouched.
    #[tracing::instrument(skip(self, bytes), fields(step = %name, source = source.as_str(), step_version))]
    pub async fn install(&self, name: &str, bytes: Bytes, source: Source) -> Result<Installed, RegistryError> {
        if let Some(slot) = self.snapshot.load().get(name)
            && *slot.current.bytes == *bytes
        {
            return Ok(Installed::Unchanged(slot.clone()));
        }
        let digest = crate::runtime::digest_of(&bytes);
        let loaded = match self.runtime.load(name, bytes).await {
            Ok(loaded) => Arc::new(loaded),
            Err(error) => {
                tracing::warn!(%error, %digest, "refused a new version; the serving version is unchanged");
                self.refused(name, &digest, &error.to_string(), source).await;
                return Err(error.into());
            }
        };
        tracing::Span::current().record("step_version", &*loaded.digest);
        let _guard = self.write.lock().await;
        if let Some(fleet) = &self.fleet
            && source != Source::Fleet
        {
            fleet.record_install(name, &loaded, source).await?;
        }
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        let previous = steps.get(name).map(|slot| slot.current.clone());
        if let Some(previous) = &previous
            && previous.digest == loaded.digest
        {
            return Ok(Installed::Unchanged(steps[name].clone()));
        }
        let slot = Slot::serving(loaded.clone(), previous);
        steps.insert(name.to_owned(), slot.clone());
        self.publish(steps);
        tracing::info!(
            version = %loaded.version,
            from_cache = loaded.from_cache,
            compile_ms = loaded.compile_time.as_millis() as u64,
            "step version is serving"
        );
        Ok(Installed::Swapped(slot))
    }

    async fn refused(&self, name: &str, digest: &str, reason: &str, source: Source) {
        {
            let refusal = Refusal { digest: digest.to_owned(), reason: reason.to_owned(), source };
            let mut refusals = self.lock_refusals();
            let kept = refusals.entry(name.to_owned()).or_default();
            // Keep the latest few per step: enough to see why, bounded however often a file is retried.
            if kept.len() >= MAX_REFUSALS_KEPT {
                kept.remove(0);
            }
            kept.push(refusal);
        }
        if let Some(fleet) = &self.fleet {
            fleet.record(name, "refused", digest, reason).await;
        }
    }

    /// Serve the previous version of `name` again (the fleet's previous, when there is
    /// a fleet); the current one becomes previous.
    #[tracing::instrument(skip(self), fields(step = %name))]
    pub async fn rollback(&self, name: &str) -> Result<Slot, RegistryError> {
        if self.snapshot.load().get(name).is_some_and(|slot| slot.rollout.is_some()) {
            // A rollout in progress is what an operator rolls back first.
            return self.abort_rollout(name, "rollout-aborted", "aborted by an operator").await;
        }
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        let slot = steps.get(name).ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
        let rolled = match &self.fleet {
            Some(fleet) => fleet.record_rollback(name, slot, self).await?,
            None => {
                let previous = slot.previous.clone().ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
                Slot::serving(previous, Some(slot.current.clone()))
            }
        };
        steps.insert(name.to_owned(), rolled.clone());
        self.publish(steps);
        tracing::info!(step_version = %rolled.current.digest, version = %rolled.current.version, "rolled back");
        Ok(rolled)
    }

    /// Serve what another host made the fleet's slot of `name` (called by the sync).
    async fn adopt(&self, name: &str, slot: Slot) {
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        if steps.get(name).is_some_and(|known| same_slot(known, &slot)) {
            return;
        }
        if let Some(known) = steps.get(name) {
            // A version that served (or ran as a candidate) and left the slot without
            // being promoted was rejected by another host or an operator.
            let kept = |digest: &str| {
                *slot.current.digest == *digest
                    || slot.previous.as_ref().is_some_and(|p| *p.digest == *digest)
                    || slot.rollout.as_ref().is_some_and(|r| *r.candidate.digest == *digest)
            };
            let left = std::iter::once(&known.current).chain(known.rollout.iter().map(|r| &r.candidate));
            for step in left.filter(|s| !kept(&s.digest)) {
                self.mark_rejected(&step.digest);
            }
        }
        tracing::info!(step = %name, step_version = %slot.current.digest, version = %slot.current.version,
            rollout = ?slot.rollout.as_ref().map(|r| (&r.mode, &r.candidate.digest)), "serving the fleet's version");
        steps.insert(name.to_owned(), slot);
        self.publish(steps);
    }

    /// Publish `slot` for `name` (a change this host made to the fleet).
    async fn set_slot(&self, name: &str, slot: Slot) {
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        steps.insert(name.to_owned(), slot);
        self.publish(steps);
    }

    /// Per-version call statistics on this host.
    pub fn stats(&self) -> &stats::Stats {
        &self.stats
    }
}

/// Whether two slots serve the same versions.
fn same_slot(a: &Slot, b: &Slot) -> bool {
    a.current.digest == b.current.digest
        && a.previous.as_ref().map(|p| &p.digest) == b.previous.as_ref().map(|p| &p.digest)
        && a.rollout.as_ref().map(|r| (&r.mode, &r.candidate.digest))
            == b.rollout.as_ref().map(|r| (&r.mode, &r.candidate.digest))
}

/// Refusals kept per step.
const MAX_REFUSALS_KEPT: usize = 16;
