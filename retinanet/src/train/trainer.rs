//! The training loop and its run folder.
//!
//! One step (spec rows 16–20):
//!
//! ```text
//!   batch from the loader → forward → targets → focal loss + box loss (÷ positives)
//!   → stop if the loss is NaN/∞ → backward → clip the gradient norm → optimiser step
//!   with the scheduled learning rate
//! ```
//!
//! A run folder holds:
//!
//! | file           | content                                                          |
//! |----------------|------------------------------------------------------------------|
//! | `config.toml`  | the full, resolved [`TrainConfig`]                               |
//! | `metrics.jsonl`| one JSON object per step, and one per evaluation                 |
//! | `last.ckpt`    | model, optimiser, step, epoch, RNG, configuration, class names   |
//! | `best.ckpt`    | the model of the evaluation with the best AP                     |
//! | `metrics.json` | the final 12 COCO numbers under AP, AP50, ..., ARl               |
//!
//! Every file is written atomically; `metrics.jsonl` is rewritten whole (every few steps
//! and at each checkpoint), so it is never seen half-written either.
//!
//! **Resuming** ([`Trainer::resume`]) restores the model, the optimiser's state, the step,
//! the epoch, the RNG state and the position within the epoch, drops the rows of
//! `metrics.jsonl` written after the checkpoint, and skips the batches of the current epoch
//! already done. Because the loader's order and flips depend only on (seed, epoch, image)
//! and every kernel is deterministic, the continued run writes exactly the losses an
//! uninterrupted run would have written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use focal_data::{
    CocoDataset, Dataset, EvalResult, Loader, LoaderConfig, ShapesConfig, ShapesDataset, Split,
};
use focal_engine::{backward, Rng};

use super::data_parallel::sharded_pass;
use focal_nn::{
    clip_grad_norm, AdamW, Checkpoint, CheckpointError, ImportReport, Optimizer, Schedule, Sgd,
    TrainState,
};
use serde::{Deserialize, Serialize};

use super::config::{OptimizerKind, TrainConfig};
use super::evaluate::{evaluate, Evaluation};
use crate::model::RetinaNet;
use crate::targets::GroundTruth;

/// A training error: a sentence naming the file, field or step.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainError(pub String);

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrainError {}

impl From<String> for TrainError {
    fn from(s: String) -> Self {
        TrainError(s)
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError(e.to_string())
    }
}

impl From<focal_data::Error> for TrainError {
    fn from(e: focal_data::Error) -> Self {
        TrainError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// One category of the training set: the model's label k is `categories[k]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassName {
    pub id: i64,
    pub name: String,
}

/// What a checkpoint carries besides the model and optimiser (as JSON in its metadata).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// The classes in label order, with their COCO category ids.
    pub categories: Vec<ClassName>,
    /// Batches of the current epoch already trained on.
    pub batch_in_epoch: u64,
    /// The best AP of the evaluations so far, and its step.
    pub best_ap: Option<f64>,
    pub best_step: Option<u64>,
}

/// One row of `metrics.jsonl` for a training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed (1 for the first step).
    pub step: u64,
    /// The epoch the batch belongs to (0-based).
    pub epoch: u64,
    /// cls_loss + box_loss.
    pub loss: f32,
    pub cls_loss: f32,
    pub box_loss: f32,
    /// The learning rate of this step.
    pub lr: f32,
    /// Positive anchors in the batch (the losses' normaliser).
    pub num_pos: usize,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f32,
    /// Images of this step per second of wall time (loading included).
    pub images_per_s: f64,
}

