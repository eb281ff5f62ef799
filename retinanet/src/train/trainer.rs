//! The training loop: a [`Trainer`] owns the model, the optimiser, the schedule, the data
//! and the [`RunFolder`], and runs [`optimizer_step`] over the loader's batches, evaluating
//! and writing checkpoints on the way.
//!
//! ```text
//!   before step 1: the memory estimate, the run folder's lock, every image checked
//!   for each epoch, for each batch:  optimizer_step (step.rs)  →  a row of metrics.jsonl
//!       every eval_every steps:       evaluate → last.ckpt, then best.ckpt if the AP improved
//!       every checkpoint_every steps,
//!       and checkpoint_every_min minutes after the last save: last.ckpt
//!   at the end: evaluate, last.ckpt, metrics.json
//! ```
//!
//! **Stopping.** The observer's [`Observer::should_stop`] (Ctrl-C or SIGTERM in `focal
//! train`) is checked after every step and after every batch of an evaluation: the run
//! finishes the step (or abandons the evaluation, which a resumed run then repeats),
//! writes `last.ckpt` and returns [`Outcome::Stopped`]. An image that fails to load
//! mid-run also writes `last.ckpt` before the error is returned, so nothing trained is
//! lost while the file is fixed.
//!
//! **Resuming** ([`Trainer::resume`]) restores the model, the optimiser's state, the step,
//! the epoch, the RNG state and the position within the epoch, drops the rows of
//! `metrics.jsonl` written after the checkpoint, and skips the batches of the current epoch
//! already done. Because the loader's order and flips depend only on (seed, epoch, image)
//! and every kernel is deterministic, the continued run writes exactly the losses an
//! uninterrupted run would have written.
//!
//! **Several processes** ([`StartOptions::comm`] with N ranks) train one model: every rank
//! runs this same loop over its part of every batch ([`super::distributed`]), the step's
//! gradient is summed across ranks, and rank 0 alone holds the run folder's lock and
//! writes in it (checkpoints atomically, then every rank waits until it is on disk). Rank
//! 0 alone checks the images before step 1 and every rank leaves out the ones it found.
//! Every decision that ends or forks the loop (a stop asked by a signal on any rank, a
//! checkpoint due by the clock, an image that failed to load, a NaN loss, the best AP) is
//! taken from values every rank shares, so the ranks never part ways.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use focal_data::{Batch, BatchPart, Dataset, EvalResult, Fingerprint, ImageProblem, Loader};
use focal_engine::Rng;
use focal_nn::{Checkpoint, Optimizer, Schedule, TrainState};

use super::builders::{
    build_optimizer, build_schedule, build_train_loader, check_same_categories, class_names,
    open_datasets,
};
use super::checkpoint::{ckpt_error, read_checkpoint, rebuild_model};
use super::comm::{any, Comm, Local};
use super::config::TrainConfig;
use super::distributed::{
    check_agreement, check_rank_count, first_failure, share_problems, sync_buffers, train_part,
};
use super::evaluate::{evaluate_on_until, Evaluation};
use super::init::InitReport;
use super::memory;
use super::observer::Observer;
use super::records::{ClassName, EvalRecord, MetricRow, RunMetadata, StepRecord};
use super::run_folder::{RunFolder, RunLock};
use super::step::{distributed_optimizer_step, optimizer_step, StepOutcome};
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

/// How a run is started, besides its configuration: what `focal train` asks of the
/// checks before step 1. [`StartOptions::default`] is what [`Trainer::new`] and
/// [`Trainer::resume`] use.
pub struct StartOptions<'a> {
    /// Resume although the dataset's fingerprint differs from the checkpoint's.
    pub accept_data_change: bool,
    /// Leave out the images the check finds bad (besides the configuration's
    /// `data.skip_bad_images`, which a resumed run keeps).
    pub skip_bad_images: bool,
    /// Refuse a run whose memory estimate exceeds the machine's memory.
    pub check_memory: bool,
    /// Reports the image check: (what, images done, images in all).
    pub progress: &'a (dyn Fn(&str, usize, usize) + Sync),
    /// The processes training this model together: every rank starts the run with the
    /// same arguments; rank 0 alone takes the run folder's lock, checks the images and
    /// writes. Default: one process ([`Local`]).
    pub comm: Arc<dyn Comm>,
}

fn no_progress(_: &str, _: usize, _: usize) {}

