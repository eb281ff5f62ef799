//! Everything a training run needs, in one serialisable struct: the detector
//! ([`crate::config`]), the data, the optimiser and schedule (§4.1 "Optimization"), and
//! the length of the run. docs/design-choices.md gives the reason for each default.
//!
//! A run folder holds this struct as `config.toml`, and every checkpoint carries the same
//! text, so a checkpoint alone is enough to rebuild its model (`focal eval`, `focal detect`)
//! or to continue its run (`--resume`).
//!
//! ```toml
//! seed = 0
//! batch_size = 8
//! iters = 800               # or: epochs = 12
//! eval_every = 0            # 0: evaluate only at the end
//!
//! [data]
//! min_size = 96
//! max_size = 96
//! flip = true
//! [data.shapes]             # or [data.coco] with the four paths
//! train_images = 2000
//!
//! [optimizer]
//! kind = "adamw"
//! lr = 0.004
//!
//! [schedule]
//! decay = "cosine"
//! warmup_iters = 100
//!
//! [model]                   # then [anchors], [matcher], [loss], [inference]:
//! depth = "resnet18"        # the fields of crate::config
//! ```
//!
//! Two starting points: [`TrainConfig::shapes`], the quick synthetic run that `focal train`
//! makes without a dataset (chosen to finish in a few minutes on 2 cores), and
//! [`TrainConfig::coco`], the paper's recipe for real data. A TOML file is read
//! *over* one of them ([`TrainConfig::from_toml_over`]), so it only needs to name what it
//! changes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{
    AnchorConfig, BackboneName, BackboneNorm, InferenceConfig, LossConfig, MatcherConfig,
    ModelConfig, RetinaNetConfig,
};
use crate::error::Error;

/// A whole training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Fixes the model's initialisation and the loader's order and flips.
    pub seed: u64,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// The batch is cut into this many parts whose forward and backward passes run
    /// concurrently, their gradients added up ([`super::data_parallel`]): faster on small
    /// images, where single kernels are too small to keep every core busy. Results depend
    /// on this number (to rounding), never on `threads`. With several processes the
    /// shards are shared among them in order, so their number must be a multiple of the
    /// processes' ([`super::distributed`]).
    #[serde(default = "one")]
    pub shards: usize,
    /// Length of the run in optimiser steps (exactly one of `iters` and `epochs`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iters: Option<u64>,
    /// Length of the run in passes over the training set.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub epochs: Option<u64>,
    /// Evaluate on the validation set every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Write `last.ckpt` every this many steps (0: only by time, at each evaluation and
    /// at the end).
    pub checkpoint_every: u64,
    /// Also write `last.ckpt` whenever this many minutes have passed since it was last
    /// written (0: never by time), so a crash loses at most this much work on any
    /// dataset. Checked after each step.
    #[serde(default = "default_checkpoint_minutes")]
    pub checkpoint_every_min: f64,
    /// Worker threads (0: every core). Results do not depend on it.
    pub threads: usize,
    /// How the 3x3 stride-1 convolutions are computed (`--conv-algo`: auto, direct,
    /// winograd, winograd-f2, winograd-f4; see `focal_engine::ConvAlgo`). Results
    /// depend on it to rounding, so it is part of the run: a resumed run keeps it.
    #[serde(default = "recorded_before_conv_algo")]
    pub conv_algo: String,
    pub data: DataConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub model: ModelConfig,
    pub anchors: AnchorConfig,
    pub matcher: MatcherConfig,
    pub loss: LossConfig,
    pub inference: InferenceConfig,
}

/// The default of fields added after the first release, so older files still read.
fn one() -> usize {
    1
}

/// The conv algorithm of a new run: `auto`.
fn default_conv_algo() -> String {
    focal_engine::ConvAlgo::default().name().to_string()
}

/// The conv algorithm of a configuration saved before the field existed: such runs
/// computed every convolution directly, and resuming one must keep doing so.
fn recorded_before_conv_algo() -> String {
    focal_engine::ConvAlgo::Direct.name().to_string()
}

/// Minutes between time-based checkpoints by default.
pub const DEFAULT_CHECKPOINT_MINUTES: f64 = 10.0;

fn default_checkpoint_minutes() -> f64 {
    DEFAULT_CHECKPOINT_MINUTES
}

