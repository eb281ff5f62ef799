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

/// The process id in the name of one of [`write_atomic`]'s temporary files
/// (`.NAME.tmp-PID-N`), or `None` for any other name: how a folder's owner recognises
/// the leftovers of writes that a killed process never finished.
pub fn temp_file_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (name, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if name.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
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

    #[test]
    fn temp_file_names_are_recognised() {
        let dir = std::env::temp_dir();
        let name = temp_path(&dir.join("last.ckpt"));
        let name = name.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_file_pid(name), Some(std::process::id()));
        assert_eq!(temp_file_pid(".last.ckpt.tmp-4242-17"), Some(4242));
        for other in [
            "last.ckpt",
            ".last.ckpt",
            ".last.ckpt.tmp-12",
            ".last.ckpt.tmp-12-x",
            "last.ckpt.tmp-12-3",
            "..tmp-1-2",
            ".notes.tmp-abc-1",
        ] {
            assert_eq!(temp_file_pid(other), None, "{other}");
        }
    }
}