impl Default for StartOptions<'_> {
    fn default() -> Self {
        StartOptions {
            accept_data_change: false,
            skip_bad_images: false,
            check_memory: true,
            progress: &no_progress,
            comm: Arc::new(Local),
        }
    }
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
    /// When `last.ckpt` was last written (or the run started).
    last_saved: Instant,
    /// An evaluation was abandoned (stop requested): the run repeats it first.
    eval_pending: bool,
    /// The fingerprints of the training and validation sets, saved in checkpoints.
    fingerprints: Option<(Fingerprint, Fingerprint)>,
    /// What the start found worth telling (files replaced, images left out, ...).
    notes: Vec<String>,
    /// The memory estimate the run was checked against.
    estimate: Option<memory::MemoryEstimate>,
    /// The lock on the run folder, held while the trainer lives (rank 0's alone).
    _lock: Option<RunLock>,
    /// The processes training this model together (one: [`Local`]).
    comm: Arc<dyn Comm>,
    /// The images of the training and validation sets that the check before step 1 left
    /// out, the same on every rank: a distributed run cuts and pads its batches as if they
    /// were not there, as one process does.
    left_out: [Arc<BTreeSet<usize>>; 2],
}

impl Trainer {
    /// A fresh run writing into `run_dir` (created if needed), with the default
    /// [`StartOptions`]. Refuses a folder that holds a checkpoint (resume it instead).
    ///
    /// The model's number of classes is taken from the training set.
    pub fn new(config: TrainConfig, run_dir: &Path) -> Result<Trainer> {
        Trainer::start(config, run_dir, &StartOptions::default())
    }

    /// [`Trainer::new`] for rank `comm.rank()` of the processes that train together
    /// (every rank calls it with the same arguments; only rank 0 touches `run_dir`).
    pub fn new_on(comm: Arc<dyn Comm>, config: TrainConfig, run_dir: &Path) -> Result<Trainer> {
        let options = StartOptions {
            comm,
            ..StartOptions::default()
        };
        Trainer::start(config, run_dir, &options)
    }

    /// A fresh run: everything is checked before anything is written — the configuration,
    /// the datasets, the memory estimate ([`memory`]), then, holding the run folder's
    /// lock, the folder ([`RunFolder::prepare_fresh`]) and every image
    /// ([`focal_data::check`]). Dataset paths are made absolute, so the run can be
    /// resumed from any working directory. With several ranks (`options.comm`), rank 0
    /// alone takes the lock, prepares the folder and checks the images; every rank returns
    /// the same error when one of them fails.
    pub fn start(config: TrainConfig, run_dir: &Path, options: &StartOptions) -> Result<Trainer> {
        let comm = Arc::clone(&options.comm);
        let mut config = config.with_absolute_paths();
        if options.skip_bad_images {
            config.data.skip_bad_images = true;
        }
        check_rank_count(config.shards, comm.size())?;
        let (train, val) = open_datasets(&config)?;
        refuse_empty(&*train)?;
        config.model.num_classes = train.num_classes();
        config.validate()?;
        check_same_categories(&*train, &*val)?;
        let estimate = if options.check_memory {
            Some(check_memory(&config, &*train)?)
        } else {
            None
        };
        let folder = RunFolder::new(run_dir);
        let mut notes = Vec::new();
        // Rank 0 alone takes the lock and prepares the folder; the others learn whether it
        // could (a failure there is every rank's error).
        let lock = if comm.is_root() {
            let prepared = folder.lock().and_then(|lock| {
                folder.check_fresh()?;
                note_removed_temp_files(&folder, &mut notes)?;
                Ok(lock)
            });
            Some(agreed(&*comm, prepared)?)
        } else {
            agreed(&*comm, Ok(()))?;
            None
        };
        let left_out = check_images(&*comm, &config, &train, &val, options, &mut notes)?;
        if comm.is_root() {
            // Only now, with everything checked, are the logs of an unfinished run replaced.
            let replaced = agreed(&*comm, folder.prepare_fresh())?;
            if !replaced.is_empty() {
                notes.push(format!(
                    "{} held the files of a run that never saved a checkpoint ({}); started \
                     afresh in their place",
                    run_dir.display(),
                    replaced.join(", ")
                ));
            }
        } else {
            agreed(&*comm, Ok(()))?;
        }
        let fingerprints = (train.fingerprint(), val.fingerprint());
        let mut rng = Rng::new(config.seed);
        let model = RetinaNet::new(&config.retinanet(), &mut rng)?;
        let categories = class_names(&*train);
        let mut trainer =
            Trainer::assemble(config, model, rng, train, val, categories, folder, comm)?;
        trainer._lock = lock;
        trainer.notes = notes;
        trainer.estimate = estimate;
        trainer.fingerprints = Some(fingerprints);
        trainer.left_out = left_out;
        if trainer.comm.is_root() {
            let started = trainer.folder.start(&trainer.config);
            agreed(&*trainer.comm, started)?;
        } else {
            agreed(&*trainer.comm, Ok(()))?;
        }
        Ok(trainer)
    }

