//! `focal cocoeval` end to end: the happy path (summary and `--json` against pycocotools'
//! figures for a committed fixture) and bad inputs (non-zero exit, file named, no panic).

mod common;
use common::{focal, scratch, text, STAT_KEYS};

use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/tests/fixtures/cocoeval")
        .join(name)
}

/// `focal cocoeval --gt GT --dt DT [extra...]`.
fn cocoeval(gt: &Path, dt: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "cocoeval",
        "--gt",
        gt.to_str().unwrap(),
        "--dt",
        dt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    focal(&args)
}

/// Runs `focal cocoeval` on the given files and checks it fails cleanly; returns stderr.
fn fails(gt: &Path, dt: &Path) -> String {
    let out = cocoeval(gt, dt, &[]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "should fail; stdout: {}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn prints_pycocotools_summary_and_json() {
    let gt = fixture("synth1_gt.json");
    let dt = fixture("synth1_dets.json");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("synth1_expected.json")).unwrap())
            .unwrap();

    let out = cocoeval(&gt, &dt, &["--json"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));

    // The 12 lines pycocotools printed for these files appear verbatim.
    let summary = expected["summary"].as_str().unwrap();
    assert!(
        stdout.contains(summary),
        "stdout:\n{stdout}\nwant:\n{summary}"
    );
    assert!(stdout.contains("AP per category"), "{stdout}");

    // The last line is one JSON object with exactly the 12 keys and per_category.
    let last = stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    let obj = json.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    let mut want_keys: Vec<&str> = STAT_KEYS.to_vec();
    want_keys.push("per_category");
    want_keys.sort_unstable();
    assert_eq!(keys, want_keys);
    for (i, key) in STAT_KEYS.iter().enumerate() {
        assert_eq!(
            obj[*key].as_f64().unwrap(),
            expected["stats"][i].as_f64().unwrap(),
            "{key}"
        );
    }
    let per_category = obj["per_category"].as_object().unwrap();
    assert_eq!(per_category.len(), 5);
    // The expected file is keyed by category id; synth categories are named "class{id}".
    for (id, ap) in expected["per_category"].as_object().unwrap() {
        assert_eq!(per_category[&format!("class{id}")], *ap, "class{id}");
    }
    assert!(per_category["class8"].is_null());

    // Without --json the last line is the per-category table, not JSON.
    let out = cocoeval(&gt, &dt, &[]);
    assert!(out.status.success());
    let last = text(&out.stdout).lines().last().unwrap().to_string();
    assert!(
        serde_json::from_str::<serde_json::Value>(&last).is_err(),
        "{last}"
    );
}

#[test]
fn empty_results_say_no_detections_and_report_zeros() {
    let dir = scratch("cli-cocoeval", "empty");
    let dt = dir.join("empty.json");
    std::fs::write(&dt, "[]").unwrap();
    let gt = fixture("synth1_gt.json");
    let out = cocoeval(&gt, &dt, &["--json"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.starts_with("no detections in "), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // synth1 has regular ground truth in every area range, so every number is 0.
    for key in STAT_KEYS {
        assert_eq!(json[key].as_f64(), Some(0.0), "{key}");
    }
    assert_eq!(json["per_category"]["class1"].as_f64(), Some(0.0));
    assert!(json["per_category"]["class8"].is_null());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_files_are_named() {
    let gt = fixture("synth1_gt.json");
    let dt = fixture("synth1_dets.json");
    let nowhere = Path::new("/nonexistent/focal/gt.json");
    let e = fails(nowhere, &dt);
    assert!(e.contains("/nonexistent/focal/gt.json: cannot read"), "{e}");
    let nowhere = Path::new("/nonexistent/focal/dt.json");
    let e = fails(&gt, nowhere);
    assert!(
        e.contains("/nonexistent/focal/dt.json: cannot read the results file"),
        "{e}"
    );
}

#[test]
fn malformed_files_are_named_with_the_entry() {
    let dir = scratch("cli-cocoeval", "malformed");
    let gt = fixture("synth1_gt.json");
    let gt_images: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&gt).unwrap()).unwrap();
    let image = gt_images["images"][0]["id"].as_i64().unwrap();
    let good =
        format!(r#"{{"image_id": {image}, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}}"#);
    let cases = [
        (
            "truncated.json",
            format!("[{good},\n {good}"),
            "line 2".to_string(),
        ),
        (
            "nan.json",
            format!("[{good},\n {}]", good.replace("0.5", "NaN")),
            "entry 1, field `score`: the value is NaN".into(),
        ),
        (
            "missing.json",
            format!("[{good}, {{\"image_id\": {image}, \"bbox\": [1,2,3,4], \"score\": 1}}]"),
            "entry 1: missing field `category_id`".into(),
        ),
        (
            "bbox.json",
            format!("[{}]", good.replace("[1, 2, 3, 4]", "[1, 2, 3]")),
            "entry 0: `bbox` must be a list of 4 numbers".into(),
        ),
        (
            "unknown_image.json",
            format!(
                "[{good}, {}]",
                good.replace(&format!(": {image},"), ": 123456789,")
            ),
            "entry 1 names image id 123456789, which is not in the ground truth".into(),
        ),
    ];
    for (name, body, want) in cases {
        let dt = dir.join(name);
        std::fs::write(&dt, body).unwrap();
        let e = fails(&gt, &dt);
        assert!(e.contains(&format!("{}: ", dt.display())), "{name}: {e}");
        assert!(e.contains(&want), "{name}: {e}\nwant: {want}");
    }
    // A ground truth without `area` fields (pycocotools: KeyError) names both files and
    // the annotation.
    let no_area = dir.join("no_area_gt.json");
    std::fs::write(
        &no_area,
        r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}],
            "categories": [{"id": 1, "name": "a"}]}"#,
    )
    .unwrap();
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let e = fails(&no_area, &empty);
    assert!(e.contains(&no_area.display().to_string()), "{e}");
    assert!(e.contains("annotation id 7 (entry 0) has no `area`"), "{e}");

    // A malformed ground-truth file is named too.
    let bad_gt = dir.join("bad_gt.json");
    std::fs::write(&bad_gt, "{\"images\": [").unwrap();
    let e = fails(&bad_gt, &fixture("synth1_dets.json"));
    assert!(
        e.contains(&format!("{}: not a valid COCO", bad_gt.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_explains_every_flag() {
    let out = focal(&["cocoeval", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in ["--gt", "--dt", "--json", "pycocotools"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
