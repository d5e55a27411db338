//! The step registry: which version of each step serves, behind one atomic pointer.
//!
//! Readers take a snapshot with one atomic load and keep the `Arc<LoadedStep>` they got
//! for the whole call, so a swap never disturbs a call in flight: it finishes on the
//! version it started with. Writers (file watcher, admin upload, rollback) are
//! serialised by a mutex, build a new snapshot and publish it with one store.

mod watch;

pub use watch::{PluginWatcher, WatchError};

use crate::runtime::{LoadError, LoadedStep, Runtime};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A step's serving version and the one it replaced.
#[derive(Debug, Clone)]
pub struct Slot {
    pub current: Arc<LoadedStep>,
    pub previous: Option<Arc<LoadedStep>>,
}

/// Where a new version came from (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Found in the plugins folder at start.
    Startup,
    /// A file written into the plugins folder while running.
    File,
    /// `PUT /api/admin/plugins/{name}`.
    Upload,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Startup => "startup",
            Source::File => "file",
            Source::Upload => "upload",
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
    refusals: std::sync::Mutex<BTreeMap<String, Vec<Refusal>>>,
    snapshot: ArcSwap<BTreeMap<String, Slot>>,
    write: tokio::sync::Mutex<()>,
    /// Bumped whenever the snapshot changes.
    changes: tokio::sync::watch::Sender<u64>,
    /// Where accepted uploads and rollbacks are written, so a restart serves them.
    plugins_dir: Option<PathBuf>,
}

impl std::fmt::Debug for StepRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRegistry").field("steps", &self.snapshot.load().keys()).finish_non_exhaustive()
    }
}

impl StepRegistry {
    pub fn new(runtime: Arc<Runtime>, plugins_dir: Option<PathBuf>) -> Arc<StepRegistry> {
        Arc::new(StepRegistry {
            runtime,
            snapshot: ArcSwap::from_pointee(BTreeMap::new()),
            refusals: std::sync::Mutex::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
            plugins_dir,
        })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
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

    fn lock_refusals(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Refusal>>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// Load every `<name>.wasm` in `dir`. A refused file is logged and skipped, so one
    /// bad component does not keep the others from serving.
    pub async fn load_dir(&self, dir: &Path) -> Vec<(String, RegistryError)> {
        let mut refused = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::warn!(dir = %dir.display(), "plugins folder is missing: no steps loaded");
            return refused;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let Some(name) = watch::step_name(&path) else { continue };
            let result = match tokio::fs::read(&path).await {
                Ok(bytes) => self.install(&name, Bytes::from(bytes), Source::Startup).await.map(|_| ()),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read plugin file");
                    continue;
                }
            };
            if let Err(error) = result {
                refused.push((name, error));
            }
        }
        self.restore_previous(dir).await;
        refused
    }

    /// Validate and compile `bytes`, then make them the serving version of `name`.
    /// A refusal leaves the serving version untouched.
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
                let refusal = Refusal { digest, reason: error.to_string(), source };
                let mut refusals = self.lock_refusals();
                let kept = refusals.entry(name.to_owned()).or_default();
                // Keep the latest few per step: enough to see why, bounded however often a file is retried.
                if kept.len() >= MAX_REFUSALS_KEPT {
                    kept.remove(0);
                }
                kept.push(refusal);
                return Err(error.into());
            }
        };
        tracing::Span::current().record("step_version", &*loaded.digest);
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        let previous = steps.get(name).map(|slot| slot.current.clone());
        if let Some(previous) = &previous
            && previous.digest == loaded.digest
        {
            return Ok(Installed::Unchanged(steps[name].clone()));
        }
        let slot = Slot { current: loaded.clone(), previous };
        steps.insert(name.to_owned(), slot.clone());
        self.publish(steps);
        if source == Source::Upload {
            self.persist(&loaded).await;
        }
        if source != Source::Startup {
            self.persist_previous(name, slot.previous.as_deref()).await;
        }
        tracing::info!(
            version = %loaded.version,
            from_cache = loaded.from_cache,
            compile_ms = loaded.compile_time.as_millis() as u64,
            "step version is serving"
        );
        Ok(Installed::Swapped(slot))
    }

    /// Serve the previous version of `name` again; the current one becomes previous.
    #[tracing::instrument(skip(self), fields(step = %name))]
    pub async fn rollback(&self, name: &str) -> Result<Slot, RegistryError> {
        let _guard = self.write.lock().await;
        let mut steps = BTreeMap::clone(&self.snapshot.load());
        let slot = steps.get(name).ok_or_else(|| RegistryError::UnknownStep(name.to_owned()))?;
        let previous = slot.previous.clone().ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
        let rolled = Slot { current: previous, previous: Some(slot.current.clone()) };
        steps.insert(name.to_owned(), rolled.clone());
        self.publish(steps);
        self.persist(&rolled.current).await;
        self.persist_previous(name, rolled.previous.as_deref()).await;
        tracing::info!(step_version = %rolled.current.digest, version = %rolled.current.version, "rolled back");
        Ok(rolled)
    }

    /// Write the serving component into the plugins folder (write, then rename), so a
    /// restart serves it. The watcher sees the same digest and does nothing.
    async fn persist(&self, step: &LoadedStep) {
        let Some(dir) = &self.plugins_dir else { return };
        write_atomically(dir, &format!("{}.wasm", step.name), &step.bytes).await;
    }

    /// Keep the previous version beside the folder (in `.previous/`, which the watcher
    /// does not look at), so a rollback still works after a restart.
    async fn persist_previous(&self, name: &str, previous: Option<&LoadedStep>) {
        let Some(dir) = &self.plugins_dir else { return };
        match previous {
            Some(step) => write_atomically(&dir.join(PREVIOUS_DIR), &format!("{name}.wasm"), &step.bytes).await,
            None => {
                let _ = tokio::fs::remove_file(dir.join(PREVIOUS_DIR).join(format!("{name}.wasm"))).await;
            }
        }
    }

    /// At start: make the kept previous version of each loaded step its `previous`.
    async fn restore_previous(&self, dir: &Path) {
        let names: Vec<String> = self.snapshot.load().keys().cloned().collect();
        for name in names {
            let path = dir.join(PREVIOUS_DIR).join(format!("{name}.wasm"));
            let Ok(bytes) = tokio::fs::read(&path).await else { continue };
            let Some(current) = self.current(&name) else { continue };
            if *current.bytes == *bytes {
                continue;
            }
            match self.runtime.load(&name, Bytes::from(bytes)).await {
                Ok(previous) => {
                    let _guard = self.write.lock().await;
                    let mut steps = BTreeMap::clone(&self.snapshot.load());
                    if let Some(slot) = steps.get_mut(&name) {
                        slot.previous = Some(Arc::new(previous));
                    }
                    self.publish(steps);
                }
                Err(error) => tracing::warn!(step = %name, %error, "the kept previous version no longer loads"),
            }
        }
    }
}

/// Refusals kept per step.
const MAX_REFUSALS_KEPT: usize = 16;

/// Subfolder of the plugins folder holding each step's previous version.
const PREVIOUS_DIR: &str = ".previous";

/// Write `bytes` to `dir/name` via a temporary file and a rename.
async fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", rand::random::<u64>()));
    let result = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &target).await
    }
    .await;
    if let Err(error) = result {
        tracing::error!(path = %target.display(), %error, "cannot keep this version on disk; a restart will not see it");
    }
}
