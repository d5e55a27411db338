//! [`Archive`] in a local folder (`file://`): one file per object, at the object's name
//! under the folder.
//!
//! A batch's objects are written by one blocking task, not one task per object: each is
//! written to a staging file in `.staging/` and moved into place by a rename that refuses
//! to replace (create-only and atomic: neither a reader nor a crash sees half an object).
//! That is one inode and two directory entries per object. When durable (the store
//! commits with `synchronous=FULL`, the default), a `syncfs` puts the staged files on
//! disk before the renames and another puts the renames there before the batch commits:
//! the inbox never says "archived" for an object a power cut could lose or empty.

use super::{Archive, ArchiveError, ArchiveWrite, object::object_path};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where objects are written before they are moved into place.
const STAGING: &str = ".staging";
/// Staging files older than this, found at start, were left by a crash.
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug)]
pub struct LocalArchive {
    inner: Arc<Folder>,
}

#[derive(Debug)]
struct Folder {
    root: PathBuf,
    durable: bool,
    /// Names this archive's staging files apart from those of other archives on the same
    /// folder (other hosts, or other servers in the same process).
    instance: u64,
    next: AtomicU64,
}

impl LocalArchive {
    /// The archive in `root` (created if missing); `durable` flushes each batch to disk.
    pub fn open(root: &Path, durable: bool) -> Result<LocalArchive, ArchiveError> {
        let cannot = |e: std::io::Error| ArchiveError::Url {
            url: format!("file://{}", root.display()),
            reason: format!("cannot use {}: {e}", root.display()),
        };
        let staging = root.join(STAGING);
        std::fs::create_dir_all(&staging).map_err(cannot)?;
        remove_stale(&staging);
        let folder = Folder { root: root.to_owned(), durable, instance: rand::random(), next: AtomicU64::new(0) };
        Ok(LocalArchive { inner: Arc::new(folder) })
    }
}

/// Remove staging files a crash left behind (not those of a process writing right now).
fn remove_stale(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let old =
            entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_STAGING);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Folder {
    fn path(&self, name: &str) -> Result<PathBuf, ArchiveError> {
        object_path(name)?;
        if name == STAGING || name.starts_with(".staging/") {
            return Err(ArchiveError::Name(name.to_owned()));
        }
        Ok(self.root.join(name))
    }

    /// Write the objects not there yet. When durable, every staged file is on disk
    /// before any is renamed into place (a rename reaching the disk first would leave an
    /// empty object after a power cut, which the next try would take as written), and
    /// the renames are on disk before this returns: two flushes of the file system per
    /// batch, whatever its size.
    fn put_all(&self, writes: &[(PathBuf, Bytes)]) -> std::io::Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        // Each staged file, and whether a rename moved it into place.
        let mut staged = Vec::with_capacity(writes.len());
        let result = self.stage_and_place(writes, &mut staged);
        // A file renamed into place is gone from staging: removing it again would be a
        // failing system call per object. The others (a failure, an object that was
        // there already, a hard link) are left and removed here.
        for (path, _) in staged.iter().filter(|(_, moved)| !moved) {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn stage_and_place(&self, writes: &[(PathBuf, Bytes)], staged: &mut Vec<(PathBuf, bool)>) -> std::io::Result<()> {
        for (_, body) in writes {
            staged.push((self.stage(body)?, false));
        }
        self.flush()?;
        for ((target, _), (path, moved)) in writes.iter().zip(staged.iter_mut()) {
            *moved = place(path, target)?;
        }
        self.flush()
    }

    /// Flush the file system the archive is on, when durable.
    fn flush(&self) -> std::io::Result<()> {
        if self.durable {
            let root = std::fs::File::open(&self.root)?;
            rustix::fs::syncfs(&root)?;
        }
        Ok(())
    }

    /// Write `body` to a new staging file.
    fn stage(&self, body: &[u8]) -> std::io::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(STAGING).join(format!("{}-{:x}-{n}", std::process::id(), self.instance));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        if let Err(error) = file.write_all(body) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        Ok(path)
    }
}

/// Move `staged` to `target` unless something is there already (then keep that: the
/// archive is create-only, and names are derived from event ids). Whether `staged` was
/// moved (not when the object was there, nor when it was hard-linked).
fn place(staged: &Path, target: &Path) -> std::io::Result<bool> {
    match rename_noreplace(staged, target) {
        Err(e) if e.kind() == ErrorKind::NotFound && !target.parent().is_some_and(Path::exists) => {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            rename_noreplace(staged, target)
        }
        other => other,
    }
    .or_else(|e| if e.kind() == ErrorKind::AlreadyExists { Ok(false) } else { Err(e) })
}

/// Whether `from` was renamed (`false`: hard-linked, so still in place).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        // A file system without RENAME_NOREPLACE: a hard link also refuses to replace.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            std::fs::hard_link(from, to).map(|()| false)
        }
        Err(e) => Err(e.into()),
    }
}

/// A name the file system cannot hold (too long, invalid, a file where a folder should be)
/// is refused; anything else is the storage's failure.
fn refused_or_storage(error: std::io::Error) -> ArchiveError {
    use rustix::io::Errno;
    let refused = matches!(error.kind(), ErrorKind::InvalidFilename | ErrorKind::NotADirectory)
        || error.raw_os_error().is_some_and(|code| {
            [Errno::NAMETOOLONG, Errno::INVAL, Errno::NOTDIR, Errno::ISDIR].iter().any(|e| e.raw_os_error() == code)
        });
    if refused { ArchiveError::Refused(error.to_string()) } else { storage(error) }
}

fn storage(error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Storage(error.to_string())
}

#[async_trait]
impl Archive for LocalArchive {
    async fn put_once(&self, name: &str, body: Bytes, content_type: &str) -> Result<(), ArchiveError> {
        self.put_all(vec![(name.to_owned(), body, content_type.to_owned())]).await
    }

