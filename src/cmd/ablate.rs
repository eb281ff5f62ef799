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
use focal_retinanet::ablation::training::{describe, TrainerCells, ABLATION_ITERS};
use focal_retinanet::ablation::{
    curves, run_grid, CellRecord, CellState, GridObserver, GridOutcome, PlannedCell, CURVES_MD,
    TABLE_CSV, TABLE_MD,
};
use focal_retinanet::ablation::{Grid, Preset, Setting};
use focal_retinanet::imbalance::{measure, Imbalance, PAPER_ANCHORS_PER_IMAGE};
use focal_retinanet::train::builders::open_datasets;
use focal_retinanet::train::{EvalRecord, Observer, StepRecord, TrainConfig, Trainer};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::train::plots::write_plots;
use crate::interrupt;
use crate::plot::{Chart, Series};

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The experiment: table1 (the paper's Table 1 on the 64-px shapes, 17 cells),
    /// imbalance-sweep (focal loss against cross-entropy at COCO-like class imbalance:
    /// 128-px images with few small objects, 9 anchors per location, 11 losses × 2 seeds
    /// over 720 steps, to choose each loss's α) or imbalance (the sweep's best α of each of
    /// the 5 losses, and CE's other α, × 2 seeds, over 2880 steps). The flags below change its base
    /// configuration and grid.
    #[arg(long, value_name = "NAME", default_value = "table1", value_parser = parse_preset)]
    pub preset: Preset,
    /// Output folder: a record per finished cell (CELL.json), each cell's run folder
    /// (CELL/, with best.ckpt, metrics.jsonl and, when it evaluates during training,
    /// ap.png), imbalance.json, table.md, table.csv, curves.md and curves.png. Rerunning
    /// with the same folder continues where the last run stopped [default: runs/ablate,
    /// or runs/ablate-PRESET with another preset].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Training steps (of 8 images) of every cell [default: 500; imbalance: 2880;
    /// imbalance-sweep: 720].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: Option<u64>,
    /// γ of the focal-loss cells, comma-separated, each > 0 (γ = 0, α-balanced CE, has its
    /// own list: --ce-alphas) [default: 0.5,1,2,5].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub gammas: Option<Vec<f32>>,
    /// α of the focal-loss cells (every γ is trained with every α), each in [0, 1]
    /// [default: 0.25,0.5,0.75].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub alphas: Option<Vec<f32>>,
    /// Each γ with its own α values instead of --gammas and --alphas: γ:α:α,... e.g.
    /// 0.5:0.5:0.75,2:0.25:0.5 [imbalance: 0.5:0.75,1:0.25,2:0.25,5:0.5; imbalance-sweep:
    /// 0.5:0.5:0.75,1:0.25:0.5,2:0.25:0.5,5:0.25:0.5].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_gamma_alphas, conflicts_with_all = ["gammas", "alphas"])]
    pub gamma_alphas: Option<Vec<(f32, Vec<f32>)>>,
    /// α of the α-balanced cross-entropy cells (γ = 0), each in [0, 1]; "none" for no
    /// such cells [default: 0.25,0.5,0.75,0.9,0.99; imbalance: 0.25,0.75; imbalance-sweep:
    /// 0.25,0.5,0.75].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_ce_alpha)]
    pub ce_alphas: Option<Vec<Option<f32>>>,
    /// Seed of every cell: the initial weights and the order and flips of the batches
    /// (the same for all cells) [default: 0].
    #[arg(long, value_name = "N", conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Train every cell once per seed, comma-separated; the tables give the mean over
    /// the seeds, their spread and each seed's AP; "none" for one run with --seed
    /// [table1: none; imbalance and imbalance-sweep: 0,1].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_seed)]
    pub seeds: Option<Vec<Option<u64>>>,
    /// A TOML training configuration read over the preset's base configuration (as
    /// `focal train --config`; it may name only what it changes). --iters and --seed
    /// override it, and each cell replaces its [loss] γ and α.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// No progress bars: one line per cell and a line every 10% of a cell's steps.
    #[arg(long)]
    pub no_progress: bool,
}

const AFTER_HELP: &str = "\
--preset table1 (the default): the base configuration is that of `focal train` on the \
synthetic shapes (ResNet-18 with GroupNorm, FPN and heads 64 wide and 2 deep with \
GroupNorm, anchors 16-256, AdamW at 4e-3 with 100 warm-up steps and a cosine decay, \
batches of 8) made about twice cheaper: the 64-px images at their own size (the default \
resizes them to 96 px), the paper's three anchor ratios, and 500 steps per cell instead of \
800, so that the 17 cells of the default grid take under an hour on 2 idle cores (about 3 \
minutes per cell with its evaluation on the 200 validation images). About 774 anchors per \
image, 50 negatives per positive.