/// The largest image side (`min_size`, `max_size`) a run accepts: 4096 px, five times
/// COCO's 800, already 16 GB of activations per image for the paper's model.
pub const MAX_IMAGE_SIDE: usize = 4096;
/// The widest FPN and subnets a run accepts (the paper: 256).
pub const MAX_WIDTH: usize = 2048;
/// The deepest subnet towers a run accepts (the paper: 4).
pub const MAX_HEAD_DEPTH: usize = 32;
/// The largest batch (training or evaluation) a run accepts.
pub const MAX_BATCH: usize = 1024;

/// Where the images come from and how they are prepared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Resize so the short side is `min_size` (in training unless `train_min_sizes` is
    /// set, and always in evaluation) ...
    pub min_size: usize,
    /// Multi-scale training: each training batch is resized to one of these short sides,
    /// drawn per batch from the seed (`focal_data::Loader::batch_min_size`); evaluation
    /// stays at `min_size`. Empty: every batch at `min_size`. Written to a configuration
    /// file only when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_min_sizes: Vec<usize>,
    /// ... unless the long side would exceed `max_size`.
    pub max_size: usize,
    /// Horizontal flips with probability 0.5 in training (the paper's only augmentation,
    /// §4.1).
    pub flip: bool,
    /// Images per batch when evaluating.
    pub eval_batch_size: usize,
    /// Leave out the images that cannot be used (found by the check before training, or
    /// failing to decode later) instead of refusing to train; their number is reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad_images: bool,
    /// The synthetic shapes (exactly one of `shapes` and `coco`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shapes: Option<ShapesData>,
    /// A COCO dataset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub coco: Option<CocoData>,
}

/// The synthetic shapes dataset of `focal_data::synth`: its train split for training, its
/// val split (never sharing an image with train) for evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapesData {
    pub train_images: usize,
    pub val_images: usize,
    /// Side of the square images in pixels.
    pub size: u32,
    /// The dataset's seed (separate from the run's seed, so that runs with different
    /// seeds see the same images).
    pub seed: u64,
    /// 0 to this many objects per image (the validation split always uses this).
    pub max_objects: usize,
    /// The training split's maximum instead, when set: more objects per training image
    /// give more supervision per second of compute. The validation split is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_max_objects: Option<usize>,
    /// The largest object side in pixels, both splits (`focal_data::ShapesConfig`);
    /// unset: 0.7 of the image side. Written only when set, so earlier files read and
    /// hash the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_object_side: Option<u32>,
}

impl Default for ShapesData {
    fn default() -> Self {
        ShapesData {
            train_images: 2000,
            val_images: 200,
            size: 256,
            seed: 0,
            max_objects: 6,
            train_max_objects: None,
            max_object_side: None,
        }
    }
}

/// A COCO-format dataset: annotation files and image folders for training and evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CocoData {
    pub train_annotations: PathBuf,
    pub train_images: PathBuf,
    pub val_annotations: PathBuf,
    pub val_images: PathBuf,
}

impl CocoData {
    /// COCO's own layout: `root/annotations/instances_{train,val}2017.json` and
    /// `root/{train,val}2017/`.
    pub fn from_root(root: &std::path::Path) -> CocoData {
        let ann = root.join("annotations");
        CocoData {
            train_annotations: ann.join("instances_train2017.json"),
            train_images: root.join("train2017"),
            val_annotations: ann.join("instances_val2017.json"),
            val_images: root.join("val2017"),
        }
    }
}

/// SGD with momentum (the paper) or AdamW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    #[serde(rename = "sgd")]
    Sgd,
    #[serde(rename = "adamw")]
    AdamW,
}

