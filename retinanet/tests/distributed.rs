//! A run shared by several processes, with the ranks as threads of this process
//! (`ThreadRanks`, which exchange through memory as MPI ranks exchange messages): the
//! same losses, checkpoint and COCO numbers, bit for bit, as one process cutting its
//! batches into the same shards, with 1, 2 or 4 ranks (and with BatchNorm); a run resumed
//! on another number of ranks; a stop asked on one rank only (during a step or an
//! evaluation), which every rank obeys at the same step; images left out by the check
//! before step 1 (`skip_bad_images`), left out alike on every rank; ranks that disagree,
//! and a rank that fails, stop every rank with an error.
//! (The same run over real MPI processes is `tests/mpi.rs` of the focal binary.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use focal_data::{ShapesConfig, ShapesDataset, Split};
use focal_retinanet::train::{
    build_train_loader, open_datasets, CocoData, Comm, EvalRecord, MetricRow, Observer, Outcome,
    Silent, StepRecord, ThreadRanks, TrainConfig, Trainer,
};
use focal_retinanet::{BackboneName, BackboneNorm, LossConfig};

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focal-dist-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The tiny configuration of `tests/train.rs` on ResNet-18 at half width, with 10
/// training images in batches of 4
/// (4, 4 and a last batch of 2, which leaves some ranks without an image) cut into 4
/// shards, evaluated one image per batch on 4 images every 2 steps.
fn tiny(iters: u64) -> TrainConfig {
    let mut c = TrainConfig::shapes();
    c.batch_size = 4;
    c.shards = 4;
    c.iters = Some(iters);
    let s = c.data.shapes.as_mut().unwrap();
    s.train_images = 10;
    s.val_images = 4;
    s.size = 64;
    c.data.min_size = 64;
    c.data.max_size = 64;
    c.data.eval_batch_size = 1;
    c.eval_every = 2;
    c.model.depth = BackboneName::parse("resnet18-half").unwrap();
    c.model.fpn_channels = 32;
    c.model.head_width = 32;
    c.model.head_depth = 1;
    c.schedule.warmup_iters = 2;
    c.optimizer.lr = 2e-3;
    c.loss = LossConfig::default();
    c.anchors.ratios = vec![0.5, 1.0, 2.0];
    // Detections of any score, so that every rank has some to send after so few steps.
    c.inference.score_threshold = 0.0;
    c
}

/// What a finished (or stopped) run leaves: every row of metrics.jsonl as written, and the
/// bytes of last.ckpt (model, optimiser state, step, RNG).
#[derive(Debug, PartialEq)]
struct RunFiles {
    metrics: String,
    last_ckpt: Vec<u8>,
}

