//! The backbone seam: what the detector needs of a backbone, and the list of backbones
//! focal can build.
//!
//! RetinaNet reads three feature maps from its backbone, **C3, C4, C5** at strides 8, 16
//! and 32 (the paper's §4, "Feature Pyramid Network Backbone"), and needs to know their
//! channels to build the FPN's lateral convolutions. That is the whole contract, the
//! [`Backbone`] trait (as torchvision's `BackboneWithFPN` asks only for `out_channels`).
//! Its parameters are visited under `backbone.body.*` with the names torchvision gives
//! the same network, so weights exchange with PyTorch.
//!
//! **Adding a backbone** is one new file and one line: write a type that implements
//! [`Backbone`] (and `focal_nn::Module`) and a [`BackboneSpec`] with its name and its
//! memory count ([`BackboneMemory`], for the run's memory estimate), then list
//! that [`BackboneSpec`] in [`BACKBONES`]. The name is then valid in configurations (`depth = "..."`),
//! in `focal train --backbone`, `focal bench train-step --backbone`, and in checkpoints.
//! `resnet18_half.rs` is an example.

use focal_engine::{Rng, Tensor};
use focal_nn::Module;

use crate::config::BackboneNorm;

pub mod norm;
pub mod resnet;
pub mod resnet18_half;

/// Every backbone focal can build, by name. One line per backbone.
pub const BACKBONES: &[BackboneSpec] = &[
    resnet::RESNET18,
    resnet::RESNET34,
    resnet::RESNET50,
    resnet18_half::RESNET18_HALF,
];

/// What the detector needs of a backbone.
pub trait Backbone: Module + Send + Sync {
    /// Channels of C3, C4, C5.
    fn out_channels(&self) -> [usize; 3];
    /// C3, C4, C5 (strides 8, 16, 32) of a batch `(N, 3, H, W)`. Records on the tape
    /// unless called under `focal_engine::no_grad`.
    fn forward(&mut self, images: &Tensor) -> [Tensor; 3];
    /// A copy that shares the parameters' storage (for the replicas of a data-parallel
    /// step; see `crate::train::data_parallel`).
    fn clone_box(&self) -> Box<dyn Backbone>;
    /// Lets the top `n` of its five stages train and freezes the parameters below them,
    /// as torchvision's `trainable_backbone_layers` does (0: none train, 5: all); the
    /// detector calls it once after building ([`crate::ModelConfig::trainable_layers`]).
    fn set_trainable_layers(&mut self, n: usize);
}

impl Clone for Box<dyn Backbone> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// The choices every backbone receives from the configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackboneOptions {
    /// GroupNorm, BatchNorm or frozen BatchNorm (with the stem and first stage frozen).
    pub norm: BackboneNorm,
    /// ε of frozen BatchNorm.
    pub frozen_bn_eps: f32,
}

/// A backbone focal can build: its name and its constructor.
#[derive(Clone, Copy)]
pub struct BackboneSpec {
    /// The name in configurations and on the command line, e.g. "resnet18".
    pub name: &'static str,
    /// One line for the documentation: the architecture and its C3-C5 channels.
    pub about: &'static str,
    /// A freshly initialised backbone; every random value is drawn from the generator.
    pub build: fn(&BackboneOptions, &mut Rng) -> Box<dyn Backbone>,
    /// What the backbone costs in memory for one `h` x `w` input, worked out from its
    /// architecture without building it (the run's memory estimate, `train/memory.rs`).
    pub memory: fn(BackboneNorm, usize, usize) -> BackboneMemory,
}

/// A backbone's share of a training run's memory, counted from its architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackboneMemory {
    /// Its parameters (norm weights included; frozen BatchNorm's are counted too).
    pub parameters: u64,
    /// Channels of C3, C4, C5.
    pub out_channels: [usize; 3],
    /// Floats its forward pass keeps for the backward pass, per image: an upper bound
    /// of the tensors it makes (see `train/memory.rs` for how that count is used).
    pub saved_floats: u64,
}

/// The registered backbone called `name`.
pub fn find(name: &str) -> Option<&'static BackboneSpec> {
    BACKBONES.iter().find(|b| b.name == name)
}

/// "resnet18, resnet34, resnet50 or resnet18-half".
pub fn names() -> String {
    let names: Vec<&str> = BACKBONES.iter().map(|b| b.name).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_backbone_builds_and_reports_its_channels() {
        let options = BackboneOptions {
            norm: BackboneNorm::GroupNorm,
            frozen_bn_eps: 1e-5,
        };
        for spec in BACKBONES {
            assert_eq!(find(spec.name).map(|s| s.name), Some(spec.name));
            let mut b = (spec.build)(&options, &mut Rng::new(0));
            let c = b.forward(&Tensor::zeros(&[1, 3, 64, 64]));
            focal_engine::clear_tape();
            for (level, (t, channels)) in c.iter().zip(b.out_channels()).enumerate() {
                let stride = 8 << level;
                assert_eq!(
                    t.shape(),
                    &[1, channels, 64 / stride, 64 / stride],
                    "{}: C{}",
                    spec.name,
                    level + 3
                );
            }
        }
        assert!(names().ends_with(" or resnet18-half"), "{}", names());
    }
}
