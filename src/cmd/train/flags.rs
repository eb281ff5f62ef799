//! The configuration flags of `focal train`: one clap argument struct per section of
//! [`TrainConfig`] (`[data]`, `[model]`, `[anchors]`, `[loss]`, `[matcher]`,
//! `[inference]`, `[optimizer]`, `[schedule]`, and the run's top-level fields), each
//! applying itself to the configuration with [`Section::apply`]. Every flag is optional:
//! one that is not given leaves the preset's (or the `--config` file's) value.

use std::path::PathBuf;

use anyhow::{bail, Result};
use focal_retinanet::config::{
    BackboneName, BackboneNorm, BoxLoss, BoxLossKind, P6Input, DEFAULT_SMOOTH_L1_BETA,
};
use focal_retinanet::train::{CocoData, DecayKind, OptimizerKind, TrainConfig};

/// The names of the flags that were given, in the order they were applied (a resumed run
/// refuses them by name).
#[derive(Default)]
pub struct Given(pub Vec<&'static str>);

impl Given {
    /// `*target = value` and records `flag`, when the flag was given.
    fn set<T: Clone>(&mut self, flag: &'static str, value: &Option<T>, target: &mut T) {
        if let Some(v) = value {
            *target = v.clone();
            self.0.push(flag);
        }
    }
}

/// A group of flags that sets one section of the configuration.
pub trait Section {
    /// Sets the fields whose flags were given, recording their names in `given`.
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()>;
}

/// The run's top-level fields: seed, length, evaluation and checkpoint intervals.
#[derive(clap::Args)]
#[command(next_help_heading = "Run")]
pub struct RunFlags {
    /// Seed of the initialisation and of the loader's order and flips [default: 0].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Length of the run in optimiser steps (see `iters_help`).
    #[arg(long, value_name = "N", conflicts_with = "epochs", help = iters_help())]
    pub iters: Option<u64>,
    /// Length of the run in passes over the training set [COCO default: 12].
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Evaluate on the validation set every N steps, and always at the end
    /// [default: 0 = only at the end].
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Write last.ckpt every N steps [default: 0 = only by time, at each evaluation and
    /// at the end].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Also write last.ckpt whenever this many minutes have passed since it was last
    /// written, so a crash or a kill loses at most that much work; 0: never by time
    /// [default: 10].
    #[arg(long, value_name = "MIN")]
    pub checkpoint_every_min: Option<f64>,
}

impl Section for RunFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        given.set("--seed", &self.seed, &mut c.seed);
        if let Some(n) = self.iters {
            c.iters = Some(n);
            c.epochs = None;
            given.0.push("--iters");
        }
        if let Some(n) = self.epochs {
            c.epochs = Some(n);
            c.iters = None;
            given.0.push("--epochs");
        }
        given.set("--eval-every", &self.eval_every, &mut c.eval_every);
        given.set(
            "--checkpoint-every",
            &self.checkpoint_every,
            &mut c.checkpoint_every,
        );
        given.set(
            "--checkpoint-every-min",
            &self.checkpoint_every_min,
            &mut c.checkpoint_every_min,
        );
        Ok(())
    }
}

