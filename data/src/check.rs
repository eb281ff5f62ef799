//! The check of a dataset's images before training starts, so that a missing, truncated
//! or mislabelled image is found before step 1, not at step 90 000.
//!
//! Every image is checked the way the loader will read it ([`Dataset::check_images`]; for
//! a COCO dataset, [`crate::CocoDataset`]): the file exists and is a regular file inside
//! the images folder (a symbolic link leading outside it is refused, as a `..` in its
//! name is), its header decodes as JPEG or PNG, its size is the one in the annotation
//! file and within [`crate::image_io::MAX_IMAGE_BYTES`], and the file ends as a complete
//! file of its format does; a file that does not is decoded in full, so that a
//! truncated or corrupt image is reported here too. Pixels are otherwise not decoded,
//! so the check costs a read of each file and a header parse, in parallel.
//!
//! Every bad image is reported at once: [`check_dataset`] either refuses the dataset
//! with the whole list ([`Error::BadImages`]) or, when told to skip bad images, leaves
//! them out ([`Dataset::leave_out`]) and says how many.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::dataset::Dataset;
use crate::error::{Error, Result};

/// One image that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProblem {
    /// Its index in the dataset.
    pub index: usize,
    pub image_id: i64,
    pub path: PathBuf,
    /// What is wrong, as a sentence (the error's whole chain).
    pub problem: String,
}

impl std::fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "image id {}: {}", self.image_id, self.problem)
    }
}

/// What [`check_dataset`] found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Images checked.
    pub checked: usize,
    /// The images left out (only with `skip_bad`), in index order.
    pub left_out: Vec<ImageProblem>,
    pub seconds: f64,
}

/// Checks every image of `dataset` (see the module documentation). With `skip_bad`, the
/// bad images are left out of the dataset and listed in the report; otherwise any bad
/// image makes the whole list an error. `progress(done, total)` is called as images are
/// checked, from several threads.
pub fn check_dataset(
    dataset: &dyn Dataset,
    skip_bad: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<CheckReport> {
    let started = Instant::now();
    let total = dataset.len();
    let done = AtomicUsize::new(0);
    let problems = dataset.check_images(&|| {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        progress(n, total);
    });
    if !problems.is_empty() && !skip_bad {
        return Err(Error::BadImages {
            dataset: dataset.describe(),
            total,
            problems,
        });
    }
    dataset.leave_out(&problems);
    Ok(CheckReport {
        checked: total,
        left_out: problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}
