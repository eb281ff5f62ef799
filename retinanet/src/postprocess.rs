//! Inference post-processing: from the heads' raw outputs to detections in the pixels of
//! the original image (§4.1 "Inference").
//!
//! For each image:
//! 1. per pyramid level, the class probabilities σ(logit) of every (anchor, class) pair;
//!    keep those strictly above `score_threshold` (0.05), then the `candidates_per_level`
//!    (1000) best (ties: lower (anchor, class) index first);
//! 2. decode each candidate's box from its anchor and deltas, and clip it to the resized
//!    image (the part of the padded input that holds the picture);
//! 3. class-wise NMS over the candidates of all levels, suppressing IoU > 0.5;
//! 4. keep the best `detections_per_image` (100);
//! 5. rescale each axis to the original image: x·orig_w/resized_w, y·orig_h/resized_h.
//!
//! The logits are the concatenated (N, A_total, K) output of the class subnet and the
//! deltas the (N, A_total, 4) output of the box subnet, rows in the anchor order of
//! [`crate::anchors`].

use focal_engine::ops::unary::sigmoid_f32;
use focal_engine::threads::par_map;
use focal_engine::Tensor;

use crate::anchors::Anchors;
use crate::box_coder::decode;
use crate::boxes::{clip, Box4};
use crate::config::InferenceConfig;
use crate::nms::batched_nms;

/// The sizes of one image: as the network saw it (resized, before padding) and as it was
/// on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    pub resized_height: usize,
    pub resized_width: usize,
    pub original_height: usize,
    pub original_width: usize,
}

impl ImageSize {
    /// An image that was not resized.
    pub fn unscaled(height: usize, width: usize) -> ImageSize {
        ImageSize {
            resized_height: height,
            resized_width: width,
            original_height: height,
            original_width: width,
        }
    }
}

/// The detections of one image, best first: boxes `[x1, y1, x2, y2]` in original pixels,
/// scores in (0, 1), and classes 0..K−1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detections {
    pub boxes: Vec<Box4>,
    pub scores: Vec<f32>,
    pub labels: Vec<usize>,
}

