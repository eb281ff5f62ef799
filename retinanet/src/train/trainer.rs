//! The training loop: a [`Trainer`] owns the model, the optimiser, the schedule, the data
//! and the [`RunFolder`], and runs [`optimizer_step`] over the loader's batches, evaluating
//! and writing checkpoints on the way.
//!
//! ```text
//!   for each epoch, for each batch:  optimizer_step (step.rs)  →  a row of metrics.jsonl
//!       every eval_every steps:       evaluate → best.ckpt if the AP improved, last.ckpt
//!       every checkpoint_every steps: last.ckpt
//!   at the end: evaluate, last.ckpt, metrics.json
//! ```
//!
//! **Resuming** ([`Trainer::resume`]) restores the model, the optimiser's state, the step,
//! the epoch, the RNG state and the position within the epoch, drops the rows of
//! `metrics.jsonl` written after the checkpoint, and skips the batches of the current epoch
//! already done. Because the loader's order and flips depend only on (seed, epoch, image)
//! and every kernel is deterministic, the continued run writes exactly the losses an
//! uninterrupted run would have written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use focal_data::{Batch, Dataset, EvalResult, Loader};
use focal_engine::Rng;
use focal_nn::{Checkpoint, Optimizer, Schedule, TrainState};

use super::builders::{
    build_optimizer, build_schedule, build_train_loader, check_same_categories, class_names,
    open_datasets,
};
use super::checkpoint::{ckpt_error, read_checkpoint, rebuild_model};
use super::config::TrainConfig;
use super::evaluate::{evaluate, Evaluation};
use super::init::InitReport;
use super::observer::Observer;
use super::records::{ClassName, EvalRecord, MetricRow, RunMetadata, StepRecord};
use super::run_folder::RunFolder;
use super::step::{optimizer_step, StepOutcome};
use crate::error::{Error, Result};
use crate::model::RetinaNet;

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
    folder: RunFolder,
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
        let folder = RunFolder::fresh(run_dir)?;
        let (train, val) = open_datasets(&config)?;
        config.model.num_classes = train.num_classes();
        config.validate()?;
        check_same_categories(&*train, &*val)?;
        let mut rng = Rng::new(config.seed);
        let model = RetinaNet::new(&config.retinanet(), &mut rng)?;
        let categories = class_names(&*train);
        let trainer = Trainer::assemble(config, model, rng, train, val, categories, folder)?;
        trainer.folder.start(&trainer.config)?;
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
        let (ckpt, mut config, metadata) = read_checkpoint(checkpoint)?;
        if ckpt.optimizer.is_none() {
            return Err(ckpt_error(
                checkpoint,
                Error::invalid(
                    "it holds no optimiser state (best.ckpt keeps only the model); resume \
                     from last.ckpt",
                ),
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
                Error::invalid(format!(
                    "it was trained on other classes than the dataset now holds ({})",
                    train.describe()
                )),
            ));
        }
        let model = rebuild_model(&ckpt, &config, checkpoint)?;
        let run_dir = match run_dir {
            Some(d) => d.to_path_buf(),
            None => checkpoint
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let folder = RunFolder::new(&run_dir);
        let mut trainer = Trainer::assemble(
            config,
            model,
            Rng::from_state(ckpt.rng_state),
            train,
            val,
            categories,
            folder,
        )?;
        ckpt.restore_optimizer(&mut trainer.model, trainer.optimizer.as_mut())
            .map_err(|e| ckpt_error(checkpoint, e))?;
        trainer.step = ckpt.step;
        trainer.epoch = ckpt.epoch;
        trainer.batch_in_epoch = metadata.batch_in_epoch;
        trainer.best = metadata.best_ap.zip(metadata.best_step);
        // Keep the rows written up to the checkpoint, drop the later ones.
        trainer.history = trainer.folder.read_metrics_until(trainer.step)?;
        trainer.folder.start(&trainer.config)?;
        trainer.write_metrics()?;
        Ok(trainer)
    }

    /// The parts every run has, fresh or resumed, built from `config` (step 0).
    fn assemble(
        config: TrainConfig,
        model: RetinaNet,
        rng: Rng,
        train: Arc<dyn Dataset>,
        val: Arc<dyn Dataset>,
        categories: Vec<ClassName>,
        folder: RunFolder,
    ) -> Result<Trainer> {
        let train_loader = build_train_loader(&config, train)?;
        let total_steps = config.total_steps(train_loader.batches_per_epoch());
        if total_steps == 0 {
            return Err(Error::invalid("the run has no steps (empty training set?)"));
        }
        let schedule = build_schedule(&config, total_steps);
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
            folder,
            history: Vec::new(),
            stop_after: None,
            metrics_flushed_at: 0,
        })
    }

    /// Loads weights (torchvision's RetinaNet, a focal export, or an ImageNet ResNet) into
    /// the model before training, matching the class output to the dataset's classes; see
    /// [`crate::train::init_from_safetensors`].
    pub fn init_from(&mut self, path: &Path) -> Result<InitReport> {
        super::init::init_from_safetensors(&mut self.model, path, &self.categories)
    }

    /// Stop after `n` more steps (writing `last.ckpt`), e.g. to split a run in parts.
    pub fn stop_after(&mut self, n: u64) {
        self.stop_after = Some(n);
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn run_dir(&self) -> &Path {
        self.folder.dir()
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
        let path = self.folder.write_final_metrics(&result)?;
        observer.on_saved(&path);
        Ok(Outcome::Finished(result))
    }

    /// One optimiser step on `batch` ([`optimizer_step`]) at the scheduled rate, and its
    /// row of `metrics.jsonl`.
    fn train_step(&mut self, batch: &Batch, started: Instant) -> Result<StepRecord> {
        let lr = self.schedule.lr_at(self.step);
        let outcome = optimizer_step(
            &mut self.model,
            self.optimizer.as_mut(),
            batch,
            lr,
            self.config.shards,
            self.config.optimizer.clip_grad_norm,
        )?;
        let r = match outcome {
            StepOutcome::Updated(r) => r,
            StepOutcome::NonFinite {
                classification,
                box_regression,
            } => {
                let last = self.folder.last_checkpoint();
                let kept = if last.exists() {
                    format!("the last good checkpoint {} is intact", last.display())
                } else {
                    "no checkpoint had been written yet".to_string()
                };
                let _ = self.write_metrics();
                return Err(Error::NonFiniteLoss {
                    step: self.step + 1,
                    epoch: self.epoch + 1,
                    classification,
                    box_regression,
                    kept,
                });
            }
        };
        self.step += 1;
        self.batch_in_epoch += 1;
        let seconds = started.elapsed().as_secs_f64();
        Ok(StepRecord {
            step: self.step,
            epoch: self.epoch,
            loss: r.loss,
            cls_loss: r.classification,
            box_loss: r.box_regression,
            lr,
            num_pos: r.num_positive,
            grad_norm: r.grad_norm,
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
        let ap = eval.result.stats.ap;
        if self.best.is_none_or(|(best, _)| ap > best) {
            self.best = Some((ap, self.step));
            let path = self.folder.best_checkpoint();
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
        let path = self.folder.last_checkpoint();
        self.checkpoint(true).save(&path)?;
        observer.on_saved(&path);
        Ok(())
    }

    /// Rewrites `metrics.jsonl` from the rows in memory.
    fn write_metrics(&mut self) -> Result<()> {
        self.folder.write_metrics(&self.history)?;
        self.metrics_flushed_at = self.step;
        Ok(())
    }
}
