//! The normalisation layer of a backbone: GroupNorm(32), trainable BatchNorm or frozen
//! BatchNorm, as [`BackboneNorm`] says, under the names torchvision gives a norm layer.

use focal_engine::Tensor;
use focal_nn::{BatchNorm2d, GroupNorm, Module, Visitor};

use crate::config::BackboneNorm;

/// A normalisation layer of the backbone (see [`BackboneNorm`]).
#[derive(Clone)]
pub enum Norm {
    Group(GroupNorm),
    Batch(BatchNorm2d),
}

impl Norm {
    pub fn new(kind: BackboneNorm, channels: usize, frozen_bn_eps: f32) -> Norm {
        match kind {
            BackboneNorm::GroupNorm => Norm::Group(GroupNorm::new(32, channels)),
            BackboneNorm::BatchNorm => Norm::Batch(BatchNorm2d::new(channels)),
            BackboneNorm::FrozenBatchNorm => {
                Norm::Batch(BatchNorm2d::frozen(channels).eps(frozen_bn_eps))
            }
        }
    }

    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        match self {
            Norm::Group(n) => n.forward(x),
            Norm::Batch(n) => n.forward(x),
        }
    }

    /// `forward(x).relu()` as one fused op: the same bits, one tensor fewer.
    pub fn forward_relu(&mut self, x: &Tensor) -> Tensor {
        match self {
            Norm::Group(n) => n.forward_relu(x),
            Norm::Batch(n) => n.forward_relu(x),
        }
    }
}

impl Module for Norm {
    fn visit(&mut self, v: &mut dyn Visitor) {
        match self {
            Norm::Group(n) => n.visit(v),
            Norm::Batch(n) => n.visit(v),
        }
    }
}
