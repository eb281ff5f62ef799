//! The ablation grid with the real trainer on a tiny synthetic configuration (64-px
//! images, a handful of them): cells are trained, recorded and skipped on rerun; an
//! interrupted cell continues from its checkpoint to exactly the numbers of an
//! uninterrupted one; a changed configuration retrains a cell from scratch.

use std::path::PathBuf;

use focal_retinanet::ablation::training::{base_config, cell_config, TrainerCells};
use focal_retinanet::ablation::{run_grid, CellRecord, Grid, GridOutcome, Quiet, Setting};
use focal_retinanet::train::{Observer, StepRecord, TrainConfig, Trainer};

/// A scratch folder for one test (removed first if a previous run left it).
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focal-ablation-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The ablation's base configuration shrunk to seconds: 8 training and 4 validation
/// images of 64 px, a 32-wide FPN, one-layer heads, batches of 4.
fn tiny(iters: u64) -> TrainConfig {
    let mut c = base_config();
    c.batch_size = 4;
    c.iters = Some(iters);
    c.checkpoint_every = 2;
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
    c
}

/// Counts the runs started and the steps taken; asks to stop after `stop_after` steps.
#[derive(Default)]
struct Count {
    starts: Vec<u64>,
    steps: u64,
    stop_after: Option<u64>,
}

impl Observer for Count {
    fn on_start(&mut self, t: &Trainer) {
        self.starts.push(t.step());
    }
    fn on_step(&mut self, _r: &StepRecord, _t: &Trainer) {
        self.steps += 1;
    }
    fn should_stop(&mut self) -> bool {
        self.stop_after.is_some_and(|n| self.steps >= n)
    }
}

fn finished(outcome: GridOutcome) -> Vec<CellRecord> {
    match outcome {
        GridOutcome::Finished(r) => r,
        GridOutcome::Stopped { done } => panic!("the grid stopped after {done} cells"),
    }
}

fn one_cell() -> Grid {
    Grid {
        gammas: vec![2.0],
        alphas: vec![0.25],
        ce_alphas: vec![],
        ..Grid::default()
    }
}

#[test]
fn cells_are_trained_recorded_and_skipped_on_rerun() {
    let out = scratch("rerun");
    let grid = Grid {
        gammas: vec![2.0],
        alphas: vec![0.25],
        ce_alphas: vec![0.75],
        ..Grid::default()
    };
    let mut count = Count::default();
    let records = finished(
        run_grid(
            &out,
            &grid,
            "",
            &mut TrainerCells::new(tiny(3), &mut count),
            &mut Quiet,
        )
        .unwrap(),
    );
    assert_eq!(count.starts, vec![0, 0], "two cells, each from step 0");
    assert_eq!(count.steps, 6);
    assert_eq!(records.len(), 2);
    for r in &records {
        let dir = out.join(r.setting().file_stem());
        assert!(
            dir.join("best.ckpt").is_file(),
            "{} keeps best.ckpt",
            dir.display()
        );
        assert!(
            !dir.join("last.ckpt").exists(),
            "a finished cell drops last.ckpt"
        );
        assert!(r.stats.ap >= 0.0 && r.stats.ap <= 1.0, "{r:?}");
        assert_eq!(
            CellRecord::read(&out, &r.setting()).unwrap().as_ref(),
            Some(r)
        );
    }
    // The two cells differ only in the loss: same initial weights and batches, so their
    // first classification losses differ only through γ and α (checked on the config).
    let ce = cell_config(&tiny(3), &Setting::new(0.0, 0.75));
    assert_eq!((ce.loss.gamma, ce.loss.alpha), (0.0, Some(0.75)));

    // The rerun trains nothing and returns the same records.
    let mut count = Count::default();
    let again = finished(
        run_grid(
            &out,
            &grid,
            "",
            &mut TrainerCells::new(tiny(3), &mut count),
            &mut Quiet,
        )
        .unwrap(),
    );
    assert!(count.starts.is_empty(), "nothing is trained again");
    assert_eq!(again, records);
    // A different thread count is not a different configuration.
    let mut threads = tiny(3);
    threads.threads = 1;
    let mut count = Count::default();
    finished(
        run_grid(
            &out,
            &grid,
            "",
            &mut TrainerCells::new(threads, &mut count),
            &mut Quiet,
        )
        .unwrap(),
    );
    assert!(
        count.starts.is_empty(),
        "--threads does not invalidate a cell"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn an_interrupted_cell_continues_to_the_numbers_of_an_uninterrupted_one() {
    let whole = scratch("whole");
    let split = scratch("split");
    let r_whole = finished(
        run_grid(
            &whole,
            &one_cell(),
            "",
            &mut TrainerCells::new(tiny(5), &mut Count::default()),
            &mut Quiet,
        )
        .unwrap(),
    );

    // Stop after 3 steps (as Ctrl-C does): last.ckpt is written, nothing recorded.
    let mut count = Count {
        stop_after: Some(3),
        ..Count::default()
    };
    let r = run_grid(
        &split,
        &one_cell(),
        "",
        &mut TrainerCells::new(tiny(5), &mut count),
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r, GridOutcome::Stopped { done: 0 });
    let cell_dir = split.join("gamma2_alpha0.25");
    assert!(cell_dir.join("last.ckpt").is_file());
    assert!(!split.join("gamma2_alpha0.25.json").exists());

    // The rerun continues at step 3 and ends with the same numbers, bit for bit.
    let mut count = Count::default();
    let r_split = finished(
        run_grid(
            &split,
            &one_cell(),
            "",
            &mut TrainerCells::new(tiny(5), &mut count),
            &mut Quiet,
        )
        .unwrap(),
    );
    assert_eq!(
        count.starts,
        vec![3],
        "continued from the checkpoint of step 3"
    );
    assert_eq!(count.steps, 2);
    assert_eq!(r_split[0].stats, r_whole[0].stats);
    assert_eq!(r_split[0].config_hash, r_whole[0].config_hash);
    for d in [whole, split] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn a_changed_configuration_retrains_the_cell_from_scratch() {
    let out = scratch("stale");
    // An interrupted cell at 4 iterations...
    let mut count = Count {
        stop_after: Some(2),
        ..Count::default()
    };
    run_grid(
        &out,
        &one_cell(),
        "",
        &mut TrainerCells::new(tiny(4), &mut count),
        &mut Quiet,
    )
    .unwrap();
    assert!(out.join("gamma2_alpha0.25").join("last.ckpt").is_file());
    // ...is not continued when the budget is now 3: it starts again at step 0.
    let mut count = Count::default();
    let r = finished(
        run_grid(
            &out,
            &one_cell(),
            "",
            &mut TrainerCells::new(tiny(3), &mut count),
            &mut Quiet,
        )
        .unwrap(),
    );
    assert_eq!(count.starts, vec![0]);
    assert_eq!(count.steps, 3);
    // A finished record of 3 iterations is stale for 2.
    let mut count = Count::default();
    let r2 = finished(
        run_grid(
            &out,
            &one_cell(),
            "",
            &mut TrainerCells::new(tiny(2), &mut count),
            &mut Quiet,
        )
        .unwrap(),
    );
    assert_eq!(count.starts, vec![0]);
    assert_ne!(r[0].config_hash, r2[0].config_hash);
    assert_eq!(
        CellRecord::read(&out, &Setting::new(2.0, 0.25))
            .unwrap()
            .unwrap()
            .config_hash,
        r2[0].config_hash
    );
    std::fs::remove_dir_all(&out).unwrap();
}
