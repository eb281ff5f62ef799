//! `focal train`: trains a RetinaNet, on the synthetic shapes by default or on a COCO
//! dataset, and writes a run folder (configuration, per-step metrics, checkpoints, plots,
//! final COCO numbers). The loop itself is `focal_retinanet::train::Trainer`; this module
//! resolves the configuration (preset, then `--config FILE`, then flags), starts or
//! resumes the trainer, and reports:
//!
//! - [`flags`]: the configuration flags, one argument struct per section of
//!   `TrainConfig`, each applying itself;
//! - [`progress`]: the progress bar (an `Observer` of the trainer) and Ctrl-C;
//! - [`plots`]: `loss.png` and `ap.png`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use focal_engine::ConvAlgo;
use focal_retinanet::train::{CocoData, Outcome, StartOptions, TrainConfig, Trainer};

use crate::launch::World;

pub mod flags;
pub mod plots;
pub mod progress;
pub mod ranks;

use flags::{
    AnchorFlags, DataFlags, Given, InferenceFlags, LossFlags, MatcherFlags, ModelFlags,
    OptimizerFlags, RunFlags, ScheduleFlags, Section,
};
use plots::write_plots;
use progress::{CheckProgress, Progress};

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Run folder for config.toml, metrics.jsonl, last.ckpt, best.ckpt, loss.png, ap.png
    /// and metrics.json. Default: runs/run-N (the first free N); with --resume, the
    /// checkpoint's folder.
    #[arg(long, value_name = "DIR", help_heading = "Run")]
    pub out: Option<PathBuf>,
    /// A TOML training configuration (as a run's config.toml; it may name only what it
    /// changes). Read over the preset; flags override it.
    #[arg(long, value_name = "FILE.toml", help_heading = "Run")]
    pub config: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (a run's last.ckpt) exactly where it
    /// stopped, with its saved configuration (configuration flags are refused).
    #[arg(long, value_name = "CKPT", help_heading = "Run")]
    pub resume: Option<PathBuf>,
    /// Start from pretrained weights: a safetensors RetinaNet state dict (torchvision
    /// names), a `focal weights export`, or an ImageNet ResNet. With a COCO dataset it
    /// selects the fine-tuning preset (see below). The class output keeps the rows of the
    /// dataset's classes (torchvision's COCO ids, an export's class names) or is
    /// re-initialised with the prior when they differ; all is reported.
    #[arg(long, value_name = "FILE.safetensors", help_heading = "Run")]
    pub init: Option<PathBuf>,
    /// Stop after N steps of this invocation, writing last.ckpt (continue with --resume).
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub stop_after: Option<u64>,
    /// Print the resolved configuration as TOML and exit without training.
    #[arg(long, help_heading = "Run")]
    pub print_config: bool,
    /// No progress bar: one line every 5% of the run instead.
    #[arg(long, help_heading = "Run")]
    pub no_progress: bool,
    /// Leave out the images that cannot be used (missing, truncated, corrupt, of another
    /// size than annotated) instead of refusing to start; their number is reported.
    /// Also with --resume.
    #[arg(long, help_heading = "Run")]
    pub skip_bad_images: bool,
    /// With --resume: continue although the dataset differs from the one the run was
    /// trained on (another annotation file, images added or removed).
    #[arg(long, help_heading = "Run", requires = "resume")]
    pub accept_data_change: bool,
    /// Start even if the memory estimate of the run exceeds the machine's memory.
    #[arg(long, help_heading = "Run")]
    pub no_memory_check: bool,

    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub data: DataFlags,
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub anchors: AnchorFlags,
    #[command(flatten)]
    pub loss: LossFlags,
    #[command(flatten)]
    pub matcher: MatcherFlags,
    #[command(flatten)]
    pub inference: InferenceFlags,
    #[command(flatten)]
    pub optimizer: OptimizerFlags,
    #[command(flatten)]
    pub schedule: ScheduleFlags,
}

const AFTER_HELP: &str = "\
Without a dataset flag, `focal train` trains a small RetinaNet (ResNet-18 with GroupNorm, \
FPN and heads 64 wide, 2 deep, GroupNorm in the heads, one anchor ratio, focal loss with \
γ 0.5 and α 0.5) on 2000 synthetic 64-px images of up to 30 objects, resized to 96 px, \
for 720 steps of 8 with AdamW at 4e-3 and a cosine schedule, then evaluates on 200 \
held-out images of up to 6 objects: about 3 minutes on 2 idle cores.

