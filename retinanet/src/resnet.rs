//! The backbone: a ResNet (He et al., 2016) in torchvision's layout, whose stages
//! layer2, layer3, layer4 give C3, C4, C5 (strides 8, 16, 32).
//!
//! ```text
//!   conv1 7×7 s2 → norm → ReLU → max-pool 3×3 s2         (stride 4, 64 channels)
//!   layer1: blocks at stride 4                            (C2)
//!   layer2: first block stride 2                          (C3, stride 8)
//!   layer3: first block stride 2                          (C4, stride 16)
//!   layer4: first block stride 2                          (C5, stride 32)
//! ```
//!
//! - ResNet-18 / 34: *basic* blocks (3×3, 3×3), [2, 2, 2, 2] / [3, 4, 6, 3] blocks,
//!   C3..C5 = 128, 256, 512 channels.
//! - ResNet-50: *bottleneck* blocks (1×1 reduce, 3×3, 1×1 expand ×4), [3, 4, 6, 3]
//!   blocks, C3..C5 = 512, 1024, 2048 channels. The stride-2 sits in the 3×3 conv
//!   (torchvision's "ResNet v1.5"), not in the first 1×1 as in the MSRA weights.
//!
//! A block adds its input (through `downsample` = 1×1 conv + norm when the stride or
//! the width changes) to its output before the last ReLU.
//!
//! **Norm.** GroupNorm(32) by default (trained from scratch), or BatchNorm (trainable), or
//! frozen BatchNorm for pretrained weights, in which case the stem and layer1 are
//! frozen too (torchvision's `trainable_backbone_layers = 3`).
//!
//! **Initialisation** as torchvision's ResNet: convolutions Kaiming-normal with fan-out
//! and the ReLU gain, norm weights 1 and biases 0.
//!
//! Parameter names are torchvision's: `conv1.weight`, `bn1.weight`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.bias`…
//! (the norm layers keep the names `bn1`, `bn2`, `bn3` whatever their kind).

use focal_engine::{Conv2dOptions, Rng, Tensor};
use focal_nn::init::{kaiming_normal, FanMode};
use focal_nn::{BatchNorm2d, Conv2d, GroupNorm, MaxPool2d, Module, Visitor};

use crate::config::{BackboneNorm, Depth};

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
}

impl Module for Norm {
    fn visit(&mut self, v: &mut dyn Visitor) {
        match self {
            Norm::Group(n) => n.visit(v),
            Norm::Batch(n) => n.visit(v),
        }
    }
}

/// A bias-free convolution with torchvision's ResNet initialisation.
/// Padding k/2 keeps the size at stride 1 and gives ⌈size/2⌉ at stride 2.
fn conv(cin: usize, cout: usize, k: usize, stride: usize, rng: &mut Rng) -> Conv2d {
    let w = kaiming_normal(&[cout, cin, k, k], 0.0, FanMode::FanOut, rng);
    Conv2d::from_parts(w, None, Conv2dOptions::sp(stride, k / 2))
}

/// The shortcut of a block that changes stride or width: 1×1 conv (stride s) + norm.
#[derive(Clone)]
pub struct Downsample {
    pub conv: Conv2d,
    pub norm: Norm,
}

impl Module for Downsample {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("0", &mut self.conv);
        v.child("1", &mut self.norm);
    }
}

/// One residual block, basic (two 3×3 convs) or bottleneck (1×1, 3×3, 1×1).
#[derive(Clone)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: Norm,
    pub conv2: Conv2d,
    pub bn2: Norm,
    /// The bottleneck's expanding 1×1 conv and its norm.
    pub conv3: Option<(Conv2d, Norm)>,
    pub downsample: Option<Downsample>,
}

impl Block {
    /// A basic block `cin → planes`, stride on the first 3×3.
    fn basic(
        cin: usize,
        planes: usize,
        stride: usize,
        norm: &dyn Fn(usize) -> Norm,
        rng: &mut Rng,
    ) -> Block {
        let downsample = (stride != 1 || cin != planes).then(|| Downsample {
            conv: conv(cin, planes, 1, stride, rng),
            norm: norm(planes),
        });
        Block {
            conv1: conv(cin, planes, 3, stride, rng),
            bn1: norm(planes),
            conv2: conv(planes, planes, 3, 1, rng),
            bn2: norm(planes),
            conv3: None,
            downsample,
        }
    }