/// One row of `metrics.jsonl` for an evaluation: the 12 COCO numbers by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: u64,
    #[serde(rename = "AP")]
    pub ap: f64,
    #[serde(rename = "AP50")]
    pub ap50: f64,
    #[serde(rename = "AP75")]
    pub ap75: f64,
    #[serde(rename = "APs")]
    pub ap_s: f64,
    #[serde(rename = "APm")]
    pub ap_m: f64,
    #[serde(rename = "APl")]
    pub ap_l: f64,
    #[serde(rename = "AR1")]
    pub ar1: f64,
    #[serde(rename = "AR10")]
    pub ar10: f64,
    #[serde(rename = "AR100")]
    pub ar100: f64,
    #[serde(rename = "ARs")]
    pub ar_s: f64,
    #[serde(rename = "ARm")]
    pub ar_m: f64,
    #[serde(rename = "ARl")]
    pub ar_l: f64,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

impl EvalRecord {
    pub fn new(step: u64, epoch: u64, r: &EvalResult, seconds: f64) -> EvalRecord {
        let s = r.stats;
        EvalRecord {
            step,
            epoch,
            ap: s[0],
            ap50: s[1],
            ap75: s[2],
            ap_s: s[3],
            ap_m: s[4],
            ap_l: s[5],
            ar1: s[6],
            ar10: s[7],
            ar100: s[8],
            ar_s: s[9],
            ar_m: s[10],
            ar_l: s[11],
            seconds,
        }
    }

    /// The 12 numbers in pycocotools' order.
    pub fn stats(&self) -> [f64; 12] {
        [
            self.ap, self.ap50, self.ap75, self.ap_s, self.ap_m, self.ap_l, self.ar1, self.ar10,
            self.ar100, self.ar_s, self.ar_m, self.ar_l,
        ]
    }
}

/// A row of `metrics.jsonl`: `{"kind": "step", ...}` or `{"kind": "eval", ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricRow {
    Step(StepRecord),
    Eval(EvalRecord),
}

impl MetricRow {
    pub fn step(&self) -> u64 {
        match self {
            MetricRow::Step(r) => r.step,
            MetricRow::Eval(r) => r.step,
        }
    }
}

/// What the loop tells the outside world (progress bars, plots) and asks of it (whether
/// to stop). Every method has a do-nothing default.
pub trait Observer {
    /// Before the first step of this invocation.
    fn on_start(&mut self, _trainer: &Trainer) {}
    fn on_step(&mut self, _record: &StepRecord, _trainer: &Trainer) {}
    /// An evaluation begins; `images` is the size of the validation set.
    fn on_eval_start(&mut self, _step: u64, _images: usize) {}
    /// Called after each evaluation batch.
    fn on_eval_progress(&mut self, _done: usize, _total: usize) {}
    fn on_eval(&mut self, _record: &EvalRecord, _result: &EvalResult, _trainer: &Trainer) {}
    /// A file was written in the run folder (checkpoint or metrics).
    fn on_saved(&mut self, _path: &Path) {}
    /// Checked after every step: `true` finishes the step, writes `last.ckpt` and stops
    /// (Ctrl-C).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct Silent;
impl Observer for Silent {}

/// How [`Trainer::run`] ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The run reached its last step; the final evaluation.
    Finished(EvalResult),
    /// Stopped early (observer or `stop_after`) after `step` steps, with `last.ckpt` saved.
    Stopped { step: u64 },
}

/// Rewrite `metrics.jsonl` at least every this many steps.
const METRICS_FLUSH_STEPS: u64 = 20;

/// The datasets of a configuration: (train, val).
pub fn open_datasets(config: &TrainConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let d = &config.data;
    match (&d.shapes, &d.coco) {
        (Some(s), _) => {
            let make = |split, images, max_objects| -> Result<Arc<dyn Dataset>> {
                Ok(Arc::new(ShapesDataset::new(ShapesConfig {
                    size: s.size,
                    max_objects,
                    ..ShapesConfig::new(split, images, s.seed)
                })?))
            };
            let train_max = s.train_max_objects.unwrap_or(s.max_objects);
            Ok((
                make(Split::Train, s.train_images, train_max)?,
                make(Split::Val, s.val_images, s.max_objects)?,
            ))
        }
        (None, Some(c)) => {
            let train = CocoDataset::open(&c.train_annotations, &c.train_images)?;
            let val = CocoDataset::open(&c.val_annotations, &c.val_images)?;
            Ok((Arc::new(train), Arc::new(val)))
        }
        (None, None) => Err(TrainError("data: no dataset configured".into())),
    }
}

