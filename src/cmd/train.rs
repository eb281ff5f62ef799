//! `focal train`: trains a RetinaNet, on the synthetic shapes by default or on a COCO
//! dataset, and writes a run folder (configuration, per-step metrics, checkpoints, plots,
//! final COCO numbers). The loop itself is `focal_retinanet::train::Trainer`; this file
//! resolves the configuration (preset, then `--config FILE`, then flags), draws the
//! progress bar, renders the plots and handles Ctrl-C.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use focal_data::EvalResult;
use focal_retinanet::config::{BackboneNorm, BoxLoss, Depth, P6Input};
use focal_retinanet::train::{
    CocoData, DecayKind, EvalRecord, MetricRow, Observer, OptimizerKind, Outcome, StepRecord,
    TrainConfig, Trainer,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::interrupt::EXIT_INTERRUPTED;
use crate::plot::{Chart, Series};

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    // ---- run ----
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
    /// names; 91 COCO classes are remapped to 80) or an ImageNet ResNet. What does not fit
    /// keeps its fresh initialisation and is reported.
    #[arg(long, value_name = "FILE.safetensors", help_heading = "Run")]
    pub init: Option<PathBuf>,
    /// Seed of the initialisation and of the loader's order and flips [default: 0].
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub seed: Option<u64>,
    /// Length of the run in optimiser steps [synthetic default: 800].
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "epochs",
        help_heading = "Run"
    )]
    pub iters: Option<u64>,
    /// Length of the run in passes over the training set [COCO default: 12].
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub epochs: Option<u64>,
    /// Evaluate on the validation set every N steps, and always at the end
    /// [default: 0 = only at the end].
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub eval_every: Option<u64>,
    /// Write last.ckpt every N steps [default: 0 = at each evaluation and at the end].
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub checkpoint_every: Option<u64>,
    /// Stop after N steps of this invocation, writing last.ckpt (continue with --resume).
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub stop_after: Option<u64>,
    /// Print the resolved configuration as TOML and exit without training.
    #[arg(long, help_heading = "Run")]
    pub print_config: bool,
    /// No progress bar: one line every 5% of the run instead.
    #[arg(long, help_heading = "Run")]
    pub no_progress: bool,

    // ---- data ----
    /// A COCO folder: DIR/annotations/instances_{train,val}2017.json and
    /// DIR/{train,val}2017/. Without any dataset flag, the synthetic shapes are used.
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub data: Option<PathBuf>,
    /// Training annotations (COCO JSON); with --train-images, --val-ann, --val-images.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub train_ann: Option<PathBuf>,
    /// Folder of the training images.
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub train_images: Option<PathBuf>,
    /// Validation annotations (COCO JSON).
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub val_ann: Option<PathBuf>,
    /// Folder of the validation images.
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub val_images: Option<PathBuf>,
    /// Synthetic training images [default: 2000].
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub shapes_train: Option<usize>,
    /// Synthetic validation images (a separate random stream) [default: 200].
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub shapes_val: Option<usize>,
    /// Side of the synthetic images in pixels [default: 64].
    #[arg(long, value_name = "PX", help_heading = "Data")]
    pub shapes_size: Option<u32>,
    /// Seed of the synthetic images [default: 0].
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub shapes_seed: Option<u64>,
    /// At most this many objects per synthetic training image (the validation images
    /// keep 0-6) [default: 6].
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub shapes_train_objects: Option<usize>,
    /// Resize so the short side is this... [synthetic default: 96 (the 64-px shapes upscaled); COCO: 800].
    #[arg(long, value_name = "PX", help_heading = "Data")]
    pub min_size: Option<usize>,
    /// ...unless the long side would exceed this [synthetic default: 96; COCO: 1333].
    #[arg(long, value_name = "PX", help_heading = "Data")]
    pub max_size: Option<usize>,
    /// Random horizontal flips in training [default: true].
    #[arg(long, value_name = "BOOL", help_heading = "Data")]
    pub flip: Option<bool>,

    // ---- model ----
    /// Backbone: resnet18, resnet34 or resnet50 [synthetic default: resnet18; COCO:
    /// resnet50].
    #[arg(long, value_name = "NAME", value_parser = Depth::parse, help_heading = "Model")]
    pub backbone: Option<Depth>,
    /// Backbone norm: gn (GroupNorm 32), bn (trainable BatchNorm) or frozen-bn (for
    /// pretrained weights; stem and layer1 frozen too) [default: gn].
    #[arg(long, value_name = "KIND", value_parser = BackboneNorm::parse, help_heading = "Model")]
    pub norm: Option<BackboneNorm>,
    /// FPN channels F [synthetic default: 64; COCO: 256].
    #[arg(long, value_name = "F", help_heading = "Model")]
    pub fpn_channels: Option<usize>,
    /// P6 from c5 (the paper) or p5 (torchvision's weights) [default: c5].
    #[arg(long, value_name = "FROM", value_parser = parse_p6, help_heading = "Model")]
    pub p6: Option<P6Input>,
    /// 3×3 conv + ReLU layers in each head tower [synthetic default: 2; COCO: 4].
    #[arg(long, value_name = "N", help_heading = "Model")]
    pub head_depth: Option<usize>,
    /// Channels of the head towers [synthetic default: 64; COCO: 256].
    #[arg(long, value_name = "C", help_heading = "Model")]
    pub head_width: Option<usize>,
    /// GroupNorm(32) in the head towers [synthetic default: true; COCO: false].
    #[arg(long, value_name = "BOOL", help_heading = "Model")]
    pub head_norm: Option<bool>,
    /// Prior probability π of the class bias −ln((1−π)/π) [default: 0.01].
    #[arg(long, value_name = "P", help_heading = "Model")]
    pub prior: Option<f32>,
    /// Anchor base sizes on P3..P7, five comma-separated pixels
    /// [synthetic default: 16,32,64,128,256; COCO: 32,64,128,256,512].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Model"
    )]
    pub anchor_sizes: Option<Vec<f32>>,
    /// Anchor octave scales [default: 1,1.2599,1.5874 = 2^0, 2^(1/3), 2^(2/3)].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Model"
    )]
    pub anchor_scales: Option<Vec<f32>>,
    /// Anchor aspect ratios h/w [synthetic default: 1; COCO: 0.5,1,2].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Model"
    )]
    pub anchor_ratios: Option<Vec<f32>>,

    // ---- loss and matching ----
    /// α of the focal loss (weight of positives; negatives get 1−α) [synthetic default: 0.5;
    /// COCO: 0.25].
    #[arg(long, value_name = "A", help_heading = "Loss and matching")]
    pub alpha: Option<f32>,
    /// γ of the focal loss; 0 gives α-balanced cross-entropy [synthetic default: 0.5; COCO:
    /// 2].
    #[arg(long, value_name = "G", help_heading = "Loss and matching")]
    pub gamma: Option<f32>,
    /// Box loss: smooth-l1 or l1 [default: smooth-l1].
    #[arg(long, value_name = "KIND", value_parser = parse_box_loss, help_heading = "Loss and matching")]
    pub box_loss: Option<String>,
    /// β of the smooth-L1 box loss [default: 0.11].
    #[arg(long, value_name = "B", help_heading = "Loss and matching")]
    pub beta: Option<f32>,
    /// Anchors with IoU ≥ this are positive [default: 0.5].
    #[arg(long, value_name = "IOU", help_heading = "Loss and matching")]
    pub fg_iou: Option<f32>,
    /// Anchors with IoU < this are background; in between they are ignored [default: 0.4].
    #[arg(long, value_name = "IOU", help_heading = "Loss and matching")]
    pub bg_iou: Option<f32>,
    /// Each object's best anchors become positive too [default: true].
    #[arg(long, value_name = "BOOL", help_heading = "Loss and matching")]
    pub low_quality_matches: Option<bool>,

    // ---- inference ----
    /// Detections need a score above this [default: 0.05].
    #[arg(long, value_name = "S", help_heading = "Inference")]
    pub score_threshold: Option<f32>,
    /// Candidates kept per pyramid level before NMS [default: 1000].
    #[arg(long, value_name = "K", help_heading = "Inference")]
    pub candidates_per_level: Option<usize>,
    /// NMS suppresses boxes with IoU above this [default: 0.5].
    #[arg(long, value_name = "IOU", help_heading = "Inference")]
    pub nms_iou: Option<f32>,
    /// Detections kept per image [default: 100].
    #[arg(long, value_name = "N", help_heading = "Inference")]
    pub detections_per_image: Option<usize>,

    // ---- optimisation ----
    /// Images per step [synthetic default: 8; COCO: 2].
    #[arg(long, value_name = "N", help_heading = "Optimisation")]
    pub batch_size: Option<usize>,
    /// Cut each batch into this many parts trained concurrently, their gradients added up
    /// (for many-core machines and small images, where single kernels cannot keep every
    /// core busy; on 2 cores it measured no faster). Results depend on it only to
    /// rounding, and never on --threads [default: 1].
    #[arg(long, value_name = "N", help_heading = "Optimisation")]
    pub shards: Option<usize>,
    /// Images per batch when evaluating [synthetic default: 8; COCO: 2].
    #[arg(long, value_name = "N", help_heading = "Optimisation")]
    pub eval_batch_size: Option<usize>,
    /// sgd (momentum) or adamw [synthetic default: adamw; COCO: sgd].
    #[arg(long, value_name = "KIND", value_parser = OptimizerKind::parse, help_heading = "Optimisation")]
    pub optimizer: Option<OptimizerKind>,
    /// Peak learning rate [synthetic default: 0.004; COCO: 0.01 × batch/16]. When only
    /// --batch-size changes, the preset's rate is scaled linearly with the batch.
    #[arg(long, value_name = "LR", help_heading = "Optimisation")]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long, value_name = "M", help_heading = "Optimisation")]
    pub momentum: Option<f32>,
    /// Weight decay (L2 for SGD, decoupled for AdamW; never on norms and biases)
    /// [default: 0.0001].
    #[arg(long, value_name = "WD", help_heading = "Optimisation")]
    pub weight_decay: Option<f32>,
    /// Clip the gradient's global L2 norm to this (0: off) [default: 0].
    #[arg(long, value_name = "NORM", help_heading = "Optimisation")]
    pub clip_grad_norm: Option<f32>,
    /// Linear warm-up iterations [synthetic default: 100; COCO: 500].
    #[arg(long, value_name = "N", help_heading = "Optimisation")]
    pub warmup_iters: Option<u64>,
    /// Warm-up starts at this fraction of the rate [default: 0.001].
    #[arg(long, value_name = "F", help_heading = "Optimisation")]
    pub warmup_factor: Option<f64>,
    /// Decay after warm-up: multi-step, cosine or constant [synthetic default: cosine;
    /// COCO: multi-step].
    #[arg(long, value_name = "KIND", value_parser = DecayKind::parse, help_heading = "Optimisation")]
    pub schedule: Option<DecayKind>,
    /// Multi-step: iterations at which the rate is multiplied by --lr-gamma
    /// [default: 2/3 and 8/9 of the run].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Optimisation"
    )]
    pub steps: Option<Vec<u64>>,
    /// Multi-step factor [default: 0.1].
    #[arg(long, value_name = "G", help_heading = "Optimisation")]
    pub lr_gamma: Option<f64>,
    /// Cosine: the rate at the end of the run [default: 0].
    #[arg(long, value_name = "LR", help_heading = "Optimisation")]
    pub min_lr: Option<f64>,
}