impl Detections {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

/// A candidate: its score and its flat index `anchor·K + class` within the image.
type Candidate = (f32, usize);

/// Best first; equal scores by lower index.
fn better(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Step 1 for one level: candidates above the threshold, at most `k`, best first.
/// `logits` holds the level's (anchors × K) logits; indices are relative to the image.
fn level_candidates(
    logits: &[f32],
    first_row: usize,
    k_classes: usize,
    cfg: &InferenceConfig,
) -> Vec<Candidate> {
    let offset = first_row * k_classes;
    let mut c: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .filter_map(|(j, &x)| {
            let s = sigmoid_f32(x);
            (s > cfg.score_threshold).then_some((s, offset + j))
        })
        .collect();
    if c.len() > cfg.candidates_per_level {
        // Partition around the k-th best, then sort only the k kept.
        c.select_nth_unstable_by(cfg.candidates_per_level, better);
        c.truncate(cfg.candidates_per_level);
    }
    c.sort_by(better);
    c
}

/// Detections for one image from its logits (A_total × K) and deltas (A_total × 4).
pub fn detect_image(
    config: &InferenceConfig,
    anchors: &Anchors,
    logits: &[f32],
    deltas: &[f32],
    size: ImageSize,
) -> Detections {
    let k = logits.len() / anchors.len().max(1);
    let (h, w) = (size.resized_height as f32, size.resized_width as f32);
    let mut boxes = Vec::new();
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    for range in anchors.level_ranges() {
        let level = &logits[range.start * k..range.end * k];
        for (score, idx) in level_candidates(level, range.start, k, config) {
            let (a, class) = (idx / k, idx % k);
            let d = [
                deltas[4 * a],
                deltas[4 * a + 1],
                deltas[4 * a + 2],
                deltas[4 * a + 3],
            ];
            boxes.push(clip(&decode(&anchors.boxes[a], &d), h, w));
            scores.push(score);
            labels.push(class);
        }
    }
    let mut keep = batched_nms(&boxes, &scores, &labels, config.nms_iou);
    keep.truncate(config.detections_per_image);
    let sx = size.original_width as f32 / size.resized_width as f32;
    let sy = size.original_height as f32 / size.resized_height as f32;
    Detections {
        boxes: keep
            .iter()
            .map(|&i| {
                let b = boxes[i];
                [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
            })
            .collect(),
        scores: keep.iter().map(|&i| scores[i]).collect(),
        labels: keep.iter().map(|&i| labels[i]).collect(),
    }
}

/// Detections for every image of a batch: `cls_logits` (N, A_total, K) and
/// `box_deltas` (N, A_total, 4). Images are processed in parallel (independently, so
/// the result does not depend on the thread count).
pub fn postprocess(
    config: &InferenceConfig,
    anchors: &Anchors,
    cls_logits: &Tensor,
    box_deltas: &Tensor,
    sizes: &[ImageSize],
) -> Vec<Detections> {
    let (n, a_total) = (cls_logits.dim(0), anchors.len());
    assert!(
        cls_logits.rank() == 3 && cls_logits.dim(1) == a_total,
        "postprocess: class logits {:?} do not have the {a_total} anchors as their second axis",
        cls_logits.shape()
    );
    assert_eq!(
        box_deltas.shape(),
        &[n, a_total, 4],
        "postprocess: box deltas must be (N, A_total, 4)"
    );
    assert_eq!(
        sizes.len(),
        n,
        "postprocess: {n} images but {} sizes",
        sizes.len()
    );
    let k = cls_logits.dim(2);
    let (logits, deltas) = (cls_logits.data(), box_deltas.data());
    par_map(n, |i| {
        detect_image(
            config,
            anchors,
            &logits[i * a_total * k..(i + 1) * a_total * k],
            &deltas[i * a_total * 4..(i + 1) * a_total * 4],
            sizes[i],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::box_coder::encode;
    use crate::config::AnchorConfig;

    /// logit whose sigmoid is p.
    fn logit(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn a_planted_detection_comes_back_in_original_pixels() {
        let anchors = Anchors::generate(&AnchorConfig::default(), 64, 64);
        let (a_total, k) = (anchors.len(), 3);
        let mut logits = vec![-10.0f32; a_total * k];
        let mut deltas = vec![0.0f32; a_total * 4];
        // Anchor 3 of P3 cell (2, 3) is [0, 8, 32, 40]; make it say "class 2, 0.9" with
        // deltas that move it to [4, 10, 30, 38].
        let a = (3 * 8 + 2) * 9 + 3;
        logits[a * k + 2] = logit(0.9);
        let target = [4.0, 10.0, 30.0, 38.0];
        deltas[4 * a..4 * a + 4].copy_from_slice(&encode(&anchors.boxes[a], &target));
        // A weaker duplicate on the neighbouring anchor (a = 4, the 40-px square), same
        // class and nearly the same box: suppressed by NMS.
        logits[(a + 1) * k + 2] = logit(0.8);
        let near = [5.0, 10.0, 30.0, 38.0];
        deltas[4 * (a + 1)..4 * (a + 1) + 4].copy_from_slice(&encode(&anchors.boxes[a + 1], &near));
        // The same box as class 0 with score 0.5: a different class, kept.
        logits[(a + 1) * k] = logit(0.5);
        // A score just below 0.05 is dropped.
        logits[10 * k + 1] = logit(0.05) - 1e-5;
        let cls = Tensor::from_vec(&[1, a_total, k], logits);
        let del = Tensor::from_vec(&[1, a_total, 4], deltas);
        // The 64×64 input was the original 128×96 (h×w) image scaled by 0.5 × 2/3.
        let size = ImageSize {
            resized_height: 64,
            resized_width: 64,
            original_height: 128,
            original_width: 96,
        };
        let d = &postprocess(&InferenceConfig::default(), &anchors, &cls, &del, &[size])[0];
        assert_eq!(d.labels, vec![2, 0]);
        assert!((d.scores[0] - 0.9).abs() < 1e-5 && (d.scores[1] - 0.5).abs() < 1e-5);
        // x scaled by 96/64 = 1.5, y by 128/64 = 2.
        let want = [6.0, 20.0, 45.0, 76.0];
        for (got, want) in d.boxes[0].iter().zip(want) {
            assert!((got - want).abs() < 1e-3, "{:?}", d.boxes[0]);
        }
    }

    #[test]
    fn boxes_are_clipped_and_limits_apply() {
        let anchors = Anchors::generate(&AnchorConfig::default(), 64, 64);
        let (a_total, k) = (anchors.len(), 1);
        // Every anchor scores 0.5, deltas 0: the P7 anchors reach far outside the image.
        let cls = Tensor::full(&[1, a_total, k], 0.0);
        let del = Tensor::zeros(&[1, a_total, 4]);
        let cfg = InferenceConfig {
            nms_iou: 1.0, // suppress nothing
            candidates_per_level: 5,
            detections_per_image: 12,
            ..InferenceConfig::default()
        };
        let size = ImageSize::unscaled(50, 60);
        let d = &postprocess(&cfg, &anchors, &cls, &del, &[size])[0];
        // 5 per level × 5 levels = 25 candidates, 12 kept.
        assert_eq!(d.len(), 12);
        for b in &d.boxes {
            assert!(
                b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 60.0 && b[3] <= 50.0,
                "{b:?}"
            );
        }
        // All scores tie, so the order is level by level, anchor order: the first
        // candidates are P3's first 5 anchors, clipped.
        let first = clip(&anchors.boxes[0], 50.0, 60.0);
        assert_eq!(d.boxes[0], first);
    }
}
