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
//! bits on any number of threads, and the gradients are merged in shard order. So a run
//! gives identical results whatever `--threads` is; changing `shards` changes the order of
//! some additions, so its results agree with an unsharded run only to rounding.

use focal_engine::{backward, clear_tape, Gradients, Tensor};

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

/// Forward and backward pass of `model` on `images` (N, 3, H, W) with `ground_truth`,
/// cut into `shards` parts run concurrently (see the module docs); with one shard, the
/// whole batch in one pass on the calling thread. The trainer's only path to gradients.
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

    // Each shard's targets: the batch's own when there is one shard (no copy).
    let shard_targets: Vec<BatchTargets> = if ranges.len() == 1 {
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
    let run_shard = |m: &mut RetinaNet,
                     range: std::ops::Range<usize>,
                     shard_targets: &BatchTargets|
     -> (f32, f32, Gradients) {
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
        if !(cls + boxl).is_finite() {
            clear_tape();
            return (cls, boxl, Gradients::default());
        }
        let grads = backward(&losses.total());
        (cls, boxl, grads)
    };

    // Dedicated threads (not rayon tasks), so that no shard's recording can be interleaved
    // with another's on one thread's tape; their kernels still share rayon's pool. The
    // first shard runs on the calling thread.
    let results: Vec<(f32, f32, Gradients)> = std::thread::scope(|scope| {
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
    });

    let mut classification = 0.0f32;
    let mut box_regression = 0.0f32;
    let mut grads: Option<Gradients> = None;
    let mut finite = true;
    for (cls, boxl, g) in results {
        classification += cls;
        box_regression += boxl;
        finite &= (cls + boxl).is_finite();
        match grads.as_mut() {
            None => grads = Some(g),
            Some(acc) => acc.merge(g),
        }
    }
    Ok(ShardedPass {
        classification,
        box_regression,
        num_positive: batch_positives,
        grads: if finite {
            grads.unwrap_or_default()
        } else {
            Gradients::default()
        },
    })
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