impl OptimizerKind {
    pub fn parse(text: &str) -> Result<OptimizerKind, Error> {
        match text.trim() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adamw" => Ok(OptimizerKind::AdamW),
            _ => Err(Error::config(format!(
                "unknown optimiser {text:?}: expected sgd or adamw"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::AdamW => "adamw",
        }
    }
}

/// The optimiser (§4.1 "Optimization": SGD, momentum 0.9, weight decay 1e-4, lr 0.01 at
/// 16 images).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// The peak learning rate (after warm-up, before decay). The paper's rule is 0.01 at
    /// batch 16, scaled linearly with the batch.
    pub lr: f64,
    /// SGD's μ.
    pub momentum: f32,
    /// AdamW's β1, β2.
    pub betas: [f32; 2],
    /// λ: L2 penalty for SGD, decoupled decay for AdamW.
    pub weight_decay: f32,
    /// Also decay norm weights and biases (default: no, as Detectron2 and torchvision).
    pub decay_norm_and_bias: bool,
    /// Rescale the gradients when their global L2 norm exceeds this (0: never).
    pub clip_grad_norm: f32,
}

/// How the learning rate decays after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecayKind {
    #[serde(rename = "constant")]
    Constant,
    /// ÷(1/gamma) at each of `steps`.
    #[serde(rename = "multi-step")]
    MultiStep,
    /// Half a cosine from the peak to `min_lr` at the end of the run.
    #[serde(rename = "cosine")]
    Cosine,
}

impl DecayKind {
    pub fn parse(text: &str) -> Result<DecayKind, Error> {
        match text.trim() {
            "constant" => Ok(DecayKind::Constant),
            "multi-step" | "multistep" | "step" => Ok(DecayKind::MultiStep),
            "cosine" => Ok(DecayKind::Cosine),
            _ => Err(Error::config(format!(
                "unknown schedule {text:?}: expected multi-step, cosine or constant"
            ))),
        }
    }
}

/// The learning-rate schedule: linear warm-up, then decay (the paper: ÷10 at 60k and 80k
/// of 90k iterations, §4.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Iterations of linear warm-up (0: none).
    pub warmup_iters: u64,
    /// The warm-up starts at this fraction of the peak rate.
    pub warmup_factor: f64,
    pub decay: DecayKind,
    /// Multi-step: the iterations at which the rate is multiplied by `gamma`. Empty: at
    /// 2/3 and 8/9 of the run, as the paper's 60k and 80k of 90k.
    pub steps: Vec<u64>,
    /// Multi-step factor.
    pub gamma: f64,
    /// Cosine: the rate at the end of the run.
    pub min_lr: f64,
}

/// Steps of the synthetic default run (of 8 images each).
pub const SHAPES_ITERS: u64 = 720;

/// At most this many objects per training image of the synthetic default run (its
/// validation images keep the dataset's 0–6); [`TrainConfig::shapes`] says why.
pub const SHAPES_TRAIN_OBJECTS: usize = 30;

