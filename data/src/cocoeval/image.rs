//! Matching within one (category, image) cell: pycocotools' `evaluateImg`, for all four
//! area ranges and all ten IoU thresholds at once.
//!
//! For each area range the ground truths are split into *regular* and *ignored* ones
//! (crowd regions, and boxes whose `area` field falls outside the range, bounds inclusive)
//! and stably reordered with the regular ones first. Then, for each IoU threshold
//! separately, the detections are visited best score first and each takes the ground truth
//! with the highest IoU that is at least the threshold, under three rules:
//!
//! 1. a regular ground truth can be taken once; a crowd region any number of times;
//! 2. once a detection holds a regular ground truth it never moves to an ignored one (the
//!    scan stops where the ignored tail begins);
//! 3. on equal IoU the *later* ground truth in that order wins (the comparison is `<`).
//!
//! A detection matched to an ignored ground truth is ignored (neither true nor false
//! positive). An unmatched detection whose own box area (w·h) is outside the range is
//! ignored too, so a large false positive does not count against the small-object AP.

use super::iou::iou;
use super::params::{AREA_RANGES, NUM_AREAS, NUM_IOU_THRESHOLDS};

/// A ground-truth annotation as the matcher sees it.
#[derive(Clone, Copy, Debug)]
pub struct GtBox {
    pub bbox: [f64; 4],
    /// The annotation's `area` field (the mask area in real COCO).
    pub area: f64,
    pub crowd: bool,
}

/// A detection as the matcher sees it.
#[derive(Clone, Copy, Debug)]
pub struct DetBox {
    pub bbox: [f64; 4],
    pub score: f64,
}

/// What one detection counts as at one IoU threshold and area range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Unmatched, inside the area range.
    FalsePositive,
    /// Matched to a regular ground truth.
    TruePositive,
    /// Matched to an ignored ground truth, or unmatched and outside the area range.
    Ignored,
}

/// The evaluation of one (category, image) cell: pycocotools' per-image record, for the
/// four area ranges.
#[derive(Clone, Debug)]
pub struct CellEval {
    /// Scores of the kept detections, best first (at most `max_det`, ties in file order).
    pub scores: Vec<f64>,
    /// `outcomes[(d·A + a)·T + t]` for detection `d` (in `scores` order), area range `a`
    /// and IoU threshold `t`: each detection's A·T outcomes are contiguous.
    pub outcomes: Vec<Outcome>,
    /// Number of regular (not ignored) ground truths in each area range.
    pub num_regular_gt: [usize; NUM_AREAS],
}

impl CellEval {
    pub fn outcome(&self, area: usize, t: usize, d: usize) -> Outcome {
        self.outcomes_of(d)[area * NUM_IOU_THRESHOLDS + t]
    }

    /// The A·T outcomes of detection `d`, indexed by `a·T + t`.
    pub fn outcomes_of(&self, d: usize) -> &[Outcome] {
        &self.outcomes[d * OUTCOMES_PER_DET..][..OUTCOMES_PER_DET]
    }
}

/// Outcomes stored per detection: one per (area range, IoU threshold).
pub const OUTCOMES_PER_DET: usize = NUM_AREAS * NUM_IOU_THRESHOLDS;

/// Working memory of [`evaluate_cell`], reused from cell to cell so that the matcher
/// does not allocate per cell; its contents never affect the result.
#[derive(Default)]
pub struct Scratch {
    order: Vec<usize>,
    ious: Vec<f64>,
    gt_order: Vec<usize>,
    ignored: Vec<bool>,
    taken: Vec<bool>,
    unmatched: Vec<Outcome>,
}

