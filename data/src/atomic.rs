//! Atomic file writes for focal-data, through [`focal_engine::write_atomic_unsynced`]
//! (temporary file in the destination's folder, then a rename), with errors naming the file.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    focal_engine::write_atomic_unsynced(path, bytes)
        .map_err(|e| Error::io(path, "write the file", e))
}
