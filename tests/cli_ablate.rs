//! `focal ablate` and `focal loss-cdf` end to end on a tiny synthetic configuration
//! (64-px images, a handful of them): the tables, the skip of finished cells and the
//! retraining of stale ones, the figure and the printed shares, and bad inputs with their
//! exit codes (2: a flag clap cannot parse; 1: a value or file focal refuses).

mod common;
use common::{fails_with, focal, scratch, succeeds, text};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

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
        let dir = scratch("cli-ablate", "shared");
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

#[test]
fn ablate_refuses_bad_grids_and_flags() {
    let dir = scratch("cli-ablate", "bad");
    let out = dir.join("grid");
    let o = out.to_str().unwrap();
    // Values clap cannot parse: exit 2.
    fails_with(&focal(&["ablate", "--out", o, "--gammas", "two"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--iters", "0"]), 2);
    fails_with(&focal(&["ablate", "--out", o, "--ce-alphas", "x"]), 2);
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
    let iters = format!("[default: {ABLATION_ITERS}]");
    for needle in [
        "--out",
        "[default: runs/ablate]",
        "--iters",
        iters.as_str(),
        "--gammas",
        "[default: 0.5,1,2,5]",
        "--alphas",
        "[default: 0.25,0.5,0.75]",
        "--ce-alphas",
        "[default: 0.25,0.5,0.75,0.9,0.99]",
        "--seed",
        "[default: 0]",
        "--threads",
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