const AFTER_HELP: &str = "\
Without a dataset flag, `focal train` trains a small RetinaNet (ResNet-18 with GroupNorm, \
FPN and heads 64 wide, 2 deep, GroupNorm in the heads, one anchor ratio, focal loss with \
γ 0.5 and α 0.5) on 2000 synthetic 64-px images, resized to 96 px, for 800 steps of 8 with \
AdamW at 4e-3 and a cosine schedule, then evaluates on 200 held-out images: 4 to 5 \
minutes on 2 cores.

With --data DIR (or --train-ann/--train-images/--val-ann/--val-images) the preset is the \
specification's recipe: ResNet-50 with GroupNorm, F = 256, 4-deep towers, anchors 32-512, \
800/1333 px, SGD (momentum 0.9, weight decay 1e-4) at lr 0.01 × batch/16 with 500 warm-up \
steps and ÷10 at 2/3 and 8/9 of 12 epochs. On a CPU that takes days for COCO; shrink it \
with the flags (e.g. --backbone resnet18 --min-size 384 --max-size 640).

Order of precedence: preset < --config FILE < flags. --print-config shows the result. \
The worker threads are set with the global --threads (results do not depend on it).

Ctrl-C finishes the current step, writes last.ckpt and exits with status 130 (a second \
Ctrl-C exits at once; files are written atomically, so nothing is left half-written). \
A NaN or infinite loss stops the run with an error naming the step; last.ckpt then still \
holds the last good state.";

