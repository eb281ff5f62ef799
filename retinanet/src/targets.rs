//! Training targets for a batch: for every image and every anchor, what the class
//! subnet should say (a class, background, or nothing — ignored) and, for positive
//! anchors, what the box subnet should regress (the encoded ground-truth box).
//!
//! Rows are numbered the way the heads' outputs are flattened: row `i·A_total + a` is
//! anchor `a` of image `i` in the (N·A_total, K) logits and (N·A_total, 4) deltas.

use crate::anchors::Anchors;
use crate::box_coder::encode;
use crate::boxes::Box4;
use crate::config::MatcherConfig;
use crate::error::Error;
use crate::matcher::{match_anchors, Match};
use focal_engine::RowTarget;

/// The objects of one image, in the coordinates of the network's input (resized, not
/// padded): boxes `[x1, y1, x2, y2]` and their classes 0..K−1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroundTruth {
    pub boxes: Vec<Box4>,
    pub labels: Vec<usize>,
}

/// The target of one anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorLabel {
    /// Every class target 0.
    Background,
    /// No loss.
    Ignored,
    /// Class target 1 for this class, 0 for the others; has a box target.
    Class(usize),
}

/// The targets of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTargets {
    /// One label per anchor.
    pub labels: Vec<AnchorLabel>,
    /// The positive anchors, ascending.
    pub positives: Vec<usize>,
    /// The encoded box (dx, dy, dw, dh) of each positive anchor, in the same order.
    pub box_targets: Vec<[f32; 4]>,
}

/// The targets of a batch of images that share one padded size (and so one anchor set).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchTargets {
    pub images: Vec<ImageTargets>,
    /// A_total, anchors per image.
    pub num_anchors: usize,
    /// K.
    pub num_classes: usize,
}

fn check_ground_truth(i: usize, gt: &GroundTruth, num_classes: usize) -> Result<(), Error> {
    if gt.boxes.len() > focal_data::MAX_BOXES_PER_IMAGE {
        return Err(Error::invalid(format!(
            "image {i} of the batch has {} boxes, more than the {} per image focal matches \
             anchors to",
            gt.boxes.len(),
            focal_data::MAX_BOXES_PER_IMAGE
        )));
    }
    if gt.boxes.len() != gt.labels.len() {
        return Err(Error::invalid(format!(
            "image {i} of the batch: {} boxes but {} labels",
            gt.boxes.len(),
            gt.labels.len()
        )));
    }
    for (j, (b, &l)) in gt.boxes.iter().zip(&gt.labels).enumerate() {
        if l >= num_classes {
            return Err(Error::invalid(format!(
                "image {i} of the batch, box {j}: label {l} is not below the {num_classes} classes"
            )));
        }
        if !b.iter().all(|v| v.is_finite()) || b[2] <= b[0] || b[3] <= b[1] {
            return Err(Error::invalid(format!(
                "image {i} of the batch, box {j}: {b:?} is not a box with positive width and height"
            )));
        }
    }
    Ok(())
}

/// Matches the anchors of every image to its ground truth and encodes the boxes of the
/// positive anchors.
pub fn assign_targets(
    matcher: &MatcherConfig,
    anchors: &Anchors,
    ground_truth: &[GroundTruth],
    num_classes: usize,
) -> Result<BatchTargets, Error> {
    let mut images = Vec::with_capacity(ground_truth.len());
    for (i, gt) in ground_truth.iter().enumerate() {
        check_ground_truth(i, gt, num_classes)?;
        let matches = match_anchors(matcher, &gt.boxes, &anchors.boxes);
        let mut labels = Vec::with_capacity(matches.len());
        let mut positives = Vec::new();
        let mut box_targets = Vec::new();
        for (a, m) in matches.iter().enumerate() {
            labels.push(match *m {
                Match::Background => AnchorLabel::Background,
                Match::Ignored => AnchorLabel::Ignored,
                Match::Object(g) => {
                    positives.push(a);
                    box_targets.push(encode(&anchors.boxes[a], &gt.boxes[g]));
                    AnchorLabel::Class(gt.labels[g])
                }
            });
        }
        images.push(ImageTargets {
            labels,
            positives,
            box_targets,
        });
    }
    Ok(BatchTargets {
        images,
        num_anchors: anchors.len(),
        num_classes,
    })
}

impl BatchTargets {
    /// Positive anchors in the whole batch (the loss normaliser before max(1, ·)).
    pub fn num_positive(&self) -> usize {
        self.images.iter().map(|t| t.positives.len()).sum()
    }

