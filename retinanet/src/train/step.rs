//! One optimiser step, the heart of training (the paper's §4.1 "Optimization"):
//!
//! ```text
//!   batch → targets (anchors matched to the boxes) → forward → focal loss + box loss,
//!   both ÷ positive anchors → [stop if the loss is NaN/∞] → backward
//!   → [clip the gradient's global norm] → optimiser update at the scheduled rate
//! ```
//!
//! The forward and backward pass is [`sharded_pass`], in one piece or cut into shards run
//! concurrently, or [`distributed_pass`] when several processes share the batch
//! ([`distributed_optimizer_step`]); everything else here is the same either way, and
//! every process of a distributed run takes the same update from the same gradient. The trainer
//! ([`super::Trainer`]) wraps this with the loader, the schedule, logging, evaluation and
//! checkpoints.

use focal_data::Batch;
use focal_nn::{clip_grad_norm, grad_norm, Optimizer};

use super::comm::Comm;
use super::data_parallel::{distributed_pass, sharded_pass, ShardedPass};
use crate::error::Result;
use crate::model::RetinaNet;
use crate::targets::GroundTruth;

/// The figures of a completed step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    /// The classification (focal) loss, normalised by the positive anchors.
    pub classification: f32,
    /// The box-regression loss, normalised likewise.
    pub box_regression: f32,
    /// `classification + box_regression`, the differentiated scalar.
    pub loss: f32,
    /// Positive anchors in the batch.
    pub num_positive: usize,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f32,
    /// Images in the batch (of every process, in a distributed run).
    pub images: usize,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepOutcome {
    /// The parameters were updated.
    Updated(StepResult),
    /// The loss was NaN or infinite: no backward pass ran and nothing was updated.
    NonFinite {
        classification: f32,
        box_regression: f32,
    },
    /// Distributed runs only: the dataset skipped every image of the batch on every
    /// process (one process never sees such a batch: its loader leaves it out). Nothing
    /// was updated and the step does not count.
    Empty,
}

/// The ground truth of a batch as the detector takes it (boxes in network-input pixels,
/// labels 0..K−1).
pub fn ground_truth(batch: &Batch) -> Vec<GroundTruth> {
    batch
        .targets
        .iter()
        .map(|t| GroundTruth {
            boxes: t.boxes.clone(),
            labels: t.labels.clone(),
        })
        .collect()
}

/// One step on `batch` with learning rate `lr`: the pass cut into `shards` parts (1: one
/// pass), the gradient clipped to a global L2 norm of `clip` (0: never), then one update
/// of `optimizer`.
pub fn optimizer_step(
    model: &mut RetinaNet,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    lr: f32,
    shards: usize,
    clip: f32,
) -> Result<StepOutcome> {
    let pass = sharded_pass(model, &batch.images, &ground_truth(batch), shards)?;
    update(model, optimizer, pass, lr, clip)
}

/// [`optimizer_step`] taken together by the ranks of `comm`: `batch` is this rank's part
/// of a batch of `batch_len` images cut into `shards` slots (possibly no image at all);
/// every rank gets the same outcome and takes the same update. Collective.
#[allow(clippy::too_many_arguments)]
pub fn distributed_optimizer_step(
    comm: &dyn Comm,
    model: &mut RetinaNet,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    batch_len: usize,
    lr: f32,
    shards: usize,
    clip: f32,
) -> Result<StepOutcome> {
    let gt = ground_truth(batch);
    let pass = distributed_pass(comm, model, &batch.images, &gt, batch_len, shards)?;
    if pass.images == 0 {
        return Ok(StepOutcome::Empty);
    }
    update(model, optimizer, pass, lr, clip)
}

/// The rest of a step once the gradient of the whole batch is known: the NaN check,
/// clipping and the update.
fn update(
    model: &mut RetinaNet,
    optimizer: &mut dyn Optimizer,
    pass: ShardedPass,
    lr: f32,
    clip: f32,
) -> Result<StepOutcome> {
    let loss = pass.loss();
    if !loss.is_finite() {
        return Ok(StepOutcome::NonFinite {
            classification: pass.classification,
            box_regression: pass.box_regression,
        });
    }
    let mut grads = pass.grads;
    let norm = if clip > 0.0 {
        clip_grad_norm(model, &mut grads, clip)
    } else {
        grad_norm(model, &grads)
    };
    optimizer.step(model, &grads, lr);
    Ok(StepOutcome::Updated(StepResult {
        classification: pass.classification,
        box_regression: pass.box_regression,
        loss,
        num_positive: pass.num_positive,
        grad_norm: norm,
        images: pass.images,
    }))
}