With --data DIR (or --train-ann/--train-images/--val-ann/--val-images) the preset is the \
paper's COCO recipe (docs/design-choices.md): ResNet-50 with GroupNorm, F = 256, 4-deep \
towers, anchors 32-512, \
800/1333 px, SGD (momentum 0.9, weight decay 1e-4) at lr 0.01 × batch/16 with 500 warm-up \
steps and ÷10 at 2/3 and 8/9 of 12 epochs. On a CPU that takes days for COCO; shrink it \
with the flags (e.g. --backbone resnet18 --min-size 384 --max-size 640).

With --init FILE and a COCO dataset the preset is fine-tuning, as torchvision's detection \
references do it: the architecture of the weights (an ImageNet ResNet gets torchvision's \
RetinaNet around it: F = 256, P6 from P5, 4-deep heads, its anchors), frozen BatchNorm, \
the top 3 backbone stages training (--trainable-layers), multi-scale training at a short \
side of 480, 512, ..., 800 per batch (max 1333; evaluation at 800, one image at a time), \
batch 2, SGD at 0.00125 with 100 warm-up steps, ÷10 at 2/3 and 8/9 of 12 epochs. A step of \
ResNet-50 at these sizes costs about 22 CPU-seconds, ~11 s on two idle cores \
(docs/pretrained.md); shrink it with e.g. --min-size 320,352,384,416,448,480 --max-size 800.

Order of precedence: preset < --config FILE < flags. --print-config shows the result. \
The worker threads are set with the global --threads (results do not depend on it).

What a run saves: last.ckpt (model, optimiser, position; what --resume continues) every \
--checkpoint-every-min minutes (default 10) and every --checkpoint-every steps, at each \
evaluation and at the end; best.ckpt at each evaluation that improves the AP; \
metrics.jsonl every 20 steps. Every file is written atomically, so a kill at any moment \
leaves the previous version intact, and temporary files left by a killed run are removed \
by the next.

Stopping: Ctrl-C, SIGTERM (kill, docker stop, Slurm) or SIGUSR1 finishes the current step \
(or abandons an evaluation, which --resume repeats), writes last.ckpt and exits with \
status 130 after Ctrl-C, 143 after SIGTERM, 138 after SIGUSR1 (128 + the signal, as a \
shell reports it); a second signal exits at once. A NaN or infinite loss stops the run \
with an error naming the step; last.ckpt then still holds the last good state.

Before step 1 the run checks, and refuses with what it found: the memory estimate against \
the machine's memory, that no other run holds the folder (focal.lock), and every image of \
both sets (exists, inside its folder, decodes, has its annotated size).

