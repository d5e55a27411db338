//! The on-disk cache of compiled components, keyed by the component's digest and the
//! engine's compatibility hash, so a restart loads machine code instead of compiling.
//! File names are built only from a validated [`Digest`]: whatever names a version
//! (a recording, a store row) cannot point the native-code loader elsewhere.

use crate::event::Digest;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled components by digest.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache { dir: dir.to_owned(), engine_key: format!("{:016x}", hasher.finish()) }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", digest.hex(), self.engine_key))
    }

    /// The cached component for `digest`, if a usable one is on disk.
    pub fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        match deserialize(engine, &path) {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring unusable compile cache entry");
                None
            }
        }
    }

    /// Store `component`; a failure only costs a recompile later, so it is logged, not returned.
    pub fn store(&self, component: &Component, digest: &Digest) {
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let bytes = component.serialize()?;
            // Write then rename, so a concurrent reader never sees half a file.
            crate::fsutil::write_atomically_blocking(&self.path(digest), &bytes)?;
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot write compile cache entry");
        }
    }
}

impl CompileCache {
    /// Remove entries whose digest is not in `keep` and that were not written within
    /// `grace`; the number removed. Entries of another engine are removed too.
    pub fn prune(&self, keep: &[String], grace: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".cwasm") else { continue };
            let digest = stem.split('-').next().unwrap_or_default();
            let current_engine = stem.ends_with(&self.engine_key);
            if current_engine && keep.iter().any(|k| k == digest) {
                continue;
            }
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age < grace));
            if young && current_engine {
                continue;
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the cache folder holds only files this process wrote with
    // `Component::serialize` for an engine with the same compatibility hash (part of the
    // file name); wasmtime checks the header and refuses files of another engine.
    unsafe { Component::deserialize_file(engine, path) }
}
