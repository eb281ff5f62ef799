//! Group normalisation (Wu & He): each sample's channels are split into `groups` blocks of
//! consecutive channels, each block is normalised over its channels and positions, then
//! `y = γ_c·x̂ + β_c`. Independent of the batch, so it behaves the same in training and
//! evaluation (RetinaNet trained from scratch uses it in the backbone, FPN and heads).

use focal_engine::ops::norm::{group_norm, group_norm_relu};
use focal_engine::Tensor;

use super::Layer;
use crate::module::{Module, Visitor};
use crate::param::Param;

#[derive(Clone)]
pub struct GroupNorm {
    pub groups: usize,
    /// γ (initialised to 1).
    pub weight: Param,
    /// β (initialised to 0).
    pub bias: Param,
    pub eps: f32,
}

impl GroupNorm {
    /// `groups` groups over `channels` channels (which it must divide), ε = 1e-5.
    pub fn new(groups: usize, channels: usize) -> GroupNorm {
        assert!(
            groups > 0 && channels.is_multiple_of(groups),
            "GroupNorm: {groups} groups do not divide {channels} channels"
        );
        GroupNorm {
            groups,
            weight: Param::no_decay(Tensor::ones(&[channels])),
            bias: Param::no_decay(Tensor::zeros(&[channels])),
            eps: 1e-5,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        group_norm(
            x,
            self.groups,
            &self.weight.var(),
            &self.bias.var(),
            self.eps,
        )
    }

    /// `max(forward(x), 0)` as one fused op (`focal_engine::group_norm_relu`): the same
    /// bits as `forward(x).relu()`.
    pub fn forward_relu(&self, x: &Tensor) -> Tensor {
        group_norm_relu(
            x,
            self.groups,
            &self.weight.var(),
            &self.bias.var(),
            self.eps,
        )
    }
}

impl Module for GroupNorm {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.param("weight", &mut self.weight);
        v.param("bias", &mut self.bias);
    }
}

impl Layer for GroupNorm {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        GroupNorm::forward(self, x)
    }
}