    /// Rows (`image·A_total + anchor`) of the anchors that are not ignored, ascending.
    pub fn valid_rows(&self) -> Vec<usize> {
        let mut rows = Vec::new();
        for (i, t) in self.images.iter().enumerate() {
            let base = i * self.num_anchors;
            for (a, l) in t.labels.iter().enumerate() {
                if *l != AnchorLabel::Ignored {
                    rows.push(base + a);
                }
            }
        }
        rows
    }

    /// Every anchor's row target (`image·A_total + anchor`), for the engine's
    /// `sigmoid_focal_loss_rows`: ignored, background, or positive for its class.
    pub fn row_targets(&self) -> Vec<RowTarget> {
        self.images
            .iter()
            .flat_map(|t| {
                t.labels.iter().map(|l| match *l {
                    AnchorLabel::Ignored => RowTarget::Ignored,
                    AnchorLabel::Background => RowTarget::Background,
                    AnchorLabel::Class(c) => RowTarget::Class(c),
                })
            })
            .collect()
    }

    /// The one-hot class targets of the rows of [`BatchTargets::valid_rows`], row-major
    /// (valid rows × K): 1 at the class of a positive anchor, 0 elsewhere.
    pub fn valid_class_targets(&self) -> Vec<f32> {
        let k = self.num_classes;
        let mut out = Vec::new();
        for t in &self.images {
            for l in &t.labels {
                match *l {
                    AnchorLabel::Ignored => {}
                    AnchorLabel::Background => out.extend(std::iter::repeat_n(0.0, k)),
                    AnchorLabel::Class(c) => {
                        let start = out.len();
                        out.extend(std::iter::repeat_n(0.0, k));
                        out[start + c] = 1.0;
                    }
                }
            }
        }
        out
    }

    /// Rows (`image·A_total + anchor`) of the positive anchors, ascending.
    pub fn positive_rows(&self) -> Vec<usize> {
        let mut rows = Vec::new();
        for (i, t) in self.images.iter().enumerate() {
            rows.extend(t.positives.iter().map(|a| i * self.num_anchors + a));
        }
        rows
    }

    /// The box targets of [`BatchTargets::positive_rows`], row-major (positives × 4).
    pub fn positive_box_targets(&self) -> Vec<f32> {
        self.images
            .iter()
            .flat_map(|t| t.box_targets.iter().flatten().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnchorConfig;

    #[test]
    fn a_box_on_an_anchor_is_positive_with_a_zero_target() {
        let anchors = Anchors::generate(&AnchorConfig::default(), 64, 64);
        // P3 cell (2, 3) is centred at (16, 24); its anchor a = 3 is the 32×32 square.
        let a = (3 * 8 + 2) * 9 + 3;
        let b = anchors.boxes[a];
        assert_eq!(b, [0.0, 8.0, 32.0, 40.0]);
        let gts = vec![
            GroundTruth {
                boxes: vec![b],
                labels: vec![7],
            },
            GroundTruth::default(),
        ];
        let t = assign_targets(&MatcherConfig::default(), &anchors, &gts, 10).unwrap();
        assert!(t.images[0].positives.contains(&a));
        let k = t.images[0].positives.iter().position(|&p| p == a).unwrap();
        assert_eq!(t.images[0].box_targets[k], [0.0; 4]);
        assert_eq!(t.images[0].labels[a], AnchorLabel::Class(7));
        assert!(t.images[1].positives.is_empty());
        assert_eq!(t.num_positive(), t.images[0].positives.len());
        // The second image's rows start at A_total = 774, all valid.
        let valid = t.valid_rows();
        assert_eq!(valid.iter().filter(|&&r| r >= 774).count(), 774);
        let onehot = t.valid_class_targets();
        assert_eq!(onehot.len(), valid.len() * 10);
        assert_eq!(onehot.iter().sum::<f32>() as usize, t.num_positive());
        let row = valid.iter().position(|&r| r == a).unwrap();
        assert_eq!(onehot[row * 10 + 7], 1.0);
        assert_eq!(t.positive_rows().len(), t.positive_box_targets().len() / 4);
    }

    #[test]
    fn bad_ground_truth_is_refused_with_a_message() {
        let anchors = Anchors::generate(&AnchorConfig::default(), 64, 64);
        let m = MatcherConfig::default();
        let gt = |b: Box4, l: usize| GroundTruth {
            boxes: vec![b],
            labels: vec![l],
        };
        let e = assign_targets(&m, &anchors, &[gt([0., 0., 5., 5.], 3)], 3)
            .unwrap_err()
            .chain();
        assert!(e.contains("label 3"), "{e}");
        let e = assign_targets(&m, &anchors, &[gt([0., 0., 0., 5.], 0)], 3)
            .unwrap_err()
            .chain();
        assert!(e.contains("positive width"), "{e}");
    }
}
