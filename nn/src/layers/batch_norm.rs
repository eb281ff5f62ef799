//! Batch normalisation (Ioffe & Szegedy) over the channels of an `(N, C, H, W)` input, in
//! three modes.
//!
//! - **Train**: normalise with the batch's own statistics, μ_c and the biased σ²_c over
//!   `N·H·W` values, then `y = γ·x̂ + β`; update the running averages as PyTorch does,
//!   `running ← (1 − m)·running + m·batch` with momentum m = 0.1 and the *unbiased*
//!   variance for `running_var`, and count `num_batches_tracked`.
//! - **Eval**: normalise with the running statistics. This is a per-channel affine map,
//!   `y = x·s + t` with `s = γ/√(running_var + ε)` and `t = β − running_mean·s`; gradients
//!   still reach γ and β (through s and t).
//! - **Frozen** (torchvision's `FrozenBatchNorm2d`, used with pretrained backbones): the same
//!   affine map, but γ, β and the statistics are constants: no gradient, not seen by the
//!   optimiser, and unaffected by [`crate::set_train`]. γ and β are then shown as buffers,
//!   and there is no `num_batches_tracked`, exactly like torchvision's state dict. ε is
//!   1e-5 by default; torchvision's COCO-trained detection weights expect ε = 0.
//!
//! The mode follows the flag set by [`crate::set_train`], not [`focal_engine::no_grad`]: a
//! model evaluated under `no_grad` while still in training mode would update its running
//! statistics, so switch it to evaluation first (as in PyTorch).

use focal_engine::ops::norm::{
    batch_norm_train, batch_norm_train_relu, channel_affine, channel_affine_relu,
};
use focal_engine::Tensor;

use super::Layer;
use crate::module::{Module, Visitor};
use crate::param::Param;

/// The behaviour of a [`BatchNorm2d`] at this moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    Train,
    Eval,
    Frozen,
}

#[derive(Clone)]
pub struct BatchNorm2d {
    /// γ (initialised to 1).
    pub weight: Param,
    /// β (initialised to 0).
    pub bias: Param,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: u64,
    pub eps: f32,
    pub momentum: f32,
    training: bool,
    frozen: bool,
}

impl BatchNorm2d {
    /// A trainable batch norm over `channels`, in training mode (γ = 1, β = 0, running mean
    /// 0 and variance 1, ε = 1e-5, momentum 0.1).
    pub fn new(channels: usize) -> BatchNorm2d {
        BatchNorm2d {
            weight: Param::no_decay(Tensor::ones(&[channels])),
            bias: Param::no_decay(Tensor::zeros(&[channels])),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::ones(&[channels]),
            num_batches_tracked: 0,
            eps: 1e-5,
            momentum: 0.1,
            training: true,
            frozen: false,
        }
    }

    /// A frozen batch norm (torchvision's `FrozenBatchNorm2d`), ε = 1e-5; load its values
    /// from pretrained weights.
    pub fn frozen(channels: usize) -> BatchNorm2d {
        let mut bn = BatchNorm2d::new(channels);
        bn.freeze();
        bn
    }

    pub fn eps(mut self, eps: f32) -> BatchNorm2d {
        self.eps = eps;
        self
    }

    /// Switches to the frozen mode for good (γ and β become constants).
    pub fn freeze(&mut self) {
        self.frozen = true;
        self.weight.frozen = true;
        self.bias.frozen = true;
    }

    pub fn mode(&self) -> BnMode {
        if self.frozen {
            BnMode::Frozen
        } else if self.training {
            BnMode::Train
        } else {
            BnMode::Eval
        }
    }

    pub fn channels(&self) -> usize {
        self.running_mean.numel()
    }

    /// The eval/frozen affine map `(s, t)` computed from `gamma` and `beta`, which may be
    /// on the tape (eval) or constants (frozen):
    /// `s = γ · 1/√(running_var + ε)`, `t = β − running_mean·s`.
    fn affine(&self, gamma: Tensor, beta: Tensor) -> (Tensor, Tensor) {
        let inv_std: Vec<f32> = self
            .running_var
            .data()
            .iter()
            .map(|&v| 1.0 / (v + self.eps).sqrt())
            .collect();
        let inv_std = Tensor::from_vec(self.running_var.shape(), inv_std);
        let scale = gamma.mul(&inv_std);
        let shift = beta.sub(&self.running_mean.mul(&scale));
        (scale, shift)
    }

    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        self.forward_act(x, false)
    }

    /// `max(forward(x), 0)` as one fused op (`focal_engine::batch_norm_train_relu`,
    /// `channel_affine_relu`): the same bits as `forward(x).relu()`.
    pub fn forward_relu(&mut self, x: &Tensor) -> Tensor {
        self.forward_act(x, true)
    }

    fn forward_act(&mut self, x: &Tensor, relu: bool) -> Tensor {
        let affine = if relu {
            channel_affine_relu
        } else {
            channel_affine
        };
        match self.mode() {
            BnMode::Train => {
                let norm = if relu {
                    batch_norm_train_relu
                } else {
                    batch_norm_train
                };
                let (y, stats) = norm(x, &self.weight.var(), &self.bias.var(), self.eps);
                let m = self.momentum;
                let blend = |running: &mut Tensor, batch: &[f32]| {
                    for (r, &b) in running.data_mut().iter_mut().zip(batch) {
                        *r = (1.0 - m) * *r + m * b;
                    }
                };
                blend(&mut self.running_mean, &stats.mean);
                blend(&mut self.running_var, &stats.var_unbiased);
                self.num_batches_tracked += 1;
                y
            }
            BnMode::Eval => {
                let (s, t) = self.affine(self.weight.var(), self.bias.var());
                affine(x, &s, &t)
            }
            BnMode::Frozen => {
                let (s, t) = self.affine(self.weight.value.detach(), self.bias.value.detach());
                affine(x, &s, &t)
            }
        }
    }
}

impl Module for BatchNorm2d {
    fn visit(&mut self, v: &mut dyn Visitor) {
        if self.frozen {
            v.buffer("weight", &mut self.weight.value);
            v.buffer("bias", &mut self.bias.value);
        } else {
            v.param("weight", &mut self.weight);
            v.param("bias", &mut self.bias);
        }
        v.buffer("running_mean", &mut self.running_mean);
        v.buffer("running_var", &mut self.running_var);
        if !self.frozen {
            v.counter("num_batches_tracked", &mut self.num_batches_tracked);
            v.training(&mut self.training);
        }
    }
}

impl Layer for BatchNorm2d {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        BatchNorm2d::forward(self, x)
    }
}
