//! The class imbalance a configuration trains with: how many anchors each training image
//! has, how many of them the matcher makes positive, ignored or background, and the
//! ratio of background (negative) anchors to positive ones.
//!
//! This is the number the focal loss was invented for (§3 of the paper): a one-stage
//! detector scores every anchor of every image, about 100 000 per image on COCO at
//! 800 px ([`PAPER_ANCHORS_PER_IMAGE`]), and only a handful lie on an object, so the easy
//! negatives dominate the loss unless it is reshaped.
//!
//! [`measure`] counts with the very code a training step uses: the anchors of the padded
//! network input (`Anchors::generate`, the input padded to a multiple of 32 as the batch
//! collation pads it) matched to the image's boxes, resized as the loader resizes them
//! (`focal_data::transforms::resized_size`, no flip: a flip moves objects, not their
//! number of anchors, up to rounding), by [`match_anchors`] with the configuration's
//! thresholds and low-quality matches. Each image is counted at the training size
//! `min_size`/`max_size` and padded on its own (a batch pads to its largest image; the
//! images of the synthetic dataset all have one size, so there it is exact).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::anchors::Anchors;
use crate::boxes::Box4;
use crate::config::MatcherConfig;
use crate::error::Error;
use crate::matcher::{match_anchors, Match};
use crate::train::TrainConfig;
use focal_data::batch::SIZE_DIVISIBILITY;
use focal_data::transforms::{resized_size, round_up, scale_boxes};
use focal_data::Dataset;

/// The paper's figure for COCO at 800 px: "~100k" anchors per image (§1 and §3 of
/// arXiv:1708.02002; RetinaNet's 9 anchors per location on P3–P7). Its positives per
/// image are not given in the paper; `docs/focal-loss.md` measures them on a COCO subset
/// with [`measure`] (`focal imbalance --coco`).
pub const PAPER_ANCHORS_PER_IMAGE: f64 = 100_000.0;

/// The anchors of one image by what the matcher made of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnchorCounts {
    pub anchors: u64,
    pub positives: u64,
    pub ignored: u64,
}

impl AnchorCounts {
    /// Background anchors: neither positive nor ignored.
    pub fn negatives(&self) -> u64 {
        self.anchors - self.positives - self.ignored
    }
}

/// Counts the positive, ignored and background anchors among `anchors` for the objects
/// `boxes`, with the matcher of training ([`match_anchors`]).
pub fn count_anchors(matcher: &MatcherConfig, anchors: &[Box4], boxes: &[Box4]) -> AnchorCounts {
    let mut c = AnchorCounts {
        anchors: anchors.len() as u64,
        ..AnchorCounts::default()
    };
    for m in match_anchors(matcher, boxes, anchors) {
        match m {
            Match::Object(_) => c.positives += 1,
            Match::Ignored => c.ignored += 1,
            Match::Background => {}
        }
    }
    c
}

/// The anchor counts of a set of images, summed; the per-image averages and the
/// negatives-to-positives ratio are computed from the sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Imbalance {
    /// Images counted.
    pub images: u64,
    /// Images of the dataset (more than `images` when a sample was counted).
    pub dataset_images: u64,
    /// Objects (ground-truth boxes) in the images counted.
    pub objects: u64,
    pub anchors: u64,
    pub positives: u64,
    pub ignored: u64,
    pub negatives: u64,
}

impl Imbalance {
    /// Adds one image with `objects` boxes.
    pub fn add(&mut self, objects: usize, c: &AnchorCounts) {
        self.images += 1;
        self.objects += objects as u64;
        self.anchors += c.anchors;
        self.positives += c.positives;
        self.ignored += c.ignored;
        self.negatives += c.negatives();
    }

    fn per_image(&self, n: u64) -> f64 {
        if self.images == 0 {
            0.0
        } else {
            n as f64 / self.images as f64
        }
    }

    pub fn anchors_per_image(&self) -> f64 {
        self.per_image(self.anchors)
    }
    pub fn positives_per_image(&self) -> f64 {
        self.per_image(self.positives)
    }
    pub fn ignored_per_image(&self) -> f64 {
        self.per_image(self.ignored)
    }
    pub fn negatives_per_image(&self) -> f64 {
        self.per_image(self.negatives)
    }
    pub fn objects_per_image(&self) -> f64 {
        self.per_image(self.objects)
    }

    /// Background anchors per positive anchor over all images counted (the ratio of the
    /// sums, not the mean of per-image ratios, which images without objects would make
    /// infinite); `None` when no anchor is positive.
    pub fn negatives_per_positive(&self) -> Option<f64> {
        (self.positives > 0).then(|| self.negatives as f64 / self.positives as f64)
    }

