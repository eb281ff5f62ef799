//! `focal bench train-step`, `infer`, `conv`, `gemm` and `peak`: the output format (speed is
//! never asserted, only measured) and the refusal of bad options.

mod common;
use common::{fails_with, focal, focal_env, last_json_line, succeeds, text};

/// The model and steps of the detector benches' tests: 64 px, batch 2, two timed steps,
/// a small FPN and one narrow tower layer, so each run takes a fraction of a second.
const TINY: [&str; 12] = [
    "--size",
    "64",
    "--batch",
    "2",
    "--steps",
    "2",
    "--fpn-channels",
    "32",
    "--head-width",
    "16",
    "--head-depth",
    "1",
];

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
        let run = [
            "--threads",
            "2",
            "bench",
            mode,
            "--backbone",
            backbone,
            "--warmup",
            "0",
            "--classes",
            "3",
            "--json",
        ];
        let out = focal(&[&run[..], &TINY].concat());
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

/// `output_digest` hashes the bits the steps computed: the same on 1 and 3 threads
/// (results are bitwise independent of the thread count), different when the model
/// differs (so it is not a constant).
#[test]
fn the_output_digest_names_the_bits_computed() {
    let digest = |mode: &str, threads: &str, classes: &str| {
        let run = [
            "--threads",
            threads,
            "bench",
            mode,
            "--warmup",
            "1",
            "--classes",
            classes,
            "--json",
        ];
        let out = focal(&[&run[..], &TINY].concat());
        succeeds(&out);
        let d = last_json_line(&out)["output_digest"]
            .as_str()
            .expect("output_digest is a string")
            .to_string();
        assert!(
            d.len() == 16 && d.chars().all(|c| c.is_ascii_hexdigit()),
            "{d:?}"
        );
        assert!(text(&out.stdout).contains(&format!("output digest {d}")));
        d
    };
    for mode in ["train-step", "infer"] {
        let one = digest(mode, "1", "3");
        assert_eq!(one, digest(mode, "3", "3"), "{mode}");
        assert_ne!(one, digest(mode, "1", "4"), "{mode}");
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
    // One gemm row per size and GEMM path the CPU has (portable always among them).
    let paths = focal_engine::gemm::Isa::ALL
        .into_iter()
        .filter(|i| i.available())
        .count();
    for (what, out, lines) in [("conv", conv, 2), ("gemm", gemm, 2 * paths)] {
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
            let best = j["best_ms"].as_f64().unwrap();
            assert!(best > 0.0 && best <= ms, "{j}");
            assert!(j["peak_fraction"].as_f64().unwrap() > 0.0, "{j}");
        }
    }
}

/// `focal bench peak --json`: one row per SIMD path the CPU has (the path in use first,
/// marked), with a positive rate; the CPU model and path are named in the table's note.
#[test]
fn peak_reports_the_path_in_use_and_the_cpu() {
    let out = focal(&["bench", "peak", "--json"]);
    succeeds(&out);
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty());
    assert_eq!(rows[0]["in_use"].as_f64(), Some(1.0), "{}", rows[0]);
    for r in &rows {
        assert!(r["name"].as_str().unwrap().starts_with("peak/"), "{r}");
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
    }
    let table = focal(&["bench", "peak"]);
    succeeds(&table);
    let t = text(&table.stdout);
    assert!(t.contains("GEMM path: ") && t.contains("CPU: "), "{t}");
}

/// `FOCAL_ISA` naming no path (or one the CPU lacks) is refused up front, exit 2, with
/// the expected names; a valid one is used.
#[test]
fn focal_isa_is_checked_before_any_work() {
    let out = focal_env(&["bench", "peak"], &[("FOCAL_ISA", "sse9")]);
    let e = fails_with(&out, 2);
    assert!(
        e.contains("FOCAL_ISA=\"sse9\"") && e.contains("avx512, avx2 or portable"),
        "{e}"
    );
    for isa in focal_engine::gemm::Isa::ALL {
        let out = focal_env(&["bench", "peak"], &[("FOCAL_ISA", isa.name())]);
        if isa.available() {
            succeeds(&out);
            assert!(text(&out.stdout).contains(&format!("GEMM path: {isa}")));
        } else {
            let e = fails_with(&out, 2);
            assert!(e.contains(isa.requires()), "{e}");
        }
    }
}

/// `focal bench conv --compare-algos`: for each case, forward and forward + backward of
/// each algorithm; the first is the reference (speed-up 1, no difference), a Winograd
/// output differs from the direct one by rounding only.
#[test]
fn conv_algorithms_side_by_side() {
    let out = focal(&[
        "bench",
        "conv",
        "--preset",
        "96",
        "--filter",
        "head 3x3 64->64 @6",
        "--compare-algos",
        "direct,winograd-f2,winograd-f4",
        "--min-time",
        "0",
        "--json",
    ]);
    succeeds(&out);
    let stdout = text(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(rows.len(), 6, "{stdout}");
    for (j, algo) in rows.iter().zip([
        "direct",
        "direct",
        "winograd-f2",
        "winograd-f2",
        "winograd-f4",
        "winograd-f4",
    ]) {
        let name = j["name"].as_str().unwrap();
        assert!(name.contains(&format!("/{algo}/")), "{j}");
        assert!(j["ms"].as_f64().unwrap() > 0.0, "{j}");
        if name.ends_with("/fwd") {
            let diff = j["max_rel_diff"].as_f64().unwrap();
            match algo {
                "direct" => assert_eq!(diff, 0.0, "{j}"),
                // The bounds of engine/tests/winograd.rs, against the direct result.
                "winograd-f2" => assert!(diff > 0.0 && diff < 1e-5, "{j}"),
                _ => assert!(diff > 0.0 && diff < 5e-5, "{j}"),
            }
        }
    }
    assert_eq!(rows[0]["speedup"].as_f64(), Some(1.0));
}

#[test]
fn conv_algorithm_errors_name_the_choices() {
    let out = focal(&["--conv-algo", "fft", "bench", "conv"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"fft\"") && err.contains("winograd-f4"),
        "{err}"
    );
    let out = focal(&[
        "bench",
        "conv",
        "--preset",
        "small",
        "--filter",
        "stem",
        "--compare-algos",
        "direct,auto",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no selected case is a 3x3 stride-1 conv"),
        "{err}"
    );
}

/// `focal bench train-step --profile`: a table per op kind (conv2d first among the
/// kinds, with its FLOPs) and, with `--json`, the same rows in the JSON object, whose
/// shares add up to the step. `--conv-algo` is reported.
#[test]
fn train_step_profile_lists_the_ops_and_adds_up() {
    let run = [
        "--conv-algo",
        "winograd",
        "bench",
        "train-step",
        "--warmup",
        "1",
        "--classes",
        "3",
        "--profile",
        "--json",
    ];
    let out = focal(&[&run[..], &TINY].concat());
    succeeds(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("forward ms") && stdout.contains("(outside ops)"),
        "{stdout}"
    );
    let j = last_json_line(&out);
    assert_eq!(j["conv_algo"], "winograd");
    let rows = j["profile"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    for op in [
        "conv2d",
        "relu",
        "group_norm",
        "max_pool2d",
        "sigmoid_focal_loss",
    ] {
        assert!(names.contains(&op), "{op} missing: {names:?}");
    }
    let conv = rows.iter().find(|r| r["op"] == "conv2d").unwrap();
    assert!(conv["gflop"].as_f64().unwrap() > 0.0 && conv["calls"].as_f64().unwrap() >= 20.0);
    let total: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((total - 100.0).abs() < 0.1, "{total}");
}
