//! # focal-data
//!
//! Everything between files on disk and the tensors RetinaNet trains on, and back:
//! COCO files, the built-in synthetic "shapes" dataset, transforms, batching, the parallel
//! loader, and the COCO evaluator with its results files.
//!
//! The path of an image through this crate:
//! [`Dataset::load`] (a [`CocoDataset`] decodes a file, a [`ShapesDataset`] draws one) →
//! [`transforms::transform`] (flip, resize, normalise) → [`batch::collate`] (pad to a
//! multiple of 32, stack) → a [`Batch`] from the [`Loader`].

pub mod atomic;
pub mod batch;
pub mod coco;
pub mod coco_format;
pub mod dataset;
pub mod error;
pub mod image_io;
pub mod loader;
pub mod synth;
pub mod transforms;

pub use batch::{Batch, Target};
pub use coco::{CocoDataset, CocoOptions};
pub use coco_format::CocoFile;
pub use dataset::{Category, Dataset, Sample};
pub use error::{Error, Result};
pub use image_io::RgbImage;
pub use loader::{Epoch, Loader, LoaderConfig};
pub use synth::{Shape, ShapesConfig, ShapesDataset, Split};

use std::path::PathBuf;

/// Where the tiny COCO subset lives: `$FOCAL_COCO_TINY`, else `../shared/coco/tiny`
/// beside the workspace root. `None` when neither exists (tests then say so).
pub fn tiny_coco_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FOCAL_COCO_TINY") {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("../shared/coco/tiny");
    p.is_dir().then_some(p)
}
