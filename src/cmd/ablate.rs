//! `focal ablate`: the paper's Table 1a/1b at small scale. Trains the same small RetinaNet
//! once per (γ, α) of a grid, with the same budget, and writes the results as Markdown
//! tables laid out like the paper's and as a CSV. The grid, the records and the tables
//! are `focal_retinanet::ablation`; this file reads the flags, draws the progress bars
//! (overall and per cell) and handles Ctrl-C.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use focal_data::EvalResult;
use focal_engine::ConvAlgo;
use focal_retinanet::ablation::training::{base_config, describe, TrainerCells, ABLATION_ITERS};
use focal_retinanet::ablation::{
    run_grid, CellRecord, CellState, GridObserver, GridOutcome, PlannedCell, TABLE_CSV, TABLE_MD,
};
use focal_retinanet::ablation::{Grid, Setting};
use focal_retinanet::train::{EvalRecord, Observer, StepRecord, TrainConfig, Trainer};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::interrupt;

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Output folder: a record per finished cell (CELL.json), each cell's run folder
    /// (CELL/, with best.ckpt), table.md and table.csv. Rerunning with the same folder
    /// continues where the last run stopped.
    #[arg(long, value_name = "DIR", default_value = "runs/ablate")]
    pub out: PathBuf,
    /// Training steps (of 8 images) of every cell [default: 500].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: Option<u64>,
    /// γ of the focal-loss cells, comma-separated, each > 0 (γ = 0, α-balanced CE, has its
    /// own list: --ce-alphas).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0.5,1,2,5"
    )]
    pub gammas: Vec<f32>,
    /// α of the focal-loss cells (every γ is trained with every α), each in [0, 1].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0.25,0.5,0.75"
    )]
    pub alphas: Vec<f32>,
    /// α of the α-balanced cross-entropy cells (γ = 0), each in [0, 1]; "none" for no
    /// such cells.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0.25,0.5,0.75,0.9,0.99",
        value_parser = parse_ce_alpha
    )]
    pub ce_alphas: Vec<Option<f32>>,
    /// Seed of every cell: the initial weights and the order and flips of the batches
    /// (the same for all cells) [default: 0].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// A TOML training configuration read over the ablation's base configuration (as
    /// `focal train --config`; it may name only what it changes). --iters and --seed
    /// override it, and each cell replaces its [loss] γ and α.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// No progress bars: one line per cell and a line every 10% of a cell's steps.
    #[arg(long)]
    pub no_progress: bool,
}

const AFTER_HELP: &str = "\
The base configuration is that of `focal train` on the synthetic shapes (ResNet-18 with \
GroupNorm, FPN and heads 64 wide and 2 deep with GroupNorm, anchors 16-256, AdamW at 4e-3 \
with 100 warm-up steps and a cosine decay, batches of 8) made about twice cheaper: the \
64-px images at their own size (the default resizes them to 96 px), the paper's three \
anchor ratios, and 500 steps per cell instead of 800, so that the 17 cells of the default \
grid take under an hour on 2 idle cores (about 3 minutes per cell with its evaluation on \
the 200 validation images). Every cell starts from the same weights and sees the same \
batches; only γ and α differ.

The cells run in order: the α-balanced CE cells (Table 1a), then every γ with every α \
(Table 1b). When a cell finishes, OUT/CELL.json records its 12 COCO numbers and the hash \
of its configuration, and OUT/table.md and OUT/table.csv are rewritten. A rerun skips the \
recorded cells; a cell recorded with another configuration (other --iters, --seed, \
--config or defaults) is stale: it is named and trained again. Ctrl-C finishes the \
current step, saves the cell's last.ckpt and exits with status 130; the rerun continues \
that cell from its checkpoint. The worker threads are set with the global --threads \
(results do not depend on it).";

/// "none" (no CE cells) or an α.
fn parse_ce_alpha(s: &str) -> Result<Option<f32>, String> {
    match s.trim() {
        "none" => Ok(None),
        t => t.parse::<f32>().map(Some).map_err(|_| {
            format!("{t:?} is not a number (expected a comma-separated list or none)")
        }),
    }
}

impl Args {
    fn grid(&self) -> Result<Grid> {
        let ce: Vec<f32> = self.ce_alphas.iter().flatten().copied().collect();
        if self.ce_alphas.iter().any(Option::is_none) && self.ce_alphas.len() > 1 {
            bail!("--ce-alphas: give either α values or none, not both");
        }
        let grid = Grid {
            gammas: self.gammas.clone(),
            alphas: self.alphas.clone(),
            ce_alphas: ce,
        };
        grid.validate()?;
        Ok(grid)
    }

