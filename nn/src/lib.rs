//! # focal-nn
//!
//! What turns the engine into something a model is written in:
//!
//! - [`Param`] and the module tree ([`Module`], [`Visitor`]): every parameter and buffer
//!   under its torchvision name (`layer1.0.conv1.weight`).
//! - [`init`]: Kaiming, normal, constant, the prior-probability bias.
//! - [`optim`]: SGD with momentum, AdamW, gradient clipping.
//! - [`schedule`]: warm-up with multi-step or cosine decay.
//! - [`layers`]: Conv2d, BatchNorm2d (train, eval, frozen), GroupNorm, Linear, ReLU,
//!   MaxPool2d, Upsample, Flatten, Sequential.
//! - [`checkpoint`]: one file to resume a run exactly.
//! - [`weights`]: safetensors import and export, for weights from and to PyTorch.
//! - [`error`](mod@error): [`Error`], with the cause of each failure as its source.

pub mod checkpoint;
pub mod error;
pub mod init;
pub mod layers;
pub mod module;
pub mod optim;
pub mod param;
pub mod record;
pub mod schedule;
pub mod weights;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, TrainState};
pub use error::{Error, Result};
pub use layers::{
    BatchNorm2d, BnMode, Conv2d, Flatten, GroupNorm, Layer, Linear, MaxPool2d, ReLU, Sequential,
    Upsample,
};
pub use module::{
    duplicate_names, for_each_named, freeze, in_subtree, named_buffers, named_params, param_count,
    set_train, trainable_param_count, unfreeze, Module, Slot, Visitor,
};
pub use optim::{clip_grad_norm, grad_norm, AdamW, OptimState, Optimizer, ParamState, Sgd};
pub use param::Param;
pub use record::TensorRecord;
pub use schedule::{Decay, Schedule};
pub use weights::{
    export_safetensors, import_safetensors, looks_like_safetensors, read_safetensors,
    read_safetensors_info, safetensors_bytes, FileTensor, ImportOptions, ImportReport,
    ShapeMismatch, TensorInfo,
};
