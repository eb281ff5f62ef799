//! Hand-built COCO evaluation cases whose numbers are worked out in the comments.
//!
//! Conventions used in the arithmetic below:
//! * "TP", "FP", "Ign" are what each detection counts as, in pooled score order;
//!   recall rc = TP/npig, precision pr = TP/(TP + FP + eps), the envelope is the running
//!   maximum from the right, and the precision at recall threshold r/100 is the envelope
//!   at the first position with rc ≥ r/100 (0 if none).
//! * A single exact hit has precision 1/(1 + eps) = 1 − eps, so "≈ 1" values are within
//!   1e-15 of the fractions written; the comparisons allow 1e-12. (Bit-exactness against
//!   pycocotools itself is tested in cocoeval_pycocotools.rs.)
//! * Stats order: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.
//!
//! The same cases were also run through pycocotools 2.0.11, which printed the same numbers
//! (rounded to 12 digits): `python data/tests/fixtures/cocoeval/golden_check.py`, with a
//! Python that has pycocotools and NumPy (`pip install pycocotools numpy`).

use std::path::Path;

use focal_data::coco_format::{CocoAnnotation, CocoCategory, CocoFile, CocoImage};
use focal_data::{evaluate, Detection, EvalResult};

fn gt_file(
    images: &[i64],
    categories: &[(i64, &str)],
    annotations: Vec<CocoAnnotation>,
) -> CocoFile {
    let file = CocoFile {
        images: images
            .iter()
            .map(|&id| CocoImage {
                id,
                file_name: format!("{id}.jpg"),
                width: 640,
                height: 480,
            })
            .collect(),
        annotations,
        categories: categories
            .iter()
            .map(|&(id, name)| CocoCategory {
                id,
                name: name.to_string(),
                supercategory: None,
            })
            .collect(),
    };
    file.validate(Path::new("golden.json")).unwrap();
    file
}

/// A ground truth whose `area` field is its box area.
fn ann(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4]) -> CocoAnnotation {
    ann_area(id, image_id, category_id, bbox, bbox[2] * bbox[3])
}

fn ann_area(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4], area: f64) -> CocoAnnotation {
    CocoAnnotation {
        id,
        image_id,
        category_id,
        bbox,
        area: Some(area),
        iscrowd: 0,
    }
}

fn crowd(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4]) -> CocoAnnotation {
    CocoAnnotation {
        iscrowd: 1,
        ..ann(id, image_id, category_id, bbox)
    }
}

fn det(image_id: i64, category_id: i64, bbox: [f64; 4], score: f64) -> Detection {
    Detection {
        image_id,
        category_id,
        bbox,
        score,
    }
}

fn assert_stats(r: &EvalResult, want: [f64; 12]) {
    for (i, (got, want)) in r.stats.to_array().iter().zip(want).enumerate() {
        assert!(
            (got - want).abs() <= 1e-12,
            "{}: got {got}, want {want}\nall: {:?}",
            focal_data::cocoeval::STAT_NAMES[i],
            r.stats
        );
    }
}

fn assert_ap(r: &EvalResult, category: i64, want: Option<f64>) {
    let got = r.per_category.iter().find(|c| c.id == category).unwrap().ap;
    match (got, want) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-12, "category {category}: {g} vs {w}"),
        _ => assert_eq!(got, want, "category {category}"),
    }
}