    /// One line: "3069 anchors per image: 3.1 positive, 1.2 ignored, 3064.7 negative;
    /// 989 negatives per positive (1.0 objects per image, 2000 images)".
    pub fn summary(&self) -> String {
        let ratio = match self.negatives_per_positive() {
            Some(r) => format!("{r:.0} negatives per positive"),
            None => "no positive anchor".into(),
        };
        let sample = if self.images < self.dataset_images {
            format!(
                "an evenly spaced sample of {} of the {} training images",
                self.images, self.dataset_images
            )
        } else {
            format!("{} training images", self.images)
        };
        format!(
            "{:.0} anchors per image: {:.1} positive, {:.1} ignored, {:.1} negative; {ratio} \
             ({:.2} objects per image, over {sample})",
            self.anchors_per_image(),
            self.positives_per_image(),
            self.ignored_per_image(),
            self.negatives_per_image(),
            self.objects_per_image(),
        )
    }

    /// The sums and the per-image figures as pretty JSON (`imbalance.json`).
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "images": self.images,
            "dataset_images": self.dataset_images,
            "objects": self.objects,
            "anchors": self.anchors,
            "positives": self.positives,
            "ignored": self.ignored,
            "negatives": self.negatives,
            "anchors_per_image": self.anchors_per_image(),
            "positives_per_image": self.positives_per_image(),
            "ignored_per_image": self.ignored_per_image(),
            "negatives_per_image": self.negatives_per_image(),
            "objects_per_image": self.objects_per_image(),
            "negatives_per_positive": self.negatives_per_positive(),
        });
        let mut text = serde_json::to_string_pretty(&v).expect("plain numbers encode");
        text.push('\n');
        text
    }
}

/// The indices counted out of `len` images: all of them, or `max` evenly spaced ones.
fn sample_indices(len: usize, max: Option<usize>) -> Vec<usize> {
    match max {
        Some(m) if m < len => (0..m).map(|i| i * len / m).collect(),
        _ => (0..len).collect(),
    }
}