fn parse_p6(s: &str) -> Result<P6Input, String> {
    match s.trim() {
        "c5" => Ok(P6Input::C5),
        "p5" => Ok(P6Input::P5),
        _ => Err(format!("expected c5 or p5, got {s:?}")),
    }
}

fn parse_box_loss(s: &str) -> Result<String, String> {
    match s.trim() {
        "l1" | "smooth-l1" => Ok(s.trim().to_string()),
        _ => Err(format!("expected smooth-l1 or l1, got {s:?}")),
    }
}

impl Args {
    /// The COCO paths given by flags, if any.
    fn coco_data(&self) -> Result<Option<CocoData>> {
        let explicit = [
            &self.train_ann,
            &self.train_images,
            &self.val_ann,
            &self.val_images,
        ];
        let n_explicit = explicit.iter().filter(|p| p.is_some()).count();
        match (&self.data, n_explicit) {
            (Some(_), n) if n > 0 => bail!(
                "give either --data DIR or the four --train-ann/--train-images/--val-ann/\
                 --val-images, not both"
            ),
            (Some(root), _) => {
                if !root.is_dir() {
                    bail!("--data {}: no such folder", root.display());
                }
                Ok(Some(CocoData::from_root(root)))
            }
            (None, 0) => Ok(None),
            (None, 4) => Ok(Some(CocoData {
                train_annotations: self.train_ann.clone().unwrap(),
                train_images: self.train_images.clone().unwrap(),
                val_annotations: self.val_ann.clone().unwrap(),
                val_images: self.val_images.clone().unwrap(),
            })),
            (None, _) => bail!(
                "--train-ann, --train-images, --val-ann and --val-images go together: give \
                 all four (or --data DIR)"
            ),
        }
    }