#[test]
fn crowd_region_is_ignored_reusable_and_measured_by_detection_area() {
    // Image 1, category 1: a regular 10×10 gt A at the origin and a 50×50 crowd region C
    // at (50, 0). Detections, best first:
    //   d2 (0.95) 10×10 at (60,10), inside C: crowd IoU = 100/100 = 1 (the det's area is
    //      the denominator; the ordinary union would give 100/2500 = 0.04) → matches C → Ign
    //   d3 (0.92) 10×10 at (70,10), also inside C: C is a crowd, so it can be matched again → Ign
    //   d1 (0.90) exactly A → TP
    //   d4 (0.60) far away → FP
    // npig = 1 (C does not count). TP 0,0,1,1; FP 0,0,0,1 → rc 0,0,1,1;
    // pr 0, 0, 1−eps, 0.5 → envelope 1−eps, 1−eps, 1−eps, 0.5. Every threshold lands on
    // an index ≤ 2 → precision 1 everywhere, at every IoU: AP = AP50 = AP75 = 1.
    // (Counting d2, d3 as FPs would give pr 0, 0, 1/3 → AP 1/3; a crowd that can be
    // matched once would leave d3 an FP → AP 1/2.)
    // AR1: one detection per image, d2, ignored → recall 0. AR10 = AR100 = 1.
    // Areas: A is 100 → small; C (2500) is ignored anyway, so medium and large have no
    // regular gt → −1.
    let gt = gt_file(
        &[1],
        &[(1, "person")],
        vec![
            ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0]),
            crowd(2, 1, 1, [50.0, 0.0, 50.0, 50.0]),
        ],
    );
    let dets = [
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.90),
        det(1, 1, [60.0, 10.0, 10.0, 10.0], 0.95),
        det(1, 1, [70.0, 10.0, 10.0, 10.0], 0.92),
        det(1, 1, [300.0, 300.0, 10.0, 10.0], 0.60),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    assert_stats(
        &r,
        [
            1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0, -1.0, -1.0,
        ],
    );
    assert_ap(&r, 1, Some(1.0));
}

#[test]
fn area_bounds_1024_and_9216_are_inclusive_and_use_the_area_field() {
    // Category 1, one image:
    //   g1: box 40×40 (box area 1600) but `area` field exactly 1024 → small AND medium
    //   g2: box 96×96, area 9216 → medium AND large
    //   g3: box 100×200, area 20000 → large
    // Detections: d3 (0.95) a 5×5 box far away (area 25), d1 (0.90) = g1, d2 (0.80) = g2.
    //
    // all: FP, TP, TP; npig 3 → rc 0, 1/3, 2/3; pr 0, 1/2, 2/(3+eps) ≈ 2/3 → envelope
    //   2/3 everywhere. r = 0..66 reach (r = 66: 0.66 ≤ 0.667), r = 67..100 do not:
    //   AP = 67/101 · 2/3 = 134/303, at every IoU (exact boxes). AR100 = AR10 = 2/3;
    //   AR1 keeps only d3 (an FP) → 0.
    // small [0, 1024]: g1 regular (1024 ≤ 1024), g2, g3 ignored. d3 (25, inside) FP, d1
    //   TP, d2 matches the ignored g2 → Ign. npig 1: rc 0, 1, 1; pr 0, 1/2, 1/2 →
    //   APs = 1/2, ARs = 1. (Using the box area 1600 would leave small empty → −1.)
    // medium [1024, 9216]: g1 and g2 regular (both bounds inclusive). d3 unmatched with
    //   area 25 < 1024 → Ign; d1, d2 TP. npig 2 → APm = 1, ARm = 1.
    // large [9216, 1e10]: g2 (9216 ≥ 9216) and g3 regular, g1 ignored. d3 Ign, d1 matches
    //   the ignored g1 → Ign, d2 TP. npig 2: rc 0, 0, 1/2; pr 0, 0, 1−eps → r = 0..50 give
    //   1: APl = 51/101, ARl = 1/2.
    let gt = gt_file(
        &[1],
        &[(1, "box")],
        vec![
            ann_area(1, 1, 1, [0.0, 0.0, 40.0, 40.0], 1024.0),
            ann_area(2, 1, 1, [100.0, 0.0, 96.0, 96.0], 9216.0),
            ann_area(3, 1, 1, [300.0, 0.0, 100.0, 200.0], 20000.0),
        ],
    );
    let dets = [
        det(1, 1, [500.0, 400.0, 5.0, 5.0], 0.95),
        det(1, 1, [0.0, 0.0, 40.0, 40.0], 0.90),
        det(1, 1, [100.0, 0.0, 96.0, 96.0], 0.80),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    let all = 134.0 / 303.0;
    assert_stats(
        &r,
        [
            all,
            all,
            all,
            0.5,
            1.0,
            51.0 / 101.0,
            0.0,
            2.0 / 3.0,
            2.0 / 3.0,
            1.0,
            1.0,
            0.5,
        ],
    );

    // The same ground truth with no detections at all: every range has regular gt, so
    // every number is 0 (see the module comment of cocoeval on empty results).
    let r = evaluate(&gt, &[]).unwrap();
    assert_stats(&r, [0.0; 12]);
    assert_ap(&r, 1, Some(0.0));
    assert_eq!(r.num_detections, 0);
}

#[test]
fn iou_exactly_half_and_exactly_085() {
    // Category 1: gt [0,0,10,10], det [0,0,20,10]: w = min(20,10) − max(0,0) = 10, h = 10,
    //   inter 100, union 200 + 100 − 100 = 200 → IoU 100/200 = 0.5 exactly. It matches at
    //   t = 0.5 only (≥, not >). AP(cat 1) = (1/10)·(1−eps) ≈ 0.1: precision 1 at t = 0.5,
    //   0 at the other nine thresholds (an FP alone gives precision 0 at r = 0 and nothing
    //   beyond). Recall: 1 at t = 0.5, else 0 → 0.1.
    // Category 2: gt [0,0,37,10], det [3,0,37,10]: w = min(40,37) − max(3,0) = 34, h = 10,
    //   inter 340, union 370 + 370 − 340 = 400 → 340/400 = 0.85, which rounds to the same
    //   f64 as the literal 0.85 and as linspace's 8th threshold (0.85). It matches at
    //   t = 0.50 ... 0.85 (8 thresholds) and fails at 0.8999999999999999 and 0.95:
    //   AP(cat 2) = 0.8, recall 0.8. (With thresholds 0.5 + 0.05·t the 8th would be
    //   0.8500000000000001 and AP would drop to 0.7.)
    // AP = mean over categories = 0.45; AP50 = 1 (both match at 0.5); AP75: only cat 2 →
    //   0.5. All areas (100 and 370) are small → APs = AP, medium/large −1.
    //   AR1 = AR10 = AR100 = ARs = (0.1 + 0.8)/2 = 0.45.
    let gt = gt_file(
        &[1],
        &[(1, "half"), (2, "eighty-five")],
        vec![
            ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0]),
            ann(2, 1, 2, [0.0, 0.0, 37.0, 10.0]),
        ],
    );
    assert_eq!(340.0f64 / 400.0, 0.85);
    let dets = [
        det(1, 1, [0.0, 0.0, 20.0, 10.0], 0.5),
        det(1, 2, [3.0, 0.0, 37.0, 10.0], 0.5),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    assert_stats(
        &r,
        [
            0.45, 1.0, 0.5, 0.45, -1.0, -1.0, 0.45, 0.45, 0.45, 0.45, -1.0, -1.0,
        ],
    );
    assert_ap(&r, 1, Some(0.1));
    assert_ap(&r, 2, Some(0.8));
}