    /// A bottleneck block `cin → 4·planes`, stride on the 3×3.
    fn bottleneck(
        cin: usize,
        planes: usize,
        stride: usize,
        norm: &dyn Fn(usize) -> Norm,
        rng: &mut Rng,
    ) -> Block {
        let cout = 4 * planes;
        // torchvision creates conv1, bn1, conv2, bn2, conv3, bn3, then the shortcut.
        let conv1 = conv(cin, planes, 1, 1, rng);
        let conv2 = conv(planes, planes, 3, stride, rng);
        let conv3 = conv(planes, cout, 1, 1, rng);
        let downsample = (stride != 1 || cin != cout).then(|| Downsample {
            conv: conv(cin, cout, 1, stride, rng),
            norm: norm(cout),
        });
        Block {
            conv1,
            bn1: norm(planes),
            conv2,
            bn2: norm(planes),
            conv3: Some((conv3, norm(cout))),
            downsample,
        }
    }

    pub fn forward(&mut self, x: &Tensor) -> Tensor {
        let mut y = self.bn1.forward(&self.conv1.forward(x)).relu();
        y = self.bn2.forward(&self.conv2.forward(&y));
        if let Some((conv3, bn3)) = &mut self.conv3 {
            y = bn3.forward(&conv3.forward(&y.relu()));
        }
        let identity = match &mut self.downsample {
            Some(d) => d.norm.forward(&d.conv.forward(x)),
            None => x.clone(),
        };
        y.add(&identity).relu()
    }
}

impl Module for Block {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("conv1", &mut self.conv1);
        v.child("bn1", &mut self.bn1);
        v.child("conv2", &mut self.conv2);
        v.child("bn2", &mut self.bn2);
        if let Some((conv3, bn3)) = &mut self.conv3 {
            v.child("conv3", conv3);
            v.child("bn3", bn3);
        }
        if let Some(d) = &mut self.downsample {
            v.child("downsample", d);
        }
    }
}

/// The ResNet trunk up to layer4 (no pooling or classifier).
#[derive(Clone)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: Norm,
    pub maxpool: MaxPool2d,
    /// layer1..layer4.
    pub layers: Vec<Vec<Block>>,
    /// Channels of C3, C4, C5.
    pub out_channels: [usize; 3],
}

impl ResNet {
    /// Builds the trunk; with frozen BatchNorm the stem and layer1 are frozen too.
    pub fn new(depth: Depth, norm_kind: BackboneNorm, frozen_bn_eps: f32, rng: &mut Rng) -> ResNet {
        let norm = |c: usize| Norm::new(norm_kind, c, frozen_bn_eps);
        let (blocks, bottleneck) = match depth {
            Depth::ResNet18 => ([2, 2, 2, 2], false),
            Depth::ResNet34 => ([3, 4, 6, 3], false),
            Depth::ResNet50 => ([3, 4, 6, 3], true),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let conv1 = conv(3, 64, 7, 2, rng);
        let bn1 = norm(64);
        let mut layers = Vec::new();
        let mut cin = 64;
        for (stage, &n) in blocks.iter().enumerate() {
            let planes = 64 << stage;
            let mut layer = Vec::new();
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                layer.push(if bottleneck {
                    Block::bottleneck(cin, planes, stride, &norm, rng)
                } else {
                    Block::basic(cin, planes, stride, &norm, rng)
                });
                cin = planes * expansion;
            }
            layers.push(layer);
        }
        let out_channels = [128 * expansion, 256 * expansion, 512 * expansion];
        let mut net = ResNet {
            conv1,
            bn1,
            maxpool: MaxPool2d::new(3, 2, 1),
            layers,
            out_channels,
        };
        if norm_kind == BackboneNorm::FrozenBatchNorm {
            focal_nn::freeze(&mut net, "conv1");
            focal_nn::freeze(&mut net, "layer1");
        }
        net
    }

    /// C3, C4, C5 of an (N, 3, H, W) batch.
    pub fn forward(&mut self, x: &Tensor) -> [Tensor; 3] {
        let mut y = self.bn1.forward(&self.conv1.forward(x)).relu();
        y = self.maxpool.forward(&y);
        let mut outs = Vec::with_capacity(3);
        for (stage, layer) in self.layers.iter_mut().enumerate() {
            for block in layer.iter_mut() {
                y = block.forward(&y);
            }
            if stage >= 1 {
                outs.push(y.clone());
            }
        }
        [outs[0].clone(), outs[1].clone(), outs[2].clone()]
    }
}

impl Module for ResNet {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("conv1", &mut self.conv1);
        v.child("bn1", &mut self.bn1);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            v.scope(&format!("layer{}", i + 1), |v| {
                for (j, block) in layer.iter_mut().enumerate() {
                    v.child(&j.to_string(), block);
                }
            });
        }
    }
}
