//! How the training loop talks to the outside world (progress bars, plots, Ctrl-C) without
//! knowing about any of it.

use std::path::Path;

use focal_data::EvalResult;

use super::records::{EvalRecord, StepRecord};
use super::trainer::Trainer;

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