/// The class names of a dataset, in label order.
pub fn class_names(dataset: &dyn Dataset) -> Vec<ClassName> {
    dataset
        .categories()
        .iter()
        .map(|c| ClassName {
            id: c.id,
            name: c.name.clone(),
        })
        .collect()
}

/// The optimiser a configuration asks for.
pub fn build_optimizer(config: &TrainConfig) -> Box<dyn Optimizer + Send> {
    let o = &config.optimizer;
    match o.kind {
        OptimizerKind::Sgd => Box::new(
            Sgd::new(o.momentum, o.weight_decay).decay_norm_and_bias(o.decay_norm_and_bias),
        ),
        OptimizerKind::AdamW => Box::new(
            AdamW::new(o.weight_decay)
                .betas(o.betas[0], o.betas[1])
                .decay_norm_and_bias(o.decay_norm_and_bias),
        ),
    }
}

/// A model rebuilt from a checkpoint written by the trainer, with its configuration and
/// metadata (class names). For `focal eval` and `focal detect`.
pub struct TrainedModel {
    pub model: RetinaNet,
    pub config: TrainConfig,
    pub metadata: RunMetadata,
    pub step: u64,
}

/// Reads a trainer checkpoint and rebuilds its model in evaluation mode.
pub fn load_trained_model(path: &Path) -> Result<TrainedModel> {
    let ckpt = Checkpoint::read(path)?;
    let (config, metadata) = parse_checkpoint(&ckpt, path)?;
    let mut model = RetinaNet::new(&config.retinanet(), &mut Rng::new(config.seed))
        .map_err(|e| ckpt_error(path, e))?;
    ckpt.restore_model(&mut model)
        .map_err(|e| ckpt_error(path, e))?;
    model.set_train(false);
    Ok(TrainedModel {
        model,
        config,
        metadata,
        step: ckpt.step,
    })
}

fn ckpt_error(path: &Path, message: impl Into<String>) -> TrainError {
    CheckpointError::new(path, message).into()
}

/// The configuration and metadata of a trainer checkpoint, checked against each other.
fn parse_checkpoint(ckpt: &Checkpoint, path: &Path) -> Result<(TrainConfig, RunMetadata)> {
    let config = TrainConfig::from_toml(&ckpt.config).map_err(|e| {
        ckpt_error(
            path,
            format!("its configuration is not a focal training configuration ({e})"),
        )
    })?;
    let metadata: RunMetadata = serde_json::from_str(&ckpt.metadata).map_err(|e| {
        ckpt_error(
            path,
            format!("its metadata is not a focal training record ({e})"),
        )
    })?;
    if metadata.categories.len() != config.model.num_classes {
        return Err(ckpt_error(
            path,
            format!(
                "it names {} classes but its model has {}",
                metadata.categories.len(),
                config.model.num_classes
            ),
        ));
    }
    Ok((config, metadata))
}

/// A training run: model, optimiser, schedule, data and run folder.
pub struct Trainer {
    config: TrainConfig,
    pub model: RetinaNet,
    optimizer: Box<dyn Optimizer + Send>,
    schedule: Schedule,
    train_loader: Loader,
    val: Arc<dyn Dataset>,
    categories: Vec<ClassName>,
    rng: Rng,
    /// Steps completed.
    step: u64,
    /// The current epoch and the batches of it already done.
    epoch: u64,
    batch_in_epoch: u64,
    total_steps: u64,
    best: Option<(f64, u64)>,
    run_dir: PathBuf,
    history: Vec<MetricRow>,
    /// Stop after this many steps of this invocation (writing `last.ckpt`).
    stop_after: Option<u64>,
    metrics_flushed_at: u64,
}

