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
//!
//! ## Using it
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use focal_data::{
//!     CocoDataset, CocoOptions, Dataset, Loader, LoaderConfig, ShapesConfig, ShapesDataset, Split,
//! };
//!
//! // Training data: the synthetic shapes (in memory) or a COCO folder.
//! let train: Arc<dyn Dataset> = Arc::new(ShapesDataset::new(ShapesConfig::new(Split::Train, 2000, 0))?);
//! let val: Arc<dyn Dataset> = Arc::new(CocoDataset::open(
//!     Path::new("coco/annotations/instances_val2017.json"),
//!     Path::new("coco/val2017"),
//! )?);
//! let num_classes = train.num_classes();
//!
//! let loader = Loader::new(train.clone(), LoaderConfig::train(4, 256, 256, 0))?;
//! for epoch in 0..12 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?;
//!         // batch.images: Tensor (N, 3, H, W); batch.targets[i].boxes / .labels
//!     }
//! }
//!
//! // Evaluation: dataset order, no flips; detections go back to original pixels and
//! // COCO category ids.
//! let eval = Loader::new(val.clone(), LoaderConfig::eval(2, 512, 853))?;
//! for batch in eval.epoch(0) {
//!     let batch = batch?;
//!     for t in &batch.targets {
//!         let detection = [10.0, 20.0, 50.0, 60.0]; // in network-input pixels
//!         let _coco_box = t.to_original(detection);
//!         let _category = val.category_id(0);
//!     }
//! }
//! let _ground_truth = val.ground_truth(); // a CocoFile, crowd regions included
//! # Ok::<(), focal_data::Error>(())
//! ```

pub mod atomic;
pub mod batch;
pub mod check;
pub mod coco;
pub mod coco_format;
pub mod cocoeval;
pub mod dataset;
pub mod decode_budget;
pub mod error;
pub mod fingerprint;
pub mod image_io;
pub mod loader;
pub mod results;
pub mod synth;
pub mod transforms;

pub use batch::{Batch, Target};
pub use check::{check_dataset, CheckReport, ImageProblem};
pub use coco::{CocoDataset, CocoOptions, MAX_BOXES_PER_IMAGE};
pub use coco_format::CocoFile;
pub use cocoeval::{evaluate, CocoStats, EvalResult, STAT_NAMES};
pub use dataset::{Category, Dataset, Sample};
pub use decode_budget::DecodeBudget;
pub use error::{Error, Result};
pub use fingerprint::{Fingerprint, Fnv};
pub use image_io::RgbImage;
pub use loader::{BatchPart, Epoch, Loader, LoaderConfig, PartRange};
pub use results::Detection;
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