impl TrainConfig {
    /// The default of `focal train` without a dataset: a small RetinaNet on the synthetic
    /// shapes, chosen to finish (training and evaluation) within 5 minutes on 2 cores.
    /// Departures from the paper's COCO recipe ([`TrainConfig::coco`]), each for accuracy on
    /// a CPU budget of minutes:
    ///
    /// - shapes drawn at 64 px (objects 12–45 px), **resized to 96 px** for the network:
    ///   the stem's stride of 4 leaves a 12-px object 3 feature pixels wide, and the
    ///   upscaled input was the largest gain we measured (AP50 after 600 steps, 200
    ///   held-out images: 0.453 at 64 px, 0.659 at 96, 0.671 at 128 at 1.6x the time of
    ///   96). Drawing the shapes at 96 px instead would change the task (objects 12–67
    ///   px); resizing keeps the dataset and changes only the model's view of it;
    /// - ResNet-18 with GroupNorm (trainable BatchNorm: 0.428 against 0.453); FPN and
    ///   towers 64 wide and 2 deep instead of 256 and 4, with GroupNorm in the towers (it
    ///   roughly doubled AP50 at a fixed budget; 128-wide towers gained 0.04 for 25% more
    ///   time);
    /// - anchors 16–256 instead of 32–512, so that the smallest objects have anchors of
    ///   their own size on P3, and one aspect ratio (1) instead of three: the shapes are
    ///   nearly square, and with a third of the anchors AP50 rose (0.659 → 0.683 at 96 px)
    ///   and the heads and the loss cost less;
    /// - focal loss with γ = 0.5, α = 0.5 instead of γ = 2, α = 0.25: at this scale
    ///   (hundreds of anchors per image, hundreds of steps) the milder focusing learns
    ///   faster — `focal ablate`'s Table 1 (docs/ablation-table.md) ranks it first, and
    ///   at 96 px it gave 0.742 against 0.683 after 600 steps;
    /// - AdamW at 4e-3 with a cosine schedule instead of SGD with steps, which converges in
    ///   far fewer iterations from scratch (1e-3 and 2e-3 were slower, 8e-3 no better);
    /// - 800 steps of 8 (3.2 epochs of the 2000 training images): AP50 0.839 in 227–272 s
    ///   over three runs with the engine of the time (matrixmultiply's GEMM). 900 steps
    ///   reached 0.846 in 251 s (too little time margin on a slow day), 750 steps 0.811 in
    ///   232 s (too little AP margin). Since focal's own GEMM and the torchvision-exact
    ///   resize (a different but equally fixed rounding), the same 800 steps give AP50
    ///   0.820 (AP 0.498) in 129 s on an idle 2-core AMD EPYC Zen 5, and 0.822 (AP 0.497)
    ///   in 192 s on an idle 2-core Intel Xeon Sapphire Rapids;
    /// - training images drawn with **0–30 objects** instead of the 0–6 of the validation
    ///   images (and of the dataset's default), which stay as they were: more positive
    ///   anchors per step for the same compute. On average 7.8 objects and 32.5 positive
    ///   anchors per training image instead of 2.6 and 10.9 (an object is only placed
    ///   where it leaves the earlier ones two thirds visible, so crowded images hold fewer
    ///   than drawn). The steps cost the same (matching and the loss are a negligible part
    ///   of them); only drawing the images costs more, about 1.0 ms of one core per image
    ///   instead of 0.2 (`focal synth` of 2000 images, PNG writing included: 2.0 s against
    ///   0.45 s on an Intel Xeon Sapphire Rapids), some 5 s of CPU time over the run's
    ///   6400 images, spent by the loader's thread beside the steps: an estimated 2–3 s on
    ///   the 192 s of the run on 2 idle cores. AP50 (AP) after the same 800 steps: 0.822
    ///   (0.497) with 0–6, 0.863 (0.515) with 0–12, 0.915 (0.555) with 0–20, **0.959
    ///   (0.646)** with 0–30, 0.958 (0.623) with 0–60 (10.6 objects per image); with 0–30
    ///   and seed 1, 0.956 (0.609).
    ///   At this AP the inference thresholds hardly matter (NMS at 0.45 and scores above
    ///   0.01 moved AP50 by +0.0004), so they stay the paper's;
    /// - then **720 steps** instead of 800 (2.9 epochs), spending part of the AP won on time:
    ///   AP50 0.952 (AP 0.608) against 0.959 (0.646), at 13 % less CPU time. On the 2-core
    ///   Intel Xeon Sapphire Rapids, on a busy host (5-35 % steal time in the same minutes),
    ///   the 720 steps used 262 s of CPU time against 302 s for 800 steps with 0–30
    ///   objects and 284 s for the earlier default (800 steps, 0–6 objects). Side by side
    ///   on a nearly idle host (steal under 10 %): 183 s of wall time (260 s of CPU) against
    ///   189 s (275 s) for the earlier default.
    ///
    /// Cutting batches into shards ([`super::data_parallel`]) gave no speed-up here on 2
    /// cores (the kernels already keep both busy), so the default is one pass per batch.
    pub fn shapes() -> TrainConfig {
        TrainConfig {
            seed: 0,
            batch_size: 8,
            shards: 1,
            iters: Some(SHAPES_ITERS),
            epochs: None,
            eval_every: 0,
            checkpoint_every: 0,
            checkpoint_every_min: DEFAULT_CHECKPOINT_MINUTES,
            threads: 0,
            conv_algo: default_conv_algo(),
            data: DataConfig {
                min_size: 96,
                train_min_sizes: Vec::new(),
                max_size: 96,
                flip: true,
                eval_batch_size: 8,
                skip_bad_images: false,
                shapes: Some(ShapesData {
                    size: 64,
                    train_max_objects: Some(SHAPES_TRAIN_OBJECTS),
                    ..ShapesData::default()
                }),
                coco: None,
            },
            optimizer: OptimizerConfig {
                kind: OptimizerKind::AdamW,
                lr: 4e-3,
                momentum: 0.9,
                betas: [0.9, 0.999],
                weight_decay: 1e-4,
                decay_norm_and_bias: false,
                clip_grad_norm: 0.0,
            },
            schedule: ScheduleConfig {
                warmup_iters: 100,
                warmup_factor: 0.001,
                decay: DecayKind::Cosine,
                steps: Vec::new(),
                gamma: 0.1,
                min_lr: 0.0,
            },
            model: ModelConfig {
                depth: BackboneName::RESNET18,
                norm: BackboneNorm::GroupNorm,
                fpn_channels: 64,
                head_width: 64,
                head_depth: 2,
                head_norm: true,
                num_classes: 5,
                ..ModelConfig::default()
            },
            anchors: AnchorConfig {
                sizes: vec![16.0, 32.0, 64.0, 128.0, 256.0],
                ratios: vec![1.0],
                ..AnchorConfig::default()
            },
            matcher: MatcherConfig::default(),
            loss: LossConfig {
                alpha: Some(0.5),
                gamma: 0.5,
                ..LossConfig::default()
            },
            inference: InferenceConfig::default(),
        }
    }