#[test]
fn equal_scores_across_images_go_in_ascending_image_id_order() {
    // Category 1, images 7 and 3 (listed in that order), one 10×10 gt each. Both
    // detections score 0.5; image 7's is listed first in the file and hits its gt (TP),
    // image 3's is far from its gt (FP).
    // Pooled order: equal scores keep image order, and images are taken by ascending id,
    // so image 3 first: FP, TP. npig 2 → rc 0, 1/2; pr 0, 1/2 → envelope 1/2, 1/2;
    // r = 0..50 reach → AP = 51/101 · 1/2 = 51/202 ≈ 0.2525 (at every IoU).
    // (File order, TP then FP, would give pr 1, 1/2 → AP = 51/101 ≈ 0.505.)
    // AR1 = AR10 = AR100 = 1/2.
    let gt = gt_file(
        &[7, 3],
        &[(1, "a")],
        vec![
            ann(1, 7, 1, [0.0, 0.0, 10.0, 10.0]),
            ann(2, 3, 1, [0.0, 0.0, 10.0, 10.0]),
        ],
    );
    let dets = [
        det(7, 1, [0.0, 0.0, 10.0, 10.0], 0.5),
        det(3, 1, [200.0, 200.0, 10.0, 10.0], 0.5),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    let ap = 51.0 / 202.0;
    assert_stats(
        &r,
        [ap, ap, ap, ap, -1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0, -1.0],
    );

    // Within one image, equal scores keep file order: the FP listed first comes first.
    // Image 3 now holds both detections (FP first in the file, then a hit at the same
    // score): FP, TP with npig 2 (image 7 has no detection) → again 51/202.
    let dets = [
        det(3, 1, [200.0, 200.0, 10.0, 10.0], 0.5),
        det(3, 1, [0.0, 0.0, 10.0, 10.0], 0.5),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    assert_stats(
        &r,
        [ap, ap, ap, ap, -1.0, -1.0, 0.0, 0.5, 0.5, 0.5, -1.0, -1.0],
    );
}

#[test]
fn at_most_100_detections_per_image_and_category() {
    // Image 1: category 1 has gts g1 [0,0,10,10] and g2 [50,0,10,10]; category 2 has g3.
    // Category 1 gets 150 detections: 148 FPs (far away) with scores
    // 0.999, 0.998, ..., 0.852, an exact hit on g1 with 0.9005 and one on g2 with 0.9003.
    // By score: 99 FPs (0.999 ... 0.901), hit g1 (rank 100), hit g2 (rank 101), FPs.
    // The cut at 100 keeps hit g1 and drops hit g2 (even though it is listed first).
    //   npig 2: TP count reaches 1 at index 99 → rc 1/2, pr 1/(99 + 1 + eps) = 0.01;
    //   the envelope is 0.01 from index 0 to 99; r = 0..50 → 0.01, r ≥ 51 → 0.
    //   AP(cat 1) = 51 · 0.01 / 101 = 0.51/101 ≈ 0.00504950; recall 1/2 at maxDets 100,
    //   0 at 1 and 10 (the top 10 are all FPs).
    // Category 2: a single exact hit with the lowest score of the image (0.001). The
    // budget is per image *and category*, so it survives: AP(cat 2) = 1, recall 1 at
    // every maxDets. (A per-image budget of 100 would have dropped it.)
    // AP = (0.51/101 + 1)/2; AR1 = AR10 = (0 + 1)/2; AR100 = (1/2 + 1)/2 = 0.75.
    // All boxes are 10×10 → small; medium and large −1.
    let gt = gt_file(
        &[1],
        &[(1, "many"), (2, "one")],
        vec![
            ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0]),
            ann(2, 1, 1, [50.0, 0.0, 10.0, 10.0]),
            ann(3, 1, 2, [100.0, 0.0, 10.0, 10.0]),
        ],
    );
    let mut dets = vec![
        det(1, 1, [50.0, 0.0, 10.0, 10.0], 0.9003),
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9005),
    ];
    for i in 0..148 {
        let score = 1.0 - (i + 1) as f64 / 1000.0;
        dets.push(det(1, 1, [400.0, 300.0 - i as f64, 10.0, 10.0], score));
    }
    dets.push(det(1, 2, [100.0, 0.0, 10.0, 10.0], 0.001));
    let r = evaluate(&gt, &dets).unwrap();
    let ap = (0.51 / 101.0 + 1.0) / 2.0;
    assert_stats(
        &r,
        [ap, ap, ap, ap, -1.0, -1.0, 0.5, 0.5, 0.75, 0.75, -1.0, -1.0],
    );
    assert_ap(&r, 1, Some(0.51 / 101.0));
    assert_ap(&r, 2, Some(1.0));
}

