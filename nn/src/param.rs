//! A parameter: a trainable tensor with a stable identity.

use focal_engine::{ParamId, Tensor};

/// A trainable tensor.
///
/// - `id` is the key under which [`focal_engine::backward`] returns this parameter's
///   gradient. It is fixed for the life of the process (checkpoints and optimisers use the
///   parameter's *name* instead, which is stable across processes).
/// - `value` is the current value, untracked. Each forward pass calls [`Param::var`] to put
///   it on the tape.
/// - `frozen` parameters take part in the forward pass as constants: no gradient, and the
///   optimiser skips them.
/// - `decay` says whether weight decay applies. It is false for the weights of norm layers
///   and for every bias, so that an optimiser can exclude them ("no decay on norm and bias").
#[derive(Clone, Debug)]
pub struct Param {
    pub id: ParamId,
    pub value: Tensor,
    pub frozen: bool,
    pub decay: bool,
}

impl Param {
    /// A trainable parameter subject to weight decay (convolution and linear weights).
    pub fn new(value: Tensor) -> Param {
        Param {
            id: ParamId::fresh(),
            value: value.detach(),
            frozen: false,
            decay: true,
        }
    }

    /// A trainable parameter exempt from weight decay when the optimiser is so configured
    /// (biases, norm weights).
    pub fn no_decay(value: Tensor) -> Param {
        Param {
            decay: false,
            ..Param::new(value)
        }
    }

    /// The value to use in this forward pass: recorded on the tape as the leaf `id`, or a
    /// plain constant when the parameter is frozen.
    pub fn var(&self) -> Tensor {
        if self.frozen {
            self.value.detach()
        } else {
            self.value.track(self.id)
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    pub fn numel(&self) -> usize {
        self.value.numel()
    }
}