    /// The base configuration: the ablation's preset, then --config, then the flags.
    fn base(&self, threads: Option<u32>, conv_algo: Option<ConvAlgo>) -> Result<TrainConfig> {
        let mut base = base_config();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the configuration {}", path.display()))?;
            base = TrainConfig::from_toml_over(&base, &text)
                .with_context(|| path.display().to_string())?;
        }
        if let Some(iters) = self.iters {
            base.iters = Some(iters);
            base.epochs = None;
        }
        if let Some(seed) = self.seed {
            base.seed = seed;
        }
        if let Some(t) = threads {
            base.threads = t as usize;
        }
        if let Some(a) = conv_algo {
            base.conv_algo = a.name().to_string();
        }
        match &self.config {
            Some(p) => base.validate().with_context(|| p.display().to_string())?,
            None => base.validate()?,
        }
        Ok(base)
    }
}

pub fn run(args: Args, threads: Option<u32>, conv_algo: Option<ConvAlgo>) -> Result<ExitCode> {
    let started = Instant::now();
    let grid = args.grid()?;
    let base = args.base(threads, conv_algo)?;
    let caption = describe(&base);
    let cells = grid.settings();
    let ce = cells.iter().filter(|s| s.is_cross_entropy()).count();
    eprintln!(
        "focal ablate: {} cells ({ce} α-balanced CE, {} focal loss) into {}, {}\n{caption}",
        cells.len(),
        cells.len() - ce,
        args.out.display(),
        super::threads_text()
    );
    if base.iters == Some(ABLATION_ITERS) && args.config.is_none() {
        eprintln!("(the default budget: about 3 minutes per cell on 2 idle cores)");
    }

    let interrupted =
        interrupt::install("finishing the current step, then saving the cell's last.ckpt")?;
    let tty = std::io::stderr().is_terminal() && !args.no_progress;
    let bars = Bars::new(tty, cells.len() as u64);
    let mut cell_progress = CellProgress {
        bars: bars.clone(),
        interrupted: Arc::clone(&interrupted),
        total: 0,
        line_every: 1,
    };
    let mut grid_progress = GridProgress {
        bars: bars.clone(),
        cells_started: Instant::now(),
        trained: 0,
    };
    let mut trainer = TrainerCells::new(base, &mut cell_progress);
    let outcome = run_grid(&args.out, &grid, &caption, &mut trainer, &mut grid_progress);
    bars.finish();
    let outcome = outcome?;
    let md = args.out.join(TABLE_MD);
    let csv = args.out.join(TABLE_CSV);
    match outcome {
        GridOutcome::Finished(records) => {
            let table = std::fs::read_to_string(&md)
                .with_context(|| format!("cannot read {}", md.display()))?;
            println!("{table}");
            println!(
                "{} cells: {} and {} ({})",
                records.len(),
                md.display(),
                csv.display(),
                hms(started.elapsed())
            );
            Ok(ExitCode::SUCCESS)
        }
        GridOutcome::Stopped { done } => {
            eprintln!(
                "stopped with {done} of {} cells finished ({} and {} hold them); run the same \
                 command again to continue",
                cells.len(),
                md.display(),
                csv.display()
            );
            if interrupted.load(Ordering::SeqCst) {
                Ok(ExitCode::from(interrupt::exit_code()))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// 1h02m03s / 4m05s / 12.3s.
fn hms(d: Duration) -> String {
    let s = d.as_secs_f64();
    let (h, m) = ((s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64);
    if h > 0 {
        format!("{h}h{m:02}m{:02}s", (s % 60.0) as u64)
    } else if m > 0 {
        format!("{m}m{:02}s", (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

/// The two progress bars, overall (cells) and per cell (steps), or none when stderr is
/// not a terminal (plain lines then).
#[derive(Clone)]
struct Bars {
    multi: Option<MultiProgress>,
    grid: Option<ProgressBar>,
    cell: Option<ProgressBar>,
}

impl Bars {
    fn new(tty: bool, cells: u64) -> Bars {
        if !tty {
            return Bars {
                multi: None,
                grid: None,
                cell: None,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let grid = multi.add(ProgressBar::new(cells));
        grid.set_style(
            ProgressStyle::with_template(
                "cells {bar:28.green/white} {pos}/{len} · {msg} · ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let cell = multi.add(ProgressBar::new(0));
        cell.set_style(
            ProgressStyle::with_template(
                "steps {bar:28.cyan/blue} {pos}/{len} · {msg} · ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Bars {
            multi: Some(multi),
            grid: Some(grid),
            cell: Some(cell),
        }
    }

    fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(c) = &self.cell {
            c.finish_and_clear();
        }
        if let Some(g) = &self.grid {
            g.finish_and_clear();
        }
    }
}

/// The overall progress: the plan, then one line per finished cell.
struct GridProgress {
    bars: Bars,
    cells_started: Instant,
    trained: u32,
}

impl GridObserver for GridProgress {
    fn on_plan(&mut self, plan: &[PlannedCell]) {
        let done: Vec<&PlannedCell> = plan.iter().filter(|c| c.is_done()).collect();
        if !done.is_empty() {
            let names: Vec<String> = done.iter().map(|c| short(&c.setting)).collect();
            self.bars.println(&format!(
                "{} cells already finished, skipped: {}",
                done.len(),
                names.join(", ")
            ));
        }
        for c in plan {
            if let CellState::Stale(old) = &c.state {
                self.bars.println(&format!(
                    "stale: {} was recorded with another configuration ({}, now {}); training \
                     it again",
                    c.setting, old.config_hash, c.hash
                ));
            }
        }
        if let Some(g) = &self.bars.grid {
            g.set_position(done.len() as u64);
            g.reset_eta();
        }
        self.cells_started = Instant::now();
    }

    fn on_cell_start(&mut self, index: usize, cell: &PlannedCell) {
        match &self.bars.grid {
            Some(g) => g.set_message(format!("training {}", cell.setting)),
            None => eprintln!("cell {}: training {}", index + 1, cell.setting),
        }
    }

    fn on_cell_done(&mut self, _index: usize, r: &CellRecord) {
        self.trained += 1;
        let per_cell = self.cells_started.elapsed() / self.trained;
        self.bars.println(&format!(
            "{}: AP {:.1} · AP50 {:.1} · AP75 {:.1} ({}; {} per cell so far)",
            r.setting(),
            100.0 * r.stats.ap,
            100.0 * r.stats.ap50,
            100.0 * r.stats.ap75,
            hms(Duration::from_secs_f64(r.seconds)),
            hms(per_cell)
        ));
        if let Some(g) = &self.bars.grid {
            g.inc(1);
        }
    }
}

/// "γ2 α0.25".
fn short(s: &Setting) -> String {
    format!("γ{} α{}", s.gamma, s.alpha)
}

/// The progress of the cell being trained (the trainer's observer) and Ctrl-C.
struct CellProgress {
    bars: Bars,
    interrupted: Arc<AtomicBool>,
    total: u64,
    line_every: u64,
}

impl Observer for CellProgress {
    fn on_start(&mut self, t: &Trainer) {
        self.total = t.total_steps();
        self.line_every = (self.total / 10).max(1);
        if t.step() > 0 {
            self.bars.println(&format!(
                "continuing from {} at step {}/{}",
                t.run_dir().join("last.ckpt").display(),
                t.step(),
                self.total
            ));
        }
        if let Some(c) = &self.bars.cell {
            c.set_length(self.total);
            c.set_position(t.step());
            c.reset_eta();
        }
    }

    fn on_step(&mut self, r: &StepRecord, _t: &Trainer) {
        let msg = format!(
            "loss {:.3} (cls {:.3}, box {:.3}) · lr {:.2e} · {:.1} img/s",
            r.loss, r.cls_loss, r.box_loss, r.lr, r.images_per_s
        );
        match &self.bars.cell {
            Some(c) => {
                c.set_position(r.step);
                c.set_message(msg);
            }
            None => {
                if r.step.is_multiple_of(self.line_every) {
                    eprintln!("  step {}/{} · {msg}", r.step, self.total);
                }
            }
        }
    }

    fn on_eval_start(&mut self, _step: u64, images: usize) {
        match &self.bars.cell {
            Some(c) => c.set_message(format!("evaluating on {images} images")),
            None => eprintln!("  evaluating on {images} images"),
        }
    }

    fn on_eval_progress(&mut self, done: usize, total: usize) {
        if let Some(c) = &self.bars.cell {
            c.set_message(format!("evaluating: {done}/{total} images"));
        }
    }

    fn on_eval(&mut self, _r: &EvalRecord, _result: &EvalResult, _t: &Trainer) {}

    fn should_stop(&mut self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}