#[test]
fn categories_without_ground_truth_are_left_out_of_the_means() {
    // Category 1 ("cat") has one gt, hit exactly (score 0.9). Category 2 ("dog") has no gt
    // but two detections; category 3 ("emu") has neither. A detection of category 99,
    // which the ground truth does not list, is dropped (as pycocotools drops it).
    // Categories 2 and 3 have npig = 0 → precision and recall stay −1 → excluded, so
    // AP = AP(cat 1) = 1, not 1/2 or 1/3. AR = 1. Small only (100).
    let gt = gt_file(
        &[1, 2],
        &[(1, "cat"), (2, "dog"), (3, "emu")],
        vec![ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0])],
    );
    let dets = [
        det(1, 2, [0.0, 0.0, 10.0, 10.0], 0.95),
        det(2, 2, [5.0, 5.0, 10.0, 10.0], 0.7),
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
        det(1, 99, [0.0, 0.0, 10.0, 10.0], 0.99),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    assert_stats(
        &r,
        [
            1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0,
        ],
    );
    assert_ap(&r, 1, Some(1.0));
    assert_ap(&r, 2, None);
    assert_ap(&r, 3, None);
    assert_eq!(
        r.per_category
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["cat", "dog", "emu"]
    );
}

#[test]
fn detection_matched_to_an_ignored_ground_truth_is_ignored() {
    // Image 1, category 1: g1 [0,0,10,10] with area 100 (small); g2 [100,100,10,10] whose
    // `area` field is 5000 (medium; a mask area can differ from the box area).
    // d2 (0.9) = g2's box, d1 (0.8) = g1's box; both boxes are 10×10 (area 100, small).
    // small: g2 is ignored. d2 still matches it (IoU 1) and so is ignored — not an FP,
    //   even though its own area (100) is inside the small range. d1 TP. npig 1:
    //   rc 0, 1; pr 0, 1−eps → envelope 1−eps → APs = 1, ARs = 1.
    //   (Counting d2 as an FP, or skipping ignored gts when matching, would give Fp, TP →
    //   pr 0, 1/2 → APs = 1/2.)
    // medium: g2 regular, g1 ignored: d2 TP, d1 matches the ignored g1 → Ign → APm = 1.
    // all: TP, TP → AP = 1. large: no regular gt → −1.
    let gt = gt_file(
        &[1],
        &[(1, "thing")],
        vec![
            ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0]),
            ann_area(2, 1, 1, [100.0, 100.0, 10.0, 10.0], 5000.0),
        ],
    );
    let dets = [
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
        det(1, 1, [100.0, 100.0, 10.0, 10.0], 0.9),
    ];
    let r = evaluate(&gt, &dets).unwrap();
    // AR1: the best detection alone is d2: a TP in "all" (recall 1/2).
    assert_stats(
        &r,
        [1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.5, 1.0, 1.0, 1.0, 1.0, -1.0],
    );
}

