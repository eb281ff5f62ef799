//! `focal train`, `focal eval` and `focal detect` end to end on a tiny synthetic run
//! (64-px images, a handful of them): the happy paths, the run folder, an evaluation that
//! reproduces the run's own final numbers, thread-count independence of the losses, Ctrl-C,
//! and bad inputs (missing files, bad flag values, wrong checkpoints) with their exit codes.

mod common;
use common::{
    fails_with, focal, focal_env, last_json_line, scratch, scratch_kept, succeeds, text,
    train_args, STAT_KEYS,
};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn train(out: &Path, extra: &[&str]) -> Output {
    let args = train_args(out, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    focal(&args)
}

/// One finished tiny run of 6 steps shared by the tests that need a checkpoint.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch_kept("cli-train", "shared").join("run");
        let out = train(&dir, &["--iters", "6"]);
        assert!(
            out.status.success(),
            "training failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        dir
    })
}

/// The loss values of a run's metrics.jsonl, as written (text, so the comparison is exact).
fn losses(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| {
            format!(
                "{} {} {} {}",
                v["step"], v["loss"], v["cls_loss"], v["box_loss"]
            )
        })
        .collect()
}

#[test]
fn train_writes_the_run_folder_and_prints_the_summary() {
    let dir = trained_run();
    for f in [
        "config.toml",
        "metrics.jsonl",
        "metrics.json",
        "last.ckpt",
        "best.ckpt",
        "loss.png",
        "ap.png",
        "imbalance.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing from the run folder");
    }
    // The class imbalance of the run (anchors, positives, ignored, negatives per image),
    // counted on its training set: the sums add up, and there are positives.
    let imb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("imbalance.json")).unwrap())
            .unwrap();
    let n = |k: &str| imb[k].as_u64().unwrap_or_else(|| panic!("{k}: {imb}"));
    assert_eq!(
        n("anchors"),
        n("positives") + n("ignored") + n("negatives"),
        "{imb}"
    );
    assert!(n("positives") > 0 && n("images") > 0, "{imb}");
    assert!(
        imb["negatives_per_positive"].as_f64().unwrap() > 1.0,
        "{imb}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    for k in STAT_KEYS {
        assert!(metrics[k].is_number(), "metrics.json lacks {k}: {metrics}");
    }
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 7, "6 step rows and 1 evaluation row");
    for (i, r) in rows[..6].iter().enumerate() {
        assert_eq!(r["step"], i as u64 + 1);
        for k in [
            "epoch",
            "loss",
            "cls_loss",
            "box_loss",
            "lr",
            "num_pos",
            "images_per_s",
        ] {
            assert!(r[k].is_number(), "step row lacks {k}: {r}");
        }
    }
    assert_eq!(rows[6]["kind"], "eval");
    assert_eq!(rows[6]["AP"], metrics["AP"]);
    // The configuration is complete and reads back.
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("fpn_channels = 32"), "{config}");
    assert!(config.contains("iters = 6"), "{config}");
}

/// The half-width ResNet-18, registered through the backbone seam, trains from the
/// command line (its loss falls), is saved under its name, and its checkpoint alone
/// rebuilds it for `focal eval`.
#[test]
fn the_half_width_backbone_trains_and_its_checkpoint_evaluates() {
    let scratch_dir = scratch("cli-train", "half");
    let dir = scratch_dir.join("run");
    let out = train(&dir, &["--backbone", "resnet18-half", "--iters", "12"]);
    succeeds(&out);
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("depth = \"resnet18-half\""), "{config}");
    let l: Vec<f64> = losses(&dir)
        .iter()
        .map(|row| row.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(l.len(), 12);
    let (first, last) = (l[..3].iter().sum::<f64>(), l[9..].iter().sum::<f64>());
    assert!(last < 0.9 * first, "the loss did not fall: {l:?}");
    let out = focal(&[
        "eval",
        "--weights",
        dir.join("last.ckpt").to_str().unwrap(),
        "--json",
    ]);
    succeeds(&out);
    let j = last_json_line(&out);
    assert!(j["AP"].is_number(), "{j}");
}

