//! focal's COCO evaluator against pycocotools 2.0.11 (NumPy 2.4.6) on fixed detections.
//!
//! The fixtures under tests/fixtures/cocoeval/ were made, and their expected numbers
//! computed by pycocotools, with
//!
//! ```text
//! python data/tests/fixtures/cocoeval/make_fixtures.py TINY
//! ```
//!
//! (run from the workspace root with a Python that has pycocotools and NumPy, `pip install
//! pycocotools numpy`; TINY is the tiny COCO folder below; see the script for how the
//! detections are generated). The
//! tiny COCO cases read their ground truth from ../shared/coco/tiny and say SKIPPED when it
//! is absent; the synthetic cases carry their own ground truth. Agreement is required to
//! the last bit: focal rebuilds NumPy's thresholds and its pairwise summation exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use focal_data::coco_format::CocoFile;
use focal_data::results::load_results_for;
use focal_data::{evaluate, tiny_coco_dir, EvalResult};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cocoeval")
        .join(name)
}

struct Expected {
    stats: [f64; 12],
    per_category: HashMap<i64, Option<f64>>,
    /// What pycocotools' summarize() printed.
    summary: String,
}

fn expected(case: &str) -> Expected {
    let path = fixture(&format!("{case}_expected.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let stats: Vec<f64> = v["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let per_category = v["per_category"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, ap)| (k.parse().unwrap(), ap.as_f64()))
        .collect();
    Expected {
        stats: stats.try_into().unwrap(),
        per_category,
        summary: v["summary"].as_str().unwrap().to_string(),
    }
}

/// Evaluates one case, checks it against the expected file bit for bit, and returns the
/// result and the largest absolute difference seen (0 when exact).
fn check(case: &str, gt_path: &Path) -> EvalResult {
    let gt = CocoFile::load(gt_path).unwrap();
    let dets = load_results_for(&fixture(&format!("{case}_dets.json")), &gt).unwrap();
    let result = evaluate(&gt, &dets).unwrap();
    let want = expected(case);
    let mut max_diff = 0.0f64;
    for (i, (&got, &exp)) in result
        .stats
        .to_array()
        .iter()
        .zip(want.stats.iter())
        .enumerate()
    {
        max_diff = max_diff.max((got - exp).abs());
        assert!(
            (got - exp).abs() <= 1e-4,
            "{case}: stat {i}: {got} vs {exp}"
        );
    }
    assert_eq!(want.per_category.len(), result.per_category.len(), "{case}");
    for c in &result.per_category {
        let exp = want.per_category[&c.id];
        match (c.ap, exp) {
            (Some(got), Some(exp)) => {
                max_diff = max_diff.max((got - exp).abs());
                assert!(
                    (got - exp).abs() <= 1e-4,
                    "{case}: category {}: {got} vs {exp}",
                    c.id
                );
            }
            (got, exp) => assert_eq!(got, exp, "{case}: category {}", c.id),
        }
    }
    println!("{case}: max |focal − pycocotools| = {max_diff:e}");
    // Beyond agreement to 1e-4: identical to the last bit.
    assert_eq!(
        result.stats.to_array(),
        want.stats,
        "{case}: not bit-identical"
    );
    for c in &result.per_category {
        assert_eq!(c.ap, want.per_category[&c.id], "{case}: category {}", c.id);
    }
    // The 12 summary lines are pycocotools' own, character for character.
    assert!(
        result.summary().starts_with(&want.summary),
        "{case}: summary differs\nfocal:\n{}\npycocotools:\n{}",
        result.summary(),
        want.summary
    );
    result
}

/// The stats the script printed (`stats = [...]`), pasted so the figures are visible here.
const TINY_TRAIN_STATS: [f64; 12] = [
    0.24080642283726636,
    0.3546460520455471,
    0.26970039969178305,
    0.4498059642339094,
    0.21481052177899493,
    0.20578976421258466,
    0.25035753132691907,
    0.4157176998248427,
    0.42697105661391377,
    0.536141525689223,
    0.39153619528619527,
    0.3764655172413793,
];
const TINY_VAL_STATS: [f64; 12] = [
    0.2353875761884529,
    0.36462820659455036,
    0.26017750946495394,
    0.36733494512809334,
    0.2366049727969592,
    0.326298930157566,
    0.214429107497362,
    0.3887282225713332,
    0.40226065365971053,
    0.46482996632996637,
    0.3954350490196078,
    0.49867724867724866,
];

#[test]
fn tiny_coco_train_and_val_match_pycocotools() {
    let Some(tiny) = tiny_coco_dir() else {
        println!("SKIPPED: tiny COCO not found (../shared/coco/tiny or $FOCAL_COCO_TINY)");
        return;
    };
    for (split, pasted) in [("train2017", TINY_TRAIN_STATS), ("val2017", TINY_VAL_STATS)] {
        let case = format!("tiny_{split}");
        assert_eq!(
            expected(&case).stats,
            pasted,
            "{case}: fixture and pasted stats differ"
        );
        let gt_path = tiny.join(format!("annotations/instances_{split}.json"));
        check(&case, &gt_path);
    }
}

#[test]
fn synthetic_corner_cases_match_pycocotools() {
    for seed in 1..=3 {
        let case = format!("synth{seed}");
        let r = check(&case, &fixture(&format!("{case}_gt.json")));
        // Category 8 has no ground truth in these files: undefined, not zero.
        assert_eq!(r.per_category.iter().find(|c| c.id == 8).unwrap().ap, None);
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let gt_path = fixture("synth1_gt.json");
    let gt = CocoFile::load(&gt_path).unwrap();
    let dets = load_results_for(&fixture("synth1_dets.json"), &gt).unwrap();
    let one = focal_engine::threads::with_threads(1, || evaluate(&gt, &dets).unwrap());
    for n in [2, 3, 8] {
        let many = focal_engine::threads::with_threads(n, || evaluate(&gt, &dets).unwrap());
        assert_eq!(one, many, "{n} threads");
    }
}
