//! The trainer end to end on a tiny synthetic configuration (64-px images, a handful of
//! them): the loss falls, a checkpoint reloads to identical predictions, a run split in two
//! by a checkpoint writes the same losses as an uninterrupted one, the thread count changes
//! nothing, and a non-finite loss stops the run naming the step with the last checkpoint
//! intact.

use std::path::{Path, PathBuf};

use focal_data::Loader;
use focal_data::LoaderConfig;
use focal_engine::threads::with_threads;
use focal_retinanet::train::{
    detect_batch, load_trained_model, open_datasets, MetricRow, Outcome, Silent, TrainConfig,
    Trainer,
};
use focal_retinanet::LossConfig;

/// A scratch folder for one test (removed first if a previous run left it).
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focal-train-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// ResNet-18 (the smallest backbone) on 64-px images with a narrow FPN and one-layer
/// heads: a step takes a fraction of a second. The loss and anchor ratios are the
/// paper's (γ = 2, α = 0.25; ratios 0.5, 1, 2), so the first loss is the one
/// worked out in docs/focal-loss.md.
fn tiny(iters: u64) -> TrainConfig {
    let mut c = TrainConfig::shapes();
    c.batch_size = 4;
    c.iters = Some(iters);
    let s = c.data.shapes.as_mut().unwrap();
    s.train_images = 8;
    s.val_images = 4;
    s.size = 64;
    c.data.min_size = 64;
    c.data.max_size = 64;
    c.data.eval_batch_size = 4;
    c.model.fpn_channels = 32;
    c.model.head_width = 32;
    c.model.head_depth = 1;
    c.schedule.warmup_iters = 2;
    c.optimizer.lr = 2e-3;
    c.loss = LossConfig::default();
    c.anchors.ratios = vec![0.5, 1.0, 2.0];
    c
}

/// The step rows of a run folder's metrics.jsonl.
fn step_losses(dir: &Path) -> Vec<(u64, f32, f32, f32)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| match serde_json::from_str::<MetricRow>(l).unwrap() {
            MetricRow::Step(s) => Some((s.step, s.loss, s.cls_loss, s.box_loss)),
            MetricRow::Eval(_) => None,
        })
        .collect()
}

fn finished(outcome: Outcome) -> focal_data::EvalResult {
    match outcome {
        Outcome::Finished(r) => r,
        Outcome::Stopped { step } => panic!("the run stopped early at step {step}"),
    }
}