    /// Applies every flag that was given to `c`; returns their names.
    fn apply(&self, c: &mut TrainConfig) -> Result<Vec<&'static str>> {
        let mut given = Vec::new();
        macro_rules! set {
            ($flag:literal, $field:expr, $target:expr) => {
                if let Some(v) = &$field {
                    $target = v.clone();
                    given.push($flag);
                }
            };
        }
        set!("--seed", self.seed, c.seed);
        if let Some(n) = self.iters {
            c.iters = Some(n);
            c.epochs = None;
            given.push("--iters");
        }
        if let Some(n) = self.epochs {
            c.epochs = Some(n);
            c.iters = None;
            given.push("--epochs");
        }
        set!("--eval-every", self.eval_every, c.eval_every);
        set!(
            "--checkpoint-every",
            self.checkpoint_every,
            c.checkpoint_every
        );
        // Data.
        let shapes_flags = [
            self.shapes_train.is_some(),
            self.shapes_val.is_some(),
            self.shapes_size.is_some(),
            self.shapes_seed.is_some(),
            self.shapes_train_objects.is_some(),
        ];
        if shapes_flags.iter().any(|&b| b) {
            let Some(s) = c.data.shapes.as_mut() else {
                bail!("--shapes-* flags apply to the synthetic dataset, but a COCO dataset is configured");
            };
            set!("--shapes-train", self.shapes_train, s.train_images);
            set!("--shapes-val", self.shapes_val, s.val_images);
            set!("--shapes-size", self.shapes_size, s.size);
            set!("--shapes-seed", self.shapes_seed, s.seed);
            if let Some(n) = self.shapes_train_objects {
                s.train_max_objects = Some(n);
                given.push("--shapes-train-objects");
            }
        }
        set!("--min-size", self.min_size, c.data.min_size);
        set!("--max-size", self.max_size, c.data.max_size);
        set!("--flip", self.flip, c.data.flip);
        set!(
            "--eval-batch-size",
            self.eval_batch_size,
            c.data.eval_batch_size
        );
        // Model.
        set!("--backbone", self.backbone, c.model.depth);
        set!("--norm", self.norm, c.model.norm);
        set!("--fpn-channels", self.fpn_channels, c.model.fpn_channels);
        set!("--p6", self.p6, c.model.p6_input);
        set!("--head-depth", self.head_depth, c.model.head_depth);
        set!("--head-width", self.head_width, c.model.head_width);
        set!("--head-norm", self.head_norm, c.model.head_norm);
        set!("--prior", self.prior, c.model.prior_probability);
        set!("--anchor-sizes", self.anchor_sizes, c.anchors.sizes);
        set!("--anchor-scales", self.anchor_scales, c.anchors.scales);
        set!("--anchor-ratios", self.anchor_ratios, c.anchors.ratios);
        // Loss and matching.
        if let Some(a) = self.alpha {
            c.loss.alpha = Some(a);
            given.push("--alpha");
        }
        set!("--gamma", self.gamma, c.loss.gamma);
        match (self.box_loss.as_deref(), self.beta) {
            (Some("l1"), Some(_)) => bail!("--beta applies to the smooth-l1 box loss, not l1"),
            (Some("l1"), None) => {
                c.loss.box_loss = BoxLoss::L1;
                given.push("--box-loss");
            }
            (Some(_), beta) | (None, beta @ Some(_)) => {
                let old = match c.loss.box_loss {
                    BoxLoss::SmoothL1 { beta } => beta,
                    BoxLoss::L1 => 0.11,
                };
                c.loss.box_loss = BoxLoss::SmoothL1 {
                    beta: beta.unwrap_or(old),
                };
                given.push(if beta.is_some() {
                    "--beta"
                } else {
                    "--box-loss"
                });
            }
            (None, None) => {}
        }
        set!("--fg-iou", self.fg_iou, c.matcher.foreground_iou);
        set!("--bg-iou", self.bg_iou, c.matcher.background_iou);
        set!(
            "--low-quality-matches",
            self.low_quality_matches,
            c.matcher.low_quality_matches
        );
        // Inference.
        set!(
            "--score-threshold",
            self.score_threshold,
            c.inference.score_threshold
        );
        set!(
            "--candidates-per-level",
            self.candidates_per_level,
            c.inference.candidates_per_level
        );
        set!("--nms-iou", self.nms_iou, c.inference.nms_iou);
        set!(
            "--detections-per-image",
            self.detections_per_image,
            c.inference.detections_per_image
        );
        // Optimisation.
        if let Some(bs) = self.batch_size {
            if self.lr.is_none() {
                // The linear scaling rule (spec row 20) keeps the preset's rate per image.
                c.optimizer.lr *= bs as f64 / c.batch_size as f64;
            }
            c.batch_size = bs;
            given.push("--batch-size");
        }
        set!("--shards", self.shards, c.shards);
        set!("--optimizer", self.optimizer, c.optimizer.kind);
        set!("--lr", self.lr, c.optimizer.lr);
        set!("--momentum", self.momentum, c.optimizer.momentum);
        set!(
            "--weight-decay",
            self.weight_decay,
            c.optimizer.weight_decay
        );
        set!(
            "--clip-grad-norm",
            self.clip_grad_norm,
            c.optimizer.clip_grad_norm
        );
        set!("--warmup-iters", self.warmup_iters, c.schedule.warmup_iters);
        set!(
            "--warmup-factor",
            self.warmup_factor,
            c.schedule.warmup_factor
        );
        set!("--schedule", self.schedule, c.schedule.decay);
        set!("--steps", self.steps, c.schedule.steps);
        set!("--lr-gamma", self.lr_gamma, c.schedule.gamma);
        set!("--min-lr", self.min_lr, c.schedule.min_lr);
        Ok(given)
    }

    /// Preset, then `--config`, then flags.
    fn resolve(&self, threads: Option<u32>) -> Result<TrainConfig> {
        let coco = self.coco_data()?;
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
        let mut config = match &coco {
            Some(data) => TrainConfig::coco(data.clone()),
            None if file_names_coco => TrainConfig::coco(CocoData::from_root(Path::new("."))),
            None => TrainConfig::shapes(),
        };
        if let (Some(text), Some(path)) = (&file_text, &self.config) {
            config = TrainConfig::from_toml_over(&config, text)
                .map_err(|e| anyhow::anyhow!("configuration {}: {e}", path.display()))?;
        }
        if let Some(data) = coco {
            config.data.coco = Some(data);
            config.data.shapes = None;
        }
        self.apply(&mut config)?;
        if let Some(t) = threads {
            config.threads = t as usize;
        }
        config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(config)
    }
}

