//! COCO bounding-box evaluation, reproducing pycocotools' `COCOeval(iouType='bbox')`
//! number for number.
//!
//! The algorithm of pycocotools' `cocoeval.py` (`evaluate`, `accumulate`, `summarize`),
//! step by step:
//!
//! 1. **Prepare** ([`evaluate`]): images are the ground truth's image ids, sorted;
//!    categories its category ids, sorted. Ground truths and detections are grouped into
//!    (category, image) *cells*, each in file order. Detections of categories the ground
//!    truth does not have are dropped, as pycocotools drops them. A ground truth is
//!    ignored if it is a crowd region (`iscrowd`; any `ignore` key is not read).
//! 2. **Match** ([`image`]): per cell, the best 100 detections (stable by score) are
//!    matched greedily to ground truths at each of 10 IoU thresholds ([`iou`]) and for
//!    each of 4 area ranges ([`params`]).
//! 3. **Accumulate** ([`accumulate`]): per category, area range and maxDets, detections
//!    of all images are pooled and sorted by score, and a 101-point interpolated
//!    precision/recall curve is read off.
//! 4. **Summarize** ([`summary`]): means over the defined entries give the 12 numbers
//!    ([`CocoStats`], [`stats`]) and AP per category.
//!
//! Cells are independent, so step 2 runs in parallel over cells and step 3 over
//! categories; each unit is computed serially and the results are gathered in a fixed
//! order, so the numbers do not depend on the thread count.
//!
//! Where pycocotools would crash or silently misbehave, focal gives a clear error
//! instead: a ground-truth annotation without `area` (pycocotools raises KeyError), an
//! annotation id 0 (pycocotools stores matches as the gt id, with 0 meaning "unmatched",
//! so a match to annotation 0 would count as a false positive), a detection naming an
//! image the ground truth lacks (pycocotools asserts), and non-finite detection values.
//! A missing `iscrowd` (pycocotools: KeyError) is read as 0 by [`crate::coco_format`].
//!
//! **No detections.** pycocotools cannot evaluate an empty results list (`loadRes` reads
//! `anns[0]` and raises IndexError). focal evaluates it as pycocotools would if it had
//! accepted the list: every cell holding ground truth yields a record with zero
//! detections, so each category with regular ground truth in a range has npig > 0 and an
//! empty detection list, giving recall 0 and precision 0 at all 101 thresholds (no
//! recall threshold is ever reached). All 12 numbers are therefore 0, except −1 for a
//! range with no regular ground truth at all (e.g. APl when nothing is large), and every
//! category with ground truth has AP 0.

pub mod accumulate;
pub mod image;
pub mod iou;
pub mod params;
pub mod stats;
pub mod summary;

use std::collections::HashMap;
use std::ops::Range;

use rayon::prelude::*;

use crate::coco_format::CocoFile;
use crate::error::{Error, Result};
use crate::results::Detection;

use image::{evaluate_cell, CellEval, DetBox, GtBox, Scratch};
use params::{iou_thresholds, MAX_DETS};

pub use stats::{CocoStats, STAT_NAMES};
pub use summary::{CategoryAp, EvalResult};

/// One (category, image) cell: its ground truths and detections are these ranges of the
/// cell-sorted lists; `index` = category index · number of images + image index.
struct Cell {
    index: usize,
    gts: Range<usize>,
    dets: Range<usize>,
}

