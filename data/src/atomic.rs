//! Atomic file writes: the bytes go to a temporary file in the destination's folder,
//! which is then renamed over the destination. A reader sees either the old file or the
//! complete new one, never a half-written one, even when the writing process dies.
//! (The data is not forced to the disk with `fsync`: protecting against a power cut is
//! not worth the time it costs per file when thousands of images are written.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::in_file(path, format!("cannot write the file: {e}"))
    })
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