#[test]
fn trains_saves_and_reloads_to_identical_predictions() {
    let dir = scratch("e2e");
    let mut trainer = Trainer::new(tiny(16), &dir).unwrap();
    let result = finished(trainer.run(&mut Silent).unwrap());

    // The loss falls: the mean of the last 4 steps is well below that of the first 4
    // (the first classification loss is the prior's ≈ 1.13 + a small background term).
    let losses = step_losses(&dir);
    assert_eq!(losses.len(), 16);
    let mean = |r: &[(u64, f32, f32, f32)]| r.iter().map(|x| x.1).sum::<f32>() / r.len() as f32;
    let (first, last) = (mean(&losses[..4]), mean(&losses[12..]));
    assert!(
        last < 0.8 * first,
        "loss did not fall: first 4 steps {first}, last 4 steps {last}"
    );
    assert!(
        (losses[0].2 - 1.13).abs() < 0.1,
        "first cls loss {}",
        losses[0].2
    );

    // Every file of the run folder is there; metrics.json holds the 12 numbers.
    for f in [
        "config.toml",
        "metrics.jsonl",
        "metrics.json",
        "last.ckpt",
        "best.ckpt",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    for (name, v) in result.stats.named() {
        assert_eq!(metrics[name].as_f64().unwrap(), v, "{name}");
    }
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert_eq!(TrainConfig::from_toml(&config).unwrap(), *trainer.config());

    // The checkpoint alone rebuilds the model: identical detections on the validation set.
    let mut reloaded = load_trained_model(&dir.join("last.ckpt")).unwrap();
    assert_eq!(reloaded.step, 16);
    assert_eq!(
        reloaded
            .metadata
            .categories
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["circle", "square", "triangle", "ring", "cross"]
    );
    let (_, val) = open_datasets(trainer.config()).unwrap();
    let loader = Loader::new(val, LoaderConfig::eval(4, 64, 64)).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let a = detect_batch(&mut trainer.model, &batch);
    let b = detect_batch(&mut reloaded.model, &batch);
    assert!(
        a.iter().map(|d| d.len()).sum::<usize>() > 0,
        "no detections to compare"
    );
    assert_eq!(a, b, "the reloaded model predicts differently");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_run_writes_the_losses_of_an_uninterrupted_one() {
    // 12 steps: 8 images in batches of 4 make 2 batches per epoch, so 6 epochs.
    let whole = scratch("resume-whole");
    let mut t = Trainer::new(tiny(12), &whole).unwrap();
    let r_whole = finished(t.run(&mut Silent).unwrap());

    // The same run stopped after 5 steps (mid-epoch: 5 = 2 epochs + 1 batch), then resumed
    // from its checkpoint in a fresh trainer.
    let split = scratch("resume-split");
    let mut t = Trainer::new(tiny(12), &split).unwrap();
    t.stop_after(5);
    match t.run(&mut Silent).unwrap() {
        Outcome::Stopped { step } => assert_eq!(step, 5),
        Outcome::Finished(_) => panic!("stop_after(5) did not stop"),
    }
    drop(t);
    assert_eq!(step_losses(&split).len(), 5);
    let mut t = Trainer::resume(&split.join("last.ckpt"), None, None).unwrap();
    assert_eq!((t.step(), t.epoch()), (5, 2));
    let r_split = finished(t.run(&mut Silent).unwrap());

    let (a, b) = (step_losses(&whole), step_losses(&split));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "resumed losses differ from the uninterrupted run");
    assert_eq!(r_whole.stats, r_split.stats);
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn losses_do_not_depend_on_the_thread_count() {
    let runs: Vec<Vec<(u64, f32, f32, f32)>> = [1, 2]
        .iter()
        .map(|&threads| {
            let dir = scratch(&format!("threads-{threads}"));
            let losses = with_threads(threads, || {
                let mut t = Trainer::new(tiny(6), &dir).unwrap();
                finished(t.run(&mut Silent).unwrap());
                step_losses(&dir)
            });
            let _ = std::fs::remove_dir_all(&dir);
            losses
        })
        .collect();
    assert_eq!(runs[0].len(), 6);
    assert_eq!(runs[0], runs[1], "1 and 2 threads wrote different losses");
}

#[test]
fn a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint() {
    let dir = scratch("nan");
    let mut c = tiny(6);
    // A learning rate of 1e30 sends the weights to infinity in the first update, so the
    // second step's loss is not finite.
    c.optimizer.lr = 1e30;
    c.schedule.warmup_iters = 0;
    c.checkpoint_every = 1;
    let mut t = Trainer::new(c, &dir).unwrap();
    let err = t.run(&mut Silent).unwrap_err().chain();
    assert!(err.contains("at step 2"), "{err}");
    assert!(err.contains("last.ckpt") && err.contains("intact"), "{err}");
    // last.ckpt is the state after step 1, and loads.
    let m = load_trained_model(&dir.join("last.ckpt")).unwrap();
    assert_eq!(m.step, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_to_overwrite_a_run_and_to_resume_from_a_model_only_checkpoint() {
    let dir = scratch("refuse");
    let mut t = Trainer::new(tiny(2), &dir).unwrap();
    finished(t.run(&mut Silent).unwrap());
    // While the trainer lives it holds the folder's lock, even against this process.
    let err = Trainer::new(tiny(2), &dir).err().unwrap().chain();
    assert!(err.contains("in use by another run"), "{err}");
    drop(t);
    let err = Trainer::new(tiny(2), &dir).err().unwrap().chain();
    assert!(err.contains("already holds a run"), "{err}");
    let err = Trainer::resume(&dir.join("best.ckpt"), None, None)
        .err()
        .unwrap()
        .chain();
    assert!(err.contains("no optimiser state"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn more_objects_in_training_images_leave_the_validation_split_unchanged() {
    let mut c = tiny(1);
    c.data.shapes.as_mut().unwrap().train_max_objects = Some(12);
    let (train, val) = open_datasets(&c).unwrap();
    assert!(
        train.describe().contains("0-12 objects"),
        "{}",
        train.describe()
    );
    assert!(val.describe().contains("0-6 objects"), "{}", val.describe());
    let text = c.to_toml();
    assert!(text.contains("train_max_objects = 12"), "{text}");
    assert_eq!(TrainConfig::from_toml(&text).unwrap(), c);
}