/// Evaluates `dets` against the ground truth `gt`, exactly as pycocotools' COCOeval for
/// bounding boxes (evaluate + accumulate + summarize) with its default parameters.
pub fn evaluate(gt: &CocoFile, dets: &[Detection]) -> Result<EvalResult> {
    // Images and categories, sorted and deduplicated (np.unique).
    let mut img_ids: Vec<i64> = gt.images.iter().map(|im| im.id).collect();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let img_index: HashMap<i64, usize> =
        img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_index: HashMap<i64, usize> =
        cat_ids.iter().enumerate().map(|(k, &id)| (id, k)).collect();
    let n_img = img_ids.len();
    let cell_of = |image_id: i64, category_id: i64| -> Option<usize> {
        Some(cat_index.get(&category_id)? * n_img + img_index.get(&image_id)?)
    };

    // Ground truths: (cell, position in file) keys and their boxes. Annotations of
    // unknown images or categories take no part (pycocotools selects annotations by
    // image and category id).
    let mut gt_keys: Vec<(usize, usize)> = Vec::with_capacity(gt.annotations.len());
    let mut gt_boxes: Vec<GtBox> = Vec::with_capacity(gt.annotations.len());
    for (pos, a) in gt.annotations.iter().enumerate() {
        let Some(cell) = cell_of(a.image_id, a.category_id) else {
            continue;
        };
        if a.id == 0 {
            return Err(Error::new(format!(
                "ground-truth annotation at entry {pos} has id 0; COCOeval records a match \
                 by the annotation id with 0 meaning \"no match\", so pycocotools would \
                 count matches to it as false positives. Number annotations from 1."
            )));
        }
        let area = a.area.ok_or_else(|| {
            Error::new(format!(
                "ground-truth annotation id {} (entry {pos}) has no `area` field, which COCO \
                 evaluation needs for the small/medium/large split (pycocotools fails with \
                 KeyError: 'area')",
                a.id
            ))
        })?;
        gt_keys.push((cell, gt_boxes.len()));
        gt_boxes.push(GtBox {
            bbox: a.bbox,
            area,
            crowd: a.iscrowd != 0,
        });
    }
    let num_ground_truth = gt_boxes.len();

    // Detections likewise.
    let mut det_keys: Vec<(usize, usize)> = Vec::with_capacity(dets.len());
    let mut det_boxes: Vec<DetBox> = Vec::with_capacity(dets.len());
    for (pos, d) in dets.iter().enumerate() {
        if !d.score.is_finite() || d.bbox.iter().any(|v| !v.is_finite()) {
            return Err(Error::new(format!(
                "detection {pos} has a non-finite value (bbox {:?}, score {})",
                d.bbox, d.score
            )));
        }
        if !img_index.contains_key(&d.image_id) {
            return Err(Error::new(format!(
                "detection {pos} names image id {}, which is not in the ground truth",
                d.image_id
            )));
        }
        // A category the ground truth lacks is dropped, as in pycocotools.
        if let Some(cell) = cell_of(d.image_id, d.category_id) {
            det_keys.push((cell, det_boxes.len()));
            det_boxes.push(DetBox {
                bbox: d.bbox,
                score: d.score,
            });
        }
    }
    // Group by cell; the position breaks ties, so file order is kept within a cell.
    gt_keys.sort_unstable();
    det_keys.sort_unstable();
    let gt_boxes: Vec<GtBox> = gt_keys.iter().map(|&(_, i)| gt_boxes[i]).collect();
    let det_boxes: Vec<DetBox> = det_keys.iter().map(|&(_, i)| det_boxes[i]).collect();

    // Walk both sorted lists together: one work item per cell that holds anything, in
    // ascending (category, image) order.
    let mut work: Vec<Cell> = Vec::new();
    let (mut gi, mut di) = (0, 0);
    while gi < gt_keys.len() || di < det_keys.len() {
        let next_g = gt_keys.get(gi).map_or(usize::MAX, |x| x.0);
        let next_d = det_keys.get(di).map_or(usize::MAX, |x| x.0);
        let cell = next_g.min(next_d);
        let g_end = gi + gt_keys[gi..].iter().take_while(|x| x.0 == cell).count();
        let d_end = di + det_keys[di..].iter().take_while(|x| x.0 == cell).count();
        work.push(Cell {
            index: cell,
            gts: gi..g_end,
            dets: di..d_end,
        });
        gi = g_end;
        di = d_end;
    }

    // Step 2, in parallel over cells (each worker reuses its own scratch memory).
    let thresholds = iou_thresholds();
    let max_det = MAX_DETS[MAX_DETS.len() - 1];
    let evals: Vec<CellEval> = work
        .par_iter()
        .map_init(Scratch::default, |scratch, c| {
            evaluate_cell(
                &gt_boxes[c.gts.clone()],
                &det_boxes[c.dets.clone()],
                max_det,
                &thresholds,
                scratch,
            )
        })
        .collect();

    // Step 3: each category's cells are a contiguous run of `evals`.
    let mut by_category: Vec<&[CellEval]> = Vec::with_capacity(cat_ids.len());
    let mut start = 0;
    for k in 0..cat_ids.len() {
        let len = work[start..]
            .iter()
            .take_while(|c| c.index / n_img.max(1) == k)
            .count();
        by_category.push(&evals[start..start + len]);
        start += len;
    }
    let acc = accumulate::accumulate(&by_category);

    // Step 4.
    let (stats, ap) = summary::summarize(&acc);
    let names = gt.category_names();
    let per_category = cat_ids
        .iter()
        .zip(ap)
        .map(|(&id, ap)| CategoryAp {
            id,
            name: names[&id].clone(),
            ap,
        })
        .collect();
    Ok(EvalResult {
        stats: CocoStats::from_array(stats),
        per_category,
        num_images: n_img,
        num_ground_truth,
        num_detections: dets.len(),
    })
}