    async fn put_all(&self, writes: Vec<ArchiveWrite>) -> Result<(), ArchiveError> {
        let writes: Vec<(PathBuf, Bytes)> = writes
            .into_iter()
            .map(|(name, body, _)| Ok((self.inner.path(&name)?, body)))
            .collect::<Result<_, ArchiveError>>()?;
        let folder = self.inner.clone();
        tokio::task::spawn_blocking(move || folder.put_all(&writes)).await.map_err(storage)?.map_err(refused_or_storage)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let prefix = prefix.trim_end_matches('/');
        let start = self.inner.path(prefix)?;
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut names = Vec::new();
            let mut folders = vec![start];
            while let Some(folder) = folders.pop() {
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
                    Err(e) => return Err(storage(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(storage)?;
                    let path = entry.path();
                    if entry.file_type().map_err(storage)?.is_dir() {
                        folders.push(path);
                    } else if let Some(name) = path.strip_prefix(&root).ok().and_then(Path::to_str) {
                        names.push(name.to_owned());
                    }
                }
            }
            names.sort();
            Ok(names)
        })
        .await
        .map_err(storage)?
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError> {
        let path = self.inner.path(name)?;
        match tokio::fs::read(&path).await {
            Ok(body) => Ok(Some(Bytes::from(body))),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(dir: &Path) -> LocalArchive {
        LocalArchive::open(dir, true).expect("opens")
    }

    #[tokio::test]
    async fn an_object_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = archive(dir.path());
        let name = "events/2026/11/28/o-1/e-1.json";
        archive.put_once(name, Bytes::from_static(b"first"), "application/json").await.expect("written");
        archive.put_once(name, Bytes::from_static(b"second"), "application/json").await.expect("already there");
        assert_eq!(archive.get(name).await.expect("reads").as_deref(), Some(&b"first"[..]), "create-only");
        assert_eq!(archive.get("events/none.json").await.expect("reads"), None);
        let staged: Vec<_> = std::fs::read_dir(dir.path().join(STAGING)).expect("staging").collect();
        assert!(staged.is_empty(), "no staging file is left: {staged:?}");
    }

    #[tokio::test]
    async fn a_batch_lists_in_name_order_under_its_prefix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = archive(dir.path());
        let writes = ["events/b/2.json", "events/a/1.json", "other/x.json", "events/b/1.json"]
            .map(|n| (n.to_owned(), Bytes::from_static(b"{}"), "application/json".to_owned()));
        archive.put_all(writes.to_vec()).await.expect("written");
        let listed = archive.list("events/").await.expect("lists");
        assert_eq!(listed, ["events/a/1.json", "events/b/1.json", "events/b/2.json"]);
        assert!(archive.list("none").await.expect("lists").is_empty());
    }

    #[tokio::test]
    async fn bad_names_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = archive(dir.path());
        for name in ["", "events/../x", "/abs", ".staging/1-0", "a//b"] {
            let put = archive.put_once(name, Bytes::from_static(b"x"), "text/plain").await;
            assert!(matches!(put, Err(ArchiveError::Name(_))), "{name:?}: {put:?}");
        }
        let good = (String::from("ok.json"), Bytes::new(), String::new());
        let bad = (String::from("a/../b"), Bytes::new(), String::new());
        assert!(archive.put_all(vec![good, bad]).await.is_err());
        assert_eq!(archive.get("ok.json").await.expect("reads"), None, "a batch with a bad name writes nothing");
    }

    #[tokio::test]
    async fn a_batch_that_fails_half_way_leaves_no_staging_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = archive(dir.path());
        archive.put_once("a", Bytes::from_static(b"a file"), "text/plain").await.expect("written");
        // The first object is moved into place; the second cannot be (its folder is a file),
        // and the third is never tried.
        let writes = ["b.json", "a/x.json", "c.json"]
            .map(|n| (n.to_owned(), Bytes::from_static(b"{}"), "application/json".to_owned()));
        let put = archive.put_all(writes.to_vec()).await;
        assert!(matches!(put, Err(ArchiveError::Refused(_))), "{put:?}");
        assert_eq!(archive.get("b.json").await.expect("reads").as_deref(), Some(&b"{}"[..]));
        assert_eq!(archive.get("c.json").await.expect("reads"), None);
        let staged: Vec<_> = std::fs::read_dir(dir.path().join(STAGING)).expect("staging").collect();
        assert!(staged.is_empty(), "no staging file is left: {staged:?}");
    }

    /// A file someone else left in staging under the name this archive would stage to next
    /// (another process, an older host's crash) is neither overwritten nor cleaned up:
    /// a batch removes only the files it staged itself.
    #[tokio::test]
    async fn a_batch_removes_only_the_staging_files_it_wrote() {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = archive(dir.path());
        let folder = &archive.inner;
        let next = |n: u64| dir.path().join(STAGING).join(format!("{}-{:x}-{n}", std::process::id(), folder.instance));
        // The batch's second object would be staged here.
        std::fs::write(next(1), b"not yours").expect("planted");
        let writes =
            ["one.json", "two.json"].map(|n| (n.to_owned(), Bytes::from_static(b"{}"), "application/json".to_owned()));
        let put = archive.put_all(writes.to_vec()).await;
        assert!(matches!(put, Err(ArchiveError::Storage(_))), "{put:?}");
        assert_eq!(std::fs::read(next(1)).expect("still there"), b"not yours");
        assert!(!next(0).exists(), "its own staged file is removed");
        assert_eq!(archive.get("one.json").await.expect("reads"), None, "nothing placed");
        assert_eq!(archive.get("two.json").await.expect("reads"), None);
    }
}
