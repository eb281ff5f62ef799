//! The forward and backward pass of a training step, in one piece or cut into shards.
//!
//! With `shards = 1` (the default) [`sharded_pass`] is the plain pass: targets, forward,
//! loss and backward of the whole batch on the calling thread. With more shards it is
//! data parallelism inside one optimiser step.
//!
//! On small images most of a step is made of small kernels (a 2 × 2 C5 map, a 1 × 1 P7
//! map) that are not worth splitting across threads, so one forward/backward pass keeps
//! only one core busy for much of its time. Here the batch is cut instead into `shards`
//! consecutive parts; each part's forward and backward pass runs on a thread of its own,
//! with its own tape (the tape is thread-local), and the parts' gradients are added up.
//!
//! ## Why the sum is the gradient of the whole batch
//! The RetinaNet loss of a batch is a sum over its anchors divided by the batch's number
//! of positive anchors `P` (see [`crate::loss`]). Each shard computes its own anchors'
//! part of that sum divided by the *whole batch's* `P`
//! ([`retinanet_loss_normalised_by`]), so the shards' losses add up to the batch loss and,
//! by linearity, their gradients add up to its gradient. GroupNorm and frozen BatchNorm
//! treat every image on its own, so the split changes nothing else. Trainable BatchNorm
//! normalises each shard by the shard's own statistics (as PyTorch's
//! DistributedDataParallel does without SyncBatchNorm), and the running statistics are
//! those of the first shard (as DDP broadcasts rank 0's buffers).
//!
//! ## Determinism
//! The cut depends only on the batch size and `shards`, each shard's kernels give the same
//! bits on any number of threads, and the shards' gradients (and losses) are added in one
//! fixed tree over the shards ([`pairwise_sum`]: neighbours in pairs, level by level). So
//! a run gives identical results whatever `--threads` is; changing `shards` changes the
//! order of some additions, so its results agree with an unsharded run only to rounding.
//!
//! ## Several processes
//! [`distributed_pass`] is the same pass shared by the N ranks of a [`Comm`] (MPI
//! processes, usually on N machines): the `shards` slots of a batch are split across the
//! ranks in order (rank r runs slots `r·S/N .. (r+1)·S/N`, [`rank_slots`]) and each rank
//! has loaded only the images of its slots. The positive anchors of the whole batch are
//! counted first (an exact integer sum over ranks), every rank runs its shards as above
//! and adds their gradients with the tree, and then the ranks' sums are added with the
//! same tree across ranks ([`Comm::sum_in_rank_order`]). When each rank runs a power of
//! two of shards (1, 2, 4, …; any number of ranks), those are exactly the additions of
//! one process running all S shards ([`crate::train::comm::pairwise_tree`] says why): the
//! losses and gradients, and hence the whole run, are the same bits as
//! `focal train --shards S` in one process.

use std::ops::Range;

use focal_engine::{backward, clear_tape, Gradients, Tensor};
use focal_nn::{for_each_named, Slot};

use super::comm::{pairwise_sum, sum_counts, Comm};
use crate::error::Error;
use crate::loss::retinanet_loss_normalised_by;
use crate::model::RetinaNet;
use crate::targets::{BatchTargets, GroundTruth};

/// The result of one sharded forward/backward pass over a batch.
pub struct ShardedPass {
    /// Classification loss of the whole batch (the shards' parts added up).
    pub classification: f32,
    /// Box-regression loss of the whole batch.
    pub box_regression: f32,
    /// Positive anchors in the batch.
    pub num_positive: usize,
    /// Images in the batch (on every rank, for a distributed pass).
    pub images: usize,
    /// The gradient of `classification + box_regression`; empty when the loss is not
    /// finite (no backward pass is run then).
    pub grads: Gradients,
}

impl ShardedPass {
    /// `classification + box_regression`.
    pub fn loss(&self) -> f32 {
        self.classification + self.box_regression
    }
}

/// The image ranges of the shards of a batch of `n`: `shards` consecutive parts whose sizes
/// differ by at most one (fewer parts when the batch has fewer images).
pub fn shard_ranges(n: usize, shards: usize) -> Vec<std::ops::Range<usize>> {
    let s = shards.clamp(1, n.max(1));
    (0..s).map(|i| (i * n / s)..((i + 1) * n / s)).collect()
}

/// Which of a batch's `shards` slots rank `rank` of `size` runs: consecutive slots,
/// `rank·S/N .. (rank+1)·S/N`.
pub fn rank_slots(shards: usize, rank: usize, size: usize) -> Range<usize> {
    (rank * shards / size)..((rank + 1) * shards / size)
}

/// The images (positions in a batch of `n`) that rank `rank` of `size` loads: those of
/// its slots ([`rank_slots`]) of the batch's [`shard_ranges`]. Empty (at `n`) when its
/// slots hold no image (a batch with fewer images than shards).
pub fn rank_images(n: usize, shards: usize, rank: usize, size: usize) -> Range<usize> {
    let ranges = shard_ranges(n, shards);
    let slots = rank_slots(shards, rank, size);
    let (lo, hi) = (slots.start.min(ranges.len()), slots.end.min(ranges.len()));
    if lo == hi {
        return n..n;
    }
    ranges[lo].start..ranges[hi - 1].end
}

