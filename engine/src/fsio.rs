//! Writing files atomically, for every crate of focal.
//!
//! The bytes go to a temporary file in the same folder, are flushed to disk (`fsync`), and
//! the temporary file is then renamed over the destination. A rename within one folder is
//! atomic on POSIX file systems, so a reader (or a crash at any moment) sees either the old
//! file or the complete new one, never a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
/// On error the temporary file is removed and the destination is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, true)
}

/// As [`write_atomic`] but without the fsync: a reader or a crashed process still never
/// sees a half-written file, only a power cut could lose it. For the thousands of images
/// `focal synth` writes, where the fsync would cost more than the encoding.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, false)
}

/// `.<name>.tmp-<pid>-<n>` beside `path`: unique per process and per call, so parallel
/// writers never share a temporary file.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

fn write(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("focal-fsio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A folder that does not exist: an error, and nothing is created.
        assert!(write_atomic(&dir.join("no/such/dir/b.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