    /// The paper's recipe (§4.1) for a COCO dataset at `data`, with focal's choices
    /// (docs/design-choices.md): ResNet-50 with GroupNorm,
    /// F = 256, 4-deep towers, anchors 32–512, 800/1333 px, SGD with momentum 0.9 and
    /// weight decay 1e-4 at lr 0.01 × batch/16, warm-up 500 iterations from 1/1000,
    /// ÷10 at 2/3 and 8/9 of the run, 12 epochs.
    pub fn coco(data: CocoData) -> TrainConfig {
        let batch_size = 2;
        TrainConfig {
            seed: 0,
            batch_size,
            shards: 1,
            iters: None,
            epochs: Some(12),
            eval_every: 0,
            checkpoint_every: 0,
            checkpoint_every_min: DEFAULT_CHECKPOINT_MINUTES,
            threads: 0,
            conv_algo: default_conv_algo(),
            data: DataConfig {
                min_size: 800,
                train_min_sizes: Vec::new(),
                max_size: 1333,
                flip: true,
                eval_batch_size: 2,
                skip_bad_images: false,
                shapes: None,
                coco: Some(data),
            },
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.01 * batch_size as f64 / 16.0,
                momentum: 0.9,
                betas: [0.9, 0.999],
                weight_decay: 1e-4,
                decay_norm_and_bias: false,
                clip_grad_norm: 0.0,
            },
            schedule: ScheduleConfig {
                warmup_iters: 500,
                warmup_factor: 0.001,
                decay: DecayKind::MultiStep,
                steps: Vec::new(),
                gamma: 0.1,
                min_lr: 0.0,
            },
            model: ModelConfig::default(),
            anchors: AnchorConfig::default(),
            matcher: MatcherConfig::default(),
            loss: LossConfig::default(),
            inference: InferenceConfig::default(),
        }
    }

    /// The configuration with the COCO dataset's paths made absolute (against the
    /// current folder), so that the run folder's `config.toml` and checkpoints name the
    /// same files from any working directory.
    pub fn with_absolute_paths(&self) -> TrainConfig {
        let mut c = self.clone();
        if let Some(coco) = &mut c.data.coco {
            for p in [
                &mut coco.train_annotations,
                &mut coco.train_images,
                &mut coco.val_annotations,
                &mut coco.val_images,
            ] {
                if let Ok(abs) = std::path::absolute(&*p) {
                    *p = abs;
                }
            }
        }
        c
    }

    /// The preset of `focal train --init FILE` on a COCO dataset: fine-tuning pretrained
    /// weights the way torchvision's detection references do, on `model` (the detector
    /// the weights describe, `crate::pretrained::architecture`; for an ImageNet backbone,
    /// torchvision's RetinaNet around it):
    ///
    /// - the weights' architecture and anchors, the backbone's top 3 stages training
    ///   (layer2-4; torchvision's default `trainable_backbone_layers`), frozen BatchNorm
    ///   when the weights have BatchNorm statistics;
    /// - multi-scale training: each batch's short side one of 480, 512, ..., 800 (max
    ///   1333), evaluation at 800/1333, horizontal flips (torchvision's "multiscale"
    ///   augmentation, detectron2's `ResizeShortestEdge`), one image per evaluation batch
    ///   (as torchvision's reference evaluation);
    /// - batch 2, SGD with momentum 0.9 and weight decay 1e-4 at lr 0.01 × 2/16 = 0.00125
    ///   (the paper's rule), 100 warm-up steps from 1/1000, ÷10 at 2/3 and 8/9 of 12
    ///   epochs.
    pub fn coco_finetune(data: CocoData, model: &RetinaNetConfig) -> TrainConfig {
        let mut c = TrainConfig::coco(data);
        c.data.train_min_sizes = (480..=800).step_by(32).collect();
        c.model = model.model.clone();
        c.model.trainable_layers = Some(3);
        c.anchors = model.anchors.clone();
        c.inference = model.inference.clone();
        c.schedule.warmup_iters = 100;
        c.data.eval_batch_size = 1;
        c
    }

    /// The detector part, as [`crate::RetinaNet::new`] takes it.
    pub fn retinanet(&self) -> RetinaNetConfig {
        RetinaNetConfig {
            model: self.model.clone(),
            anchors: self.anchors.clone(),
            matcher: self.matcher.clone(),
            loss: self.loss.clone(),
            inference: self.inference.clone(),
        }
    }

    /// The TOML text of the whole configuration (what `config.toml` and every checkpoint
    /// hold).
    ///
    /// TOML numbers are f64; an f32 field such as `momentum = 0.9` would be written as
    /// 0.8999999761581421. Floats that are exactly an f32 are therefore written with the
    /// shortest decimal that reads back to the same f32, as long as the whole text still
    /// reads back to exactly this configuration (else the plain form is kept).
    pub fn to_toml(&self) -> String {
        let plain =
            toml::to_string(self).expect("a training configuration always serialises to TOML");
        let Ok(mut table) = toml::Table::try_from(self) else {
            return plain;
        };
        shorten_f32_values(&mut table);
        match toml::to_string(&table) {
            Ok(text) if toml::from_str::<TrainConfig>(&text).ok().as_ref() == Some(self) => text,
            _ => plain,
        }
    }

    /// Parses a complete configuration (as written by [`TrainConfig::to_toml`]) and
    /// validates it.
    pub fn from_toml(text: &str) -> Result<TrainConfig, Error> {
        let c: TrainConfig = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a possibly partial TOML file over `base`: tables are merged key by key, so the
    /// file only names what it changes. Setting `iters` removes the base's `epochs` and
    /// vice versa, and setting `[data.coco]` or `[data.shapes]` removes the other.
    /// Unknown keys are errors. The result is not yet validated.
    pub fn from_toml_over(base: &TrainConfig, text: &str) -> Result<TrainConfig, Error> {
        let overlay: toml::Table = toml::from_str(text)?;
        let mut merged = toml::Table::try_from(base)
            .map_err(|e| Error::config(format!("the base configuration: {e}")))?;
        if overlay.contains_key("iters") {
            merged.remove("epochs");
        }
        if overlay.contains_key("epochs") {
            merged.remove("iters");
        }
        if let (Some(toml::Value::Table(o)), Some(toml::Value::Table(m))) =
            (overlay.get("data"), merged.get_mut("data"))
        {
            if o.contains_key("coco") {
                m.remove("shapes");
            }
            if o.contains_key("shapes") {
                m.remove("coco");
            }
        }
        merge_tables(&mut merged, overlay);
        Ok(toml::Value::Table(merged).try_into()?)
    }

    /// Whether a (possibly partial) TOML text configures a COCO dataset (`[data.coco]`),
    /// which decides the preset it is read over.
    pub fn names_coco_dataset(text: &str) -> bool {
        toml::from_str::<toml::Table>(text).ok().is_some_and(|t| {
            t.get("data")
                .and_then(|d| d.as_table())
                .is_some_and(|d| d.contains_key("coco"))
        })
    }

    /// Checks every value that would otherwise fail deep inside a step; the message names
    /// the field.
    /// The conv algorithm the run uses ([`TrainConfig::conv_algo`]), or a config error
    /// listing the names.
    pub fn parsed_conv_algo(&self) -> Result<focal_engine::ConvAlgo, Error> {
        focal_engine::ConvAlgo::from_name(&self.conv_algo)
            .map_err(|e| Error::config(format!("conv_algo: {e}")))
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.retinanet().validate()?;
        self.check_bounds()?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size must be at least 1"));
        }
        if !(self.checkpoint_every_min.is_finite() && self.checkpoint_every_min >= 0.0) {
            return Err(Error::config(format!(
                "checkpoint_every_min must be ≥ 0 (0: never by time), got {}",
                self.checkpoint_every_min
            )));
        }
        self.parsed_conv_algo()?;
        if self.shards == 0 {
            // More shards than images is fine: a batch is cut into at most one per image.
            return Err(Error::config("shards must be at least 1"));
        }
        match (self.iters, self.epochs) {
            (Some(0), _) | (_, Some(0)) => {
                return Err(Error::config("iters and epochs must be positive"))
            }
            (Some(_), Some(_)) => {
                return Err(Error::config("give either iters or epochs, not both"));
            }
            (None, None) => {
                return Err(Error::config("give the length of the run: iters or epochs"))
            }
            _ => {}
        }
        let d = &self.data;
        if d.min_size == 0
            || d.max_size == 0
            || d.eval_batch_size == 0
            || d.train_min_sizes.contains(&0)
        {
            return Err(Error::config(
                "data: min_size, train_min_sizes, max_size and eval_batch_size must be at least 1",
            ));
        }
        match (&d.shapes, &d.coco) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "data: give either [data.shapes] or [data.coco], not both",
                ))
            }
            (None, None) => {
                return Err(Error::config(
                    "data: give a dataset, [data.shapes] or [data.coco]",
                ))
            }
            (Some(s), None) => {
                if s.train_images == 0 || s.val_images == 0 {
                    return Err(Error::config(
                        "data.shapes: train_images and val_images must be at least 1",
                    ));
                }
                if !(32..=8192).contains(&s.size) {
                    return Err(Error::config(format!(
                        "data.shapes: size {} is out of range (32 to 8192)",
                        s.size
                    )));
                }
            }
            _ => {}
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(Error::config(format!(
                "optimizer: lr must be positive, got {}",
                o.lr
            )));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(Error::config(format!(
                "optimizer: momentum must lie in [0, 1), got {}",
                o.momentum
            )));
        }
        if !o.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return Err(Error::config(format!(
                "optimizer: betas must lie in [0, 1), got {:?}",
                o.betas
            )));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(Error::config(format!(
                "optimizer: weight_decay must be ≥ 0, got {}",
                o.weight_decay
            )));
        }
        if !(o.clip_grad_norm.is_finite() && o.clip_grad_norm >= 0.0) {
            return Err(Error::config(format!(
                "optimizer: clip_grad_norm must be ≥ 0 (0: off), got {}",
                o.clip_grad_norm
            )));
        }
        let s = &self.schedule;
        if !(s.warmup_factor > 0.0 && s.warmup_factor <= 1.0) {
            return Err(Error::config(format!(
                "schedule: warmup_factor must lie in (0, 1], got {}",
                s.warmup_factor
            )));
        }
        if !(s.gamma > 0.0 && s.gamma.is_finite()) {
            return Err(Error::config(format!(
                "schedule: gamma must be positive, got {}",
                s.gamma
            )));
        }
        if !(s.min_lr >= 0.0 && s.min_lr.is_finite()) {
            return Err(Error::config(format!(
                "schedule: min_lr must be ≥ 0, got {}",
                s.min_lr
            )));
        }
        if s.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::config(format!(
                "schedule: steps must be increasing, got {:?}",
                s.steps
            )));
        }
        Ok(())
    }

    /// The upper bounds of every size: image sides, widths, depths, batches (see the
    /// constants); the memory estimate ([`super::memory`]) then judges the whole.
    fn check_bounds(&self) -> Result<(), Error> {
        let d = &self.data;
        let m = &self.model;
        let checks: [(&str, usize, usize); 7] = [
            ("data: min_size", d.min_size, MAX_IMAGE_SIDE),
            ("data: max_size", d.max_size, MAX_IMAGE_SIDE),
            ("model: fpn_channels", m.fpn_channels, MAX_WIDTH),
            ("model: head_width", m.head_width, MAX_WIDTH),
            ("model: head_depth", m.head_depth, MAX_HEAD_DEPTH),
            ("batch_size", self.batch_size, MAX_BATCH),
            ("data: eval_batch_size", d.eval_batch_size, MAX_BATCH),
        ];
        for (name, value, max) in checks {
            if value > max {
                return Err(Error::config(format!(
                    "{name} is {value}, over the largest focal accepts ({max})"
                )));
            }
        }
        if self.shards > MAX_BATCH {
            return Err(Error::config(format!(
                "shards is {}, over the largest focal accepts ({MAX_BATCH})",
                self.shards
            )));
        }
        if let Some(s) = &d.shapes {
            let most = 10_000_000;
            if s.train_images > most || s.val_images > most || s.max_objects > 100 {
                return Err(Error::config(format!(
                    "data.shapes: at most {most} images per split and 100 objects per image"
                )));
            }
        }
        Ok(())
    }

    /// Steps of the whole run, given the batches in one epoch.
    pub fn total_steps(&self, batches_per_epoch: usize) -> u64 {
        match (self.iters, self.epochs) {
            (Some(i), _) => i,
            (None, Some(e)) => e * batches_per_epoch as u64,
            (None, None) => 0,
        }
    }
}