/// `[data]`: the dataset and how its images are prepared.
#[derive(clap::Args)]
#[command(next_help_heading = "Data")]
pub struct DataFlags {
    /// A COCO folder: DIR/annotations/instances_{train,val}2017.json and
    /// DIR/{train,val}2017/. Without any dataset flag, the synthetic shapes are used.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Training annotations (COCO JSON); with --train-images, --val-ann, --val-images.
    #[arg(long, value_name = "FILE")]
    pub train_ann: Option<PathBuf>,
    /// Folder of the training images.
    #[arg(long, value_name = "DIR")]
    pub train_images: Option<PathBuf>,
    /// Validation annotations (COCO JSON).
    #[arg(long, value_name = "FILE")]
    pub val_ann: Option<PathBuf>,
    /// Folder of the validation images.
    #[arg(long, value_name = "DIR")]
    pub val_images: Option<PathBuf>,
    /// Synthetic training images [default: 2000].
    #[arg(long, value_name = "N")]
    pub shapes_train: Option<usize>,
    /// Synthetic validation images (a separate random stream) [default: 200].
    #[arg(long, value_name = "N")]
    pub shapes_val: Option<usize>,
    /// Side of the synthetic images in pixels [default: 64].
    #[arg(long, value_name = "PX")]
    pub shapes_size: Option<u32>,
    /// Seed of the synthetic images [default: 0].
    #[arg(long, value_name = "N")]
    pub shapes_seed: Option<u64>,
    /// At most this many objects per synthetic training image (the validation images
    /// keep 0-6; more objects give more supervision per step at the same cost)
    /// [default: 30].
    #[arg(long, value_name = "N")]
    pub shapes_train_objects: Option<usize>,
    /// Resize so the short side is this... [synthetic default: 96 (the 64-px shapes
    /// upscaled); COCO: 800]. Several comma-separated sizes (480,512,...,800) train each
    /// batch at one of them, drawn from the seed (multi-scale training), and evaluate at
    /// the last [COCO with --init: 480-800 in steps of 32].
    #[arg(long, value_name = "PX[,PX...]", value_delimiter = ',')]
    pub min_size: Option<Vec<usize>>,
    /// ...unless the long side would exceed this [synthetic default: 96; COCO: 1333].
    #[arg(long, value_name = "PX")]
    pub max_size: Option<usize>,
    /// Random horizontal flips in training [default: true].
    #[arg(long, value_name = "BOOL")]
    pub flip: Option<bool>,
    /// Images per batch when evaluating [synthetic default: 8; COCO: 2].
    #[arg(long, value_name = "N")]
    pub eval_batch_size: Option<usize>,
}

impl DataFlags {
    /// The COCO paths given by flags, if any.
    pub fn coco_data(&self) -> Result<Option<CocoData>> {
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
}

impl Section for DataFlags {
    /// The image sizes, flips and the synthetic dataset's flags (the COCO paths choose
    /// the preset instead: [`DataFlags::coco_data`]).
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let shapes_flags = [
            self.shapes_train.is_some(),
            self.shapes_val.is_some(),
            self.shapes_size.is_some(),
            self.shapes_seed.is_some(),
            self.shapes_train_objects.is_some(),
        ];
        if shapes_flags.iter().any(|&b| b) {
            let Some(s) = c.data.shapes.as_mut() else {
                bail!(
                    "--shapes-* flags apply to the synthetic dataset, but a COCO dataset is \
                     configured"
                );
            };
            given.set("--shapes-train", &self.shapes_train, &mut s.train_images);
            given.set("--shapes-val", &self.shapes_val, &mut s.val_images);
            given.set("--shapes-size", &self.shapes_size, &mut s.size);
            given.set("--shapes-seed", &self.shapes_seed, &mut s.seed);
            if let Some(n) = self.shapes_train_objects {
                s.train_max_objects = Some(n);
                given.0.push("--shapes-train-objects");
            }
        }
        let d = &mut c.data;
        if let Some(sizes) = &self.min_size {
            // One size: every batch at it. Several: one per batch, evaluation at the last
            // (torchvision's rule for its list of min sizes).
            match sizes.as_slice() {
                [] => bail!("--min-size needs at least one size"),
                [one] => {
                    d.min_size = *one;
                    d.train_min_sizes.clear();
                }
                [.., last] => {
                    d.min_size = *last;
                    d.train_min_sizes = sizes.clone();
                }
            }
            given.0.push("--min-size");
        }
        given.set("--max-size", &self.max_size, &mut d.max_size);
        given.set("--flip", &self.flip, &mut d.flip);
        given.set(
            "--eval-batch-size",
            &self.eval_batch_size,
            &mut d.eval_batch_size,
        );
        Ok(())
    }
}

/// The help of `--iters`, with the synthetic preset's length as the preset defines it.
fn iters_help() -> String {
    format!(
        "Length of the run in optimiser steps [synthetic default: {}]",
        focal_retinanet::train::config::SHAPES_ITERS
    )
}

/// The help of `--backbone`: every registered backbone, by name.
fn backbone_help() -> String {
    format!(
        "Backbone: {} [synthetic default: resnet18; COCO: resnet50]",
        focal_retinanet::backbone::names()
    )
}