    /// Continues the run saved in `checkpoint` (normally `RUN/last.ckpt`), writing into
    /// `run_dir` (default: the checkpoint's folder). `threads` replaces the saved thread
    /// count (results do not depend on it). Default [`StartOptions`].
    pub fn resume(
        checkpoint: &Path,
        run_dir: Option<&Path>,
        threads: Option<usize>,
    ) -> Result<Trainer> {
        Trainer::resume_with(checkpoint, run_dir, threads, &StartOptions::default())
    }

    /// [`Trainer::resume`] for rank `comm.rank()` (every rank reads the checkpoint; only
    /// rank 0 touches the run folder). The number of ranks may differ from the run's
    /// earlier invocations: it must divide the run's shards.
    pub fn resume_on(
        comm: Arc<dyn Comm>,
        checkpoint: &Path,
        run_dir: Option<&Path>,
        threads: Option<usize>,
    ) -> Result<Trainer> {
        let options = StartOptions {
            comm,
            ..StartOptions::default()
        };
        Trainer::resume_with(checkpoint, run_dir, threads, &options)
    }

    /// [`Trainer::resume`] with options. The run folder must be the checkpoint's own or
    /// an empty (or new) one, which then receives the run's history up to the
    /// checkpoint; the datasets must have the fingerprints the checkpoint saved, unless
    /// `options.accept_data_change`. With several ranks (`options.comm`; their number may
    /// differ from the run's earlier invocations but must divide its shards), every rank
    /// reads the checkpoint and rank 0 alone takes the folder, as in [`Trainer::start`].
    pub fn resume_with(
        checkpoint: &Path,
        run_dir: Option<&Path>,
        threads: Option<usize>,
        options: &StartOptions,
    ) -> Result<Trainer> {
        let comm = Arc::clone(&options.comm);
        let (ckpt, mut config, metadata) = read_checkpoint(checkpoint)?;
        check_rank_count(config.shards, comm.size()).map_err(|e| ckpt_error(checkpoint, e))?;
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
        if options.skip_bad_images {
            config.data.skip_bad_images = true;
        }
        let ckpt_dir = checkpoint
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let run_dir = run_dir.map_or_else(|| ckpt_dir.clone(), Path::to_path_buf);
        let own_folder = same_folder(&run_dir, &ckpt_dir);
        // Rank 0's folder is the one written; the others learn whether it may be.
        let folder_free =
            if comm.is_root() && !own_folder && !RunFolder::is_empty_or_missing(&run_dir) {
                Err(Error::invalid(format!(
                    "{} holds other files; a resumed run writes into its checkpoint's folder {} \
                 or into an empty or new folder (which then receives the run's history), \
                 never over another run",
                    run_dir.display(),
                    ckpt_dir.display()
                )))
            } else {
                Ok(())
            };
        agreed(&*comm, folder_free)?;
        let (train, val) = open_datasets(&config)?;
        refuse_empty(&*train)?;
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
        let mut notes = Vec::new();
        let fingerprints = (train.fingerprint(), val.fingerprint());
        let saved = [&metadata.train_data, &metadata.val_data];
        for ((name, now), saved) in [
            ("training", &fingerprints.0),
            ("validation", &fingerprints.1),
        ]
        .into_iter()
        .zip(saved)
        {
            let Some(saved) = saved else { continue };
            let changes = now.differences(saved);
            if changes.is_empty() {
                continue;
            }
            let what = format!(
                "the {name} set is not the one this run was trained on: {}",
                changes.join("; ")
            );
            if !options.accept_data_change {
                return Err(ckpt_error(
                    checkpoint,
                    Error::invalid(format!(
                        "{what}. Resume with --accept-data-change to continue on the changed \
                         data knowingly"
                    )),
                ));
            }
            notes.push(format!("{what} (accepted)"));
        }
        let estimate = if options.check_memory {
            Some(check_memory(&config, &*train)?)
        } else {
            None
        };
        let folder = RunFolder::new(&run_dir);
        let lock = if comm.is_root() {
            let prepared = folder.lock().and_then(|lock| {
                note_removed_temp_files(&folder, &mut notes)?;
                Ok(lock)
            });
            Some(agreed(&*comm, prepared)?)
        } else {
            agreed(&*comm, Ok(()))?;
            None
        };
        let left_out = check_images(&*comm, &config, &train, &val, options, &mut notes)?;
        let model = rebuild_model(&ckpt, &config, checkpoint)?;
        let mut trainer = Trainer::assemble(
            config,
            model,
            Rng::from_state(ckpt.rng_state),
            train,
            val,
            categories,
            folder,
            comm,
        )?;
        trainer._lock = lock;
        trainer.notes = notes;
        trainer.estimate = estimate;
        trainer.fingerprints = Some(fingerprints);
        trainer.left_out = left_out;
        ckpt.restore_optimizer(&mut trainer.model, trainer.optimizer.as_mut())
            .map_err(|e| ckpt_error(checkpoint, e))?;
        trainer.step = ckpt.step;
        trainer.epoch = ckpt.epoch;
        trainer.batch_in_epoch = metadata.batch_in_epoch;
        trainer.best = metadata.best_ap.zip(metadata.best_step);
        trainer.eval_pending = metadata.eval_pending;
        if trainer.comm.is_root() {
            // Keep the rows written up to the checkpoint (read from the checkpoint's own
            // folder, so a new folder gets the whole history), drop the later ones.
            let started = RunFolder::new(&ckpt_dir)
                .read_metrics_until(trainer.step)
                .and_then(|history| {
                    trainer.history = history;
                    trainer.folder.start(&trainer.config)?;
                    trainer.write_metrics()
                });
            agreed(&*trainer.comm, started)?;
        } else {
            agreed(&*trainer.comm, Ok(()))?;
        }
        Ok(trainer)
    }