impl RunFiles {
    fn read(dir: &Path) -> RunFiles {
        // Evaluation rows carry their wall time: blank it, keep the rest.
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| match serde_json::from_str::<MetricRow>(l).unwrap() {
                MetricRow::Eval(e) => {
                    serde_json::to_string(&MetricRow::Eval(EvalRecord { seconds: 0.0, ..e }))
                        .unwrap()
                }
                MetricRow::Step(mut s) => {
                    s.images_per_s = 0.0;
                    serde_json::to_string(&MetricRow::Step(s)).unwrap()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        RunFiles {
            metrics,
            last_ckpt: std::fs::read(dir.join("last.ckpt")).unwrap(),
        }
    }
}

/// The two run folders hold the same metrics (compared line by line) and the same
/// last.ckpt (compared as bytes, without printing them).
fn assert_same_run(a: &Path, b: &Path) {
    let (a, b) = (RunFiles::read(a), RunFiles::read(b));
    assert_eq!(a.metrics, b.metrics, "other metrics");
    assert!(a.last_ckpt == b.last_ckpt, "another last.ckpt");
}

/// Runs `body(rank's comm)` on `ranks` threads, each with its rank of one `ThreadRanks`
/// group; returns each rank's result in rank order.
fn on_ranks<T: Send>(ranks: usize, body: impl Fn(Arc<dyn Comm>) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadRanks::world(ranks)
            .into_iter()
            .map(|c| {
                let body = &body;
                s.spawn(move || body(Arc::new(c)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A fresh run of `config` on `ranks` ranks (1: one process, `Trainer::new`), stopped
/// after `stop` steps if given; returns each rank's outcome.
fn train(ranks: usize, dir: &Path, config: &TrainConfig, stop: Option<u64>) -> Vec<Outcome> {
    let go = |mut t: Trainer| {
        if let Some(n) = stop {
            t.stop_after(n);
        }
        t.run(&mut Silent).unwrap()
    };
    if ranks == 1 {
        return vec![go(Trainer::new(config.clone(), dir).unwrap())];
    }
    on_ranks(ranks, |comm| {
        go(Trainer::new_on(comm, config.clone(), dir).unwrap())
    })
}

/// Resumes `dir/last.ckpt` on `ranks` ranks, stopped after `stop` more steps if given.
fn resume(ranks: usize, dir: &Path, stop: Option<u64>) -> Vec<Outcome> {
    let ckpt = dir.join("last.ckpt");
    on_ranks(ranks, |comm| {
        let mut t = Trainer::resume_on(comm, &ckpt, None, None).unwrap();
        if let Some(n) = stop {
            t.stop_after(n);
        }
        t.run(&mut Silent).unwrap()
    })
}

fn final_stats(outcomes: &[Outcome]) -> Vec<focal_data::CocoStats> {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Finished(r) => r.stats,
            Outcome::Stopped { step } => panic!("stopped at step {step}"),
        })
        .collect()
}

/// 1, 2 and 4 ranks sharing 4 shards write the metrics (losses, learning rates, positives,
/// gradient norms, evaluations) and last.ckpt of one process with 4 shards, byte for byte,
/// and every rank ends with the same COCO numbers; a repeat gives the same bytes again.
#[test]
fn ranks_train_the_bits_of_one_process_with_the_same_shards() {
    let one = scratch("one");
    let reference_stats = final_stats(&train(1, &one, &tiny(3), None))[0];
    assert!(reference_stats.ar100 > 0.0, "no detection matched");
    let reference = RunFiles::read(&one);
    assert_eq!(
        reference.metrics.lines().count(),
        3 + 2,
        "3 steps, 2 evaluations"
    );
    for (ranks, repeat) in [(2, 0), (4, 0), (2, 1)] {
        let dir = scratch(&format!("ranks-{ranks}-{repeat}"));
        let stats = final_stats(&train(ranks, &dir, &tiny(3), None));
        assert_eq!(stats.len(), ranks);
        for s in &stats {
            assert_eq!(*s, reference_stats, "{ranks} ranks: other COCO numbers");
        }
        let files = RunFiles::read(&dir);
        assert_eq!(
            files.metrics, reference.metrics,
            "{ranks} ranks wrote other metrics than one process"
        );
        assert!(
            files.last_ckpt == reference.last_ckpt,
            "{ranks} ranks saved another last.ckpt than one process"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&one);
}

/// With trainable BatchNorm, each rank's running statistics come from its own shards;
/// rank 0's (those of the first shard, which one process keeps) are sent to every rank
/// before each evaluation, so the evaluations and the checkpoint still are one process's.
#[test]
fn batchnorm_statistics_are_rank_0s() {
    let mut config = tiny(2);
    config.model.norm = BackboneNorm::BatchNorm;
    let one = scratch("bn-one");
    let reference = final_stats(&train(1, &one, &config, None))[0];
    let two = scratch("bn-two");
    for stats in final_stats(&train(2, &two, &config, None)) {
        assert_eq!(
            stats, reference,
            "a rank evaluated other BatchNorm statistics"
        );
    }
    assert_same_run(&two, &one);
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&two);
}

/// A run started on 2 ranks, continued in one process and finished on 4 ranks writes the
/// same metrics and checkpoint as one uninterrupted process.
#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let whole = scratch("resume-whole");
    train(1, &whole, &tiny(5), None);
    let split = scratch("resume-split");
    let stopped = train(2, &split, &tiny(5), Some(2));
    assert!(stopped
        .iter()
        .all(|o| matches!(o, Outcome::Stopped { step: 2 })));
    // One process, as `focal train --resume` without mpirun.
    let mut t = Trainer::resume(&split.join("last.ckpt"), None, None).unwrap();
    t.stop_after(1);
    assert!(matches!(
        t.run(&mut Silent).unwrap(),
        Outcome::Stopped { step: 3 }
    ));
    drop(t);
    final_stats(&resume(4, &split, None));
    assert_same_run(&split, &whole);
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// A rank with another configuration is found before the first step: every rank stops
/// with an error naming it. A number of ranks that does not divide the shards is refused.
#[test]
fn ranks_that_disagree_are_refused() {
    let dir = scratch("disagree");
    let errors = on_ranks(2, |comm| {
        let mut c = tiny(2);
        if comm.rank() == 1 {
            c.optimizer.lr = 1e-3;
        }
        let mut t = Trainer::new_on(comm, c, &dir).unwrap();
        t.run(&mut Silent).unwrap_err().to_string()
    });
    for e in &errors {
        assert!(e.contains("rank 1 of 2 has another configuration"), "{e}");
    }
    assert!(!dir.join("metrics.jsonl").exists());
    let e = on_ranks(3, |comm| {
        Trainer::new_on(comm, tiny(2), &dir)
            .err()
            .map(|e| e.to_string())
    });
    assert!(
        e.iter().all(|e| e
            .as_deref()
            .is_some_and(|e| e.contains("run it on 1, 2, 4 processes"))),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rank that fails (here: its dataset cannot be built) leaves the run; the ranks
/// waiting for it in a collective get an error instead of waiting forever.
#[test]
fn a_rank_that_fails_stops_the_others() {
    let dir = scratch("fails");
    let results = on_ranks(2, |comm| {
        let mut c = tiny(2);
        if comm.rank() == 1 {
            c.data.shapes.as_mut().unwrap().size = 0;
        }
        match Trainer::new_on(comm, c, &dir) {
            Ok(mut t) => t.run(&mut Silent).map(|_| ()).unwrap_err().to_string(),
            Err(e) => format!("setup: {e}"),
        }
    });
    assert!(results[1].starts_with("setup: "), "{}", results[1]);
    assert!(results[0].contains("rank 1 left the run"), "{}", results[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asks to stop on one rank only, once `after` steps are done: the evaluation that
/// follows a step is then abandoned after its first batch (`should_stop` is asked after
/// every batch), and otherwise the run stops after that step.
struct StopOn {
    rank: usize,
    me: usize,
    after: u64,
    step: u64,
}

impl Observer for StopOn {
    fn on_step(&mut self, record: &StepRecord, _trainer: &Trainer) {
        self.step = record.step;
    }
    fn should_stop(&mut self) -> bool {
        self.me == self.rank && self.step >= self.after
    }
}

/// Ctrl-C or SIGTERM reaching one process only (or reaching them at different moments):
/// every rank stops at the same step, rank 0 writes last.ckpt, and the run continued
/// from it is one uninterrupted process's. Rank 1 asks during the evaluation at step 2
/// (which every rank abandons, and the resumed run repeats); then rank 0 asks after step
/// 3 (no evaluation due).
#[test]
fn a_stop_asked_on_one_rank_stops_every_rank_at_the_same_step() {
    let whole = scratch("stop-whole");
    train(1, &whole, &tiny(5), None);
    let split = scratch("stop-split");
    let stopped = on_ranks(2, |comm| {
        let me = comm.rank();
        let mut t = Trainer::new_on(comm, tiny(5), &split).unwrap();
        let mut observer = StopOn {
            rank: 1,
            me,
            after: 2,
            step: 0,
        };
        t.run(&mut observer).unwrap()
    });
    assert!(
        stopped
            .iter()
            .all(|o| matches!(o, Outcome::Stopped { step: 2 })),
        "{stopped:?}"
    );
    let ckpt = split.join("last.ckpt");
    let stopped = on_ranks(2, |comm| {
        let me = comm.rank();
        let mut t = Trainer::resume_on(comm, &ckpt, None, None).unwrap();
        let mut observer = StopOn {
            rank: 0,
            me,
            after: 3,
            step: 0,
        };
        t.run(&mut observer).unwrap()
    });
    assert!(
        stopped
            .iter()
            .all(|o| matches!(o, Outcome::Stopped { step: 3 })),
        "{stopped:?}"
    );
    final_stats(&resume(2, &split, None));
    assert_same_run(&split, &whole);
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// The shapes written as a COCO dataset (64-px PNGs) under `dir`.
fn shapes_coco(dir: &Path, train: usize, val: usize) -> CocoData {
    for (split, n, name) in [(Split::Train, train, "train"), (Split::Val, val, "val")] {
        let ds = ShapesDataset::new(ShapesConfig {
            size: 64,
            ..ShapesConfig::new(split, n, 11)
        })
        .unwrap();
        ds.write_coco(&dir.join(name), &dir.join(format!("{name}.json")), &|_| {})
            .unwrap();
    }
    CocoData {
        train_annotations: dir.join("train.json"),
        train_images: dir.join("train"),
        val_annotations: dir.join("val.json"),
        val_images: dir.join("val"),
    }
}

/// With images the check before step 1 finds bad and leaves out (`skip_bad_images`),
/// rank 0 checks and every rank leaves out the same images: batches are cut and padded
/// without them as in one process, and 2 ranks write one process's files, bit for bit.
/// Also with `checkpoint_every_min` so small that a save is due after every step, which
/// every rank must decide alike.
#[test]
fn images_left_out_before_step_1_are_left_out_on_every_rank() {
    let dir = scratch("left-out");
    let data = shapes_coco(&dir.join("coco"), 10, 4);
    let mut config = tiny(3);
    config.data.shapes = None;
    config.data.coco = Some(data.clone());
    config.data.skip_bad_images = true;
    config.data.train_min_sizes = vec![32, 48, 64];
    config.checkpoint_every_min = 1e-9;
    // The first image of the first two batches of epoch 1 (image i is file i + 1), so
    // that both batches are cut differently without them, and one validation image.
    let (train_set, _) = open_datasets(&config).unwrap();
    let order = build_train_loader(&config, train_set).unwrap().order(0);
    for file in [
        data.train_images.join(format!("{:06}.png", order[0] + 1)),
        data.train_images.join(format!("{:06}.png", order[5] + 1)),
        data.val_images.join("000003.png"),
    ] {
        std::fs::remove_file(file).unwrap();
    }
    let one = dir.join("one");
    let reference = final_stats(&train(1, &one, &config, None))[0];
    let two = dir.join("two");
    for stats in final_stats(&train(2, &two, &config, None)) {
        assert_eq!(stats, reference, "a rank scored other detections");
    }
    assert_same_run(&two, &one);
    let _ = std::fs::remove_dir_all(&dir);
}