/// `[model]`: backbone, FPN and the two subnets.
#[derive(clap::Args)]
#[command(next_help_heading = "Model")]
pub struct ModelFlags {
    /// Backbone (see `backbone_help`) [synthetic default: resnet18; COCO: resnet50].
    #[arg(long, value_name = "NAME", value_parser = BackboneName::parse, help = backbone_help())]
    pub backbone: Option<BackboneName>,
    /// Backbone norm: gn (GroupNorm 32), bn (trainable BatchNorm) or frozen-bn (for
    /// pretrained weights; stem and layer1 frozen too, see --trainable-layers)
    /// [default: gn; COCO with --init: the weights'].
    #[arg(long, value_name = "KIND", value_parser = BackboneNorm::parse)]
    pub norm: Option<BackboneNorm>,
    /// FPN channels F [synthetic default: 64; COCO: 256].
    #[arg(long, value_name = "F")]
    pub fpn_channels: Option<usize>,
    /// P6 from c5 (the paper) or p5 (torchvision's weights) [default: c5].
    #[arg(long, value_name = "FROM", value_parser = P6Input::parse)]
    pub p6: Option<P6Input>,
    /// 3×3 conv + ReLU layers in each head tower [synthetic default: 2; COCO: 4].
    #[arg(long, value_name = "N")]
    pub head_depth: Option<usize>,
    /// Channels of the head towers [synthetic default: 64; COCO: 256].
    #[arg(long, value_name = "C")]
    pub head_width: Option<usize>,
    /// GroupNorm(32) in the head towers [synthetic default: true; COCO: false].
    #[arg(long, value_name = "BOOL")]
    pub head_norm: Option<bool>,
    /// Prior probability π of the class bias −ln((1−π)/π) [default: 0.01].
    #[arg(long, value_name = "P")]
    pub prior: Option<f32>,
    /// Backbone stages that train, from the top: layer4, layer3, layer2, layer1, the stem
    /// (torchvision's trainable_backbone_layers, 0-5); the ones below are frozen
    /// [default: 3 with frozen-bn, else 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=5))]
    pub trainable_layers: Option<u64>,
}

impl Section for ModelFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let m = &mut c.model;
        given.set("--backbone", &self.backbone, &mut m.depth);
        given.set("--norm", &self.norm, &mut m.norm);
        given.set("--fpn-channels", &self.fpn_channels, &mut m.fpn_channels);
        given.set("--p6", &self.p6, &mut m.p6_input);
        given.set("--head-depth", &self.head_depth, &mut m.head_depth);
        given.set("--head-width", &self.head_width, &mut m.head_width);
        given.set("--head-norm", &self.head_norm, &mut m.head_norm);
        given.set("--prior", &self.prior, &mut m.prior_probability);
        if let Some(n) = self.trainable_layers {
            m.trainable_layers = Some(n as usize);
            given.0.push("--trainable-layers");
        }
        Ok(())
    }
}

/// `[anchors]`: sizes, octave scales and aspect ratios.
#[derive(clap::Args)]
#[command(next_help_heading = "Anchors")]
pub struct AnchorFlags {
    /// Anchor base sizes on P3..P7, five comma-separated pixels
    /// [synthetic default: 16,32,64,128,256; COCO: 32,64,128,256,512].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub anchor_sizes: Option<Vec<f32>>,
    /// Anchor octave scales [default: 1,1.2599,1.5874 = 2^0, 2^(1/3), 2^(2/3)].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub anchor_scales: Option<Vec<f32>>,
    /// Anchor aspect ratios h/w [synthetic default: 1; COCO: 0.5,1,2].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub anchor_ratios: Option<Vec<f32>>,
}

impl Section for AnchorFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let a = &mut c.anchors;
        given.set("--anchor-sizes", &self.anchor_sizes, &mut a.sizes);
        given.set("--anchor-scales", &self.anchor_scales, &mut a.scales);
        given.set("--anchor-ratios", &self.anchor_ratios, &mut a.ratios);
        Ok(())
    }
}

