//! Running the grid: every cell is trained with the same configuration but its (γ, α),
//! one after the other, and recorded when done; a rerun skips what is recorded.
//!
//! The training of one cell is injected through [`CellTrainer`], so the bookkeeping here
//! (which cells are done, stale or to do, the records, the tables) is tested with a fake
//! trainer in milliseconds; `focal ablate` plugs in the real one.
//!
//! ## Resuming
//! A cell counts as done when its record `OUT/<cell>.json` exists *and* carries the hash
//! of the cell's current configuration. A record with another hash is **stale** — the
//! configuration changed since (another `--iters`, `--seed`, or a new default) — and the
//! cell is trained again; the observer is told so, with both hashes. The record is
//! written atomically after the cell's evaluation, so an interrupted cell simply has no
//! record (its trainer may still continue it from its own checkpoint).

use std::path::Path;

use focal_data::CocoStats;

use super::record::{config_hash, CellRecord};
use super::setting::{Grid, Setting};
use super::table;
use crate::error::Error;

/// How training a cell ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CellOutcome {
    /// Trained and evaluated: the 12 COCO numbers on the validation set.
    Finished(CocoStats),
    /// Stopped before the end (Ctrl-C); nothing is recorded.
    Stopped,
}

/// Trains one cell of the grid.
pub trait CellTrainer {
    /// The complete configuration of the training run of `setting`, as text. Two runs
    /// with the same text must give the same result; anything that can change the result
    /// must change the text. Its [`config_hash`] identifies the cell's record.
    fn config_text(&self, setting: &Setting) -> String;

    /// Trains and evaluates `setting`, with `dir` (`OUT/<cell>/`) as its run folder.
    fn train(&mut self, setting: &Setting, dir: &Path) -> Result<CellOutcome, Error>;
}

/// Where a cell stands before the grid runs.
#[derive(Clone, Debug, PartialEq)]
pub enum CellState {
    /// Recorded with the current configuration: skipped.
    Done(CellRecord),
    /// Recorded with another configuration (the record's hash differs): trained again.
    Stale(CellRecord),
    /// Not recorded: trained.
    Todo,
}

/// One cell of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedCell {
    pub setting: Setting,
    /// [`config_hash`] of [`CellTrainer::config_text`].
    pub hash: String,
    pub state: CellState,
}

impl PlannedCell {
    pub fn is_done(&self) -> bool {
        matches!(self.state, CellState::Done(_))
    }
}

/// What the runner tells the outside world (progress bars, messages). Every method has a
/// do-nothing default.
pub trait GridObserver {
    /// Before the first cell: the whole plan (done, stale and to-do cells).
    fn on_plan(&mut self, _plan: &[PlannedCell]) {}
    /// Cell `index` of the plan starts training.
    fn on_cell_start(&mut self, _index: usize, _cell: &PlannedCell) {}
    /// Cell `index` finished and was recorded.
    fn on_cell_done(&mut self, _index: usize, _record: &CellRecord) {}
}

/// An observer that does nothing.
pub struct Quiet;
impl GridObserver for Quiet {}

/// How [`run_grid`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum GridOutcome {
    /// Every cell is recorded; the records in grid order.
    Finished(Vec<CellRecord>),
    /// A cell was stopped; `done` cells are recorded.
    Stopped { done: usize },
}

/// Where each cell of `grid` stands in the output folder `out`.
pub fn plan(out: &Path, grid: &Grid, trainer: &dyn CellTrainer) -> Result<Vec<PlannedCell>, Error> {
    let mut cells = Vec::new();
    for setting in grid.settings() {
        let hash = config_hash(&trainer.config_text(&setting));
        let state = match CellRecord::read(out, &setting)? {
            Some(r) if r.config_hash == hash => CellState::Done(r),
            Some(r) => CellState::Stale(r),
            None => CellState::Todo,
        };
        cells.push(PlannedCell {
            setting,
            hash,
            state,
        });
    }
    Ok(cells)
}

/// The file names of the tables in the output folder.
pub const TABLE_MD: &str = "table.md";
pub const TABLE_CSV: &str = "table.csv";

