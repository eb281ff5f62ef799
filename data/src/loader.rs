//! The parallel data loader: turns a [`Dataset`] into a stream of [`Batch`]es, one epoch at
//! a time.
//!
//! ```no_run
//! use std::sync::Arc;
//! use focal_data::{Loader, LoaderConfig, ShapesConfig, ShapesDataset, Split};
//!
//! let train = ShapesDataset::new(ShapesConfig::new(Split::Train, 2000, 0))?;
//! let loader = Loader::new(Arc::new(train), LoaderConfig::train(4, 256, 256, 0))?;
//! for epoch in 0..10 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?; // batch.images: (N, 3, H, W); batch.targets: boxes, labels, ...
//!     }
//! }
//! # Ok::<(), focal_data::Error>(())
//! ```
//!
//! ## How it works
//! [`Loader::epoch`] starts a background thread that walks the epoch's image order batch by
//! batch. For each batch it decodes and transforms the images in parallel (rayon, in a
//! pool as large as the one `epoch` was called from), collates them, and puts the batch in
//! a queue of `prefetch` places. When the queue is full the thread waits, so at most
//! `prefetch` batches wait in the queue, one more is being built, and memory stays bounded
//! however slow the consumer is. Queued batches are plain vectors; a batch's pixels become
//! a tensor (counted by `focal_engine::live_bytes`) when the consumer takes it. Dropping the [`Epoch`] early stops the thread.
//!
//! ## Determinism
//! Nothing depends on timing or on the number of threads:
//! - the order of epoch `e` is `0..len` shuffled by `Rng::derive(seed, [ORDER, e])` (or
//!   left as is without `shuffle`);
//! - whether image `i` is flipped in epoch `e` is drawn from its own generator
//!   `Rng::derive(seed, [FLIP, e, i])`, whichever thread processes it;
//! - with several `min_sizes` (multi-scale training), batch `b` of epoch `e` is resized
//!   to the one drawn from `Rng::derive(seed, [SCALE, e, b])` ([`Loader::batch_min_size`]);
//! - images are put into their batch in the epoch's order.
//!
//! So the same seed and epoch give bitwise the same batches on 1 thread or 16.
//!
//! ## Errors
//! A failing image ends the epoch: the iterator yields the error (naming the files) and
//! then stops. Images that a dataset skips (COCO with `skip_bad_images`) are left out of
//! their batch, so such a batch is smaller, and a batch left empty is not yielded.

use std::collections::BTreeSet;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use focal_engine::Rng;
use rayon::prelude::*;

use crate::batch::{collate_raw, collate_raw_to, padded_size, Batch, RawBatch};
use crate::dataset::Dataset;
use crate::decode_budget::{worst_case_decode_bytes, DecodeBudget};
use crate::error::{Error, Result};
use crate::transforms::{resized_size, transform};

/// `range(b, n)`: the positions, within batch `b` of `n` images, that one process of a
/// distributed run loads.
pub type PartRange = Arc<dyn Fn(usize, usize) -> std::ops::Range<usize> + Send + Sync>;

/// Which images of each batch one process of a distributed run loads
/// ([`Loader::epoch_part`]).
#[derive(Clone)]
pub struct BatchPart {
    /// The positions of each batch that are this process's.
    pub range: PartRange,
    /// Images left out of every batch, the same on every process (those the check before
    /// training found bad): a batch is cut and padded as if they were not in it, as one
    /// process does when its dataset skips them.
    pub left_out: Arc<BTreeSet<usize>>,
}

/// Stream keys for [`Rng::derive`], so the order and the flips never share a stream.
const ORDER_KEY: u64 = 0x4f_5244_4552; // "ORDER"
const FLIP_KEY: u64 = 0x464c_4950; // "FLIP"
const SCALE_KEY: u64 = 0x53_4341_4c45; // "SCALE"

/// How to batch a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Images per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Visit the images in a new random order every epoch.
    pub shuffle: bool,
    /// Flip each image left-right with probability 0.5 (training augmentation).
    pub flip: bool,
    /// Resize so the short side is `min_size` ...
    pub min_size: usize,
    /// ... or, when not empty, one of these, drawn for each batch (multi-scale training,
    /// as detectron2's `ResizeShortestEdge` with its "choice" style and torchvision's
    /// detection references do it; see [`Loader::batch_min_size`]).
    pub min_sizes: Vec<usize>,
    /// ... unless the long side would then exceed `max_size`.
    pub max_size: usize,
    /// Fixes the order and the flips of every epoch.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (the queue's length).
    pub prefetch: usize,
    /// Leave out the last batch of an epoch when it is smaller than `batch_size`.
    pub drop_last: bool,
}

