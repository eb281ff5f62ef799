//! The matcher: which ground-truth box, if any, each anchor is trained to detect
//! (§4 "Anchors"; the low-quality matches are torchvision's and Detectron2's).
//!
//! 1. M is the IoU of every ground truth with every anchor (ground truth × anchor).
//! 2. Each anchor takes its best ground truth: the largest IoU in its column (on a tie,
//!    the ground truth listed first). If that IoU is
//!    - ≥ `foreground_iou` (0.5): the anchor is **positive**, matched to that box;
//!    - < `background_iou` (0.4): the anchor is **background**;
//!    - in between: the anchor is **ignored** (no loss of either kind).
//! 3. Low-quality matches (on by default): for each ground truth, every anchor whose IoU
//!    with it equals that ground truth's best IoU over all anchors (ties included) is made
//!    positive — matched to the anchor's *own* best ground truth from step 2, which is
//!    not necessarily the box that promoted it (torchvision's and Detectron2's rule).
//!    This gives every object at least one positive anchor even when its shape fits no
//!    anchor at 0.5. A ground truth whose best IoU is 0 (an empty box, or one outside
//!    every anchor) promotes nothing; the references would promote every anchor instead.
//!
//! An image without ground truth has only background anchors.
//!
//! **Memory.** M is never stored: it has boxes × anchors entries (40 000 boxes on one
//! 512-px image would be 7.9 GB). Each step recomputes the IoUs it needs instead, in
//! three passes over fixed chunks of anchors or boxes — each anchor's best ground truth,
//! each ground truth's best IoU, then the low-quality promotions — so the matcher holds
//! O(anchors + boxes) values whatever the number of boxes, for three times the IoU
//! arithmetic (a few multiplications each, small beside a training step). Every IoU is
//! computed by the same function in the same way, so the result is the same, bit for bit,
//! as from the stored matrix, on any number of threads. The number of boxes per image is
//! capped ([`focal_data::MAX_BOXES_PER_IMAGE`], checked in [`crate::targets`]) to bound
//! the time.

use rayon::prelude::*;

use crate::boxes::{iou, Box4};
use crate::config::MatcherConfig;
use focal_engine::threads::map_indexed;

/// Anchors (or boxes) per parallel task of a pass; fixed, so the work's split never
/// depends on the thread count (and nothing is summed across tasks anyway).
const CHUNK: usize = 1024;

/// What an anchor is trained to predict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// No object: every class target is 0.
    Background,
    /// Between the thresholds: left out of both losses.
    Ignored,
    /// Positive, for the ground-truth box with this index.
    Object(usize),
}

/// IoU of every ground-truth box with every anchor, row-major `[gt][anchor]`
/// (`gts.len() × anchors.len()` values). Entries are independent, so the parallel
/// computation gives the same bits as a sequential one. For inspection and tests:
/// [`match_anchors`] never builds it.
pub fn iou_matrix(gts: &[Box4], anchors: &[Box4]) -> Vec<f32> {
    let n = anchors.len();
    map_indexed(gts.len() * n, |i| iou(&gts[i / n], &anchors[i % n]))
}

