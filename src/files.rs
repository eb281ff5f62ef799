//! Writing the files of a run: always atomically (a temporary file in the same folder,
//! then a rename), so an interrupted write never leaves a damaged file behind.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically, with an error naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    focal_engine::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Encodes an RGB image as PNG and writes it atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}