/// The first `runs/run-N` that does not exist.
fn default_run_dir() -> PathBuf {
    let root = PathBuf::from("runs");
    (1..)
        .map(|n| root.join(format!("run-{n}")))
        .find(|p| !p.exists())
        .expect("some run number is free")
}

pub fn run(args: Args, threads: Option<u32>) -> Result<ExitCode> {
    let started = Instant::now();
    let mut trainer = match &args.resume {
        Some(ckpt) => {
            let mut probe = TrainConfig::shapes();
            let given = args.apply(&mut probe)?;
            let data_given = args.coco_data()?.is_some() || args.config.is_some();
            if !given.is_empty() || data_given || args.init.is_some() {
                let mut all: Vec<&str> = given;
                if data_given {
                    all.push("dataset/--config");
                }
                if args.init.is_some() {
                    all.push("--init");
                }
                bail!(
                    "--resume continues a run with the configuration saved in its checkpoint; \
                     drop {}",
                    all.join(", ")
                );
            }
            let trainer = Trainer::resume(ckpt, args.out.as_deref(), threads.map(|t| t as usize))?;
            if args.print_config {
                print!("{}", trainer.config().to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "resuming {} at step {}/{} (epoch {})",
                ckpt.display(),
                trainer.step(),
                trainer.total_steps(),
                trainer.epoch() + 1
            );
            trainer
        }
        None => {
            let config = args.resolve(threads)?;
            if args.print_config {
                print!("{}", config.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            let out = args.out.clone().unwrap_or_else(default_run_dir);
            let mut trainer = Trainer::new(config, &out)?;
            if let Some(init) = &args.init {
                let report = trainer.init_from(init)?;
                eprintln!(
                    "initialised {} of the model's tensors from {}",
                    report.loaded.len(),
                    init.display()
                );
                for p in report.problems() {
                    eprintln!("  kept fresh ({p})");
                }
            }
            trainer
        }
    };
    if let Some(n) = args.stop_after {
        trainer.stop_after(n);
    }
    let c = trainer.config();
    eprintln!(
        "training on {}\nvalidating on {}\nrun folder {}: {} of {} images ({} per epoch), \
         {}",
        trainer.train_set().describe(),
        trainer.validation_set().describe(),
        trainer.run_dir().display(),
        super::count(trainer.total_steps(), "step"),
        c.batch_size,
        trainer.batches_per_epoch(),
        super::threads_text()
    );

    let interrupted =
        crate::interrupt::install("finishing the current step, then writing last.ckpt")?;
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
                Ok(ExitCode::from(EXIT_INTERRUPTED))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// The progress bar (or plain lines when stderr is not a terminal or --no-progress).
struct Progress {
    bar: Option<ProgressBar>,
    interrupted: Arc<AtomicBool>,
    total: u64,
    epochs: u64,
    line_every: u64,
}

impl Progress {
    fn new(no_progress: bool, interrupted: Arc<AtomicBool>) -> Progress {
        let tty = std::io::stderr().is_terminal() && !no_progress;
        Progress {
            bar: tty.then(|| ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())),
            interrupted,
            total: 0,
            epochs: 0,
            line_every: 1,
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

fn step_message(r: &StepRecord, epochs: u64) -> String {
    format!(
        "epoch {}/{epochs} · loss {:.3} (cls {:.3}, box {:.3}) · lr {:.2e} · {:.1} img/s",
        r.epoch + 1,
        r.loss,
        r.cls_loss,
        r.box_loss,
        r.lr,
        r.images_per_s
    )
}

impl Observer for Progress {
    fn on_start(&mut self, t: &Trainer) {
        self.total = t.total_steps();
        self.epochs = self.total.div_ceil(t.batches_per_epoch().max(1) as u64);
        self.line_every = (self.total / 20).max(1);
        if let Some(b) = &self.bar {
            b.set_length(self.total);
            b.set_position(t.step());
            b.reset_eta();
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:28.cyan/blue} {pos}/{len} steps · {msg} · ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
    }

    fn on_step(&mut self, r: &StepRecord, _t: &Trainer) {
        let msg = step_message(r, self.epochs);
        match &self.bar {
            Some(b) => {
                b.set_message(msg);
                b.set_position(r.step);
            }
            None => {
                if r.step.is_multiple_of(self.line_every) || r.step == 1 || r.step == self.total {
                    eprintln!("step {}/{} · {msg}", r.step, self.total);
                }
            }
        }
    }

    fn on_eval_start(&mut self, step: u64, images: usize) {
        match &self.bar {
            Some(b) => b.set_message(format!("evaluating at step {step} on {images} images")),
            None => eprintln!("evaluating at step {step} on {images} images"),
        }
    }

    fn on_eval_progress(&mut self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("evaluating: {done}/{total} images"));
        }
    }

    fn on_eval(&mut self, r: &EvalRecord, result: &EvalResult, t: &Trainer) {
        self.println(&format!(
            "step {}: AP {:.3} · AP50 {:.3} · AP75 {:.3} · AR100 {:.3} ({:.1} s)",
            r.step, r.ap, r.ap50, r.ap75, r.ar100, r.seconds
        ));
        let _ = result;
        if let Err(e) = write_plots(t) {
            self.println(&format!("warning: {e:#}"));
        }
    }

    fn should_stop(&mut self) -> bool {
        self.interrupted()
    }
}

/// loss.png (the three losses, averaged over a window that keeps ~200 points) and ap.png
/// (AP, AP50, AP75 per evaluation) from the run's history.
fn write_plots(t: &Trainer) -> Result<()> {
    let steps: Vec<&StepRecord> = t
        .history()
        .iter()
        .filter_map(|r| match r {
            MetricRow::Step(s) => Some(s),
            MetricRow::Eval(_) => None,
        })
        .collect();
    let evals: Vec<&EvalRecord> = t
        .history()
        .iter()
        .filter_map(|r| match r {
            MetricRow::Eval(e) => Some(e),
            MetricRow::Step(_) => None,
        })
        .collect();
    if !steps.is_empty() {
        let window = (steps.len() / 200).max(1);
        let mean = |f: &dyn Fn(&StepRecord) -> f32| -> Vec<(f64, f64)> {
            steps
                .chunks(window)
                .map(|c| {
                    let x = c.last().unwrap().step as f64;
                    let y = c.iter().map(|r| f(r) as f64).sum::<f64>() / c.len() as f64;
                    (x, y)
                })
                .collect()
        };
        let title = if window > 1 {
            format!("training loss (mean of {window} steps)")
        } else {
            "training loss".to_string()
        };
        let mut chart = Chart::new(&title, "step", "loss");
        chart.log_y = true;
        chart.series = vec![
            Series::new("total", mean(&|r| r.loss), 0),
            Series::new("classification (focal)", mean(&|r| r.cls_loss), 1),
            Series::new("box (smooth L1)", mean(&|r| r.box_loss), 2),
        ];
        chart.save_png(&t.run_dir().join("loss.png"))?;
    }
    if !evals.is_empty() {
        let pts = |f: &dyn Fn(&EvalRecord) -> f64| -> Vec<(f64, f64)> {
            evals.iter().map(|e| (e.step as f64, f(e))).collect()
        };
        let mut chart = Chart::new("COCO AP on the validation set", "step", "AP");
        chart.y_range = Some((0.0, 1.0));
        chart.series = vec![
            Series::new("AP", pts(&|e| e.ap), 0),
            Series::new("AP50", pts(&|e| e.ap50), 1),
            Series::new("AP75", pts(&|e| e.ap75), 2),
        ];
        chart.save_png(&t.run_dir().join("ap.png"))?;
    }
    Ok(())
}
