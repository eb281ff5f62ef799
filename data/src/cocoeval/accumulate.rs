//! From per-image matches to precision/recall: pycocotools' `accumulate`.
//!
//! For one category, area range and detection budget M, the first M detections of every
//! image's record (already best first within the image) are pooled over the images in
//! ascending image-id order and stably sorted by descending score, so equal scores keep
//! image order, then within-image order. Walking down that list, TP and FP are counted
//! (ignored detections add to neither) and at each position
//!
//! ```text
//! recall    = TP / npig                 npig = number of regular ground truths
//! precision = TP / (TP + FP + eps)      eps = 2.220446049250313e-16
//! ```
//!
//! Precision is replaced by its running maximum from the right (the "envelope"), then read
//! at the 101 recall thresholds: for threshold r the value at the first position whose
//! recall is ≥ r (NumPy's `searchsorted(side='left')`), or 0 when recall never gets there.
//! The final recall is the recall after the last detection (0 with no detections).
//! (Only the values at true positives are ever read, so only those are computed; the
//! argument is in [`accumulate_category`] and a test checks it against the literal
//! position-by-position computation.)
//!
//! A category whose cells hold no regular ground truth in the area range leaves precision
//! and recall at −1 ("undefined"), which the summary then leaves out of its means.

use rayon::prelude::*;

use super::image::{CellEval, Outcome, OUTCOMES_PER_DET};
use super::params::{
    recall_thresholds, MAX_DETS, NUM_AREAS, NUM_IOU_THRESHOLDS, NUM_RECALL_THRESHOLDS,
};

const T: usize = NUM_IOU_THRESHOLDS;
const R: usize = NUM_RECALL_THRESHOLDS;
const A: usize = NUM_AREAS;
const M: usize = MAX_DETS.len();

/// `np.spacing(1)`: the distance from 1.0 to the next f64.
const EPS: f64 = f64::EPSILON;

/// Precision and recall for all categories, with pycocotools' array layout: precision is
/// `[T, R, K, A, M]`, recall `[T, K, A, M]`, row-major, −1 where undefined.
#[derive(Clone, Debug)]
pub struct Accumulation {
    pub num_categories: usize,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
}

impl Accumulation {
    pub fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        self.precision[(((t * R + r) * self.num_categories + k) * A + a) * M + m]
    }

    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        self.recall[((t * self.num_categories + k) * A + a) * M + m]
    }
}

/// One category's share: `precision[t][r][a][m]`, `recall[t][a][m]`.
struct CategoryCurves {
    precision: Vec<f64>,
    recall: Vec<f64>,
}

/// Accumulates every category; `cells[k]` are category k's cells in ascending image order
/// (cells with neither ground truth nor detections are absent, as pycocotools' `None`
/// records are skipped). Categories run in parallel; each is computed serially, so the
/// result does not depend on the thread count.
pub fn accumulate(cells: &[&[CellEval]]) -> Accumulation {
    let k_total = cells.len();
    let per_category: Vec<CategoryCurves> =
        cells.par_iter().map(|c| accumulate_category(c)).collect();
    let mut precision = vec![-1.0; T * R * k_total * A * M];
    let mut recall = vec![-1.0; T * k_total * A * M];
    for (k, curves) in per_category.iter().enumerate() {
        for t in 0..T {
            for a in 0..A {
                for m in 0..M {
                    recall[((t * k_total + k) * A + a) * M + m] =
                        curves.recall[(t * A + a) * M + m];
                    for r in 0..R {
                        precision[(((t * R + r) * k_total + k) * A + a) * M + m] =
                            curves.precision[((t * R + r) * A + a) * M + m];
                    }
                }
            }
        }
    }
    Accumulation {
        num_categories: k_total,
        precision,
        recall,
    }
}