/// Rewrites every float that is exactly an f32 as the f64 nearest to its shortest f32
/// decimal (0.8999999761581421 → 0.9).
fn shorten_f32_values(table: &mut toml::Table) {
    fn fix(v: &mut toml::Value) {
        match v {
            toml::Value::Float(x) => {
                let f = *x as f32;
                if f as f64 == *x && f.is_finite() {
                    if let Ok(short) = f.to_string().parse::<f64>() {
                        *x = short;
                    }
                }
            }
            toml::Value::Array(items) => items.iter_mut().for_each(fix),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| fix(v)),
            _ => {}
        }
    }
    table.iter_mut().for_each(|(_, v)| fix(v));
}

/// Merges `overlay` into `base`: tables recursively, any other value replaced.
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_toml() {
        for c in [
            TrainConfig::shapes(),
            TrainConfig::coco(CocoData::from_root(std::path::Path::new("/data/coco"))),
        ] {
            c.validate().unwrap();
            let text = c.to_toml();
            assert_eq!(TrainConfig::from_toml(&text).unwrap(), c, "{text}");
        }
    }

    #[test]
    fn a_partial_file_changes_only_what_it_names() {
        let base = TrainConfig::shapes();
        let c = TrainConfig::from_toml_over(
            &base,
            "epochs = 3\n[optimizer]\nlr = 0.5\n[model]\nhead_depth = 1\n",
        )
        .unwrap();
        assert_eq!(c.epochs, Some(3));
        assert_eq!(c.iters, None, "epochs replaces the preset's iters");
        assert_eq!(c.optimizer.lr, 0.5);
        assert_eq!(c.optimizer.kind, base.optimizer.kind);
        assert_eq!(c.model.head_depth, 1);
        assert_eq!(c.model.fpn_channels, base.model.fpn_channels);
        c.validate().unwrap();

        let c = TrainConfig::from_toml_over(
            &base,
            "[data.coco]\ntrain_annotations = \"a.json\"\ntrain_images = \"a\"\n\
             val_annotations = \"b.json\"\nval_images = \"b\"\n",
        )
        .unwrap();
        assert!(c.data.shapes.is_none() && c.data.coco.is_some());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_field_named() {
        let base = TrainConfig::shapes();
        let e = TrainConfig::from_toml_over(&base, "[optimizer]\nlearning_rate = 1.0\n")
            .unwrap_err()
            .chain();
        assert!(e.contains("learning_rate"), "{e}");
        let e = TrainConfig::from_toml_over(&base, "[optimizer]\nkind = \"adam\"\n")
            .unwrap_err()
            .chain();
        assert!(e.contains("adam"), "{e}");
        let mut c = base.clone();
        c.optimizer.lr = -1.0;
        assert!(c.validate().unwrap_err().chain().contains("lr"));
        let mut c = base.clone();
        c.epochs = Some(2);
        assert!(c.validate().unwrap_err().chain().contains("not both"));
        let mut c = base;
        c.schedule.steps = vec![10, 5];
        assert!(c.validate().unwrap_err().chain().contains("steps"));
    }
}
