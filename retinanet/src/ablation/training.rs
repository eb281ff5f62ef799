//! The real training of a cell: a [`Trainer`] run of the ablation's base configuration
//! with the cell's γ and α, in the cell's own run folder `OUT/<cell>/`.
//!
//! ## The base configuration
//! [`base_config`] is the synthetic default of `focal train` ([`TrainConfig::shapes`]:
//! ResNet-18 with GroupNorm, FPN and heads 64 wide and 2 deep with GroupNorm, anchors
//! 16–256, AdamW at 4e-3 with warm-up and a cosine decay, batches of 8) with two changes
//! that halve its cost, so that the 17 cells of the default grid fit in about an hour on
//! 2 cores: the 64-px shapes are fed at their own size (the default resizes them to
//! 96 px) with the paper's three anchor ratios (the default keeps one), and each cell runs
//! [`ABLATION_ITERS`] steps. Its training images keep the validation images' 0–6 objects
//! (the default now draws up to 30 per training image), as when the table was measured.
//! This is the setting of the table in docs/ablation-table.md.
//! Only the classification loss's γ and α differ between cells; everything else, the
//! seed included, is the same, so every cell starts from the same initial weights and
//! sees the same batches in the same order.
//!
//! ## Interrupted cells
//! The trainer writes `last.ckpt` every [`CHECKPOINT_EVERY`] steps and on Ctrl-C. When a
//! cell's folder holds a `last.ckpt` of the same configuration, the cell continues from
//! it (exactly: see [`Trainer::resume`]); any other content of the folder (a run of
//! another configuration, a run killed before its first checkpoint) is removed and the
//! cell starts over. A finished cell keeps `best.ckpt` (the model at its final, only,
//! evaluation) and `metrics.jsonl`; its `last.ckpt`, three times larger because of the
//! optimiser's state, is removed.

use std::path::Path;

use super::runner::{CellOutcome, CellTrainer};
use super::setting::Setting;
use crate::error::Error;
use crate::train::{Observer, Outcome, TrainConfig, Trainer};

/// The training budget of one cell of `focal ablate`, in optimiser steps of 8 images.
pub const ABLATION_ITERS: u64 = 500;

/// `last.ckpt` is written this often, so an interrupted cell loses at most this many steps.
pub const CHECKPOINT_EVERY: u64 = 100;

/// The configuration every cell of `focal ablate` starts from (see the module docs).
pub fn base_config() -> TrainConfig {
    let mut c = TrainConfig::shapes();
    // The tables of docs/ablation-table.md were measured with training images of 0–6
    // objects, as the validation images; the shapes default has since drawn more per
    // training image, which would change every cell (and its folder's configuration).
    if let Some(shapes) = c.data.shapes.as_mut() {
        shapes.train_max_objects = None;
    }
    c.data.min_size = 64;
    c.data.max_size = 64;
    c.anchors.ratios = vec![0.5, 1.0, 2.0];
    c.iters = Some(ABLATION_ITERS);
    c.epochs = None;
    c.eval_every = 0;
    c.checkpoint_every = CHECKPOINT_EVERY;
    c
}

/// `base` with the classification loss of `setting` (and its seed, when it has one).
pub fn cell_config(base: &TrainConfig, setting: &Setting) -> TrainConfig {
    let mut c = base.clone();
    c.loss.gamma = setting.gamma;
    c.loss.alpha = Some(setting.alpha);
    if let Some(seed) = setting.seed {
        c.seed = seed;
    }
    c
}

/// The fields that do not change a run's result, set to fixed values: the thread count
/// (results are bitwise the same for any) — so a rerun with another `--threads` still
/// finds its cells done.
fn normalised(config: &TrainConfig) -> TrainConfig {
    let mut c = config.with_absolute_paths();
    c.threads = 0;
    c
}

/// Trains cells with [`Trainer`], reporting each step to `observer` (progress bars and
/// Ctrl-C).
pub struct TrainerCells<'a> {
    pub base: TrainConfig,
    pub observer: &'a mut dyn Observer,
}