fn accumulate_category(cells: &[CellEval]) -> CategoryCurves {
    let mut out = CategoryCurves {
        precision: vec![-1.0; T * R * A * M],
        recall: vec![-1.0; T * A * M],
    };
    if cells.is_empty() {
        return out;
    }
    let rec_thresholds = recall_thresholds();

    // Every kept detection of the category as (score, cell, detection), cells in image
    // order, then a stable sort by descending score: equal scores keep image order, then
    // within-image order (NumPy's mergesort of -score does the same).
    let mut pooled: Vec<(f64, u32, u32)> = Vec::new();
    for (c, cell) in cells.iter().enumerate() {
        pooled.extend(
            cell.scores
                .iter()
                .enumerate()
                .map(|(d, &s)| (s, c as u32, d as u32)),
        );
    }
    pooled.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));

    // Regular ground truths per area range, over all the category's images.
    let npig: [usize; A] = std::array::from_fn(|a| cells.iter().map(|c| c.num_regular_gt[a]).sum());

    // Recall and precision at the true positives, one list per (area, IoU) slot a·T + t;
    // reused for each maxDets.
    let mut rc: Vec<Vec<f64>> = vec![Vec::new(); A * T];
    let mut pr: Vec<Vec<f64>> = vec![Vec::new(); A * T];

    for (m, &max_det) in MAX_DETS.iter().enumerate() {
        // pycocotools pools the first `max_det` detections of each cell and sorts them.
        // Sorting is stable with a total order (score, then pooled position), so that
        // equals the full sorted list restricted to detections with rank < max_det in
        // their cell: one sort serves all three budgets.
        //
        // Walk down the list once, counting TPs and FPs for every (area, IoU) slot
        // (ignored detections add to neither), and record recall TP/npig and precision
        // TP/(TP + FP + eps) at the true positives only. Nothing else is ever read:
        // recall grows only at a TP, so the first position reaching a recall threshold
        // r > 0 is a TP (and for r = 0 it is position 0); precision only falls at an FP
        // and is 0 before the first TP, so the running maximum from any position on is
        // reached at a TP (or is 0 if none follows). The values are those pycocotools
        // computes at the same positions: the counts are exact integers in f64 and the
        // formulas are the same.
        rc.iter_mut().chain(pr.iter_mut()).for_each(Vec::clear);
        let mut tp = [0u32; OUTCOMES_PER_DET];
        let mut fp = [0u32; OUTCOMES_PER_DET];
        for &(_, c, d) in pooled.iter().filter(|e| (e.2 as usize) < max_det) {
            let outcomes = cells[c as usize].outcomes_of(d as usize);
            for (slot, &o) in outcomes.iter().enumerate() {
                fp[slot] += (o == Outcome::FalsePositive) as u32;
                if o == Outcome::TruePositive {
                    tp[slot] += 1;
                    let (tp, fp) = (tp[slot] as f64, fp[slot] as f64);
                    rc[slot].push(tp / npig[slot / T] as f64);
                    pr[slot].push(tp / (fp + tp + EPS));
                }
            }
        }

        for a in 0..A {
            if npig[a] == 0 {
                continue; // undefined: stays −1
            }
            for t in 0..T {
                let (rc, pr) = (&rc[a * T + t], &mut pr[a * T + t]);
                let n = rc.len();
                out.recall[(t * A + a) * M + m] = if n > 0 { rc[n - 1] } else { 0.0 };

                // Precision envelope: the best precision at this recall or any higher one.
                for j in (1..n).rev() {
                    if pr[j] > pr[j - 1] {
                        pr[j - 1] = pr[j];
                    }
                }
                // Read it at each recall threshold. `rc` is non-decreasing and so are the
                // thresholds, so one forward pointer gives searchsorted('left') for all.
                let mut j = 0;
                for (r, &threshold) in rec_thresholds.iter().enumerate() {
                    while j < n && rc[j] < threshold {
                        j += 1;
                    }
                    out.precision[((t * R + r) * A + a) * M + m] = if j < n { pr[j] } else { 0.0 };
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::image::{evaluate_cell, DetBox, GtBox, Scratch};
    use super::super::params::iou_thresholds;
    use super::*;

    #[test]
    fn two_gts_one_hit_one_miss() {
        // One image, two 10×10 ground truths. Detections: a hit on gt 0 (score 0.9), a
        // false positive far away (0.8), nothing on gt 1.
        // Pooled list: TP, FP → recall 0.5, 0.5; precision 1/(1+eps), 1/(2+eps) = 0.5.
        // 1/(1+eps) rounds to 1−eps = 0.9999999999999998, not 1: pycocotools' "perfect"
        // precision is that number too. Envelope: [1−eps, 0.5]. Thresholds 0.00..0.50
        // (50·0.01 is exactly 0.5) read position 0 → 1−eps (51 values);
        // 0.51..1.00 are never reached → 0. Final recall 0.5.
        let gts = [
            GtBox {
                bbox: [0.0, 0.0, 10.0, 10.0],
                area: 100.0,
                crowd: false,
            },
            GtBox {
                bbox: [50.0, 0.0, 10.0, 10.0],
                area: 100.0,
                crowd: false,
            },
        ];
        let dets = [
            DetBox {
                bbox: [0.0, 0.0, 10.0, 10.0],
                score: 0.9,
            },
            DetBox {
                bbox: [200.0, 0.0, 10.0, 10.0],
                score: 0.8,
            },
        ];
        let cell = evaluate_cell(&gts, &dets, 100, &iou_thresholds(), &mut Scratch::default());
        let acc = accumulate(&[std::slice::from_ref(&cell)]);
        for t in 0..T {
            assert_eq!(acc.recall(t, 0, 0, 2), 0.5);
            for r in 0..R {
                let want = if r <= 50 { 1.0 - EPS } else { 0.0 };
                assert_eq!(acc.precision(t, r, 0, 0, 2), want, "t {t} r {r}");
            }
            // maxDets 1 keeps only the hit: same curve.
            assert_eq!(acc.precision(t, 50, 0, 0, 0), 1.0 - EPS);
            // No large objects: undefined.
            assert_eq!(acc.recall(t, 0, 3, 2), -1.0);
        }
    }

    /// pycocotools' accumulate for one (area, IoU, maxDets), literally: cumulative sums
    /// over every pooled position (ignored ones included), envelope, searchsorted.
    fn literal(cells: &[CellEval], a: usize, t: usize, max_det: usize) -> Option<(Vec<f64>, f64)> {
        let mut pooled = Vec::new();
        for cell in cells {
            for d in 0..cell.scores.len().min(max_det) {
                pooled.push((cell.scores[d], cell.outcome(a, t, d)));
            }
        }
        // NumPy's mergesort of -score: stable.
        pooled.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap());
        let npig: usize = cells.iter().map(|c| c.num_regular_gt[a]).sum();
        if npig == 0 {
            return None;
        }
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let (mut rc, mut pr) = (Vec::new(), Vec::new());
        for &(_, o) in &pooled {
            tp += (o == Outcome::TruePositive) as u8 as f64;
            fp += (o == Outcome::FalsePositive) as u8 as f64;
            rc.push(tp / npig as f64);
            pr.push(tp / (fp + tp + EPS));
        }
        let nd = rc.len();
        let recall = if nd > 0 { rc[nd - 1] } else { 0.0 };
        for i in (1..nd).rev() {
            if pr[i] > pr[i - 1] {
                pr[i - 1] = pr[i];
            }
        }
        let mut q = vec![0.0; R];
        for (r, &thr) in recall_thresholds().iter().enumerate() {
            let j = rc.partition_point(|&v| v < thr); // searchsorted 'left'
            if j >= nd {
                break;
            }
            q[r] = pr[j];
        }
        Some((q, recall))
    }

    #[test]
    fn true_positive_only_curves_equal_the_literal_computation() {
        let mut rng = focal_engine::Rng::new(5);
        for case in 0..200 {
            // A handful of cells with random scores (few distinct values: many ties),
            // random outcomes (some cases with no TP at all or everything ignored) and
            // random regular-gt counts (sometimes 0).
            let p_tp = [0.0, 0.1, 0.4, 0.8][case % 4];
            let p_ign = [0.0, 0.3, 1.0][case % 3];
            let cells: Vec<CellEval> = (0..1 + rng.below(6))
                .map(|_| {
                    let nd = rng.below(25);
                    let mut scores: Vec<f64> = (0..nd).map(|_| rng.below(6) as f64 / 5.0).collect();
                    scores.sort_by(|x, y| y.partial_cmp(x).unwrap());
                    let outcomes = (0..nd * OUTCOMES_PER_DET)
                        .map(|_| {
                            let u = rng.uniform_f64();
                            if u < p_ign {
                                Outcome::Ignored
                            } else if rng.uniform_f64() < p_tp {
                                Outcome::TruePositive
                            } else {
                                Outcome::FalsePositive
                            }
                        })
                        .collect();
                    CellEval {
                        scores,
                        outcomes,
                        num_regular_gt: std::array::from_fn(|_| rng.below(4)),
                    }
                })
                .collect();
            let acc = accumulate(&[&cells]);
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                for a in 0..A {
                    for t in 0..T {
                        match literal(&cells, a, t, max_det) {
                            None => {
                                assert_eq!(acc.recall(t, 0, a, m), -1.0);
                                assert_eq!(acc.precision(t, 0, 0, a, m), -1.0);
                            }
                            Some((q, recall)) => {
                                assert_eq!(acc.recall(t, 0, a, m), recall, "case {case}");
                                for (r, &v) in q.iter().enumerate() {
                                    assert_eq!(
                                        acc.precision(t, r, 0, a, m),
                                        v,
                                        "case {case} r {r}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
