//! Watches the plugins folder: a new or changed `<step>.wasm` is installed once the
//! file has been quiet for a moment and its size and mtime have stopped changing, so a
//! file still being copied is not read half-way. Temporary names (`.x.tmp`, `x.part`)
//! are ignored, which makes write-then-rename the safe way to drop a file in.

use super::{Source, StepRegistry};
use bytes::Bytes;
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a file must stay unchanged before it is read.
const QUIET: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch the plugins folder {dir}: {reason}")]
pub struct WatchError {
    dir: PathBuf,
    reason: String,
}

/// The step a file in the plugins folder installs, if it is named like one.
pub fn step_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && !stem.starts_with(['.', '-'])
        && stem.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| stem.to_owned())
}

/// Stops watching when dropped.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PluginWatcher {
    /// Watch `dir` and install what appears in it into `registry`.
    pub fn start(dir: &Path, registry: Arc<StepRegistry>) -> Result<PluginWatcher, WatchError> {
        let fail = |reason: String| WatchError { dir: dir.to_owned(), reason };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
            {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
        })
        .map_err(|e| fail(e.to_string()))?;
        watcher.watch(dir, RecursiveMode::NonRecursive).map_err(|e| fail(e.to_string()))?;
        let task = tokio::spawn(settle_and_install(rx, registry));
        Ok(PluginWatcher { _watcher: watcher, task })
    }
}

/// A file seen changing: when to look again, and what it looked like last time.
struct Pending {
    due: Instant,
    seen: Option<(u64, SystemTime)>,
}

fn fingerprint(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

async fn settle_and_install(mut rx: mpsc::UnboundedReceiver<PathBuf>, registry: Arc<StepRegistry>) {
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    loop {
        let next_due = pending.values().map(|p| p.due).min();
        tokio::select! {
            received = rx.recv() => {
                let Some(path) = received else { return };
                if step_name(&path).is_some() {
                    let seen = fingerprint(&path);
                    pending.insert(path, Pending { due: Instant::now() + QUIET, seen });
                }
            }
            () = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let ready: Vec<PathBuf> = pending.iter().filter(|(_, p)| p.due <= now).map(|(k, _)| k.clone()).collect();
                for path in ready {
                    let Some(entry) = pending.remove(&path) else { continue };
                    let current = fingerprint(&path);
                    if current.is_none() {
                        // Removed or renamed away: removing a file does not unload a step.
                        continue;
                    }
                    if current != entry.seen {
                        // Still being written: look again after another quiet period.
                        pending.insert(path, Pending { due: now + QUIET, seen: current });
                        continue;
                    }
                    install_file(&registry, &path).await;
                }
            }
        }
    }
}

async fn install_file(registry: &StepRegistry, path: &Path) {
    let Some(name) = step_name(path) else { return };
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            // The registry logs refusals with their reason; the old version keeps serving.
            let _ = registry.install(&name, Bytes::from(bytes), Source::File).await;
        }
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot read plugin file"),
    }
}