impl Trainer {
    /// A fresh run writing into `run_dir` (created if needed). Refuses a folder that
    /// already holds a run (`metrics.jsonl` or `last.ckpt`): resume it instead.
    ///
    /// The model's number of classes is taken from the training set.
    pub fn new(mut config: TrainConfig, run_dir: &Path) -> Result<Trainer> {
        for f in ["metrics.jsonl", "last.ckpt"] {
            if run_dir.join(f).exists() {
                return Err(TrainError(format!(
                    "{} already holds a run ({f}); continue it with --resume {}, or choose \
                     another output folder",
                    run_dir.display(),
                    run_dir.join("last.ckpt").display()
                )));
            }
        }
        let (train, val) = open_datasets(&config)?;
        config.model.num_classes = train.num_classes();
        config.validate()?;
        check_same_categories(&*train, &*val)?;
        let mut rng = Rng::new(config.seed);
        let model = RetinaNet::new(&config.retinanet(), &mut rng)?;
        let categories = class_names(&*train);
        let trainer = Trainer::assemble(config, model, rng, train, val, categories, run_dir)?;
        std::fs::create_dir_all(run_dir).map_err(|e| {
            TrainError(format!(
                "cannot create the run folder {}: {e}",
                run_dir.display()
            ))
        })?;
        write_file(
            &run_dir.join("config.toml"),
            trainer.config.to_toml().as_bytes(),
        )?;
        Ok(trainer)
    }

    /// Continues the run saved in `checkpoint` (normally `RUN/last.ckpt`), writing into
    /// `run_dir` (default: the checkpoint's folder). `threads` replaces the saved thread
    /// count (results do not depend on it).
    pub fn resume(
        checkpoint: &Path,
        run_dir: Option<&Path>,
        threads: Option<usize>,
    ) -> Result<Trainer> {
        let ckpt = Checkpoint::read(checkpoint)?;
        let (mut config, metadata) = parse_checkpoint(&ckpt, checkpoint)?;
        if ckpt.optimizer.is_none() {
            return Err(ckpt_error(
                checkpoint,
                "it holds no optimiser state (best.ckpt keeps only the model); resume from \
                 last.ckpt",
            ));
        }
        if let Some(t) = threads {
            config.threads = t;
        }
        let (train, val) = open_datasets(&config)?;
        let categories = class_names(&*train);
        if categories != metadata.categories {
            return Err(ckpt_error(
                checkpoint,
                format!(
                    "it was trained on other classes than the dataset now holds ({})",
                    train.describe()
                ),
            ));
        }
        let mut rng = Rng::new(config.seed);
        let mut model = RetinaNet::new(&config.retinanet(), &mut rng)?;
        ckpt.restore_model(&mut model)
            .map_err(|e| ckpt_error(checkpoint, e))?;
        let run_dir = match run_dir {
            Some(d) => d.to_path_buf(),
            None => checkpoint
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let mut trainer = Trainer::assemble(
            config,
            model,
            Rng::from_state(ckpt.rng_state),
            train,
            val,
            categories,
            &run_dir,
        )?;
        ckpt.restore_optimizer(&mut trainer.model, trainer.optimizer.as_mut())
            .map_err(|e| ckpt_error(checkpoint, e))?;
        trainer.step = ckpt.step;
        trainer.epoch = ckpt.epoch;
        trainer.batch_in_epoch = metadata.batch_in_epoch;
        trainer.best = metadata.best_ap.zip(metadata.best_step);
        trainer.metrics_flushed_at = trainer.step;
        // Keep the rows written up to the checkpoint, drop the later ones.
        let metrics = run_dir.join("metrics.jsonl");
        if metrics.exists() {
            let text = std::fs::read_to_string(&metrics)
                .map_err(|e| TrainError(format!("cannot read {}: {e}", metrics.display())))?;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let row: MetricRow = serde_json::from_str(line).map_err(|e| {
                    TrainError(format!("{} line {}: {e}", metrics.display(), i + 1))
                })?;
                if row.step() <= trainer.step {
                    trainer.history.push(row);
                }
            }
        }
        std::fs::create_dir_all(&run_dir).map_err(|e| {
            TrainError(format!(
                "cannot create the run folder {}: {e}",
                run_dir.display()
            ))
        })?;
        write_file(
            &run_dir.join("config.toml"),
            trainer.config.to_toml().as_bytes(),
        )?;
        trainer.write_metrics()?;
        Ok(trainer)
    }

