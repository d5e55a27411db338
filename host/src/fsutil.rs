//! Writing files so that a reader (another process, a watcher, the next start) never sees
//! half of one and a crash never leaves a torn one: write a temporary file beside the
//! target, flush it to disk, rename it over the target, then flush the folder.

use std::path::Path;

/// Write `bytes` to `target` atomically and durably.
pub async fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = target.to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || write_atomically_blocking(&target, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// [`write_atomically`] for code that is not async.
pub fn write_atomically_blocking(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new().prefix(".").suffix(".tmp").tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(target).map_err(|e| e.error)?;
    // The rename is durable only once the folder's entry is on disk too.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("a.wasm");
        write_atomically_blocking(&target, b"one").expect("first write");
        write_atomically_blocking(&target, b"two").expect("second write");
        assert_eq!(std::fs::read(&target).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }
}
