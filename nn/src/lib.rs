//! # focal-nn
//!
//! What turns the engine into something a model is written in:
//!
//! - [`Param`] and the module tree ([`Module`], [`Visitor`]): every parameter and buffer
//!   under its torchvision name (`layer1.0.conv1.weight`).
//! - [`init`]: Kaiming, normal, constant, the prior-probability bias.
//! - [`optim`]: SGD with momentum, AdamW, gradient clipping.
//! - [`schedule`]: warm-up with multi-step or cosine decay.
//! - [`checkpoint`]: one file to resume a run exactly.

pub mod checkpoint;
pub mod init;
pub mod module;
pub mod optim;
pub mod param;
pub mod record;
pub mod schedule;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, CheckpointError, TrainState};
pub use module::{
    duplicate_names, for_each_named, freeze, in_subtree, named_buffers, named_params, param_count,
    set_train, trainable_param_count, unfreeze, Module, Slot, Visitor,
};
pub use optim::{clip_grad_norm, grad_norm, AdamW, OptimState, Optimizer, ParamState, Sgd};
pub use param::Param;
pub use record::TensorRecord;
pub use schedule::{Decay, Schedule};
