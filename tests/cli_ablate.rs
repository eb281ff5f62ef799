//! `focal ablate` and `focal loss-cdf` end to end on a tiny synthetic configuration
//! (64-px images, a handful of them): the tables, the skip of finished cells and the
//! retraining of stale ones, the figure and the printed shares, and bad inputs with their
//! exit codes (2: a flag clap cannot parse; 1: a value or file focal refuses).

mod common;
use common::{fails_with, focal, scratch, scratch_kept, succeeds, text};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use focal_retinanet::ablation::preset::{IMBALANCE_ITERS, IMBALANCE_SWEEP_ITERS};
use focal_retinanet::ablation::training::ABLATION_ITERS;

/// A tiny training configuration over the ablation's base: 8 training and 4 validation
/// images of 64 px, a 32-wide FPN, one-layer heads, batches of 4.
const TINY_TOML: &str = "\
batch_size = 4
[data]
min_size = 64
max_size = 64
eval_batch_size = 4
[data.shapes]
train_images = 8
val_images = 4
size = 64
[model]
fpn_channels = 32
head_width = 32
head_depth = 1
[schedule]
warmup_iters = 2
[optimizer]
lr = 0.002
";

fn tiny_config(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, TINY_TOML).unwrap();
    path
}

/// `focal ablate` on one focal-loss cell of the tiny configuration.
fn ablate(out: &Path, config: &Path, iters: &str) -> Output {
    focal(&[
        "ablate",
        "--out",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--iters",
        iters,
        "--gammas",
        "2",
        "--alphas",
        "0.25",
        "--ce-alphas",
        "none",
        "--no-progress",
    ])
}

/// One finished tiny grid shared by the tests that need a checkpoint.
fn finished_grid() -> &'static Path {
    static GRID: OnceLock<PathBuf> = OnceLock::new();
    GRID.get_or_init(|| {
        let dir = scratch_kept("cli-ablate", "shared");
        let config = tiny_config(&dir);
        let out = dir.join("grid");
        let o = ablate(&out, &config, "3");
        succeeds(&o);
        out
    })
}