/// The class imbalance of training `config` on `train` (see the module documentation),
/// over every image, or over `max_images` evenly spaced ones when the dataset is larger.
/// Images the dataset skips (unreadable, with `skip_bad_images`) are left out.
pub fn measure(
    config: &TrainConfig,
    train: &dyn Dataset,
    max_images: Option<usize>,
) -> Result<Imbalance, Error> {
    let (min_size, max_size) = (config.data.min_size, config.data.max_size);
    let mut anchors_by_size: HashMap<(usize, usize), Anchors> = HashMap::new();
    let mut total = Imbalance {
        dataset_images: train.len() as u64,
        ..Imbalance::default()
    };
    for index in sample_indices(train.len(), max_images) {
        let Some((mut boxes, _labels)) = train.targets(index)? else {
            continue;
        };
        // As `focal_data::transforms::transform` resizes, and the collation pads.
        let (w0, h0) = train.image_size(index);
        let (w, h) = resized_size(w0, h0, min_size, max_size);
        scale_boxes(&mut boxes, [w as f32 / w0 as f32, h as f32 / h0 as f32]);
        let padded = (
            round_up(h, SIZE_DIVISIBILITY),
            round_up(w, SIZE_DIVISIBILITY),
        );
        let anchors = anchors_by_size
            .entry(padded)
            .or_insert_with(|| Anchors::generate(&config.anchors, padded.0, padded.1));
        let counts = count_anchors(&config.matcher, &anchors.boxes, &boxes);
        total.add(boxes.len(), &counts);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{assign_targets, AnchorLabel, GroundTruth};
    use focal_data::transforms::transform;
    use focal_data::{ShapesConfig, ShapesDataset, Split};

    /// Seven anchors and two boxes whose matches are counted by hand (IoU = intersection
    /// over union of the areas):
    ///
    /// box B = [0, 0, 10, 10] (area 100), box C = [100, 100, 120, 120] (area 400)
    /// - a0 [0, 0, 10, 10]: IoU(B) = 1 → positive;
    /// - a1 [0, 0, 10, 8]: 80 / 100 = 0.8 → positive;
    /// - a2 [0, 0, 10, 4.5]: 45 / 100 = 0.45, between 0.4 and 0.5 → ignored;
    /// - a3 [0, 0, 10, 3]: 30 / 100 = 0.3 → background;
    /// - a4 [20, 20, 30, 30]: 0 → background;
    /// - a5 [100, 100, 110, 110]: IoU(C) = 100 / 400 = 0.25 → background by the
    ///   thresholds, but C's best anchor, so a low-quality match makes it positive;
    /// - a6 [90, 90, 110, 110]: 100 / (400 + 400 − 100) = 0.14 → background.
    ///
    /// So 3 positive, 1 ignored, 3 negative (2, 1, 4 without low-quality matches).
    fn hand_case() -> (Vec<Box4>, Vec<Box4>) {
        let anchors = vec![
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 8.0],
            [0.0, 0.0, 10.0, 4.5],
            [0.0, 0.0, 10.0, 3.0],
            [20.0, 20.0, 30.0, 30.0],
            [100.0, 100.0, 110.0, 110.0],
            [90.0, 90.0, 110.0, 110.0],
        ];
        let boxes = vec![[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 120.0]];
        (anchors, boxes)
    }

    #[test]
    fn counts_of_a_hand_countable_case() {
        let (anchors, boxes) = hand_case();
        let m = MatcherConfig::default();
        assert_eq!((m.foreground_iou, m.background_iou), (0.5, 0.4));
        let c = count_anchors(&m, &anchors, &boxes);
        assert_eq!(
            c,
            AnchorCounts {
                anchors: 7,
                positives: 3,
                ignored: 1
            }
        );
        assert_eq!(c.negatives(), 3);

        let strict = MatcherConfig {
            low_quality_matches: false,
            ..m.clone()
        };
        let c = count_anchors(&strict, &anchors, &boxes);
        assert_eq!((c.positives, c.ignored, c.negatives()), (2, 1, 4));

        // Two images: this one, and one without objects (7 negatives). Sums 14 anchors,
        // 3 positive, 1 ignored, 10 negative; per image 7, 1.5, 0.5, 5; ratio 10 / 3.
        let mut total = Imbalance::default();
        total.add(2, &count_anchors(&m, &anchors, &boxes));
        total.add(0, &count_anchors(&m, &anchors, &[]));
        assert_eq!((total.images, total.objects, total.anchors), (2, 2, 14));
        assert_eq!(
            (total.positives, total.ignored, total.negatives),
            (3, 1, 10)
        );
        assert_eq!(total.anchors_per_image(), 7.0);
        assert_eq!(total.positives_per_image(), 1.5);
        assert_eq!(total.ignored_per_image(), 0.5);
        assert_eq!(total.negatives_per_image(), 5.0);
        assert_eq!(total.objects_per_image(), 1.0);
        assert_eq!(total.negatives_per_positive(), Some(10.0 / 3.0));
        let line = total.summary();
        assert!(
            line.starts_with("7 anchors per image: 1.5 positive, 0.5 ignored, 5.0 negative; 3 negatives per positive"),
            "{line}"
        );
        let json: serde_json::Value = serde_json::from_str(&total.to_json()).unwrap();
        assert_eq!(json["negatives"], 10);
        assert_eq!(json["positives_per_image"], 1.5);

        // No positive anchor at all: no ratio.
        let mut empty = Imbalance::default();
        empty.add(0, &count_anchors(&m, &anchors, &[]));
        assert_eq!(empty.negatives_per_positive(), None);
        assert!(empty.summary().contains("no positive anchor"));
    }

    #[test]
    fn sampling_is_evenly_spaced() {
        assert_eq!(sample_indices(4, None), vec![0, 1, 2, 3]);
        assert_eq!(sample_indices(4, Some(10)), vec![0, 1, 2, 3]);
        assert_eq!(sample_indices(10, Some(4)), vec![0, 2, 5, 7]);
    }

    /// `measure` counts what a training step's targets contain: the same images, resized
    /// by the loader's transform and padded as a batch is, matched by `assign_targets`.
    #[test]
    fn measure_counts_what_training_targets_contain() {
        let mut config = crate::ablation::training::base_config();
        // Resized (72 → 64 px) and padded (64 is already a multiple of 32), 9 anchors.
        config.data.min_size = 64;
        config.data.max_size = 64;
        let ds = ShapesDataset::new(ShapesConfig {
            size: 72,
            ..ShapesConfig::new(Split::Train, 6, 11)
        })
        .unwrap();
        let got = measure(&config, &ds, None).unwrap();

        let mut want = Imbalance {
            dataset_images: 6,
            ..Imbalance::default()
        };
        for i in 0..6 {
            let t = transform(ds.load(i).unwrap().unwrap(), 64, 64, false);
            let anchors = Anchors::generate(&config.anchors, 64, 64);
            let gt = GroundTruth {
                boxes: t.boxes.clone(),
                labels: t.labels.clone(),
            };
            let targets = assign_targets(&config.matcher, &anchors, &[gt], 5).unwrap();
            let labels = &targets.images[0].labels;
            let c = AnchorCounts {
                anchors: labels.len() as u64,
                positives: targets.images[0].positives.len() as u64,
                ignored: labels
                    .iter()
                    .filter(|l| **l == AnchorLabel::Ignored)
                    .count() as u64,
            };
            want.add(t.boxes.len(), &c);
        }
        assert_eq!(got, want);
        // 9 anchors on the 8², 4², 2², 1, 1 cells of P3–P7 at 64 px.
        assert_eq!(got.anchors, 6 * 9 * (64 + 16 + 4 + 1 + 1));
        assert!(got.positives > 0 && got.objects > 0, "{got:?}");
        // Half of them.
        let half = measure(&config, &ds, Some(3)).unwrap();
        assert_eq!((half.images, half.dataset_images), (3, 6));
    }
}