/// Rewrites `OUT/table.md` and `OUT/table.csv` from the records that match the current
/// configuration, and `OUT/curves.md` from those cells' run folders.
pub fn write_tables(
    out: &Path,
    grid: &Grid,
    records: &[CellRecord],
    caption: &str,
) -> Result<(), Error> {
    for (name, text) in [
        (TABLE_MD, table::markdown(grid, records, caption)),
        (TABLE_CSV, table::csv(grid, records)),
    ] {
        let path = out.join(name);
        focal_engine::write_atomic(&path, text.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
    }
    super::curves::write_curves(out, grid, records)
}

/// Trains every cell of `grid` that is not done, in grid order, recording each as it
/// finishes and rewriting the tables (with `caption` under their title) after each. Stale
/// records are removed when their cell starts, so the tables never mix configurations.
pub fn run_grid(
    out: &Path,
    grid: &Grid,
    caption: &str,
    trainer: &mut dyn CellTrainer,
    observer: &mut dyn GridObserver,
) -> Result<GridOutcome, Error> {
    grid.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io("create the output folder", out, e))?;
    let cells = plan(out, grid, trainer)?;
    observer.on_plan(&cells);
    let mut records: Vec<CellRecord> = cells
        .iter()
        .filter_map(|c| match &c.state {
            CellState::Done(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    write_tables(out, grid, &records, caption)?;
    for (index, cell) in cells.iter().enumerate() {
        if cell.is_done() {
            continue;
        }
        if let CellState::Stale(_) = cell.state {
            let path = CellRecord::path(out, &cell.setting);
            std::fs::remove_file(&path)
                .map_err(|e| Error::io("remove the stale record", &path, e))?;
        }
        observer.on_cell_start(index, cell);
        let started = std::time::Instant::now();
        let dir = out.join(cell.setting.file_stem());
        match trainer.train(&cell.setting, &dir)? {
            CellOutcome::Stopped => {
                return Ok(GridOutcome::Stopped {
                    done: records.len(),
                })
            }
            CellOutcome::Finished(stats) => {
                let record = CellRecord {
                    gamma: cell.setting.gamma,
                    alpha: cell.setting.alpha,
                    seed: cell.setting.seed,
                    config_hash: cell.hash.clone(),
                    seconds: started.elapsed().as_secs_f64(),
                    stats,
                };
                record.write(out)?;
                records.push(record.clone());
                write_tables(out, grid, &records, caption)?;
                observer.on_cell_done(index, &record);
            }
        }
    }
    // In grid order (the finished cells were appended after the ones already done).
    let ordered = grid
        .settings()
        .iter()
        .filter_map(|s| records.iter().find(|r| r.setting() == *s).cloned())
        .collect();
    Ok(GridOutcome::Finished(ordered))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trainer that "trains" instantly: AP = γ/10 + α/100, and counts its calls.
    struct Fake {
        /// Part of every configuration text (a changed value makes records stale).
        iters: u32,
        trained: Vec<Setting>,
        /// Stop (as after Ctrl-C) when asked to train this many cells.
        stop_at: Option<usize>,
    }

    impl CellTrainer for Fake {
        fn config_text(&self, s: &Setting) -> String {
            format!(
                "iters = {}\ngamma = {}\nalpha = {}\n",
                self.iters, s.gamma, s.alpha
            )
        }

        fn train(&mut self, s: &Setting, dir: &Path) -> Result<CellOutcome, Error> {
            if self.stop_at == Some(self.trained.len()) {
                return Ok(CellOutcome::Stopped);
            }
            assert!(dir.ends_with(s.file_stem()));
            self.trained.push(*s);
            let mut stats = [0.5; 12];
            stats[0] = s.gamma as f64 / 10.0 + s.alpha as f64 / 100.0;
            Ok(CellOutcome::Finished(CocoStats::from_array(stats)))
        }
    }

    fn fake(iters: u32) -> Fake {
        Fake {
            iters,
            trained: Vec::new(),
            stop_at: None,
        }
    }

    fn grid() -> Grid {
        Grid {
            gammas: vec![2.0],
            alphas: vec![0.25, 0.5],
            ce_alphas: vec![0.75],
            ..Grid::default()
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("focal-ablate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn finished_cells_are_skipped_on_rerun() {
        let out = temp_dir("rerun");
        // Stop when the second cell starts: only the first (α-CE 0.75) is recorded.
        let mut t = Fake {
            stop_at: Some(1),
            ..fake(10)
        };
        let r = run_grid(&out, &grid(), "", &mut t, &mut Quiet).unwrap();
        assert_eq!(r, GridOutcome::Stopped { done: 1 });
        assert_eq!(t.trained, vec![Setting::new(0.0, 0.75)]);
        let md = std::fs::read_to_string(out.join(TABLE_MD)).unwrap();
        assert!(md.contains("1 of 3 cells finished"), "{md}");

        // The rerun trains only the two remaining cells.
        let mut t = fake(10);
        let r = run_grid(&out, &grid(), "", &mut t, &mut Quiet).unwrap();
        assert_eq!(
            t.trained,
            vec![Setting::new(2.0, 0.25), Setting::new(2.0, 0.5)]
        );
        let GridOutcome::Finished(records) = r else {
            panic!("{r:?}")
        };
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].setting(), Setting::new(0.0, 0.75));
        // AP = 0/10 + 0.75/100 = 0.0075 for the CE cell (recorded in the first run).
        assert!((records[0].stats.ap - 0.0075).abs() < 1e-7);

        // A third run trains nothing.
        let mut t = fake(10);
        run_grid(&out, &grid(), "", &mut t, &mut Quiet).unwrap();
        assert!(t.trained.is_empty());
        let csv = std::fs::read_to_string(out.join(TABLE_CSV)).unwrap();
        assert_eq!(csv.lines().count(), 4, "{csv}");
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_seeded_grid_interrupted_midway_continues_with_the_runs_left() {
        let out = temp_dir("seeded");
        let grid = Grid {
            seeds: vec![0, 1],
            ..grid()
        };
        // 3 losses × 2 seeds; stopped when the fifth run (seed 1, γ = 2, α = 0.25) starts.
        let mut t = Fake {
            stop_at: Some(4),
            ..fake(10)
        };
        let r = run_grid(&out, &grid, "", &mut t, &mut Quiet).unwrap();
        assert_eq!(r, GridOutcome::Stopped { done: 4 });
        let seeds: Vec<Option<u64>> = t.trained.iter().map(|s| s.seed).collect();
        assert_eq!(seeds, vec![Some(0), Some(0), Some(0), Some(1)]);
        assert!(out.join("gamma0_alpha0.75_seed1.json").is_file());
        assert!(!out.join("gamma2_alpha0.25_seed1.json").exists());

        let mut t = fake(10);
        let GridOutcome::Finished(records) = run_grid(&out, &grid, "", &mut t, &mut Quiet).unwrap()
        else {
            panic!("not finished")
        };
        assert_eq!(
            t.trained,
            vec![
                Setting {
                    seed: Some(1),
                    ..Setting::new(2.0, 0.25)
                },
                Setting {
                    seed: Some(1),
                    ..Setting::new(2.0, 0.5)
                }
            ]
        );
        assert_eq!(records.len(), 6);
        assert_eq!(records[3].seed, Some(1));
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_changed_configuration_makes_every_record_stale() {
        let out = temp_dir("stale");
        run_grid(&out, &grid(), "", &mut fake(10), &mut Quiet).unwrap();
        /// Collects the plan.
        struct Plan(Vec<PlannedCell>);
        impl GridObserver for Plan {
            fn on_plan(&mut self, plan: &[PlannedCell]) {
                self.0 = plan.to_vec();
            }
        }
        let mut seen = Plan(Vec::new());
        let mut t = fake(20);
        run_grid(&out, &grid(), "", &mut t, &mut seen).unwrap();
        assert_eq!(t.trained.len(), 3, "every cell is trained again");
        assert!(seen
            .0
            .iter()
            .all(|c| matches!(c.state, CellState::Stale(_))));
        // The new records carry the new hash.
        let p = plan(&out, &grid(), &fake(20)).unwrap();
        assert!(p.iter().all(PlannedCell::is_done));
        let p = plan(&out, &grid(), &fake(10)).unwrap();
        assert!(p.iter().all(|c| !c.is_done()));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
