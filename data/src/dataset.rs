//! What every dataset gives the loader: a number of images, each loaded on demand as a
//! [`Sample`] (RGB pixels plus training boxes and labels), the list of categories, and the
//! ground truth as a COCO file for the evaluator.
//!
//! Two datasets implement [`Dataset`]: [`crate::coco::CocoDataset`] (a COCO annotation
//! file plus an images folder) and [`crate::synth::ShapesDataset`] (the synthetic shapes,
//! generated in memory). The [`crate::loader::Loader`] takes either as an
//! `Arc<dyn Dataset>`.

use crate::check::ImageProblem;
use crate::coco_format::CocoFile;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::image_io::RgbImage;

/// One category. Its label — the index of the classifier's output channel — is its
/// position in [`Dataset::categories`]; `id` is the category id written in COCO files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    pub id: i64,
    pub name: String,
}

/// The training boxes (`[x1, y1, x2, y2]`) and labels of one image, as in [`Sample`].
pub type Targets = (Vec<[f32; 4]>, Vec<usize>);

/// One image with its training targets, in the image's own pixel coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: RgbImage,
    /// Boxes `[x1, y1, x2, y2]` in pixels of `image` (x2 = x + w, no +1), each inside
    /// the image with width and height >= 1. Crowd regions are not here.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous labels `0..K`, one per box (index into [`Dataset::categories`]).
    pub labels: Vec<usize>,
    /// The COCO image id.
    pub image_id: i64,
}

/// A source of training or evaluation images.
///
/// `load` is called from several threads at once (hence `Sync`), and must return the same
/// sample for the same index every time: all randomness (shuffling, flips) lives in the
/// loader.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads image `index` (0-based, `< len()`) with its targets.
    ///
    /// `Ok(None)` means the image could not be read and the dataset was told to skip such
    /// images; the dataset has already reported and counted it, and the loader leaves it
    /// out of its batch.
    fn load(&self, index: usize) -> Result<Option<Sample>>;

    /// The training boxes and labels of image `index`, exactly as [`Dataset::load`] gives
    /// them, without its pixels where the dataset can (both datasets here can; the
    /// default loads the image). `Ok(None)` as for `load`. For statistics over a dataset,
    /// such as the class imbalance of `focal_retinanet::imbalance`.
    fn targets(&self, index: usize) -> Result<Option<Targets>> {
        Ok(self.load(index)?.map(|s| (s.boxes, s.labels)))
    }

    /// The categories in label order (ascending COCO category id).
    fn categories(&self) -> &[Category];

    /// The COCO image id of image `index`.
    fn image_id(&self, index: usize) -> i64;

    /// `(width, height)` of image `index`, known without decoding it.
    fn image_size(&self, index: usize) -> (u32, u32);

    /// The ground truth in COCO form (crowd regions included), as the evaluator wants it.
    fn ground_truth(&self) -> CocoFile;

    /// A one-line description for logs, e.g. "COCO instances_val2017.json: 50 images, …".
    fn describe(&self) -> String;

    /// Number of categories K.
    fn num_classes(&self) -> usize {
        self.categories().len()
    }

    /// The COCO category id of contiguous label `label`.
    fn category_id(&self, label: usize) -> i64 {
        self.categories()[label].id
    }

    /// Checks every image the way [`Dataset::load`] will read it, without decoding its
    /// pixels (see [`crate::check`]), calling `tick` once per image checked (from several
    /// threads); returns the problems in index order. A dataset drawn in memory has
    /// nothing to check.
    fn check_images(&self, _tick: &(dyn Fn() + Sync)) -> Vec<ImageProblem> {
        Vec::new()
    }

    /// Leaves these images out from now on: [`Dataset::load`] gives `Ok(None)` for them
    /// and [`Dataset::ground_truth`] drops them.
    fn leave_out(&self, _problems: &[ImageProblem]) {}

    /// What a resumed run compares to notice a changed dataset ([`crate::fingerprint`]).
    /// By default: [`Dataset::describe`] and the ground truth.
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.describe(), &self.ground_truth())
    }
}