Several machines: `mpirun -np N focal train ...` (a focal built with --features mpi) \
trains one model with N processes, the same to the bit as --shards N in one process \
(README, \"Training on several machines\"; give Open MPI --bind-to none). Rank 0 alone \
holds the run folder and writes in it; a signal to any process stops every one at the \
same step. To stop an mpirun run gracefully, send SIGUSR1 to mpirun, which passes it on \
(on SIGTERM or Ctrl-C, Open MPI's mpirun kills its processes before they can save, unless \
given a longer --mca odls_base_sigkill_timeout, in seconds).";

impl Args {
    /// The flag groups, one per section of the configuration.
    fn sections(&self) -> [&dyn Section; 9] {
        [
            &self.run,
            &self.data,
            &self.model,
            &self.anchors,
            &self.loss,
            &self.matcher,
            &self.inference,
            &self.optimizer,
            &self.schedule,
        ]
    }

    /// Applies every flag that was given to `c`; returns their names.
    fn apply(&self, c: &mut TrainConfig) -> Result<Given> {
        let mut given = Given::default();
        for section in self.sections() {
            section.apply(c, &mut given)?;
        }
        Ok(given)
    }

    /// Preset, then `--config`, then flags.
    fn resolve(&self, threads: Option<u32>, conv_algo: Option<ConvAlgo>) -> Result<TrainConfig> {
        let coco = self.data.coco_data()?;
        let file_text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the configuration {}", path.display()))?,
            ),
            None => None,
        };
        let file_names_coco = file_text
            .as_deref()
            .is_some_and(TrainConfig::names_coco_dataset);
        let mut config = match (&coco, &self.init) {
            (Some(data), Some(init)) => {
                TrainConfig::coco_finetune(data.clone(), &init_model(init)?)
            }
            (Some(data), None) => TrainConfig::coco(data.clone()),
            (None, Some(init)) if file_names_coco => {
                TrainConfig::coco_finetune(CocoData::from_root(Path::new(".")), &init_model(init)?)
            }
            (None, _) if file_names_coco => TrainConfig::coco(CocoData::from_root(Path::new("."))),
            (None, _) => TrainConfig::shapes(),
        };
        if let (Some(text), Some(path)) = (&file_text, &self.config) {
            config = TrainConfig::from_toml_over(&config, text)
                .with_context(|| format!("configuration {}", path.display()))?;
        }
        if let Some(data) = coco {
            config.data.coco = Some(data);
            config.data.shapes = None;
        }
        self.apply(&mut config)?;
        if let Some(t) = threads {
            config.threads = t as usize;
        }
        if let Some(a) = conv_algo {
            config.conv_algo = a.name().to_string();
        }
        config.validate()?;
        Ok(config)
    }

    /// `--resume` takes everything from the checkpoint: refuses configuration flags, a
    /// dataset, `--config` and `--init`, naming them.
    fn refuse_with_resume(&self) -> Result<()> {
        let Given(mut given) = self.apply(&mut TrainConfig::shapes())?;
        let data_given = self.data.coco_data()?.is_some() || self.config.is_some();
        if data_given {
            given.push("dataset/--config");
        }
        if self.init.is_some() {
            given.push("--init");
        }
        if !given.is_empty() {
            bail!(
                "--resume continues a run with the configuration saved in its checkpoint; \
                 drop {}",
                given.join(", ")
            );
        }
        Ok(())
    }
}

/// The detector the `--init` weights describe, for the fine-tuning preset.
fn init_model(path: &Path) -> Result<focal_retinanet::RetinaNetConfig> {
    use focal_retinanet::pretrained::{
        architecture, backbone_detector, ArchitectureOptions, WeightsFile, WeightsKind,
    };
    let file = WeightsFile::read(path)?;
    let opts = ArchitectureOptions::default();
    let arch = match file.kind {
        WeightsKind::Backbone => backbone_detector(&file, &opts)?,
        _ => architecture(&file, &opts)?,
    };
    Ok(arch.config)
}

/// The first `runs/run-N` that does not exist.
fn default_run_dir() -> PathBuf {
    let root = PathBuf::from("runs");
    (1..)
        .map(|n| root.join(format!("run-{n}")))
        .find(|p| !p.exists())
        .expect("some run number is free")
}

/// The trainer of a resumed run (`--resume`) or of a fresh one; `None` after
/// `--print-config`, which only prints the configuration. With several processes
/// (`world`), rank 0 alone prints.
fn open_trainer(
    args: &Args,
    threads: Option<u32>,
    conv_algo: Option<ConvAlgo>,
    world: &World,
) -> Result<Option<Trainer>> {
    let root = world.is_root();
    let check_progress = CheckProgress::new(args.no_progress || !root);
    let options = StartOptions {
        accept_data_change: args.accept_data_change,
        skip_bad_images: args.skip_bad_images,
        check_memory: !args.no_memory_check,
        progress: &|what, done, total| check_progress.report(what, done, total),
        comm: world.comm(),
    };
    if let Some(ckpt) = &args.resume {
        args.refuse_with_resume()?;
        // The saved configuration, read once for both uses (the checkpoint holds the
        // weights too); a plain resume leaves the reading to the trainer.
        if conv_algo.is_some() || args.print_config {
            let (_, saved, _) = focal_retinanet::train::checkpoint::read_checkpoint(ckpt)?;
            if let Some(algo) = conv_algo {
                if saved.conv_algo != algo.name() {
                    bail!(
                        "--conv-algo {}: the run in {} computes its convolutions with \
                         conv_algo = {:?}, and a resumed run keeps it (results depend on it); \
                         drop --conv-algo",
                        algo.name(),
                        ckpt.display(),
                        saved.conv_algo
                    );
                }
            }
            if args.print_config {
                if root {
                    print!("{}", saved.to_toml());
                }
                return Ok(None);
            }
        }
        let trainer = Trainer::resume_with(
            ckpt,
            args.out.as_deref(),
            threads.map(|t| t as usize),
            &options,
        )?;
        if root {
            eprintln!(
                "resuming {} at step {}/{} (epoch {})",
                ckpt.display(),
                trainer.step(),
                trainer.total_steps(),
                trainer.epoch() + 1
            );
        }
        return Ok(Some(trainer));
    }
    let mut config = args.resolve(threads, conv_algo)?;
    ranks::share_batches(&mut config, world);
    if args.print_config {
        if root {
            print!("{}", config.to_toml());
        }
        return Ok(None);
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => ranks::same_on_every_rank(default_run_dir(), world)?,
    };
    let mut trainer = Trainer::start(config, &out, &options)?;
    if let Some(init) = &args.init {
        let report = trainer.init_from(init)?;
        if root {
            eprintln!("initialised from {}:", init.display());
            for line in report.lines(trainer.config().model.prior_probability) {
                eprintln!("  {line}");
            }
        }
    }
    Ok(Some(trainer))
}

