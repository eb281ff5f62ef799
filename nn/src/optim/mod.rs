//! Optimisers and gradient clipping.
//!
//! An optimiser walks the model in its visiting order (see [`crate::module`]) and updates
//! every parameter that is not frozen and received a gradient. Its state (momentum buffers,
//! Adam moments) is keyed by the parameter's *name*, so it survives a checkpoint and a
//! restart into a fresh process where the parameters have new ids.
//!
//! Parameter groups: each [`crate::Param`] says whether weight decay applies to it
//! (`decay`, false for norm weights and biases). With `decay_norm_and_bias = false` (the
//! default) the optimiser applies weight decay only to parameters with `decay = true`; with
//! `true` it applies it to every parameter, as plain PyTorch does.

pub mod adamw;
pub mod clip;
pub mod sgd;

pub use adamw::AdamW;
pub use clip::{clip_grad_norm, grad_norm};
pub use sgd::Sgd;

use focal_engine::Gradients;
use serde::{Deserialize, Serialize};

use crate::module::Module;
use crate::record::TensorRecord;

/// What the trainer needs from an optimiser.
pub trait Optimizer {
    /// `"sgd"` or `"adamw"`.
    fn kind(&self) -> &'static str;
    /// One update of every trainable parameter that has a gradient in `grads`, with learning
    /// rate `lr` (from the schedule).
    fn step(&mut self, model: &mut dyn Module, grads: &Gradients, lr: f32);
    /// Everything needed to continue exactly: hyper-parameters and per-parameter state.
    fn state(&self) -> OptimState;
    /// Restores [`Optimizer::state`]. The kind must match; the hyper-parameters are taken from
    /// the state (as PyTorch's `load_state_dict` does).
    fn load_state(&mut self, state: &OptimState) -> Result<(), String>;
}

/// An optimiser's state in a plain, serialisable form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimState {
    pub kind: String,
    /// Hyper-parameters by name (booleans as 0 or 1). f32 values convert to f64 exactly.
    pub hyper: Vec<(String, f64)>,
    /// Per-parameter state, in the model's visiting order.
    pub params: Vec<ParamState>,
}

/// The state an optimiser keeps for one parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamState {
    /// The parameter's full name in the model.
    pub param: String,
    /// How many updates this parameter has received.
    pub step: u64,
    /// The state tensors (`momentum_buffer`; `exp_avg`, `exp_avg_sq`), named as PyTorch does.
    pub tensors: Vec<TensorRecord>,
}

impl OptimState {
    /// The hyper-parameter `name`, or an error naming it.
    pub fn hyper(&self, name: &str) -> Result<f64, String> {
        self.hyper
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("{} optimiser state lacks hyper-parameter {name}", self.kind))
    }

    pub(crate) fn check_kind(&self, kind: &str) -> Result<(), String> {
        if self.kind != kind {
            return Err(format!(
                "optimiser state is for {}, but this run uses {kind}",
                self.kind
            ));
        }
        Ok(())
    }
}

impl ParamState {
    pub(crate) fn tensor(&self, name: &str) -> Result<&TensorRecord, String> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("optimiser state of {} lacks {name}", self.param))
    }
}

/// Whether weight decay applies to a parameter.
pub(crate) fn decays(param_decay: bool, decay_norm_and_bias: bool) -> bool {
    param_decay || decay_norm_and_bias
}