impl<'a> TrainerCells<'a> {
    pub fn new(base: TrainConfig, observer: &'a mut dyn Observer) -> TrainerCells<'a> {
        TrainerCells { base, observer }
    }

    /// Whether `dir` holds a checkpointed run of `config` that can be continued.
    fn can_resume(dir: &Path, config: &TrainConfig) -> bool {
        if !dir.join("last.ckpt").is_file() {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(dir.join("config.toml")) else {
            return false;
        };
        let Ok(saved) = TrainConfig::from_toml(&text) else {
            return false;
        };
        // The trainer sets the number of classes from the dataset.
        let mut wanted = normalised(config);
        wanted.model.num_classes = saved.model.num_classes;
        normalised(&saved) == wanted
    }
}

impl CellTrainer for TrainerCells<'_> {
    fn config_text(&self, setting: &Setting) -> String {
        normalised(&cell_config(&self.base, setting)).to_toml()
    }

    fn train(&mut self, setting: &Setting, dir: &Path) -> Result<CellOutcome, Error> {
        let config = cell_config(&self.base, setting);
        let mut trainer = if TrainerCells::can_resume(dir, &config) {
            Trainer::resume(&dir.join("last.ckpt"), Some(dir), Some(config.threads))?
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(|e| Error::io("clear the unfinished cell folder", dir, e))?;
            }
            Trainer::new(config, dir)?
        };
        match trainer.run(self.observer)? {
            Outcome::Stopped { .. } => Ok(CellOutcome::Stopped),
            Outcome::Finished(result) => {
                let last = dir.join("last.ckpt");
                if last.exists() {
                    std::fs::remove_file(&last).map_err(|e| Error::io("remove", &last, e))?;
                }
                Ok(CellOutcome::Finished(result.stats))
            }
        }
    }
}

/// A paragraph saying what every cell trains, for the caption of the tables; `seeds`:
/// the grid's seeds (empty: the base configuration's).
pub fn describe(base: &TrainConfig, seeds: &[u64]) -> String {
    let m = &base.model;
    let data = match (&base.data.shapes, &base.data.coco) {
        (Some(s), _) => {
            let objects = match s.max_object_side {
                Some(side) => format!(", 0–{} objects of 12–{side} px", s.max_objects),
                None => String::new(),
            };
            format!(
                "the synthetic shapes ({} training images of {} px{objects}, dataset seed {})",
                s.train_images, s.size, s.seed
            )
        }
        (None, Some(c)) => format!("COCO annotations {}", c.train_annotations.display()),
        (None, None) => "no dataset".into(),
    };
    let val = match &base.data.shapes {
        Some(s) => format!("the {} images of the validation split", s.val_images),
        None => "the validation set".into(),
    };
    let length = match (base.iters, base.epochs) {
        (Some(i), _) => format!("{i} steps"),
        (None, Some(e)) => format!("{e} epochs"),
        (None, None) => "?".into(),
    };
    let sizes: Vec<String> = base.anchors.sizes.iter().map(|s| s.to_string()).collect();
    let seed = if seeds.is_empty() {
        format!("seed {}", base.seed)
    } else {
        let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
        format!("each of the seeds {}", list.join(", "))
    };
    let evals = if base.eval_every > 0 {
        format!(
            ", evaluated every {} steps and at the end (the AP reported is the last)",
            base.eval_every
        )
    } else {
        String::new()
    };
    let anchors = base.anchors.anchors_per_cell();
    let norm = match m.norm {
        crate::config::BackboneNorm::GroupNorm => "GroupNorm",
        crate::config::BackboneNorm::BatchNorm => "BatchNorm",
        crate::config::BackboneNorm::FrozenBatchNorm => "frozen BatchNorm",
    };
    let decay = match base.schedule.decay {
        crate::train::DecayKind::Constant => "constant",
        crate::train::DecayKind::MultiStep => "multi-step",
        crate::train::DecayKind::Cosine => "cosine",
    };
    format!(
        "Every cell trains the same RetinaNet ({}, {}; FPN {} wide; heads {} wide, {} \
         deep; {anchors} anchors per location, {} px; images resized to {}/{} px) from {seed} \
         for {length} of {} images on {data}, with {} at lr {} ({} decay, {} warm-up steps), \
         and is evaluated on {val}{evals}. Only the classification loss differs: \
         α_t·(1 − p_t)^γ·CE with the cell's γ and α.",
        m.depth.name(),
        norm,
        m.fpn_channels,
        m.head_width,
        m.head_depth,
        sizes.join("/"),
        base.data.min_size,
        base.data.max_size,
        base.batch_size,
        base.optimizer.kind.name(),
        base.optimizer.lr,
        decay,
        base.schedule.warmup_iters,
    )
}