--preset imbalance-sweep: the same comparison at COCO-like class imbalance. 128-px shapes \
with 0-2 objects of 12-24 px, the paper's 9 anchors per location on P3-P7 (3069 per image, \
more than 500 negatives per positive), the paper's 4-deep heads, ResNet-18 at half width, \
720 steps evaluated 6 times (each cell's ap.png shows the curve); α-balanced CE at α 0.25, \
0.5, 0.75 against the focal loss at γ 0.5, 1, 2, 5 with two α each, every loss with seeds 0 \
and 1: 22 runs, about 4 minutes each on one core. It chooses each loss's α.

--preset imbalance: the comparison itself. Each of the 5 losses at the α that gave it the \
highest mean AP in the sweep (CE α 0.75; γ 0.5 with α 0.75, γ 1 and 2 with α 0.25, γ 5 with \
α 0.5), and CE at α 0.25 too (the side the conclusion is against gets its other α; the \
better CE α is the one compared), seeds 0 and 1, over 2880 steps evaluated 12 times, long \
enough for the AP curves to level off within the run: 12 runs, about two hours on 2 cores. \
docs/focal-loss.md discusses the result.

Before training, the class imbalance of the configuration is measured on its training set \
with the anchors and matcher of training (anchors per image; positive, ignored and negative \
anchors per image; negatives per positive), printed, written to OUT/imbalance.json and put \
in the tables' header beside the paper's (COCO at 800 px: about 100 000 anchors per image).

Every cell starts from the same weights and sees the same batches (per seed); only γ and α \
differ. The cells run in order: the α-balanced CE cells (Table 1a), then every γ with its α \
values (Table 1b), all of the first seed before the second. When a cell finishes, \
OUT/CELL.json records its 12 COCO numbers and the hash of its configuration, and \
OUT/table.md, OUT/table.csv and OUT/curves.md (every cell's AP at each evaluation, and what \
it gained over the last quarter of the steps: near 0, the curve has levelled off) are \
rewritten; at the end OUT/curves.png draws the curves. A rerun skips the recorded cells; a cell \
recorded with another configuration (other --iters, --seed, --config or defaults) is stale: \
it is named and trained again. Ctrl-C (or SIGTERM, or a kill) loses at most 100 steps: the \
cell's last.ckpt is written every 100 steps and on Ctrl-C, and the rerun continues that cell \
from its checkpoint. The worker threads are set with the global --threads (results do not \
depend on it).";

fn parse_preset(s: &str) -> Result<Preset, String> {
    Preset::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
        format!("unknown preset {s:?}: expected {}", names.join(" or "))
    })
}

/// "none" (no CE cells) or an α.
fn parse_ce_alpha(s: &str) -> Result<Option<f32>, String> {
    match s.trim() {
        "none" => Ok(None),
        t => t.parse::<f32>().map(Some).map_err(|_| {
            format!("{t:?} is not a number (expected a comma-separated list or none)")
        }),
    }
}

/// "none" (one run per cell) or a seed.
fn parse_seed(s: &str) -> Result<Option<u64>, String> {
    match s.trim() {
        "none" => Ok(None),
        t => t.parse::<u64>().map(Some).map_err(|_| {
            format!("{t:?} is not a seed (expected a comma-separated list of integers or none)")
        }),
    }
}

/// "γ:α:α…".
fn parse_gamma_alphas(s: &str) -> Result<(f32, Vec<f32>), String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let number = |t: &str| {
        t.trim().parse::<f32>().map_err(|_| {
            format!("{t:?} in {s:?} is not a number (expected γ:α:α..., e.g. 2:0.25:0.5)")
        })
    };
    if parts.len() < 2 {
        return Err(format!("{s:?}: expected γ:α:α..., e.g. 2:0.25:0.5"));
    }
    let gamma = number(parts[0])?;
    let alphas = parts[1..]
        .iter()
        .map(|t| number(t))
        .collect::<Result<Vec<f32>, String>>()?;
    Ok((gamma, alphas))
}

/// A list given as values, or as the one word "none" (→ empty), not both.
fn none_or_values<T: Copy>(flag: &str, list: &[Option<T>]) -> Result<Vec<T>> {
    if list.iter().any(Option::is_none) && list.len() > 1 {
        bail!("{flag}: give either values or none, not both");
    }
    Ok(list.iter().flatten().copied().collect())
}

