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
//!
//! A category whose cells hold no regular ground truth in the area range leaves precision
//! and recall at −1 ("undefined"), which the summary then leaves out of its means.

use rayon::prelude::*;

use super::image::{CellEval, Outcome};
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
    for (m, &max_det) in MAX_DETS.iter().enumerate() {
        // (cell, detection) pairs, first `max_det` of each cell, in image order; then a
        // stable sort by descending score. The pooled set does not depend on the area
        // range, so one sort serves all four.
        let mut pooled: Vec<(usize, usize)> = Vec::new();
        for (c, cell) in cells.iter().enumerate() {
            pooled.extend((0..cell.scores.len().min(max_det)).map(|d| (c, d)));
        }
        pooled.sort_by(|&(c1, d1), &(c2, d2)| {
            cells[c2].scores[d2]
                .partial_cmp(&cells[c1].scores[d1])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let nd = pooled.len();
        let mut rc = vec![0.0; nd];
        let mut pr = vec![0.0; nd];

        for a in 0..A {
            let npig: usize = cells.iter().map(|c| c.num_regular_gt[a]).sum();
            if npig == 0 {
                continue;
            }
            for t in 0..T {
                // Cumulative TP and FP counts down the list, as f64 like NumPy's
                // `cumsum(...).astype(float)`.
                let (mut tp, mut fp) = (0.0f64, 0.0f64);
                for (j, &(c, d)) in pooled.iter().enumerate() {
                    match cells[c].outcome(a, t, d) {
                        Outcome::TruePositive => tp += 1.0,
                        Outcome::FalsePositive => fp += 1.0,
                        Outcome::Ignored => {}
                    }
                    rc[j] = tp / npig as f64;
                    pr[j] = tp / (fp + tp + EPS);
                }
                out.recall[(t * A + a) * M + m] = if nd > 0 { rc[nd - 1] } else { 0.0 };

                // Precision envelope: the best precision at this recall or any higher one.
                for j in (1..nd).rev() {
                    if pr[j] > pr[j - 1] {
                        pr[j - 1] = pr[j];
                    }
                }
                // Read it at each recall threshold. `rc` is non-decreasing and so are the
                // thresholds, so one forward pointer gives searchsorted('left') for all.
                let mut j = 0;
                for (r, &threshold) in rec_thresholds.iter().enumerate() {
                    while j < nd && rc[j] < threshold {
                        j += 1;
                    }
                    out.precision[((t * R + r) * A + a) * M + m] = if j < nd { pr[j] } else { 0.0 };
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::image::{evaluate_cell, DetBox, GtBox};
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
        let cell = evaluate_cell(&gts, &dets, 100, &iou_thresholds());
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
}