/// What one shard's forward and backward pass gives.
struct ShardOut {
    classification: f32,
    box_regression: f32,
    grads: Gradients,
}

/// Forward and backward pass of `model` on `images` (N, 3, H, W) with `ground_truth`,
/// cut into `shards` parts run concurrently (see the module docs); with one shard, the
/// whole batch in one pass on the calling thread. The trainer's only path to gradients in
/// one process.
pub fn sharded_pass(
    model: &mut RetinaNet,
    images: &Tensor,
    ground_truth: &[GroundTruth],
    shards: usize,
) -> Result<ShardedPass, Error> {
    let n = images.dim(0);
    // The targets of the whole batch first: their positive count normalises every shard.
    let targets = model.targets(images, ground_truth)?;
    let batch_positives = targets.num_positive();
    let ranges = shard_ranges(n, shards);
    let outs = run_shards(model, images, targets, &ranges, batch_positives);
    let merged = merge_shards(outs.into_iter().map(Some).collect());
    let (classification, box_regression, grads) = merged.unwrap_or_default();
    Ok(ShardedPass {
        classification,
        box_regression,
        num_positive: batch_positives,
        images: n,
        grads: if (classification + box_regression).is_finite() {
            grads
        } else {
            Gradients::default()
        },
    })
}

/// The forward and backward pass of a batch shared by the ranks of `comm` (see the
/// module docs): `images` and `ground_truth` are this rank's part of a batch of
/// `batch_len` images cut into `shards` slots — the images [`rank_images`] gives, padded
/// to the whole batch's size. Every rank returns the same losses and gradient, those of
/// the whole batch. Collective: every rank calls it for every batch, even with no image.
pub fn distributed_pass(
    comm: &dyn Comm,
    model: &mut RetinaNet,
    images: &Tensor,
    ground_truth: &[GroundTruth],
    batch_len: usize,
    shards: usize,
) -> Result<ShardedPass, Error> {
    let (rank, size) = (comm.rank(), comm.size());
    let n = images.dim(0);
    let targets = if n > 0 {
        Some(model.targets(images, ground_truth)?)
    } else {
        None
    };
    let local_positives = targets.as_ref().map_or(0, |t| t.num_positive());
    // The whole batch's images and positive anchors (integers: exact in any order).
    let totals = sum_counts(comm, &[n as u64, local_positives as u64])?;
    let (batch_images, batch_positives) = (totals[0] as usize, totals[1] as usize);

    // This rank's slots, as ranges of its own images. A dataset that skipped an image
    // leaves fewer images than the slots hold: they are then cut evenly over the slots.
    let all = shard_ranges(batch_len, shards);
    let slots = rank_slots(shards, rank, size);
    let (lo, hi) = (slots.start.min(all.len()), slots.end.min(all.len()));
    let offset = all.get(lo).map_or(0, |r| r.start);
    let mut mine: Vec<Range<usize>> = all[lo..hi]
        .iter()
        .map(|r| r.start - offset..r.end - offset)
        .collect();
    if mine.last().map_or(0, |r| r.end) != n {
        mine = if n == 0 {
            Vec::new()
        } else {
            shard_ranges(n, (hi - lo).max(1))
        };
    }
    let mut outs: Vec<Option<ShardOut>> = match targets {
        Some(t) => run_shards(model, images, t, &mine, batch_positives)
            .into_iter()
            .map(Some)
            .collect(),
        _ => Vec::new(),
    };
    // Empty slots (trailing) add nothing.
    outs.resize_with(slots.len().max(outs.len()), || None);
    let local = merge_shards(outs);

    // Across ranks: one buffer [classification, box, presence per parameter, gradients]
    // summed with the same tree.
    let layout = GradientLayout::of(model);
    let mut buf = layout.pack(local);
    comm.sum_in_rank_order(&mut buf)?;
    let (classification, box_regression, grads) = layout.unpack(&buf);
    Ok(ShardedPass {
        classification,
        box_regression,
        num_positive: batch_positives,
        images: batch_images,
        grads: if (classification + box_regression).is_finite() {
            grads
        } else {
            Gradients::default()
        },
    })
}

