//! ResNet-18 at half width, `resnet18-half`: torchvision's ResNet-18 layout (the same
//! blocks, strides and parameter names, so the same code loads and exports it) with 32
//! channels in the stem and layer1 instead of 64, hence C3-C5 = 64, 128, 256.
//!
//! A backbone for a CPU: every convolution has half the input and half the output
//! channels, so a quarter of the multiply-adds and of the parameters (2.8 M against
//! 11.2 M) of ResNet-18, with the network's depth and receptive field unchanged. The
//! dense convolutions it is made of are focal's fastest kernels (the engine's depthwise
//! convolutions, which MobileNet-style blocks would need, run far below them). There
//! are no ImageNet weights for it: it trains from scratch, with GroupNorm by default.

use super::resnet::{ResNet, ResNetLayout};
use super::BackboneSpec;

/// ResNet-18 with half the channels: basic blocks [2, 2, 2, 2], width 32.
pub const LAYOUT: ResNetLayout = ResNetLayout {
    width: 32,
    ..ResNetLayout::RESNET18
};

/// Registered in [`super::BACKBONES`].
pub const RESNET18_HALF: BackboneSpec = BackboneSpec {
    name: "resnet18-half",
    about: "ResNet-18 at half width, basic blocks [2, 2, 2, 2], C3-C5 = 64, 128, 256 channels",
    build: |o, rng| Box::new(ResNet::new(&LAYOUT, o, rng)),
    memory: |norm, h, w| LAYOUT.memory(norm, h, w),
};