/// The training set is counted whole up to this many images, else an evenly spaced
/// sample of this many (a few seconds on COCO at 800 px).
const IMBALANCE_SAMPLE: usize = 500;

/// Prints the class imbalance of the run (anchors per image, positive, ignored and
/// negative ones, negatives per positive: `focal_retinanet::imbalance`) and writes it to
/// the run folder as `imbalance.json`.
fn report_imbalance(trainer: &Trainer) -> Result<()> {
    let stats = focal_retinanet::imbalance::measure(
        trainer.config(),
        trainer.train_set().as_ref(),
        Some(IMBALANCE_SAMPLE),
    )?;
    eprintln!("class imbalance: {}", stats.summary());
    let path = trainer.run_dir().join("imbalance.json");
    focal_engine::write_atomic(&path, stats.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn run(
    args: Args,
    threads: Option<u32>,
    conv_algo: Option<ConvAlgo>,
    world: &World,
) -> Result<ExitCode> {
    let started = Instant::now();
    let Some(mut trainer) = open_trainer(&args, threads, conv_algo, world)? else {
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(n) = args.stop_after {
        trainer.stop_after(n);
    }
    if !world.is_root() {
        // The other ranks train in silence; rank 0 reports and writes.
        return ranks::run_quietly(&mut trainer);
    }
    for note in trainer.notes() {
        eprintln!("note: {note}");
    }
    let c = trainer.config();
    if let Some(e) = trainer.memory_estimate() {
        eprintln!("memory: about {}", e.describe(c.batch_size));
    }
    eprintln!(
        "training on {}\nvalidating on {}\nrun folder {}: {} of {} images ({} per epoch), \
         {}",
        trainer.train_set().describe(),
        trainer.validation_set().describe(),
        trainer.run_dir().display(),
        super::count(trainer.total_steps(), "step"),
        c.batch_size,
        trainer.batches_per_epoch(),
        ranks::threads_text(world, c.shards)
    );

    report_imbalance(&trainer)?;

    let interrupted = crate::interrupt::install(
        "finishing the current step (or abandoning the evaluation), then writing last.ckpt",
    )?;
    let mut progress = Progress::new(args.no_progress, interrupted);
    let outcome = trainer.run(&mut progress);
    progress.finish();
    // Plots also after an error or a stop: they show what happened up to then.
    if let Err(e) = write_plots(&trainer) {
        eprintln!("warning: {e:#}");
    }
    let outcome = outcome?;
    let dir = trainer.run_dir().display().to_string();
    match outcome {
        Outcome::Finished(result) => {
            println!("{}", result.summary());
            if let Some((ap, step)) = trainer.best() {
                println!("best AP {ap:.3} at step {step}");
            }
            println!(
                "run folder {dir}: config.toml, metrics.jsonl, metrics.json, last.ckpt, \
                 best.ckpt, loss.png, ap.png ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Stopped { step } => {
            eprintln!(
                "stopped after step {step}; continue with: focal train --resume {dir}/last.ckpt"
            );
            if progress.interrupted() {
                Ok(ExitCode::from(crate::interrupt::exit_code()))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