#[test]
fn ablate_writes_the_tables_and_skips_finished_cells() {
    let dir = scratch("cli-ablate", "rerun");
    let config = tiny_config(&dir);
    let out = dir.join("grid");
    let o = ablate(&out, &config, "2");
    succeeds(&o);
    let stdout = text(&o.stdout);
    // The only cell is the best of its γ and of Table 1b: a fully bold row.
    assert!(stdout.contains("## Table 1b"), "{stdout}");
    assert!(stdout.contains("| **2** | **0.25** | **"), "{stdout}");
    assert!(
        !stdout.contains("## Table 1a"),
        "no CE cells, no Table 1a: {stdout}"
    );
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("1 of 1 cells finished"), "{md}");
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.lines().nth(1).unwrap().starts_with("2,0.25,focal,"),
        "{csv}"
    );
    assert!(out.join("gamma2_alpha0.25.json").is_file());
    assert!(out.join("gamma2_alpha0.25").join("best.ckpt").is_file());

    // The rerun skips the cell.
    let o = ablate(&out, &config, "2");
    succeeds(&o);
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("1 cells already finished, skipped: γ2 α0.25"),
        "{stderr}"
    );
    assert!(!stderr.contains("step 1/"), "nothing trained: {stderr}");

    // Another budget makes the record stale: named, then trained again.
    let o = ablate(&out, &config, "3");
    succeeds(&o);
    let stderr = text(&o.stderr);
    assert!(stderr.contains("stale: FL γ = 2, α = 0.25"), "{stderr}");
    assert!(stderr.contains("training it again"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The imbalance preset's machinery on the tiny configuration: two seeds of one cell,
/// the class imbalance printed, in imbalance.json and in the table's header, the mean and
/// spread columns, and each cell's AP curve (ap.png: it evaluates during training).
#[test]
fn the_imbalance_preset_measures_the_imbalance_and_averages_seeds() {
    let dir = scratch("cli-ablate", "imbalance");
    let config = tiny_config(&dir);
    let out = dir.join("grid");
    let o = focal(&[
        "ablate",
        "--preset",
        "imbalance",
        "--out",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--iters",
        "2",
        "--gamma-alphas",
        "2:0.25",
        "--ce-alphas",
        "none",
        "--seeds",
        "3,4",
        "--no-progress",
    ]);
    succeeds(&o);
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("2 runs (0 α-balanced CE, 2 focal loss)"),
        "{stderr}"
    );
    // 9 anchors on the 8², 4², 2², 1, 1 cells of P3–P7 at 64 px: 774 per image.
    assert!(stderr.contains("774 anchors per image: "), "{stderr}");
    assert!(stderr.contains("negatives per positive"), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("imbalance.json")).unwrap())
            .unwrap();
    assert_eq!(json["anchors"], 8 * 774);
    assert_eq!(json["images"], 8);
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("Class imbalance of this configuration"), "{md}");
    assert!(md.contains("about 100000 anchors per image"), "{md}");
    assert!(
        md.contains("2 of 2 runs finished (1 losses × seeds 3, 4)"),
        "{md}"
    );
    assert!(md.contains("| γ | α | AP | spread | per seed |"), "{md}");
    for seed in ["3", "4"] {
        let cell = out.join(format!("gamma2_alpha0.25_seed{seed}"));
        assert!(out
            .join(format!("gamma2_alpha0.25_seed{seed}.json"))
            .is_file());
        assert!(
            cell.join("ap.png").is_file(),
            "{} has ap.png",
            cell.display()
        );
        let toml = std::fs::read_to_string(cell.join("config.toml")).unwrap();
        assert!(toml.contains(&format!("seed = {seed}")), "{toml}");
    }
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert!(csv.starts_with("gamma,alpha,seed,loss,"), "{csv}");
    assert!(csv.contains("\n2,0.25,3,focal,"), "{csv}");
    // The AP curves: evaluated at steps 1 and 2 (2 steps, the preset's 12 evaluations
    // at least one step apart), a row per seed and one for their mean, and the chart.
    let curves = std::fs::read_to_string(out.join("curves.md")).unwrap();
    assert!(curves.contains("| cell | 1 | 2 | last ¼ |"), "{curves}");
    assert!(
        curves.contains("| FL γ = 2, α = 0.25, seed 3 |"),
        "{curves}"
    );
    assert!(
        curves.contains("| FL γ = 2, α = 0.25, seed 4 |"),
        "{curves}"
    );
    assert!(curves.contains("| FL γ = 2, α = 0.25 |"), "{curves}");
    assert!(out.join("curves.png").is_file());
    assert!(
        text(&o.stdout).contains("AP curves: "),
        "{}",
        text(&o.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `focal imbalance --coco` against torchvision on the tiny COCO subset, the paper's
/// anchors (with torchvision's rounded corners, `style = "torchvision"`) and matcher at
/// 800/1333 px. Reference sums from torchvision 0.x's `AnchorGenerator` (sizes 32–512 ×
/// 2^(0, 1/3, 2/3), ratios 0.5, 1, 2) and `Matcher(0.5, 0.4, allow_low_quality_matches=True)`
/// on each training image resized by `GeneralizedRCNNTransform`'s scale and padded to a
/// multiple of 32, crowd boxes left out: 8 467 731 anchors, 10 022 positive, 18 593
/// ignored, 8 439 116 negative over the 50 images.
#[test]
fn imbalance_of_coco_matches_torchvision() {
    let Some(coco) = focal_data::tiny_coco_dir() else {
        eprintln!("SKIPPED imbalance_of_coco_matches_torchvision: ../shared/coco/tiny not found (set FOCAL_COCO_TINY)");
        return;
    };
    let dir = scratch("cli-ablate", "coco-imbalance");
    let style = dir.join("style.toml");
    std::fs::write(&style, "[anchors]\nstyle = \"torchvision\"\n").unwrap();
    let o = focal(&[
        "imbalance",
        "--coco",
        coco.to_str().unwrap(),
        "--config",
        style.to_str().unwrap(),
        "--json",
    ]);
    succeeds(&o);
    let json: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(json["images"], 50);
    assert_eq!(json["anchors"], 8_467_731);
    assert_eq!(json["positives"], 10_022);
    assert_eq!(json["ignored"], 18_593);
    assert_eq!(json["negatives"], 8_439_116);
    // focal's own (exact) anchors: the same count, a few more or fewer matches; printed
    // as a sentence with the paper's figure beside it.
    let o = focal(&["imbalance", "--coco", coco.to_str().unwrap()]);
    succeeds(&o);
    let out = text(&o.stdout);
    assert!(out.contains("169355 anchors per image"), "{out}");
    assert!(out.contains("about 100000 anchors per image"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ablate_refuses_bad_grids_and_flags() {
    let dir = scratch("cli-ablate", "bad");
    let out = dir.join("grid");
    let o = out.to_str().unwrap();
    // Values clap cannot parse: exit 2.
    fails_with(&focal(&["ablate", "--out", o, "--gammas", "two"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--iters", "0"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--ce-alphas", "x"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--preset", "coco"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--gamma-alphas", "2"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--seeds", "one"]), 2);
    let e = fails_with(&focal(&["ablate", "--out", o, "--seeds", "1,1"]), 1);
    assert!(e.contains("--seeds") && e.contains("twice"), "{e}");
    // Values focal refuses: exit 1, with the reason.
    let e = fails_with(&focal(&["ablate", "--out", o, "--gammas", "0,2"]), 1);
    assert!(e.contains("--ce-alphas"), "{e}");
    let e = fails_with(&focal(&["ablate", "--out", o, "--alphas", "1.5"]), 1);
    assert!(e.contains("[0, 1]") && e.contains("1.5"), "{e}");
    let e = fails_with(&focal(&["ablate", "--out", o, "--alphas", "0.25,0.25"]), 1);
    assert!(e.contains("twice"), "{e}");
    let missing = dir.join("missing.toml");
    let e = fails_with(
        &focal(&["ablate", "--out", o, "--config", missing.to_str().unwrap()]),
        1,
    );
    assert!(e.contains("missing.toml"), "{e}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[optimizer]\nlearning_rate = 1\n").unwrap();
    let e = fails_with(
        &focal(&["ablate", "--out", o, "--config", bad.to_str().unwrap()]),
        1,
    );
    assert!(e.contains("bad.toml") && e.contains("learning_rate"), "{e}");
    assert!(!out.exists(), "nothing is written for a refused command");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ablate_help_names_every_option_with_its_default() {
    let o = focal(&["ablate", "--help"]);
    succeeds(&o);
    let help = text(&o.stdout);
    let iters = format!(
        "[default: {ABLATION_ITERS}; imbalance: {IMBALANCE_ITERS}; imbalance-sweep: {IMBALANCE_SWEEP_ITERS}]"
    );
    for needle in [
        "--preset",
        "[default: table1]",
        "--out",
        "[default: runs/ablate, or",
        "--iters",
        iters.as_str(),
        "--gammas",
        "[default: 0.5,1,2,5]",
        "--alphas",
        "[default: 0.25,0.5,0.75]",
        "--gamma-alphas",
        "--ce-alphas",
        "[default: 0.25,0.5,0.75,0.9,0.99; imbalance: 0.25,0.75; imbalance-sweep: 0.25,0.5,0.75]",
        "--seed",
        "[default: 0]",
        "--seeds",
        "[table1: none; imbalance and imbalance-sweep: 0,1]",
        "--threads",
        "100 000 anchors per image",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn loss_cdf_prints_the_shares_and_draws_two_panels() {
    let grid = finished_grid();
    let dir = scratch("cli-ablate", "cdf");
    let png = dir.join("cdf.png");
    let ckpt = grid.join("gamma2_alpha0.25").join("best.ckpt");
    let o = focal(&[
        "loss-cdf",
        "--weights",
        ckpt.to_str().unwrap(),
        "--images",
        "4",
        "--out",
        png.to_str().unwrap(),
    ]);
    succeeds(&o);
    let stdout = text(&o.stdout);
    assert!(stdout.contains("trained with γ = 2, α = 0.25"), "{stdout}");
    assert!(stdout.contains("α = 1"), "{stdout}");
    assert!(stdout.contains("hardest 20% of positives"), "{stdout}");
    // One row per γ of Figure 4, each with three percentages.
    for g in ["0", "0.5", "1", "2"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(g))
            .unwrap_or_else(|| panic!("no row for γ = {g}: {stdout}"));
        assert_eq!(row.matches('%').count(), 3, "{row}");
    }
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 480));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loss_cdf_refuses_bad_inputs() {
    let dir = scratch("cli-ablate", "cdf-bad");
    let missing = dir.join("nope.ckpt");
    let e = fails_with(
        &focal(&["loss-cdf", "--weights", missing.to_str().unwrap()]),
        1,
    );
    assert!(e.contains("nope.ckpt"), "{e}");
    let junk = dir.join("junk.ckpt");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let e = fails_with(
        &focal(&["loss-cdf", "--weights", junk.to_str().unwrap()]),
        1,
    );
    assert!(e.contains("junk.ckpt"), "{e}");
    fails_with(
        &focal(&[
            "loss-cdf",
            "--weights",
            junk.to_str().unwrap(),
            "--images",
            "0",
        ]),
        2,
    );
    fails_with(
        &focal(&[
            "loss-cdf",
            "--weights",
            junk.to_str().unwrap(),
            "--images",
            "many",
        ]),
        2,
    );
    fails_with(&focal(&["loss-cdf"]), 2);
    let ckpt = finished_grid().join("gamma2_alpha0.25").join("best.ckpt");
    let nowhere = dir.join("no-such-coco");
    let e = fails_with(
        &focal(&[
            "loss-cdf",
            "--weights",
            ckpt.to_str().unwrap(),
            "--data",
            nowhere.to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("no-such-coco"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