    fn assemble(
        config: TrainConfig,
        model: RetinaNet,
        rng: Rng,
        train: Arc<dyn Dataset>,
        val: Arc<dyn Dataset>,
        categories: Vec<ClassName>,
        run_dir: &Path,
    ) -> Result<Trainer> {
        let d = &config.data;
        let mut loader_config =
            LoaderConfig::train(config.batch_size, d.min_size, d.max_size, config.seed);
        loader_config.flip = d.flip;
        let train_loader = Loader::new(train, loader_config)?;
        let total_steps = config.total_steps(train_loader.batches_per_epoch());
        if total_steps == 0 {
            return Err(TrainError(
                "the run has no steps (empty training set?)".into(),
            ));
        }
        let schedule = config.lr_schedule(total_steps);
        let optimizer = build_optimizer(&config);
        Ok(Trainer {
            config,
            model,
            optimizer,
            schedule,
            train_loader,
            val,
            categories,
            rng,
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            total_steps,
            best: None,
            run_dir: run_dir.to_path_buf(),
            history: Vec::new(),
            stop_after: None,
            metrics_flushed_at: 0,
        })
    }

    /// Loads weights (torchvision's RetinaNet, or an ImageNet ResNet) into the model
    /// before training; see [`crate::train::init_from_safetensors`].
    pub fn init_from(&mut self, path: &Path) -> Result<ImportReport> {
        super::init::init_from_safetensors(&mut self.model, path).map_err(TrainError)
    }

    /// Stop after `n` more steps (writing `last.ckpt`), e.g. to split a run in parts.
    pub fn stop_after(&mut self, n: u64) {
        self.stop_after = Some(n);
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.train_loader.batches_per_epoch()
    }

    pub fn categories(&self) -> &[ClassName] {
        &self.categories
    }

    pub fn validation_set(&self) -> &Arc<dyn Dataset> {
        &self.val
    }

    pub fn train_set(&self) -> &Arc<dyn Dataset> {
        self.train_loader.dataset()
    }

    /// Every row of `metrics.jsonl` so far (including those of earlier invocations).
    pub fn history(&self) -> &[MetricRow] {
        &self.history
    }

    /// The best AP of the evaluations so far, with its step.
    pub fn best(&self) -> Option<(f64, u64)> {
        self.best
    }