/// `[loss]`: the focal loss and the box loss.
#[derive(clap::Args)]
#[command(next_help_heading = "Loss")]
pub struct LossFlags {
    /// α of the focal loss (weight of positives; negatives get 1−α) [synthetic default:
    /// 0.5; COCO: 0.25].
    #[arg(long, value_name = "A")]
    pub alpha: Option<f32>,
    /// γ of the focal loss; 0 gives α-balanced cross-entropy [synthetic default: 0.5;
    /// COCO: 2].
    #[arg(long, value_name = "G")]
    pub gamma: Option<f32>,
    /// Box loss: smooth-l1 or l1 [default: smooth-l1].
    #[arg(long, value_name = "KIND", value_parser = BoxLossKind::parse)]
    pub box_loss: Option<BoxLossKind>,
    /// β of the smooth-L1 box loss [default: 0.11].
    #[arg(long, value_name = "B")]
    pub beta: Option<f32>,
}

impl Section for LossFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let l = &mut c.loss;
        if let Some(a) = self.alpha {
            l.alpha = Some(a);
            given.0.push("--alpha");
        }
        given.set("--gamma", &self.gamma, &mut l.gamma);
        match (self.box_loss, self.beta) {
            (Some(BoxLossKind::L1), Some(_)) => {
                bail!("--beta applies to the smooth-l1 box loss, not l1")
            }
            (Some(BoxLossKind::L1), None) => {
                l.box_loss = BoxLoss::L1;
                given.0.push("--box-loss");
            }
            (Some(BoxLossKind::SmoothL1), beta) | (None, beta @ Some(_)) => {
                let old = l.box_loss.beta().unwrap_or(DEFAULT_SMOOTH_L1_BETA);
                l.box_loss = BoxLoss::SmoothL1 {
                    beta: beta.unwrap_or(old),
                };
                given.0.push(if beta.is_some() {
                    "--beta"
                } else {
                    "--box-loss"
                });
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// `[matcher]`: which anchors are positive, background or ignored.
#[derive(clap::Args)]
#[command(next_help_heading = "Matching")]
pub struct MatcherFlags {
    /// Anchors with IoU ≥ this are positive [default: 0.5].
    #[arg(long, value_name = "IOU")]
    pub fg_iou: Option<f32>,
    /// Anchors with IoU < this are background; in between they are ignored [default: 0.4].
    #[arg(long, value_name = "IOU")]
    pub bg_iou: Option<f32>,
    /// Each object's best anchors become positive too [default: true].
    #[arg(long, value_name = "BOOL")]
    pub low_quality_matches: Option<bool>,
}

impl Section for MatcherFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let m = &mut c.matcher;
        given.set("--fg-iou", &self.fg_iou, &mut m.foreground_iou);
        given.set("--bg-iou", &self.bg_iou, &mut m.background_iou);
        given.set(
            "--low-quality-matches",
            &self.low_quality_matches,
            &mut m.low_quality_matches,
        );
        Ok(())
    }
}

/// `[inference]`: from scores to detections.
#[derive(clap::Args)]
#[command(next_help_heading = "Inference")]
pub struct InferenceFlags {
    /// Detections need a score above this [default: 0.05].
    #[arg(long, value_name = "S")]
    pub score_threshold: Option<f32>,
    /// Candidates kept per pyramid level before NMS [default: 1000].
    #[arg(long, value_name = "K")]
    pub candidates_per_level: Option<usize>,
    /// NMS suppresses boxes with IoU above this [default: 0.5].
    #[arg(long, value_name = "IOU")]
    pub nms_iou: Option<f32>,
    /// Detections kept per image [default: 100].
    #[arg(long, value_name = "N")]
    pub detections_per_image: Option<usize>,
}

impl Section for InferenceFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let i = &mut c.inference;
        given.set(
            "--score-threshold",
            &self.score_threshold,
            &mut i.score_threshold,
        );
        given.set(
            "--candidates-per-level",
            &self.candidates_per_level,
            &mut i.candidates_per_level,
        );
        given.set("--nms-iou", &self.nms_iou, &mut i.nms_iou);
        given.set(
            "--detections-per-image",
            &self.detections_per_image,
            &mut i.detections_per_image,
        );
        Ok(())
    }
}

