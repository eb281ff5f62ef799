//! The x_t of every positive and negative (anchor, class) entry of a batch.
//!
//! The anchors are matched to the ground truth exactly as in training
//! ([`crate::targets::assign_targets`] with the model's matcher). For an anchor labelled
//!
//! - **ignored**: no entry (no loss of either kind in training);
//! - **background**: K negatives, x_t = −x_k for every class k;
//! - **class c**: one positive, x_t = x_c, and K − 1 negatives, x_t = −x_k for k ≠ c.
//!
//! (x_t = y±·x, so p_t = σ(x_t): the probability the model gives to the right answer.)

use focal_data::Batch;
use focal_engine::no_grad;

use super::sample::EntrySample;
use crate::error::Error;
use crate::model::RetinaNet;
use crate::targets::{assign_targets, AnchorLabel, BatchTargets, GroundTruth};

/// Adds the entries of `targets` to `positives` and `negatives`. `logits` is the class
/// subnet's output for the same batch, row-major (N, A_total, K).
pub fn collect_entries(
    targets: &BatchTargets,
    logits: &[f32],
    positives: &mut EntrySample,
    negatives: &mut EntrySample,
) {
    let (a_total, k) = (targets.num_anchors, targets.num_classes);
    assert_eq!(
        logits.len(),
        targets.images.len() * a_total * k,
        "collect_entries: the logits must be (N, A_total, K) = ({}, {a_total}, {k})",
        targets.images.len()
    );
    for (i, image) in targets.images.iter().enumerate() {
        for (a, label) in image.labels.iter().enumerate() {
            let row = &logits[(i * a_total + a) * k..][..k];
            match *label {
                AnchorLabel::Ignored => {}
                AnchorLabel::Background => row.iter().for_each(|&x| negatives.push(-x)),
                AnchorLabel::Class(c) => {
                    for (class, &x) in row.iter().enumerate() {
                        if class == c {
                            positives.push(x);
                        } else {
                            negatives.push(-x);
                        }
                    }
                }
            }
        }
    }
}

/// Runs `model` on `batch` (in evaluation mode, nothing recorded), matches its anchors to
/// the batch's ground truth and adds the entries to `positives` and `negatives`.
pub fn collect_batch(
    model: &mut RetinaNet,
    batch: &Batch,
    positives: &mut EntrySample,
    negatives: &mut EntrySample,
) -> Result<(), Error> {
    let ground_truth: Vec<GroundTruth> = batch
        .targets
        .iter()
        .map(|t| GroundTruth {
            boxes: t.boxes.clone(),
            labels: t.labels.clone(),
        })
        .collect();
    let (h, w) = batch.padded_size();
    let anchors = model.anchors(h, w);
    let targets = assign_targets(
        &model.config.matcher,
        &anchors,
        &ground_truth,
        model.config.model.num_classes,
    )?;
    let was_training = model.is_training();
    model.set_train(false);
    let out = no_grad(|| model.forward(&batch.images));
    model.set_train(was_training);
    collect_entries(&targets, out.cls_logits.data(), positives, negatives);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::ImageTargets;

    #[test]
    fn entries_follow_the_anchor_labels() {
        use AnchorLabel::*;
        // Two images, two anchors, K = 3.
        let targets = BatchTargets {
            images: vec![
                ImageTargets {
                    labels: vec![Class(2), Ignored],
                    positives: vec![0],
                    box_targets: vec![[0.0; 4]],
                },
                ImageTargets {
                    labels: vec![Background, Class(0)],
                    positives: vec![1],
                    box_targets: vec![[0.0; 4]],
                },
            ],
            num_anchors: 2,
            num_classes: 3,
        };
        #[rustfmt::skip]
        let logits = [
            1.0, 2.0, 3.0,     // image 0, anchor 0: class 2 → positive 3; negatives −1, −2
            9.0, 9.0, 9.0,     // anchor 1 ignored
            4.0, 5.0, 6.0,     // image 1, anchor 0: background → −4, −5, −6
            7.0, 8.0, -0.5,    // anchor 1: class 0 → positive 7; negatives −8, 0.5
        ];
        let mut pos = EntrySample::new(100, 0);
        let mut neg = EntrySample::new(100, 0);
        collect_entries(&targets, &logits, &mut pos, &mut neg);
        assert_eq!(pos.values(), &[3.0, 7.0]);
        assert_eq!(neg.values(), &[-1.0, -2.0, -4.0, -5.0, -6.0, -8.0, 0.5]);
    }
}