#[test]
fn empty_detections_give_zero_where_ground_truth_exists() {
    // pycocotools refuses an empty results list; focal evaluates it as if accepted:
    // categories with gt get recall 0 and precision 0, categories and ranges without gt
    // stay −1. Here: one small gt in category 1, category 2 empty.
    let gt = gt_file(
        &[1],
        &[(1, "a"), (2, "b")],
        vec![ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0])],
    );
    let r = evaluate(&gt, &[]).unwrap();
    assert_stats(
        &r,
        [
            0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0,
        ],
    );
    assert_ap(&r, 1, Some(0.0));
    assert_ap(&r, 2, None);
}

#[test]
fn ground_truth_problems_pycocotools_would_crash_on_are_errors() {
    let mut no_area = ann(41, 1, 1, [0.0, 0.0, 10.0, 10.0]);
    no_area.area = None;
    let gt = gt_file(&[1], &[(1, "a")], vec![no_area]);
    let e = evaluate(&gt, &[]).unwrap_err();
    assert!(
        e.chain()
            .contains("annotation id 41 (entry 0) has no `area`"),
        "{e}"
    );

    let gt = gt_file(
        &[1],
        &[(1, "a")],
        vec![ann(0, 1, 1, [0.0, 0.0, 10.0, 10.0])],
    );
    let e = evaluate(&gt, &[]).unwrap_err();
    assert!(e.chain().contains("entry 0 has id 0"), "{e}");

    let gt = gt_file(
        &[1],
        &[(1, "a")],
        vec![ann(1, 1, 1, [0.0, 0.0, 10.0, 10.0])],
    );
    let e = evaluate(&gt, &[det(5, 1, [0.0, 0.0, 1.0, 1.0], 0.5)]).unwrap_err();
    assert!(e.chain().contains("detection 0 names image id 5"), "{e}");
    let e = evaluate(&gt, &[det(1, 1, [0.0, 0.0, 1.0, 1.0], f64::NAN)]).unwrap_err();
    assert!(
        e.chain().contains("detection 0 has a non-finite value"),
        "{e}"
    );
}