/// Evaluates one cell. `dets` are in results-file order; they are stably sorted by
/// descending score and cut to `max_det` here.
pub fn evaluate_cell(
    gts: &[GtBox],
    dets: &[DetBox],
    max_det: usize,
    iou_thresholds: &[f64; NUM_IOU_THRESHOLDS],
    scratch: &mut Scratch,
) -> CellEval {
    let Scratch {
        order,
        ious,
        gt_order,
        ignored,
        taken,
        unmatched,
    } = scratch;

    // Best score first; `sort_by` is stable, so equal scores keep file order (NumPy's
    // mergesort on -score does the same).
    order.clear();
    order.extend(0..dets.len());
    order.sort_by(|&a, &b| {
        dets[b]
            .score
            .partial_cmp(&dets[a].score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order.truncate(max_det);
    let kept = order.iter().map(|&i| &dets[i]);
    let nd = order.len();
    let ng = gts.len();

    // IoU of every kept detection with every ground truth, in file order; the area ranges
    // only reorder the columns.
    ious.clear();
    ious.extend(
        kept.clone()
            .flat_map(|d| gts.iter().map(move |g| iou(&d.bbox, &g.bbox, g.crowd))),
    );

    let mut outcomes = vec![Outcome::FalsePositive; NUM_AREAS * NUM_IOU_THRESHOLDS * nd];
    let mut num_regular_gt = [0; NUM_AREAS];
    ignored.clear(); // by position in gt_order
    ignored.resize(ng, false);
    taken.clear(); // by position in gt_order
    taken.resize(ng, false);

    for (a, &(lo, hi)) in AREA_RANGES.iter().enumerate() {
        let is_ignored = |g: &GtBox| g.crowd || g.area < lo || g.area > hi;
        // Stable partition: regular ground truths first, then ignored, each in file order.
        gt_order.clear();
        gt_order.extend((0..ng).filter(|&g| !is_ignored(&gts[g])));
        num_regular_gt[a] = gt_order.len();
        gt_order.extend((0..ng).filter(|&g| is_ignored(&gts[g])));
        for (p, &g) in gt_order.iter().enumerate() {
            ignored[p] = is_ignored(&gts[g]);
        }

        // What each detection counts as if it stays unmatched: ignored when its own box
        // area (w·h) is outside the range, else a false positive.
        unmatched.clear();
        unmatched.extend(kept.clone().map(|det| {
            let area = det.bbox[2] * det.bbox[3];
            if area < lo || area > hi {
                Outcome::Ignored
            } else {
                Outcome::FalsePositive
            }
        }));

        for (t, &threshold) in iou_thresholds.iter().enumerate() {
            taken.iter_mut().for_each(|x| *x = false);
            let slot = a * NUM_IOU_THRESHOLDS + t;
            for d in 0..nd {
                let mut best = threshold.min(1.0 - 1e-10);
                let mut matched: Option<usize> = None;
                for (p, &g) in gt_order.iter().enumerate() {
                    if taken[p] && !gts[g].crowd {
                        continue; // rule 1
                    }
                    if let Some(m) = matched {
                        if !ignored[m] && ignored[p] {
                            break; // rule 2
                        }
                    }
                    let v = ious[d * ng + g];
                    if v < best {
                        continue;
                    }
                    best = v; // rule 3: ties replace the match
                    matched = Some(p);
                }
                outcomes[d * OUTCOMES_PER_DET + slot] = match matched {
                    Some(m) => {
                        taken[m] = true;
                        if ignored[m] {
                            Outcome::Ignored
                        } else {
                            Outcome::TruePositive
                        }
                    }
                    None => unmatched[d],
                };
            }
        }
    }
    CellEval {
        scores: kept.map(|d| d.score).collect(),
        outcomes,
        num_regular_gt,
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::iou_thresholds;
    use super::*;
    use Outcome::*;

    fn gt(bbox: [f64; 4], crowd: bool) -> GtBox {
        GtBox {
            bbox,
            area: bbox[2] * bbox[3],
            crowd,
        }
    }
    fn det(bbox: [f64; 4], score: f64) -> DetBox {
        DetBox { bbox, score }
    }

    #[test]
    fn a_regular_match_is_not_stolen_by_a_better_ignored_one() {
        // gt 0: a crowd region over everything; gt 1: a regular 10×10 box. The detection
        // is that box shifted by 5 in x: inter 50, union 150, IoU 1/3; against the crowd
        // 100/100 = 1. The sorted order puts the regular gt first; at t = 0.5 it fails
        // (1/3), then the crowd (1.0) matches, so the detection is ignored.
        let gts = [
            gt([0.0, 0.0, 100.0, 100.0], true),
            gt([0.0, 0.0, 10.0, 10.0], false),
        ];
        let d = [det([5.0, 0.0, 10.0, 10.0], 0.9)];
        let e = evaluate_cell(&gts, &d, 100, &iou_thresholds(), &mut Scratch::default());
        assert_eq!(e.num_regular_gt, [1, 1, 0, 0]);
        assert_eq!(e.outcome(0, 0, 0), Ignored);
        // A detection exactly on the regular box matches it (IoU 1) and stops before the
        // crowd tail; the second identical detection finds the regular gt taken and falls
        // through to the crowd, which can be matched again and again.
        let d = [
            det([0.0, 0.0, 10.0, 10.0], 0.9),
            det([0.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let e = evaluate_cell(&gts, &d, 100, &iou_thresholds(), &mut Scratch::default());
        for t in 0..10 {
            assert_eq!(e.outcome(0, t, 0), TruePositive);
            assert_eq!(e.outcome(0, t, 1), Ignored);
        }
    }

    #[test]
    fn max_det_keeps_the_best_and_ties_keep_file_order() {
        let d: Vec<DetBox> = (0..5)
            .map(|i| {
                det(
                    [i as f64 * 100.0, 0.0, 10.0, 10.0],
                    if i == 3 { 0.9 } else { 0.5 },
                )
            })
            .collect();
        let e = evaluate_cell(&[], &d, 3, &iou_thresholds(), &mut Scratch::default());
        assert_eq!(e.scores, vec![0.9, 0.5, 0.5]);
        assert!(e
            .outcomes
            .iter()
            .all(|&o| o == FalsePositive || o == Ignored));
    }
}
