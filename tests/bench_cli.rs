//! `focal bench train-step`, `infer`, `conv` and `gemm`: the output format (speed is
//! never asserted, only measured) and the refusal of bad options.

mod common;
use common::{focal, last_json_line, succeeds, text};

/// Both modes, and every registered backbone's train step (`resnet18-half` included).
#[test]
fn train_step_and_infer_print_one_json_object_last() {
    let mut runs: Vec<(&str, &str)> = focal_retinanet::backbone::BACKBONES
        .iter()
        .filter(|b| b.name != "resnet50" && b.name != "resnet34")
        .map(|b| ("train-step", b.name))
        .collect();
    runs.push(("infer", "resnet18"));
    assert!(runs.contains(&("train-step", "resnet18-half")));
    for (mode, backbone) in runs {
        let out = focal(&[
            "--threads",
            "2",
            "bench",
            mode,
            "--backbone",
            backbone,
            "--size",
            "64",
            "--batch",
            "2",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--classes",
            "3",
            "--fpn-channels",
            "32",
            "--head-width",
            "16",
            "--head-depth",
            "1",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = last_json_line(&out);
        assert_eq!(j["bench"], mode);
        assert_eq!(j["backbone"], backbone);
        assert!(j["ms"].as_f64().unwrap() > 0.0);
        assert!(j["peak_rss_mb"].as_f64().unwrap() > 0.0);
        assert_eq!(j["batch"], 2);
        assert_eq!(j["fpn_channels"], 32);
        assert_eq!(j["head_width"], 16);
        assert_eq!(j["head_depth"], 1);
        assert!(j["phases_ms"].as_object().unwrap().len() >= 4);
    }
}

#[test]
fn bad_options_are_refused_with_a_message() {
    let out = focal(&["bench", "infer", "--size", "100"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 32"));
    let out = focal(&["bench", "train-step", "--backbone", "resnet101"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resnet101"));
    let out = focal(&["bench", "train-step", "--head-width", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("head_width"));
    let out = focal(&["bench", "conv", "--preset", "256"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --preset \"256\""));
}

/// `focal bench conv --json` and `focal bench gemm --json`: one JSON object per line,
/// each with the issue's `name`, `ms` and `gflops`, and the best-of-N figures no larger
/// than the medians (the fastest run can never be slower than the median run).
#[test]
fn conv_and_gemm_benches_print_one_json_object_per_line() {
    let conv = focal(&[
        "--threads",
        "2",
        "bench",
        "conv",
        "--preset",
        "small",
        "--filter",
        "fpn.p7",
        "--min-time",
        "0",
        "--json",
    ]);
    let gemm = focal(&[
        "bench",
        "gemm",
        "--sizes",
        "64,96",
        "--min-time",
        "0",
        "--json",
    ]);
    for (what, out, lines) in [("conv", conv, 2), ("gemm", gemm, 4)] {
        succeeds(&out);
        let stdout = text(&out.stdout);
        let rows: Vec<serde_json::Value> = stdout
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: {l:?}: {e}")))
            .collect();
        assert_eq!(rows.len(), lines, "{what}: {stdout}");
        for j in &rows {
            assert!(j["name"].as_str().unwrap().starts_with(what), "{j}");
            let ms = j["ms"].as_f64().unwrap();
            assert!(ms > 0.0, "{j}");
            assert!(j["gflops"].as_f64().unwrap() > 0.0, "{j}");
            if what == "conv" {
                let best = j["best_ms"].as_f64().unwrap();
                assert!(best > 0.0 && best <= ms, "{j}");
            }
        }
    }
}