/// `[optimizer]`, with the batch it steps on (`batch_size`, `shards`).
#[derive(clap::Args)]
#[command(next_help_heading = "Optimisation")]
pub struct OptimizerFlags {
    /// Images per step [synthetic default: 8; COCO: 2].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Cut each batch into this many parts trained concurrently, their gradients added up
    /// (for many-core machines and small images, where single kernels cannot keep every
    /// core busy; on 2 cores it measured no faster). Results depend on it only to
    /// rounding, and never on --threads. Under mpirun: a multiple of the number of
    /// processes, shared among them in order [default: 1; under mpirun -np N: N].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// sgd (momentum) or adamw [synthetic default: adamw; COCO: sgd].
    #[arg(long, value_name = "KIND", value_parser = OptimizerKind::parse)]
    pub optimizer: Option<OptimizerKind>,
    /// Peak learning rate [synthetic default: 0.004; COCO: 0.01 × batch/16]. When only
    /// --batch-size changes, the preset's rate is scaled linearly with the batch.
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long, value_name = "M")]
    pub momentum: Option<f32>,
    /// Weight decay (L2 for SGD, decoupled for AdamW; never on norms and biases)
    /// [default: 0.0001].
    #[arg(long, value_name = "WD")]
    pub weight_decay: Option<f32>,
    /// Clip the gradient's global L2 norm to this (0: off) [default: 0].
    #[arg(long, value_name = "NORM")]
    pub clip_grad_norm: Option<f32>,
}

impl Section for OptimizerFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        if let Some(bs) = self.batch_size {
            if self.lr.is_none() {
                // The linear scaling rule (the paper's 0.01 at 16 images, §4.1) keeps the
                // preset's rate per image.
                c.optimizer.lr *= bs as f64 / c.batch_size as f64;
            }
            c.batch_size = bs;
            given.0.push("--batch-size");
        }
        given.set("--shards", &self.shards, &mut c.shards);
        let o = &mut c.optimizer;
        given.set("--optimizer", &self.optimizer, &mut o.kind);
        given.set("--lr", &self.lr, &mut o.lr);
        given.set("--momentum", &self.momentum, &mut o.momentum);
        given.set("--weight-decay", &self.weight_decay, &mut o.weight_decay);
        given.set(
            "--clip-grad-norm",
            &self.clip_grad_norm,
            &mut o.clip_grad_norm,
        );
        Ok(())
    }
}

/// `[schedule]`: warm-up and decay of the learning rate.
#[derive(clap::Args)]
#[command(next_help_heading = "Schedule")]
pub struct ScheduleFlags {
    /// Linear warm-up iterations [synthetic default: 100; COCO: 500].
    #[arg(long, value_name = "N")]
    pub warmup_iters: Option<u64>,
    /// Warm-up starts at this fraction of the rate [default: 0.001].
    #[arg(long, value_name = "F")]
    pub warmup_factor: Option<f64>,
    /// Decay after warm-up: multi-step, cosine or constant [synthetic default: cosine;
    /// COCO: multi-step].
    #[arg(long, value_name = "KIND", value_parser = DecayKind::parse)]
    pub schedule: Option<DecayKind>,
    /// Multi-step: iterations at which the rate is multiplied by --lr-gamma
    /// [default: 2/3 and 8/9 of the run].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub steps: Option<Vec<u64>>,
    /// Multi-step factor [default: 0.1].
    #[arg(long, value_name = "G")]
    pub lr_gamma: Option<f64>,
    /// Cosine: the rate at the end of the run [default: 0].
    #[arg(long, value_name = "LR")]
    pub min_lr: Option<f64>,
}

impl Section for ScheduleFlags {
    fn apply(&self, c: &mut TrainConfig, given: &mut Given) -> Result<()> {
        let s = &mut c.schedule;
        given.set("--warmup-iters", &self.warmup_iters, &mut s.warmup_iters);
        given.set("--warmup-factor", &self.warmup_factor, &mut s.warmup_factor);
        given.set("--schedule", &self.schedule, &mut s.decay);
        given.set("--steps", &self.steps, &mut s.steps);
        given.set("--lr-gamma", &self.lr_gamma, &mut s.gamma);
        given.set("--min-lr", &self.min_lr, &mut s.min_lr);
        Ok(())
    }
}