/// Runs the forward and backward pass of each of `ranges` (of `images`, whose targets are
/// `targets`), each on a thread of its own, every loss divided by `batch_positives`.
fn run_shards(
    model: &mut RetinaNet,
    images: &Tensor,
    targets: BatchTargets,
    ranges: &[Range<usize>],
    batch_positives: usize,
) -> Vec<ShardOut> {
    let n = images.dim(0);
    // Each shard's targets: the batch's own when there is one shard (no copy).
    let shard_targets: Vec<BatchTargets> = if ranges.len() == 1 && ranges[0].len() == n {
        vec![targets]
    } else {
        ranges
            .iter()
            .map(|r| BatchTargets {
                images: targets.images[r.clone()].to_vec(),
                num_anchors: targets.num_anchors,
                num_classes: targets.num_classes,
            })
            .collect()
    };

    // One replica per extra shard. Cloning shares the parameters' storage (and their ids,
    // so every shard's gradients are keyed alike); only BatchNorm running statistics, if
    // any, diverge, and the replicas are dropped at the end of the step.
    let mut replicas: Vec<RetinaNet> = (1..ranges.len()).map(|_| model.clone()).collect();
    let loss_config = model.config.loss.clone();

    // Runs on its own thread: its ops are recorded on that thread's tape.
    let run_shard =
        |m: &mut RetinaNet, range: Range<usize>, shard_targets: &BatchTargets| -> ShardOut {
            // One shard is the whole batch: no copy.
            let part = if range.len() == n {
                images.clone()
            } else {
                images.narrow(0, range.start, range.len())
            };
            let out = m.forward(&part);
            let losses = retinanet_loss_normalised_by(
                &loss_config,
                &out.cls_logits,
                &out.box_deltas,
                shard_targets,
                batch_positives,
            );
            drop(out);
            let (cls, boxl) = (losses.classification.item(), losses.box_regression.item());
            let grads = if (cls + boxl).is_finite() {
                backward(&losses.total())
            } else {
                clear_tape();
                Gradients::default()
            };
            ShardOut {
                classification: cls,
                box_regression: boxl,
                grads,
            }
        };

    // Dedicated threads (not rayon tasks), so that no shard's recording can be interleaved
    // with another's on one thread's tape; their kernels still share rayon's pool. The
    // first shard runs on the calling thread.
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for ((replica, range), t) in replicas
            .iter_mut()
            .zip(ranges[1..].iter().cloned())
            .zip(&shard_targets[1..])
        {
            let run_shard = &run_shard;
            handles.push(scope.spawn(move || run_shard(replica, range, t)));
        }
        let mut results = vec![run_shard(model, ranges[0].clone(), &shard_targets[0])];
        for h in handles {
            results.push(h.join().expect("a shard of the training step panicked"));
        }
        results
    })
}

/// The shards' losses and gradients added with the fixed tree ([`pairwise_sum`]); `None`
/// terms (empty slots) add nothing.
fn merge_shards(outs: Vec<Option<ShardOut>>) -> Option<(f32, f32, Gradients)> {
    pairwise_sum(
        outs.into_iter()
            .map(|o| o.map(|o| (o.classification, o.box_regression, o.grads)))
            .collect(),
        |a, b| {
            a.0 += b.0;
            a.1 += b.1;
            a.2.merge(b.2);
        },
    )
}

/// How a pass's losses and gradients are laid out in the one buffer the ranks sum:
/// `[classification, box, presence of each parameter's gradient, each gradient]`, the
/// trainable parameters in the model's visiting order (the same on every rank). A
/// parameter without a gradient on a rank contributes `-0.0`s, which add nothing (`x +
/// -0.0 = x` for every `x`), and presence 0; after the sum it has a gradient if any rank
/// had one, as in one process where a shard without it merges as nothing.
struct GradientLayout {
    /// (id, number of values) of each trainable parameter, in visiting order.
    params: Vec<(focal_engine::ParamId, Vec<usize>)>,
}

impl GradientLayout {
    fn of(model: &mut RetinaNet) -> GradientLayout {
        let mut params = Vec::new();
        for_each_named(model, |_, slot| {
            if let Slot::Param(p) = slot {
                if !p.frozen {
                    params.push((p.id, p.shape().to_vec()));
                }
            }
        });
        GradientLayout { params }
    }

    fn pack(&self, local: Option<(f32, f32, Gradients)>) -> Vec<f32> {
        let values: usize = self
            .params
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        let mut buf = Vec::with_capacity(2 + self.params.len() + values);
        // A rank without images adds nothing: -0.0 is the identity of IEEE addition.
        let (cls, boxl, grads) = local.unwrap_or((-0.0, -0.0, Gradients::default()));
        buf.extend([cls, boxl]);
        buf.extend(self.params.iter().map(
            |(id, _)| {
                if grads.get(*id).is_some() {
                    1.0
                } else {
                    0.0
                }
            },
        ));
        for (id, shape) in &self.params {
            match grads.get(*id) {
                Some(g) => buf.extend_from_slice(g.data()),
                None => buf.extend(std::iter::repeat_n(-0.0f32, shape.iter().product())),
            }
        }
        buf
    }

    fn unpack(&self, buf: &[f32]) -> (f32, f32, Gradients) {
        let presence = &buf[2..2 + self.params.len()];
        let mut at = 2 + self.params.len();
        let mut grads = Gradients::default();
        for ((id, shape), &present) in self.params.iter().zip(presence) {
            let len: usize = shape.iter().product();
            if present > 0.0 {
                grads.insert(*id, Tensor::from_vec(shape, buf[at..at + len].to_vec()));
            }
            at += len;
        }
        (buf[0], buf[1], grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(8, 2), vec![0..4, 4..8]);
        assert_eq!(shard_ranges(5, 2), vec![0..2, 2..5]);
        assert_eq!(shard_ranges(3, 4), vec![0..1, 1..2, 2..3]);
        assert_eq!(shard_ranges(7, 1), vec![0..7]);
    }
}