#[test]
fn print_config_applies_file_then_flags() {
    let dir = scratch("cli-train", "print-config");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "batch_size = 3\n[optimizer]\nlr = 0.5\nkind = \"sgd\"\n",
    )
    .unwrap();
    let out = focal(&[
        "train",
        "--config",
        file.to_str().unwrap(),
        "--lr",
        "0.25",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("batch_size = 3"), "{stdout}");
    assert!(
        stdout.contains("lr = 0.25"),
        "the flag wins over the file: {stdout}"
    );
    assert!(stdout.contains("kind = \"sgd\""), "{stdout}");
    // The synthetic preset underneath.
    assert!(stdout.contains("[data.shapes]"), "{stdout}");
    // With a COCO folder the paper's preset: 800/1333, SGD at 0.01 × batch/16.
    let out = focal(&[
        "train",
        "--data",
        dir.to_str().unwrap(),
        "--batch-size",
        "8",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("min_size = 800") && stdout.contains("max_size = 1333"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lr = 0.005"),
        "linear scaling to batch 8: {stdout}"
    );
    assert!(stdout.contains("[data.coco]"), "{stdout}");
}

/// `--p6` and `--box-loss` are parsed into the configuration's enums; `--beta` keeps or
/// sets smooth L1, and is refused with L1.
#[test]
fn box_loss_beta_and_p6_flags_set_the_configuration() {
    let config_of = |flags: &[&str]| {
        let mut args = vec!["train", "--print-config"];
        args.extend_from_slice(flags);
        let out = focal(&args);
        succeeds(&out);
        text(&out.stdout)
    };
    let c = config_of(&["--box-loss", "l1", "--p6", "p5"]);
    assert!(c.contains("p6_input = \"p5\""), "{c}");
    assert!(c.contains("kind = \"l1\""), "{c}");
    assert!(!c.contains("beta ="), "{c}");
    let c = config_of(&["--beta", "0.2"]);
    assert!(
        c.contains("kind = \"smooth-l1\"") && c.contains("beta = 0.2"),
        "{c}"
    );
    let c = config_of(&["--box-loss", "smooth-l1"]);
    assert!(c.contains("beta = 0.11"), "{c}");
    let e = fails_with(&focal(&["train", "--box-loss", "l1", "--beta", "0.1"]), 1);
    assert!(e.contains("--beta applies to the smooth-l1"), "{e}");
    let e = fails_with(&focal(&["train", "--box-loss", "l2"]), 2);
    assert!(e.contains("smooth-l1 or l1"), "{e}");
    let e = fails_with(&focal(&["train", "--p6", "p4"]), 2);
    assert!(e.contains("c5 or p5"), "{e}");
}

/// An error prints its whole chain of causes, outermost first: the file, what was being
/// done, and the system's own reason (the library errors keep it as their source).
#[test]
fn errors_print_the_chain_of_their_causes() {
    let e = fails_with(&focal(&["eval", "--weights", "/no/such.ckpt"]), 1);
    let line = e.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
    let rest = line
        .strip_prefix("error: checkpoint /no/such.ckpt: cannot read: ")
        .unwrap_or_else(|| panic!("not the chain: {e}"));
    assert!(!rest.trim().is_empty(), "the I/O cause is missing: {e}");
    let dir = scratch("cli-train", "chain");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[optimizer]\nlearning_rate = 1.0\n").unwrap();
    let e = fails_with(&focal(&["train", "--config", file.to_str().unwrap()]), 1);
    assert!(
        e.contains(&format!("configuration {}: unknown field", file.display())),
        "{e}"
    );
}

#[test]
fn same_seed_same_losses_whatever_the_thread_count() {
    let dir = scratch("cli-train", "threads");
    let (a, b) = (dir.join("t1"), dir.join("t2"));
    for (d, threads) in [(&a, "1"), (&b, "2")] {
        let mut args = vec!["--threads".to_string(), threads.to_string()];
        args.extend(train_args(d, &["--iters", "4"]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = focal(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 4);
    assert_eq!(la, lb, "--threads 1 and --threads 2 wrote different losses");
}

/// The AVX2 and AVX-512 GEMM kernels give the same bits (`engine/src/gemm/`), and so do
/// the Winograd transforms built for each, so a whole training run writes the same
/// losses on either path (`FOCAL_ISA` forces one), with the direct convolutions and with
/// Winograd on every 3x3 stride-1 conv (`--conv-algo winograd`, recorded in the run's
/// config): the promise that a run reproduces on any machine. A path the CPU lacks is
/// skipped with a notice.
#[test]
fn same_losses_on_the_avx2_and_avx512_gemm_paths() {
    use focal_engine::gemm::Isa;
    let paths: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .filter(|i| {
            let ok = i.available();
            if !ok {
                println!("skipping the {i} path: the CPU lacks {}", i.requires());
            }
            ok
        })
        .collect();
    if paths.len() < 2 {
        println!("skipping: both SIMD paths are needed to compare them");
        return;
    }
    let dir = scratch("cli-train", "isa");
    for algo in ["direct", "winograd"] {
        let mut runs = Vec::new();
        for &isa in &paths {
            let d = dir.join(format!("{algo}-{}", isa.name()));
            let args = train_args(&d, &["--iters", "4", "--conv-algo", algo]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = focal_env(&args, &[("FOCAL_ISA", isa.name())]);
            assert!(out.status.success(), "{algo} {isa}: {}", text(&out.stderr));
            let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
            assert!(
                config.contains(&format!("conv_algo = \"{algo}\"")),
                "{config}"
            );
            runs.push(losses(&d));
        }
        assert_eq!(runs[0].len(), 4);
        assert_eq!(
            runs[0], runs[1],
            "{algo}: the avx512 and avx2 paths wrote different losses"
        );
    }
}

#[test]
fn eval_reproduces_the_runs_final_numbers_and_writes_results() {
    let run = trained_run();
    let dir = scratch("cli-train", "eval");
    // The run's validation set written to disk by `focal synth` (same seed and size).
    let synth = dir.join("synth");
    let out = focal(&[
        "synth",
        "--out",
        synth.to_str().unwrap(),
        "--train",
        "1",
        "--val",
        "4",
        "--size",
        "64",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dets = dir.join("dets.json");
    let out = focal(&[
        "eval",
        "--weights",
        run.join("last.ckpt").to_str().unwrap(),
        "--ann",
        synth
            .join("annotations/instances_val.json")
            .to_str()
            .unwrap(),
        "--images",
        synth.join("val").to_str().unwrap(),
        "--out",
        dets.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Average Precision  (AP) @[ IoU=0.50      |"),
        "{stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    for k in STAT_KEYS {
        assert_eq!(
            json[k], metrics[k],
            "{k}: eval on the PNG files vs the run's evaluation"
        );
    }
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&dets).unwrap()).unwrap();
    assert!(!results.is_empty(), "no detections written");
    assert!((1..=5).contains(&results[0]["category_id"].as_i64().unwrap()));

    // Without a dataset: the run's own validation set, the same numbers.
    let out = focal(&[
        "eval",
        "--weights",
        run.join("last.ckpt").to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(again["AP"], json["AP"]);
}

#[test]
fn detect_draws_boxes_and_writes_results() {
    let run = trained_run();
    let dir = scratch("cli-train", "detect");
    let synth = dir.join("synth");
    let out = focal(&[
        "synth",
        "--out",
        synth.to_str().unwrap(),
        "--train",
        "1",
        "--val",
        "2",
        "--size",
        "64",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let img = synth.join("val/000001.png");
    let out_dir = dir.join("out");
    let out = focal(&[
        "detect",
        "--weights",
        run.join("best.ckpt").to_str().unwrap(),
        img.to_str().unwrap(),
        synth.join("val/000002.png").to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--score",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drawn = image::open(out_dir.join("000001.png")).unwrap().to_rgb8();
    let original = image::open(&img).unwrap().to_rgb8();
    // 64-px images are drawn 4x larger (nearest neighbour), so the labels stay readable.
    let original =
        image::imageops::resize(&original, 256, 256, image::imageops::FilterType::Nearest);
    assert_eq!(drawn.dimensions(), original.dimensions());
    // Compared pixel by pixel (assert_ne! would print both images in full).
    let changed = drawn
        .pixels()
        .zip(original.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 0,
        "nothing was drawn (score 0 keeps every detection)"
    );
    assert!(out_dir.join("000002.png").is_file());
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("detections.json")).unwrap())
            .unwrap();
    assert!(!results.is_empty());
    let ids: std::collections::BTreeSet<i64> = results
        .iter()
        .map(|r| r["image_id"].as_i64().unwrap())
        .collect();
    assert!(ids.is_subset(&[1, 2].into()), "{ids:?}");
    // A class name from the checkpoint is printed.
    let stdout = text(&out.stdout);
    assert!(
        ["circle", "square", "triangle", "ring", "cross"]
            .iter()
            .any(|n| stdout.contains(n)),
        "{stdout}"
    );
}

#[test]
fn ctrl_c_finishes_the_step_saves_and_exits_130_and_resume_completes() {
    let scratch_dir = scratch("cli-train", "ctrl-c");
    let dir = scratch_dir.join("run");
    let args = train_args(&dir, &["--iters", "400"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first step's line (the handler is installed before training starts).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("step 1/") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "stderr after the signal: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("--resume")), "{rest:?}");
    let done = losses(&dir).len();
    assert!((1..400).contains(&done), "{done} steps before stopping");

    // The checkpoint continues the run; --stop-after ends this part early (exit 0).
    let out = focal(&[
        "train",
        "--resume",
        dir.join("last.ckpt").to_str().unwrap(),
        "--stop-after",
        "2",
        "--no-progress",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let l = losses(&dir);
    assert_eq!(l.len(), done + 2);
    assert!(l[done].starts_with(&format!("{} ", done + 1)), "{l:?}");
}

#[test]
fn bad_inputs_fail_cleanly_with_their_exit_codes() {
    let dir = scratch("cli-train", "bad");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    // Flag values clap rejects: exit 2.
    let e = fails_with(&focal(&["train", "--backbone", "resnet101", "--out", o]), 2);
    assert!(e.contains("resnet101"), "{e}");
    let e = fails_with(&focal(&["train", "--optimizer", "adam", "--out", o]), 2);
    assert!(e.contains("adam"), "{e}");
    let e = fails_with(&focal(&["train", "--lr", "fast", "--out", o]), 2);
    assert!(e.contains("fast"), "{e}");
    let e = fails_with(
        &focal(&["detect", "--weights", "x.ckpt", "a.png", "--score", "2"]),
        2,
    );
    assert!(e.contains("between 0 and 1"), "{e}");
    // Values that parse but make no sense: exit 1 naming the field.
    let e = fails_with(&focal(&["train", "--lr=-1", "--out", o]), 1);
    assert!(e.contains("lr"), "{e}");
    let e = fails_with(&focal(&["train", "--fg-iou", "0.3", "--out", o]), 1);
    assert!(e.contains("background_iou"), "{e}");
    let e = fails_with(&focal(&["train", "--anchor-sizes", "8,16", "--out", o]), 1);
    assert!(e.contains("sizes"), "{e}");
    assert!(
        !out.exists(),
        "a refused configuration must not create the run folder"
    );
    // Missing files: exit 1 naming them.
    let e = fails_with(&focal(&["train", "--data", "/no/such/coco", "--out", o]), 1);
    assert!(e.contains("/no/such/coco"), "{e}");
    let e = fails_with(&focal(&["train", "--config", "/no/such.toml"]), 1);
    assert!(e.contains("/no/such.toml"), "{e}");
    let e = fails_with(&focal(&["train", "--resume", "/no/such.ckpt"]), 1);
    assert!(e.contains("/no/such.ckpt"), "{e}");
    let e = fails_with(&focal(&["eval", "--weights", "/no/such.ckpt"]), 1);
    assert!(e.contains("/no/such.ckpt"), "{e}");
    let run = trained_run();
    let e = fails_with(
        &focal(&[
            "detect",
            "--weights",
            run.join("last.ckpt").to_str().unwrap(),
            "/no/such.png",
            "--out",
            dir.join("d").to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("/no/such.png"), "{e}");
    // A configuration file with an unknown key.
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[optimizer]\nlearning_rate = 1.0\n").unwrap();
    let e = fails_with(&focal(&["train", "--config", file.to_str().unwrap()]), 1);
    assert!(e.contains("learning_rate") && e.contains("bad.toml"), "{e}");
    // --resume with configuration flags.
    let e = fails_with(
        &focal(&[
            "train",
            "--resume",
            run.join("last.ckpt").to_str().unwrap(),
            "--lr",
            "1",
        ]),
        1,
    );
    assert!(e.contains("--lr"), "{e}");
    // --resume with another conv algorithm than the run's (auto).
    let e = fails_with(
        &focal(&[
            "train",
            "--resume",
            run.join("last.ckpt").to_str().unwrap(),
            "--conv-algo",
            "winograd-f4",
        ]),
        1,
    );
    assert!(
        e.contains("--conv-algo winograd-f4") && e.contains("conv_algo = \"auto\""),
        "{e}"
    );
    // A run folder that already holds a run.
    let e = fails_with(&train(run, &["--iters", "1"]), 1);
    assert!(e.contains("already holds a run"), "{e}");
}

#[test]
fn wrong_checkpoints_are_refused() {
    let run = trained_run();
    let dir = scratch("cli-train", "wrong-ckpt");
    // Not a checkpoint at all.
    let e = fails_with(
        &focal(&[
            "eval",
            "--weights",
            run.join("config.toml").to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("not a focal checkpoint"), "{e}");
    // A checkpoint whose configuration names another architecture than its tensors.
    let mut ckpt = focal_nn::Checkpoint::read(&run.join("last.ckpt")).unwrap();
    ckpt.config = ckpt.config.replace("resnet18", "resnet34");
    let other = dir.join("other.ckpt");
    ckpt.save(&other).unwrap();
    for cmd in [
        vec!["eval", "--weights", other.to_str().unwrap()],
        vec!["detect", "--weights", other.to_str().unwrap(), "x.png"],
        vec!["train", "--resume", other.to_str().unwrap()],
    ] {
        let e = fails_with(&focal(&cmd), 1);
        assert!(
            e.contains("other.ckpt") && e.contains("does not fit"),
            "{e}"
        );
    }
    // A focal checkpoint that is not a training checkpoint (no training configuration).
    ckpt.config = "depth = 18\n".into();
    let foreign = dir.join("foreign.ckpt");
    ckpt.save(&foreign).unwrap();
    let e = fails_with(&focal(&["eval", "--weights", foreign.to_str().unwrap()]), 1);
    assert!(e.contains("not a focal training configuration"), "{e}");
    // A checkpoint of a model trained on other classes than the dataset evaluated.
    let coco = dir.join("coco.json");
    std::fs::write(
        &coco,
        r#"{"images": [], "annotations": [], "categories": [{"id": 7, "name": "x"}]}"#,
    )
    .unwrap();
    let e = fails_with(
        &focal(&[
            "eval",
            "--weights",
            run.join("last.ckpt").to_str().unwrap(),
            "--ann",
            coco.to_str().unwrap(),
            "--images",
            dir.to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("categories"), "{e}");
    // --init with weights that fit nothing.
    let st = dir.join("w.safetensors");
    let mut lin = focal_nn::Linear::new(3, 2, &mut focal_engine::Rng::new(0));
    focal_nn::export_safetensors(&mut lin, &st, None).unwrap();
    let o = dir.join("run");
    let args = train_args(&o, &["--init", st.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails_with(&focal(&args), 1);
    assert!(e.contains("no tensor fits"), "{e}");
}