    /// Trains to the end (or until the observer asks to stop), evaluating every
    /// `eval_every` steps and at the end.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Outcome> {
        observer.on_start(self);
        let first_step = self.step;
        let mut last_eval: Option<EvalResult> = None;
        'epochs: while self.step < self.total_steps {
            let mut batches = self.train_loader.epoch(self.epoch);
            // Skip the batches of this epoch that a resumed run already trained on.
            for _ in 0..self.batch_in_epoch {
                match batches.next() {
                    Some(b) => {
                        b?;
                    }
                    None => break,
                }
            }
            let mut step_started = Instant::now();
            for batch in batches.by_ref() {
                let batch = batch?;
                let record = self.train_step(&batch, step_started)?;
                self.history.push(MetricRow::Step(record.clone()));
                observer.on_step(&record, self);
                last_eval = None;

                let every = |n: u64, step: u64| n > 0 && step.is_multiple_of(n);
                let at_end = self.step == self.total_steps;
                if every(self.config.eval_every, self.step) && !at_end {
                    last_eval = Some(self.evaluate_and_record(observer)?);
                    self.save_last(observer)?;
                } else if every(self.config.checkpoint_every, self.step) && !at_end {
                    self.save_last(observer)?;
                } else if self.step - self.metrics_flushed_at >= METRICS_FLUSH_STEPS {
                    self.write_metrics()?;
                }
                let stop_requested = observer.should_stop()
                    || self.stop_after.is_some_and(|n| self.step - first_step >= n);
                if stop_requested && !at_end {
                    self.save_last(observer)?;
                    return Ok(Outcome::Stopped { step: self.step });
                }
                if at_end {
                    break 'epochs;
                }
                step_started = Instant::now();
            }
            self.epoch += 1;
            self.batch_in_epoch = 0;
        }
        let result = match last_eval {
            Some(r) => r,
            None => self.evaluate_and_record(observer)?,
        };
        self.save_last(observer)?;
        let mut json = String::from("{\n");
        for (i, (name, v)) in result.named_stats().iter().enumerate() {
            let sep = if i + 1 < 12 { "," } else { "" };
            json.push_str(&format!("  \"{name}\": {}{sep}\n", json_f64(*v)));
        }
        json.push_str("}\n");
        let path = self.run_dir.join("metrics.json");
        write_file(&path, json.as_bytes())?;
        observer.on_saved(&path);
        Ok(Outcome::Finished(result))
    }

    /// One optimiser step on `batch`.
    fn train_step(&mut self, batch: &focal_data::Batch, started: Instant) -> Result<StepRecord> {
        let ground_truth: Vec<GroundTruth> = batch
            .targets
            .iter()
            .map(|t| GroundTruth {
                boxes: t.boxes.clone(),
                labels: t.labels.clone(),
            })
            .collect();
        let lr = self.schedule.lr_at(self.step);
        // Forward, loss and backward: in one pass, or cut into shards run concurrently.
        let shards = self.config.shards.min(batch.len());
        let (cls, boxl, loss, num_positive, grads) = if shards <= 1 {
            let losses = self.model.training_loss(&batch.images, &ground_truth)?;
            let total = losses.total();
            let (cls, boxl, loss) = (
                losses.classification.item(),
                losses.box_regression.item(),
                total.item(),
            );
            let grads = if loss.is_finite() {
                Some(backward(&total))
            } else {
                focal_engine::clear_tape();
                None
            };
            (cls, boxl, loss, losses.num_positive, grads)
        } else {
            let pass = sharded_pass(&mut self.model, &batch.images, &ground_truth, shards)?;
            let loss = pass.loss();
            let grads = loss.is_finite().then_some(pass.grads);
            (
                pass.classification,
                pass.box_regression,
                loss,
                pass.num_positive,
                grads,
            )
        };
        let step_number = self.step + 1;
        let Some(mut grads) = grads else {
            let last = self.run_dir.join("last.ckpt");
            let kept = if last.exists() {
                format!("the last good checkpoint {} is intact", last.display())
            } else {
                "no checkpoint had been written yet".to_string()
            };
            let _ = self.write_metrics();
            return Err(TrainError(format!(
                "the loss is not finite at step {step_number} (epoch {}): classification \
                 {cls}, box {boxl}; training stopped and {kept}. Try a lower learning rate \
                 (--lr), a longer warm-up or gradient clipping (--clip-grad-norm).",
                self.epoch + 1
            )));
        };
        let clip = self.config.optimizer.clip_grad_norm;
        let grad_norm = if clip > 0.0 {
            clip_grad_norm(&mut self.model, &mut grads, clip)
        } else {
            focal_nn::grad_norm(&mut self.model, &grads)
        };
        self.optimizer.step(&mut self.model, &grads, lr);
        drop(grads);
        self.step = step_number;
        self.batch_in_epoch += 1;
        let seconds = started.elapsed().as_secs_f64();
        Ok(StepRecord {
            step: self.step,
            epoch: self.epoch,
            loss,
            cls_loss: cls,
            box_loss: boxl,
            lr,
            num_pos: num_positive,
            grad_norm,
            images_per_s: batch.len() as f64 / seconds.max(1e-9),
        })
    }

    /// Evaluates the model on the validation set now.
    pub fn evaluate(&mut self, observer: &mut dyn Observer) -> Result<Evaluation> {
        observer.on_eval_start(self.step, self.val.len());
        let ids: Vec<i64> = self.categories.iter().map(|c| c.id).collect();
        let d = &self.config.data;
        let (min_size, max_size, bs) = (d.min_size, d.max_size, d.eval_batch_size);
        let eval = evaluate(
            &mut self.model,
            &self.val,
            &ids,
            min_size,
            max_size,
            bs,
            &mut |done, total| observer.on_eval_progress(done, total),
        )?;
        Ok(eval)
    }

    fn evaluate_and_record(&mut self, observer: &mut dyn Observer) -> Result<EvalResult> {
        let eval = self.evaluate(observer)?;
        let record = EvalRecord::new(self.step, self.epoch, &eval.result, eval.seconds);
        self.history.push(MetricRow::Eval(record.clone()));
        let ap = eval.result.stats[0];
        if self.best.is_none_or(|(best, _)| ap > best) {
            self.best = Some((ap, self.step));
            let path = self.run_dir.join("best.ckpt");
            self.checkpoint(false).save(&path)?;
            observer.on_saved(&path);
        }
        observer.on_eval(&record, &eval.result, self);
        self.write_metrics()?;
        Ok(eval.result)
    }

    /// The run's state as a checkpoint (with the optimiser when `with_optimizer`).
    pub fn checkpoint(&mut self, with_optimizer: bool) -> Checkpoint {
        let metadata = RunMetadata {
            categories: self.categories.clone(),
            batch_in_epoch: self.batch_in_epoch,
            best_ap: self.best.map(|b| b.0),
            best_step: self.best.map(|b| b.1),
        };
        let state = TrainState {
            step: self.step,
            epoch: self.epoch,
            rng_state: self.rng.state(),
            metadata: serde_json::to_string(&metadata).expect("metadata serialises"),
        };
        let optimizer: Option<&dyn Optimizer> = if with_optimizer {
            Some(self.optimizer.as_ref())
        } else {
            None
        };
        Checkpoint::capture(&mut self.model, optimizer, &state, &self.config.to_toml())
    }

    /// Writes `metrics.jsonl` and then `last.ckpt` (both atomically).
    pub fn save_last(&mut self, observer: &mut dyn Observer) -> Result<()> {
        self.write_metrics()?;
        let path = self.run_dir.join("last.ckpt");
        self.checkpoint(true).save(&path)?;
        observer.on_saved(&path);
        Ok(())
    }

    /// Rewrites `metrics.jsonl` from the rows in memory, atomically.
    fn write_metrics(&mut self) -> Result<()> {
        let mut text = Vec::with_capacity(200 * self.history.len());
        for row in &self.history {
            serde_json::to_writer(&mut text, row).expect("metric rows serialise");
            text.write_all(b"\n").expect("writing to memory");
        }
        write_file(&self.run_dir.join("metrics.jsonl"), &text)?;
        self.metrics_flushed_at = self.step;
        Ok(())
    }
}

/// A JSON number, or `null` for a non-finite value.
fn json_f64(v: f64) -> String {
    if v.is_finite() {
        serde_json::to_string(&v).expect("finite numbers serialise")
    } else {
        "null".into()
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    focal_engine::write_atomic(path, bytes)
        .map_err(|e| TrainError(format!("cannot write {}: {e}", path.display())))
}

fn check_same_categories(train: &dyn Dataset, val: &dyn Dataset) -> Result<()> {
    if class_names(train) != class_names(val) {
        return Err(TrainError(format!(
            "the training and validation sets have different categories ({} vs {})",
            train.describe(),
            val.describe()
        )));
    }
    Ok(())
}