/// Matches every anchor (see the module documentation).
pub fn match_anchors(config: &MatcherConfig, gts: &[Box4], anchors: &[Box4]) -> Vec<Match> {
    let n = anchors.len();
    if gts.is_empty() {
        return vec![Match::Background; n];
    }
    let g_count = gts.len();

    // Step 2: each anchor's best ground truth (first one on ties) and its IoU.
    let mut best_gt = vec![0usize; n];
    let mut best_iou = vec![0.0f32; n];
    best_gt
        .par_chunks_mut(CHUNK)
        .zip(best_iou.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (gt_out, iou_out))| {
            for (j, (bg, bi)) in gt_out.iter_mut().zip(iou_out.iter_mut()).enumerate() {
                let anchor = &anchors[c * CHUNK + j];
                for (g, gt) in gts.iter().enumerate() {
                    let v = iou(gt, anchor);
                    if v > *bi || g == 0 {
                        *bi = v;
                        *bg = g;
                    }
                }
            }
        });
    let mut matches: Vec<Match> = (0..n)
        .map(|a| {
            if best_iou[a] >= config.foreground_iou {
                Match::Object(best_gt[a])
            } else if best_iou[a] < config.background_iou {
                Match::Background
            } else {
                Match::Ignored
            }
        })
        .collect();

    // Step 3: each ground truth's best anchors, ties included, become positive.
    if config.low_quality_matches {
        // Each ground truth's best IoU over all anchors (a max: exact in any order).
        let gt_best: Vec<f32> = (0..g_count)
            .into_par_iter()
            .map(|g| {
                anchors
                    .iter()
                    .map(|a| iou(&gts[g], a))
                    .fold(0.0f32, f32::max)
            })
            .collect();
        matches
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                for (j, m) in out.iter_mut().enumerate() {
                    let a = c * CHUNK + j;
                    let promoted = gts
                        .iter()
                        .zip(&gt_best)
                        .any(|(gt, &best)| best > 0.0 && iou(gt, &anchors[a]) == best);
                    if promoted {
                        *m = Match::Object(best_gt[a]);
                    }
                }
            });
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_engine::threads::with_threads;
    use focal_engine::Rng;

    fn cfg() -> MatcherConfig {
        MatcherConfig::default()
    }

    #[test]
    fn thresholds_and_the_ignore_band() {
        // gt [0,0,10,10] (area 100). Anchors [0,0,10,w] overlap it in 10·min(w,10):
        //   w = 10 → IoU 1 (positive); [0,0,10,5] → 50/100 = 0.5 (positive, ≥);
        //   [0,0,10,4.5] → 45/100 = 0.45 (ignored); [0,0,10,4] → 0.4 (ignored: the band
        //   is [0.4, 0.5)); [0,0,10,3.9] → 0.39 (background); far away → 0.
        let gts = [[0., 0., 10., 10.]];
        let anchors = [
            [0., 0., 10., 10.],
            [0., 0., 10., 5.],
            [0., 0., 10., 4.5],
            [0., 0., 10., 4.],
            [0., 0., 10., 3.9],
            [50., 50., 60., 60.],
        ];
        let m = match_anchors(&cfg(), &gts, &anchors);
        use Match::*;
        assert_eq!(
            m,
            vec![
                Object(0),
                Object(0),
                Ignored,
                Ignored,
                Background,
                Background
            ]
        );
        // Other thresholds are configurable.
        let c = MatcherConfig {
            foreground_iou: 0.45,
            background_iou: 0.45,
            low_quality_matches: false,
        };
        let m = match_anchors(&c, &gts, &anchors);
        assert_eq!(
            m,
            vec![
                Object(0),
                Object(0),
                Object(0),
                Background,
                Background,
                Background
            ]
        );
    }

    #[test]
    fn a_low_quality_match_takes_the_anchors_own_best_gt() {
        // gt0 = [0,0,10,10]; gt1 = [0,0,30,2] (area 60), a thin box no anchor fits.
        // Anchor 0 = [0,0,10,10]: IoU 1 with gt0, with gt1 20/(100+60−20) = 1/7.
        // Anchor 1 = [0,0,20,10]: IoU with gt0 100/200 = 0.5 (positive for gt0), with
        //   gt1 40/(200+60−40) = 0.1818 — gt1's best anchor, so it is "promoted", but it
        //   keeps its own best match gt0.
        // Anchor 2 = [20,0,40,4]: IoU with gt1 20/(80+60−20) = 1/6 = 0.1667 < 0.1818.
        let gts = [[0., 0., 10., 10.], [0., 0., 30., 2.]];
        let anchors = [[0., 0., 10., 10.], [0., 0., 20., 10.], [20., 0., 40., 4.]];
        use Match::*;
        let m = match_anchors(&cfg(), &gts, &anchors);
        assert_eq!(m, vec![Object(0), Object(0), Background]);

        // Now only gt1, which has best IoU 0.1818 at anchor 1: the low-quality rule
        // makes anchor 1 positive for gt1 although 0.18 < 0.4.
        let m = match_anchors(&cfg(), &gts[1..], &anchors);
        assert_eq!(m, vec![Background, Object(0), Background]);
        // Off: no positive at all.
        let off = MatcherConfig {
            low_quality_matches: false,
            ..cfg()
        };
        let m = match_anchors(&off, &gts[1..], &anchors);
        assert_eq!(m, vec![Background, Background, Background]);
    }

    #[test]
    fn ties_promote_every_best_anchor_and_argmax_takes_the_first_gt() {
        // gt [0,0,10,10]; anchors [0,0,20,20] and [−10,−10,10,10] both contain it:
        // IoU 100/400 = 0.25 for each, a tie for the gt's best anchor.
        let gts = [[0., 0., 10., 10.]];
        let anchors = [
            [0., 0., 20., 20.],
            [-10., -10., 10., 10.],
            [5., 5., 25., 25.],
        ];
        // Anchor 2 overlaps in 5·5 = 25: 25/(100+400−25) = 0.0526 — not a best match.
        use Match::*;
        let m = match_anchors(&cfg(), &gts, &anchors);
        assert_eq!(m, vec![Object(0), Object(0), Background]);

        // Two identical ground truths: the anchor's argmax is the first one.
        let gts = [[0., 0., 10., 10.], [0., 0., 10., 10.]];
        let m = match_anchors(&cfg(), &gts, &anchors[..1]);
        assert_eq!(m, vec![Object(0)]);
    }

    #[test]
    fn no_ground_truth_means_all_background() {
        let a = crate::anchors::Anchors::generate(&Default::default(), 64, 64);
        let m = match_anchors(&cfg(), &[], &a.boxes);
        assert_eq!(m.len(), 774);
        assert!(m.iter().all(|&x| x == Match::Background));
        // An empty ground-truth box promotes nothing.
        let m = match_anchors(&cfg(), &[[5., 5., 5., 5.]], &a.boxes);
        assert!(m.iter().all(|&x| x == Match::Background));
    }

    /// The matcher as it was written with the whole IoU matrix in memory: the chunked
    /// passes must give exactly its result.
    fn match_with_matrix(config: &MatcherConfig, gts: &[Box4], anchors: &[Box4]) -> Vec<Match> {
        let n = anchors.len();
        if gts.is_empty() {
            return vec![Match::Background; n];
        }
        let m = iou_matrix(gts, anchors);
        let mut best_gt = vec![0usize; n];
        let mut best_iou = vec![0.0f32; n];
        for a in 0..n {
            for g in 0..gts.len() {
                let v = m[g * n + a];
                if v > best_iou[a] || g == 0 {
                    best_iou[a] = v;
                    best_gt[a] = g;
                }
            }
        }
        let mut matches: Vec<Match> = (0..n)
            .map(|a| {
                if best_iou[a] >= config.foreground_iou {
                    Match::Object(best_gt[a])
                } else if best_iou[a] < config.background_iou {
                    Match::Background
                } else {
                    Match::Ignored
                }
            })
            .collect();
        if config.low_quality_matches {
            for g in 0..gts.len() {
                let row = &m[g * n..(g + 1) * n];
                let best = row.iter().copied().fold(0.0f32, f32::max);
                if best <= 0.0 {
                    continue;
                }
                for (a, &v) in row.iter().enumerate() {
                    if v == best {
                        matches[a] = Match::Object(best_gt[a]);
                    }
                }
            }
        }
        matches
    }

    #[test]
    fn chunked_passes_equal_the_whole_matrix_on_any_thread_count() {
        let anchors = crate::anchors::Anchors::generate(&Default::default(), 200, 160);
        let mut rng = Rng::new(5);
        let gts: Vec<Box4> = (0..37)
            .map(|_| {
                let (x, y) = (rng.uniform_range(-20., 190.), rng.uniform_range(-20., 150.));
                [
                    x,
                    y,
                    x + rng.uniform_range(1., 120.),
                    y + rng.uniform_range(1., 90.),
                ]
            })
            .collect();
        for low in [true, false] {
            let c = MatcherConfig {
                low_quality_matches: low,
                ..cfg()
            };
            let want = match_with_matrix(&c, &gts, &anchors.boxes);
            assert!(want.iter().any(|m| matches!(m, Match::Object(_))));
            for threads in [1, 3] {
                let got = with_threads(threads, || match_anchors(&c, &gts, &anchors.boxes));
                assert_eq!(got, want, "{threads} threads, low-quality {low}");
            }
        }
    }

    #[test]
    fn iou_matrix_matches_a_naive_loop_for_any_thread_count() {
        let mut rng = Rng::new(9);
        let mut boxes = |n: usize| -> Vec<Box4> {
            (0..n)
                .map(|_| {
                    let (x, y) = (rng.uniform_range(0., 300.), rng.uniform_range(0., 300.));
                    [
                        x,
                        y,
                        x + rng.uniform_range(1., 200.),
                        y + rng.uniform_range(1., 200.),
                    ]
                })
                .collect()
        };
        let gts = boxes(7);
        let anchors = boxes(9000); // 63 000 entries: above the parallel threshold
        let one = with_threads(1, || iou_matrix(&gts, &anchors));
        let two = with_threads(3, || iou_matrix(&gts, &anchors));
        assert_eq!(one, two);
        for g in 0..gts.len() {
            for a in (0..anchors.len()).step_by(97) {
                assert_eq!(one[g * anchors.len() + a], iou(&gts[g], &anchors[a]));
            }
        }
    }
}