    /// The parts every run has, fresh or resumed, built from `config` (step 0).
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: TrainConfig,
        model: RetinaNet,
        rng: Rng,
        train: Arc<dyn Dataset>,
        val: Arc<dyn Dataset>,
        categories: Vec<ClassName>,
        folder: RunFolder,
        comm: Arc<dyn Comm>,
    ) -> Result<Trainer> {
        // The run's conv algorithm, for every conv2d of this process from here on
        // (results depend on it to rounding; a resumed run keeps the saved one).
        focal_engine::set_conv_algo(config.parsed_conv_algo()?);
        let train_loader = build_train_loader(&config, train)?;
        let total_steps = config.total_steps(train_loader.batches_per_epoch());
        if total_steps == 0 || train_loader.batches_per_epoch() == 0 {
            return Err(Error::invalid(format!(
                "the run has no steps: {}",
                train_loader.dataset().describe()
            )));
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
            last_saved: Instant::now(),
            eval_pending: false,
            fingerprints: None,
            notes: Vec::new(),
            estimate: None,
            _lock: None,
            comm,
            left_out: Default::default(),
        })
    }

    /// The memory estimate of this run ([`memory`]), when it was checked.
    pub fn memory_estimate(&self) -> Option<&memory::MemoryEstimate> {
        self.estimate.as_ref()
    }

    /// What starting the run found worth telling the user: files replaced in the run
    /// folder, stale temporary files removed, images left out, an accepted data change.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Loads weights (torchvision's RetinaNet, a focal export, or an ImageNet ResNet) into
    /// the model before training, matching the class output to the dataset's classes; see
    /// [`crate::train::init_from_safetensors`].
    pub fn init_from(&mut self, path: &Path) -> Result<InitReport> {
        super::init::init_from_safetensors(&mut self.model, path, &self.categories)
    }

    /// The processes training together (one unless started with [`StartOptions::comm`]).
    pub fn comm(&self) -> &dyn Comm {
        &*self.comm
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
    /// `eval_every` steps and at the end, and writing `last.ckpt` on the way (see the
    /// module documentation).
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Outcome> {
        observer.on_start(self);
        check_agreement(
            &*self.comm,
            &self.config,
            [&**self.train_loader.dataset(), &*self.val],
            &mut self.model,
        )?;
        self.last_saved = Instant::now();
        let first_step = self.step;
        let mut last_eval: Option<EvalResult> = None;
        if self.eval_pending && self.step < self.total_steps {
            // The evaluation a stop abandoned, at the step it was due.
            if self.eval_and_save(observer)?.is_none() {
                return self.stop(observer);
            }
        }
        'epochs: while self.step < self.total_steps {
            let mut batches = match self.comm.size() {
                1 => self.train_loader.epoch(self.epoch),
                n => {
                    let part = BatchPart {
                        range: train_part(self.config.shards, self.comm.rank(), n),
                        left_out: Arc::clone(&self.left_out[0]),
                    };
                    self.train_loader.epoch_part(self.epoch, part)
                }
            };
            // Skip the batches of this epoch that a resumed run already trained on.
            for _ in 0..self.batch_in_epoch {
                if self.next_batch(&mut batches, observer)?.is_none() {
                    break;
                }
            }
            let mut step_started = Instant::now();
            let mut stepped = false;
            let resumed_within = self.batch_in_epoch > 0;
            while let Some(batch) = self.next_batch(&mut batches, observer)? {
                let Some(record) = self.train_step(&batch, step_started)? else {
                    continue;
                };
                stepped = true;
                self.history.push(MetricRow::Step(record.clone()));
                observer.on_step(&record, self);
                last_eval = None;

                let every = |n: u64, step: u64| n > 0 && step.is_multiple_of(n);
                let at_end = self.step == self.total_steps;
                let minutes = self.config.checkpoint_every_min;
                // Each rank's clock is its own: a save is due when it is due on any rank
                // (the same answer on every rank; `minutes` is in the shared configuration).
                let due_by_time = minutes > 0.0
                    && any(
                        &*self.comm,
                        self.last_saved.elapsed() >= Duration::from_secs_f64(minutes * 60.0),
                    )?;
                if every(self.config.eval_every, self.step) && !at_end {
                    match self.eval_and_save(observer)? {
                        Some(r) => last_eval = Some(r),
                        None => {
                            // Stopped during the evaluation: repeat it on resume.
                            self.eval_pending = true;
                            drop(batches);
                            return self.stop(observer);
                        }
                    }
                } else if (every(self.config.checkpoint_every, self.step) || due_by_time) && !at_end
                {
                    self.save_last(observer)?;
                } else if self.step - self.metrics_flushed_at >= METRICS_FLUSH_STEPS {
                    self.write_metrics()?;
                }
                let stop_requested = observer.should_stop()
                    || self.stop_after.is_some_and(|n| self.step - first_step >= n);
                // Every rank stops at the same step, if any rank was asked to (a signal
                // reaches the ranks at different moments, or only one of them).
                let stop_requested = any(&*self.comm, stop_requested)?;
                if stop_requested && !at_end {
                    drop(batches);
                    return self.stop(observer);
                }
                if at_end {
                    break 'epochs;
                }
                step_started = Instant::now();
            }
            if !stepped && !resumed_within {
                // Every image of the epoch was left out as unreadable: no step can ever be
                // made, so stop rather than loop over empty epochs.
                self.save_last(observer)?;
                return Err(Error::invalid(format!(
                    "no image of the training set could be read in epoch {}: {}",
                    self.epoch + 1,
                    self.train_set().describe()
                )));
            }
            self.epoch += 1;
            self.batch_in_epoch = 0;
        }
        let result = match last_eval {
            Some(r) => {
                self.save_last(observer)?;
                r
            }
            None => match self.eval_and_save(observer)? {
                Some(r) => r,
                None => {
                    self.eval_pending = true;
                    return self.stop(observer);
                }
            },
        };
        if self.comm.is_root() {
            let path = self.folder.write_final_metrics(&result)?;
            observer.on_saved(&path);
        }
        Ok(Outcome::Finished(result))
    }

    /// The next batch of `batches`, `None` at the end of the epoch. An image that fails to
    /// load ends the run, after `last.ckpt` is written ([`Trainer::save_before_error`]);
    /// with several ranks, every rank learns whether any rank's part of the batch failed,
    /// so that every rank saves and ends with that error at the same batch.
    fn next_batch(
        &mut self,
        batches: &mut focal_data::Epoch,
        observer: &mut dyn Observer,
    ) -> Result<Option<Batch>> {
        let next = batches.next();
        if self.comm.size() == 1 {
            return next
                .transpose()
                .map_err(|e| self.save_before_error(e, observer));
        }
        let failure = match &next {
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        match (first_failure(&*self.comm, failure)?, next) {
            (None, next) => Ok(next.map(|b| b.expect("no rank failed"))),
            (Some(_), Some(Err(mine))) => Err(self.save_before_error(mine, observer)),
            (Some((rank, message)), _) => {
                let theirs = focal_data::Error::new(format!("on rank {rank}: {message}"));
                Err(self.save_before_error(theirs, observer))
            }
        }
    }

    /// Writes `last.ckpt` and reports the stop.
    fn stop(&mut self, observer: &mut dyn Observer) -> Result<Outcome> {
        self.save_last(observer)?;
        Ok(Outcome::Stopped { step: self.step })
    }

    /// Before a data error ends the run: writes `last.ckpt` (the state after the last
    /// completed step), so that the run continues once the file is fixed or left out.
    fn save_before_error(&mut self, e: focal_data::Error, observer: &mut dyn Observer) -> Error {
        let saved = match self.save_last(observer) {
            Ok(()) => format!(
                "{} holds step {}; fix or remove the image (or leave bad images out with \
                 --skip-bad-images) and continue with --resume",
                self.folder.last_checkpoint().display(),
                self.step
            ),
            Err(save) => format!("last.ckpt could not be written either: {}", save.chain()),
        };
        Error::context(
            format!("training stopped at step {} ({saved})", self.step),
            e,
        )
    }

    /// One optimiser step on `batch` ([`optimizer_step`], or with several ranks
    /// [`distributed_optimizer_step`] on this rank's part of the batch) at the scheduled
    /// rate, and its row of `metrics.jsonl`; `None` for a distributed batch whose every
    /// image failed to load on every rank ([`StepOutcome::Empty`]).
    fn train_step(&mut self, batch: &Batch, started: Instant) -> Result<Option<StepRecord>> {
        let lr = self.schedule.lr_at(self.step);
        let (shards, clip) = (self.config.shards, self.config.optimizer.clip_grad_norm);
        let outcome = match self.comm.size() {
            1 => optimizer_step(
                &mut self.model,
                self.optimizer.as_mut(),
                batch,
                lr,
                shards,
                clip,
            )?,
            _ => distributed_optimizer_step(
                &*self.comm,
                &mut self.model,
                self.optimizer.as_mut(),
                batch,
                batch.whole_len,
                lr,
                shards,
                clip,
            )?,
        };
        let r = match outcome {
            StepOutcome::Updated(r) => r,
            StepOutcome::Empty => {
                self.batch_in_epoch += 1;
                return Ok(None);
            }
            StepOutcome::NonFinite {
                classification,
                box_regression,
            } => {
                let last = self.folder.last_checkpoint();
                let kept = if last.exists() || !self.comm.is_root() {
                    format!("the last good checkpoint {} is intact", last.display())
                } else {
                    "no checkpoint had been written yet".to_string()
                };
                // Every rank waits for rank 0's metrics before they all end with the error.
                let written = self.write_metrics();
                let _ = agreed(&*self.comm, written);
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
        Ok(Some(StepRecord {
            step: self.step,
            epoch: self.epoch,
            loss: r.loss,
            cls_loss: r.classification,
            box_loss: r.box_regression,
            lr,
            num_pos: r.num_positive,
            grad_norm: r.grad_norm,
            images_per_s: r.images as f64 / seconds.max(1e-9),
        }))
    }

    /// Evaluates the model on the validation set now (to the end, whatever the
    /// observer's [`Observer::should_stop`] says).
    pub fn evaluate(&mut self, observer: &mut dyn Observer) -> Result<Evaluation> {
        self.evaluate_or_stop(observer, false)?
            .ok_or_else(|| Error::invalid("the evaluation was stopped"))
    }

    /// The evaluation, or `None` when `stoppable` and the observer asked to stop (checked
    /// after every batch; with several ranks, after every round of one batch per rank,
    /// and on every rank when asked on any). With several ranks, the batches are shared
    /// out ([`evaluate_on_until`]) and every rank first takes rank 0's BatchNorm
    /// statistics, which rank 0 saves.
    fn evaluate_or_stop(
        &mut self,
        observer: &mut dyn Observer,
        stoppable: bool,
    ) -> Result<Option<Evaluation>> {
        observer.on_eval_start(self.step, self.val.len());
        let ids: Vec<i64> = self.categories.iter().map(|c| c.id).collect();
        let d = &self.config.data;
        let (min_size, max_size, bs) = (d.min_size, d.max_size, d.eval_batch_size);
        sync_buffers(&*self.comm, &mut self.model)?;
        let eval = evaluate_on_until(
            &*self.comm,
            &mut self.model,
            &self.val,
            &self.left_out[1],
            &ids,
            min_size,
            max_size,
            bs,
            &mut |done, total| {
                observer.on_eval_progress(done, total);
                !(stoppable && observer.should_stop())
            },
        )?;
        Ok(eval)
    }

    /// Evaluates, records the row, and writes `last.ckpt`, then `best.ckpt` when the AP
    /// improved (in this order, so a folder never holds `best.ckpt` without
    /// `last.ckpt`). `None` when stopped during the evaluation (nothing is written).
    fn eval_and_save(&mut self, observer: &mut dyn Observer) -> Result<Option<EvalResult>> {
        let Some(eval) = self.evaluate_or_stop(observer, true)? else {
            return Ok(None);
        };
        let record = EvalRecord::new(self.step, self.epoch, &eval.result, eval.seconds);
        self.history.push(MetricRow::Eval(record.clone()));
        let ap = eval.result.stats.ap;
        let improved = self.best.is_none_or(|(best, _)| ap > best);
        if improved {
            self.best = Some((ap, self.step));
        }
        self.eval_pending = false;
        self.save_last(observer)?;
        if improved {
            if self.comm.is_root() {
                let path = self.folder.best_checkpoint();
                let saved = self.checkpoint(false).save(&path);
                agreed(&*self.comm, saved.map_err(Error::from))?;
                observer.on_saved(&path);
            } else {
                agreed(&*self.comm, Ok(()))?;
            }
        }
        observer.on_eval(&record, &eval.result, self);
        Ok(Some(eval.result))
    }

    /// The run's state as a checkpoint (with the optimiser when `with_optimizer`).
    pub fn checkpoint(&mut self, with_optimizer: bool) -> Checkpoint {
        let metadata = RunMetadata {
            categories: self.categories.clone(),
            batch_in_epoch: self.batch_in_epoch,
            best_ap: self.best.map(|b| b.0),
            best_step: self.best.map(|b| b.1),
            eval_pending: self.eval_pending,
            train_data: self.fingerprints.as_ref().map(|f| f.0.clone()),
            val_data: self.fingerprints.as_ref().map(|f| f.1.clone()),
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

    /// Writes `metrics.jsonl` and then `last.ckpt` (both atomically), then removes any
    /// temporary file a killed process left in the folder. With several ranks, rank 0
    /// writes and every rank then waits until it has: once any rank goes on, the
    /// checkpoint is on disk (and a failure to write it is every rank's error).
    pub fn save_last(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if self.comm.is_root() {
            let saved = self.write_last();
            agreed(&*self.comm, saved)?;
            observer.on_saved(&self.folder.last_checkpoint());
        } else {
            agreed(&*self.comm, Ok(()))?;
        }
        self.last_saved = Instant::now();
        Ok(())
    }

    /// [`Trainer::save_last`]'s writing, on rank 0.
    fn write_last(&mut self) -> Result<()> {
        self.write_metrics()?;
        let path = self.folder.last_checkpoint();
        self.checkpoint(true).save(&path)?;
        self.folder.remove_stale_temp_files()?;
        Ok(())
    }

    /// Rewrites `metrics.jsonl` from the rows in memory (rank 0 alone).
    fn write_metrics(&mut self) -> Result<()> {
        if !self.comm.is_root() {
            return Ok(());
        }
        self.folder.write_metrics(&self.history)?;
        self.metrics_flushed_at = self.step;
        Ok(())
    }
}

/// `result` on the rank that has it, and the same decision on every rank: with several
/// ranks, every rank learns whether any failed (collective: every rank calls it at the
/// same point, with `Ok` where it had nothing to do), and a rank that did not fail
/// returns the first failing rank's error. A rank whose own `result` failed returns its
/// own error.
fn agreed<T>(comm: &dyn Comm, result: Result<T>) -> Result<T> {
    if comm.size() == 1 {
        return result;
    }
    let failure = result.as_ref().err().map(|e| e.chain());
    match (first_failure(comm, failure)?, result) {
        (None, result) | (Some(_), result @ Err(_)) => result,
        (Some((rank, message)), Ok(_)) => Err(Error::invalid(format!(
            "rank {rank} of {} failed: {message}",
            comm.size()
        ))),
    }
}

/// Refuses a training set without images (a run on it could never make a step).
fn refuse_empty(train: &dyn Dataset) -> Result<()> {
    if train.is_empty() {
        return Err(Error::invalid(format!(
            "the training set has no images: {}",
            train.describe()
        )));
    }
    Ok(())
}

/// Refuses a run whose memory estimate exceeds what the machine can give it; returns the
/// estimate.
fn check_memory(config: &TrainConfig, train: &dyn Dataset) -> Result<memory::MemoryEstimate> {
    let estimate = memory::estimate(config, decode_bytes(config, train));
    let Some((total, _available)) = memory::machine_memory() else {
        return Ok(estimate);
    };
    if estimate.total() > total {
        return Err(Error::invalid(format!(
            "this run would need about {}, more than this machine's {:.1} GB of memory; \
             make it smaller (--batch-size, --min-size/--max-size, --fpn-channels, \
             --head-width, --backbone), or pass --no-memory-check if the estimate is wrong",
            estimate.describe(config.batch_size),
            total as f64 / 1e9
        )));
    }
    Ok(estimate)
}

/// What decoding may hold at once: as many of the largest image as there are decoding
/// threads (or images in a batch), within the decoding budget.
fn decode_bytes(config: &TrainConfig, train: &dyn Dataset) -> u64 {
    if config.data.coco.is_none() {
        return 0;
    }
    let largest = (0..train.len())
        .map(|i| {
            let (w, h) = train.image_size(i);
            focal_data::decode_budget::worst_case_decode_bytes(w, h)
        })
        .max()
        .unwrap_or(0);
    let at_once = rayon::current_num_threads().min(config.batch_size.max(1)) as u64;
    (largest * at_once).min(focal_data::DecodeBudget::global().limit().max(largest))
}

/// Checks every image of both sets before step 1 ([`focal_data::check_dataset`]),
/// leaving the bad ones out when the configuration says so; returns the images left out
/// of each set. With several ranks, rank 0 alone reads the files and every rank leaves
/// out the images it found (so that every rank trains on the same list, and reads only
/// the images of its own shards).
fn check_images(
    comm: &dyn Comm,
    config: &TrainConfig,
    train: &Arc<dyn Dataset>,
    val: &Arc<dyn Dataset>,
    options: &StartOptions,
    notes: &mut Vec<String>,
) -> Result<[Arc<BTreeSet<usize>>; 2]> {
    let skip = config.data.skip_bad_images;
    let mut left_out: [Arc<BTreeSet<usize>>; 2] = Default::default();
    for (k, (name, set)) in [("training", train), ("validation", val)]
        .into_iter()
        .enumerate()
    {
        let problems = if comm.is_root() {
            let checked = check_set(name, &**set, skip, options, notes);
            share_problems(comm, agreed(comm, checked)?)?
        } else {
            agreed(comm, Ok(()))?;
            let problems = share_problems(comm, Vec::new())?;
            set.leave_out(&problems);
            problems
        };
        left_out[k] = Arc::new(problems.iter().map(|p| p.index).collect());
    }
    Ok(left_out)
}

/// [`check_images`] of one set, in this process: the images it left out.
fn check_set(
    name: &str,
    set: &dyn Dataset,
    skip: bool,
    options: &StartOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<ImageProblem>> {
    let what = format!("checking the {name} images");
    let report = focal_data::check_dataset(set, skip, &|done, total| {
        (options.progress)(&what, done, total)
    })?;
    if !report.left_out.is_empty() {
        notes.push(format!(
            "left out {} of the {} {name} images that cannot be used (--skip-bad-images):{}",
            report.left_out.len(),
            report.checked,
            report
                .left_out
                .iter()
                .map(|p| format!("\n  {p}"))
                .collect::<String>()
        ));
        if report.left_out.len() == report.checked {
            return Err(Error::invalid(format!(
                "no usable image is left in the {name} set: {}",
                set.describe()
            )));
        }
    }
    Ok(report.left_out)
}

/// Removes stale temporary files from the folder, noting how many.
fn note_removed_temp_files(folder: &RunFolder, notes: &mut Vec<String>) -> Result<()> {
    let n = folder.remove_stale_temp_files()?;
    if n > 0 {
        notes.push(format!(
            "removed {n} temporary file(s) that interrupted writes had left in {}",
            folder.dir().display()
        ));
    }
    Ok(())
}

/// Whether two paths name the same folder (a folder that does not exist yet is only the
/// same as itself, compared as absolute paths).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    }
}
