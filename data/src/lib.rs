//! # focal-data
//!
//! Everything between files on disk and the tensors RetinaNet trains on, and back:
//! COCO files, the built-in synthetic "shapes" dataset, transforms, batching, the parallel
//! loader, and the COCO evaluator with its results files.

pub mod coco_format;
pub mod cocoeval;
pub mod error;
pub mod results;

pub use cocoeval::{evaluate, EvalResult};
pub use error::{Error, Result};
pub use results::Detection;

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