impl LoaderConfig {
    /// For training: shuffled, flipped, 2 batches of prefetch, last partial batch kept.
    pub fn train(batch_size: usize, min_size: usize, max_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            flip: true,
            min_size,
            min_sizes: Vec::new(),
            max_size,
            seed,
            prefetch: 2,
            drop_last: false,
        }
    }

    /// For evaluation and inference: dataset order, no flips, every image once.
    pub fn eval(batch_size: usize, min_size: usize, max_size: usize) -> LoaderConfig {
        LoaderConfig {
            shuffle: false,
            flip: false,
            ..LoaderConfig::train(batch_size, min_size, max_size, 0)
        }
    }
}

/// Batches a dataset; see the module documentation.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
}

impl Loader {
    /// Checks the configuration (sizes and batch size at least 1).
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::new("loader: batch_size must be at least 1"));
        }
        if config.min_size == 0 || config.max_size == 0 || config.min_sizes.contains(&0) {
            return Err(Error::new(format!(
                "loader: min_size and max_size must be at least 1 (got {} and {})",
                config.min_size, config.max_size
            )));
        }
        Ok(Loader { dataset, config })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches in one epoch (fewer when a dataset skips unreadable images that leave a
    /// batch empty).
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.dataset.len();
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    /// Images in batch `b` of an epoch (the last one may be smaller), skipped images
    /// counted.
    pub fn batch_len(&self, b: usize) -> usize {
        let bs = self.config.batch_size;
        self.dataset.len().saturating_sub(b * bs).min(bs)
    }

    /// The dataset indices of epoch `epoch`, in visiting order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            Rng::derive(self.config.seed, &[ORDER_KEY, epoch]).shuffle(&mut order);
        }
        order
    }

    /// Whether image `index` is flipped in epoch `epoch`.
    pub fn flips(&self, epoch: u64, index: usize) -> bool {
        self.config.flip
            && Rng::derive(self.config.seed, &[FLIP_KEY, epoch, index as u64]).bernoulli(0.5)
    }

    /// The short side batch `batch` of epoch `epoch` is resized to: `min_size`, or with
    /// several `min_sizes` the one drawn from `Rng::derive(seed, [SCALE, epoch, batch])`,
    /// uniformly. It depends on nothing else, so a resumed run draws the same sizes.
    pub fn batch_min_size(&self, epoch: u64, batch: usize) -> usize {
        match self.config.min_sizes.len() {
            0 => self.config.min_size,
            n => {
                let mut rng = Rng::derive(self.config.seed, &[SCALE_KEY, epoch, batch as u64]);
                self.config.min_sizes[rng.below(n)]
            }
        }
    }

    /// Loads, transforms and collates the images `indices` (as in epoch `epoch`, which
    /// fixes the flips) on the calling thread's rayon pool, at `min_size`. `Ok(None)` when
    /// the dataset skipped all of them. The first failing image (in `indices` order) is
    /// the error.
    pub fn load_batch(&self, epoch: u64, indices: &[usize]) -> Result<Option<Batch>> {
        let min_size = self.config.min_size;
        Ok(self
            .load_raw(epoch, indices, min_size)?
            .map(RawBatch::into_batch))
    }

    /// [`Loader::load_batch`] at `min_size`, without making the tensor.
    fn load_raw(&self, epoch: u64, indices: &[usize], min_size: usize) -> Result<Option<RawBatch>> {
        let kept = self.load_transformed(epoch, indices, min_size)?;
        Ok((!kept.is_empty()).then(|| collate_raw(kept)))
    }

    /// The images `indices` decoded and transformed at `min_size` (those the dataset
    /// skipped left out).
    fn load_transformed(
        &self,
        epoch: u64,
        indices: &[usize],
        min_size: usize,
    ) -> Result<Vec<(usize, crate::transforms::Transformed)>> {
        let max_size = self.config.max_size;
        let items: Vec<Result<Option<_>>> = indices
            .par_iter()
            .map(|&i| {
                // The decoded pixels count against the process's decoding budget until
                // they are resized (see decode_budget): huge images wait their turn
                // instead of being decoded on every thread at once.
                let (w, h) = self.dataset.image_size(i);
                let _pixels = DecodeBudget::global().reserve(worst_case_decode_bytes(w, h));
                let sample = self.dataset.load(i)?;
                Ok(sample.map(|s| (i, transform(s, min_size, max_size, self.flips(epoch, i)))))
            })
            .collect();
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            if let Some(t) = item? {
                kept.push(t);
            }
        }
        Ok(kept)
    }

    /// `(H, W)` of the batch of images `indices`, from the sizes the dataset knows without
    /// decoding ([`Dataset::image_size`]): the size [`collate`](crate::batch::collate)
    /// pads them at `min_size` ([`Loader::batch_min_size`]) to when none is skipped.
    pub fn padded_size(&self, indices: &[usize], min_size: usize) -> (usize, usize) {
        let max_size = self.config.max_size;
        padded_size(indices.iter().map(|&i| {
            let (w, h) = self.dataset.image_size(i);
            let (rw, rh) = resized_size(w, h, min_size, max_size);
            (rh, rw)
        }))
    }

    /// The batches of epoch `epoch`, prepared in the background (see the module docs).
    ///
    /// Decoding runs in a private rayon pool with as many threads as the pool this is
    /// called from (the global pool, or the one of `threads::with_threads`).
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.start_epoch(epoch, None)
    }

    /// The batches of epoch `epoch` as one process of a distributed run sees them: batch
    /// `b` without the images `part.left_out` holds is the batch of `n` images, of which
    /// only those at `(part.range)(b, n)` (a range of positions) are loaded, padded to the
    /// size of the whole batch ([`Loader::padded_size`]); [`Batch::whole_len`] is `n`.
    /// Every batch of the epoch is yielded, in order, even when this process's part of it
    /// is empty (a `(0, 3, H, W)` batch), so that every process takes part in every step
    /// — except a batch whose every image is left out, which no process sees (as one
    /// process never sees it). An image the dataset skips only when it is loaded is left
    /// out of its part; the batch is still padded to the size of all its images.
    pub fn epoch_part(&self, epoch: u64, part: BatchPart) -> Epoch {
        self.start_epoch(epoch, Some(part))
    }

    fn start_epoch(&self, epoch: u64, part: Option<BatchPart>) -> Epoch {
        let threads = rayon::current_num_threads();
        let order = self.order(epoch);
        let (tx, rx) = sync_channel(self.config.prefetch);
        let me = Loader {
            dataset: Arc::clone(&self.dataset),
            config: self.config.clone(),
        };
        let worker = std::thread::Builder::new()
            .name(format!("focal-loader-epoch-{epoch}"))
            .spawn(move || {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(pool) => pool,
                    Err(e) => {
                        let _ = tx.send(Err(Error::new(format!(
                            "loader: cannot start {threads} threads: {e}"
                        ))));
                        return;
                    }
                };
                let bs = me.config.batch_size;
                for (b, chunk) in order.chunks(bs).enumerate() {
                    if me.config.drop_last && chunk.len() < bs {
                        break;
                    }
                    let min_size = me.batch_min_size(epoch, b);
                    let result = match &part {
                        None => pool.install(|| me.load_raw(epoch, chunk, min_size)),
                        Some(part) => {
                            let kept: Vec<usize> = chunk
                                .iter()
                                .copied()
                                .filter(|i| !part.left_out.contains(i))
                                .collect();
                            if kept.is_empty() {
                                continue;
                            }
                            let range = (part.range)(b, kept.len());
                            let size = me.padded_size(&kept, min_size);
                            pool.install(|| me.load_transformed(epoch, &kept[range], min_size))
                                .map(|items| Some(collate_raw_to(items, size, kept.len())))
                        }
                    };
                    let failed = result.is_err();
                    let message = match result {
                        Ok(None) => continue,
                        Ok(Some(batch)) => Ok(batch),
                        Err(e) => Err(e),
                    };
                    // A send fails only when the consumer dropped the Epoch: stop.
                    if tx.send(message).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the loader thread");
        Epoch {
            receiver: Some(rx),
            worker: Some(worker),
        }
    }
}

/// The batches of one epoch, in order; an iterator of `Result<Batch>`. Dropping it stops
/// the background thread.
pub struct Epoch {
    receiver: Option<Receiver<Result<RawBatch>>>,
    worker: Option<JoinHandle<()>>,
}

impl Epoch {
    /// Waits for the background thread; re-raises its panic if it had one, so that a bug
    /// in a dataset never looks like a short epoch.
    fn finish(&mut self) {
        self.receiver = None;
        if let Some(worker) = self.worker.take() {
            if let Err(panic) = worker.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let received = self.receiver.as_ref()?.recv();
        match received {
            // The pixels become a tensor (and count as tensor memory) only now.
            Ok(item) => Some(item.map(RawBatch::into_batch)),
            Err(_) => {
                // The thread finished (or died): the epoch is over.
                self.finish();
                None
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.finish();
    }
}