impl Args {
    fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(self.preset.default_out()))
    }

    fn grid(&self) -> Result<Grid> {
        let mut grid = self.preset.grid();
        if let Some(ce) = &self.ce_alphas {
            grid.ce_alphas = none_or_values("--ce-alphas", ce)?;
        }
        if let Some(list) = &self.gamma_alphas {
            grid.gammas = list.iter().map(|g| g.0).collect();
            grid.gamma_alphas = list.iter().map(|g| g.1.clone()).collect();
            grid.alphas = grid.gamma_alphas[0].clone();
        }
        if self.gammas.is_some() || self.alphas.is_some() {
            grid.gamma_alphas = Vec::new();
        }
        if let Some(g) = &self.gammas {
            grid.gammas = g.clone();
        }
        if let Some(a) = &self.alphas {
            grid.alphas = a.clone();
        }
        if let Some(seeds) = &self.seeds {
            grid.seeds = none_or_values("--seeds", seeds)?;
        }
        if self.seed.is_some() {
            grid.seeds = Vec::new();
        }
        grid.validate()?;
        Ok(grid)
    }

    /// The base configuration: the preset's, then --config, then the flags.
    fn base(&self, threads: Option<u32>, conv_algo: Option<ConvAlgo>) -> Result<TrainConfig> {
        let mut base = self.preset.base();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the configuration {}", path.display()))?;
            base = TrainConfig::from_toml_over(&base, &text)
                .with_context(|| path.display().to_string())?;
        }
        if let Some(iters) = self.iters {
            base.iters = Some(iters);
            base.epochs = None;
            if base.eval_every > 0 {
                // The preset's number of evaluations, over the new length.
                base.eval_every = (iters / self.preset.evals().max(1)).max(1);
            }
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

/// The paragraph on the class imbalance in the tables' header.
fn imbalance_caption(stats: &Imbalance) -> String {
    format!(
        "Class imbalance of this configuration, measured on its training set with the \
         anchors and matcher of training: {}. The paper's COCO at 800 px: about {:.0} \
         anchors per image (docs/focal-loss.md measures its positives on a COCO subset: \
         `focal imbalance --coco`).",
        stats.summary(),
        PAPER_ANCHORS_PER_IMAGE
    )
}

pub fn run(args: Args, threads: Option<u32>, conv_algo: Option<ConvAlgo>) -> Result<ExitCode> {
    let started = Instant::now();
    let grid = args.grid()?;
    let base = args.base(threads, conv_algo)?;
    let out = args.out();
    let cells = grid.settings();
    let ce = cells.iter().filter(|s| s.is_cross_entropy()).count();
    eprintln!(
        "focal ablate --preset {}: {} runs ({ce} α-balanced CE, {} focal loss) into {}, {}",
        args.preset.name(),
        cells.len(),
        cells.len() - ce,
        out.display(),
        super::threads_text()
    );

    // The class imbalance, counted on the training set as training matches anchors.
    let (train_set, _) = open_datasets(&base)?;
    let stats = measure(&base, train_set.as_ref(), None)?;
    drop(train_set);
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let stats_path = out.join("imbalance.json");
    focal_engine::write_atomic(&stats_path, stats.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", stats_path.display()))?;
    let caption = format!(
        "{}\n\n{}",
        describe(&base, &grid.seeds),
        imbalance_caption(&stats)
    );
    eprintln!("{caption}");
    if base.iters == Some(ABLATION_ITERS) && args.config.is_none() && args.preset == Preset::Table1
    {
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
    let outcome = run_grid(&out, &grid, &caption, &mut trainer, &mut grid_progress);
    bars.finish();
    let outcome = outcome?;
    let md = out.join(TABLE_MD);
    let csv = out.join(TABLE_CSV);
    match outcome {
        GridOutcome::Finished(records) => {
            let table = std::fs::read_to_string(&md)
                .with_context(|| format!("cannot read {}", md.display()))?;
            println!("{table}");
            if let Some(png) = write_curves_png(&out, &grid, &records)? {
                println!(
                    "AP curves: {} and {}",
                    out.join(CURVES_MD).display(),
                    png.display()
                );
            }
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

/// `OUT/curves.png`: the mean AP curve over the seeds of each loss, when the cells
/// evaluated during training (`OUT/curves.md` holds the numbers). `None` when none did.
fn write_curves_png(
    out: &std::path::Path,
    grid: &Grid,
    records: &[CellRecord],
) -> Result<Option<PathBuf>> {
    let curves = curves::read_curves(out, grid, records)?;
    if curves.iter().all(|c| c.points.len() < 2) {
        return Ok(None);
    }
    let title = if grid.seeds.len() > 1 {
        // (Short: the chart's title is one line of its 800 px.)
        "validation AP, mean over the seeds"
    } else {
        "validation AP during training"
    };
    let mut chart = Chart::new(title, "step", "AP");
    chart.y_range = Some((0.0, 1.0));
    // The curves rise to the top right; the legend goes where they start, low.
    chart.legend_left = true;
    chart.series = curves::mean_by_loss(&curves)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let pts = c.points.iter().map(|&(s, ap)| (s as f64, ap)).collect();
            Series::new(c.setting.to_string(), pts, i)
        })
        .collect();
    let path = out.join("curves.png");
    chart.save_png(&path)?;
    Ok(Some(path))
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

    fn on_eval(&mut self, r: &EvalRecord, _result: &EvalResult, t: &Trainer) {
        // The cell's AP curve so far (ap.png, loss.png in its run folder).
        if let Err(e) = write_plots(t) {
            self.bars.println(&format!("warning: {e:#}"));
        }
        if r.step < self.total {
            self.bars.println(&format!(
                "  step {}/{}: AP {:.1} · AP50 {:.1}",
                r.step,
                self.total,
                100.0 * r.stats.ap,
                100.0 * r.stats.ap50
            ));
        }
    }

    fn should_stop(&mut self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}
