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
//! Registered as `resnet18`, `resnet34` and `resnet50` ([`RESNET18`], ...); other widths
//! are a [`ResNetLayout`] away (see `resnet18_half`).
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
//! frozen BatchNorm for pretrained weights.
//!
//! **Trainable stages** ([`ResNet::set_trainable_layers`], torchvision's
//! `trainable_backbone_layers`): the five stages from the top are layer4, layer3, layer2,
//! layer1 and the stem conv1; with n of them trainable, every parameter whose name starts
//! with none of the first n is frozen, and with all five the stem's norm `bn1` trains too
//! (torchvision's exact rule: with 4, layer1-4 train and the whole stem is frozen). The
//! detector sets 3 with frozen BatchNorm and 5 otherwise unless the configuration says.
//!
//! **Initialisation** as torchvision's ResNet: convolutions Kaiming-normal with fan-out
//! and the ReLU gain, norm weights 1 and biases 0.
//!
//! Parameter names are torchvision's: `conv1.weight`, `bn1.weight`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.bias`…
//! (the norm layers keep the names `bn1`, `bn2`, `bn3` whatever their kind).

use focal_engine::{Conv2dOptions, Rng, Tensor};
use focal_nn::init::{kaiming_normal, FanMode};
use focal_nn::{Conv2d, MaxPool2d, Module, Slot, Visitor};

use super::norm::Norm;
use super::{Backbone, BackboneMemory, BackboneOptions, BackboneSpec};
use crate::config::BackboneNorm;

/// ResNet-18 (torchvision's `resnet18`).
pub const RESNET18: BackboneSpec = BackboneSpec {
    name: "resnet18",
    about: "ResNet-18, basic blocks [2, 2, 2, 2], C3-C5 = 128, 256, 512 channels",
    build: |o, rng| Box::new(ResNet::new(&ResNetLayout::RESNET18, o, rng)),
    memory: |norm, h, w| ResNetLayout::RESNET18.memory(norm, h, w),
};

/// ResNet-34 (torchvision's `resnet34`).
pub const RESNET34: BackboneSpec = BackboneSpec {
    name: "resnet34",
    about: "ResNet-34, basic blocks [3, 4, 6, 3], C3-C5 = 128, 256, 512 channels",
    build: |o, rng| Box::new(ResNet::new(&ResNetLayout::RESNET34, o, rng)),
    memory: |norm, h, w| ResNetLayout::RESNET34.memory(norm, h, w),
};

/// ResNet-50 (torchvision's `resnet50`, v1.5).
pub const RESNET50: BackboneSpec = BackboneSpec {
    name: "resnet50",
    about: "ResNet-50, bottleneck blocks [3, 4, 6, 3], C3-C5 = 512, 1024, 2048 channels",
    build: |o, rng| Box::new(ResNet::new(&ResNetLayout::RESNET50, o, rng)),
    memory: |norm, h, w| ResNetLayout::RESNET50.memory(norm, h, w),
};

/// The shape of a ResNet: blocks per stage, block kind and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetLayout {
    /// Blocks in layer1..layer4.
    pub blocks: [usize; 4],
    /// Bottleneck blocks (1×1, 3×3, 1×1 ×4) instead of basic ones (3×3, 3×3).
    pub bottleneck: bool,
    /// Channels of the stem and of layer1's blocks (64 in every torchvision ResNet); each
    /// later stage doubles them.
    pub width: usize,
}

impl ResNetLayout {
    /// Channels of C3, C4, C5: layer2..layer4's outputs.
    pub fn out_channels(&self) -> [usize; 3] {
        let e = if self.bottleneck { 4 } else { 1 };
        [2 * self.width * e, 4 * self.width * e, 8 * self.width * e]
    }

    /// The backbone's parameters and the floats its forward pass saves for one `h` x `w`
    /// input, counted from the layout (torchvision's ResNet without its classifier: the
    /// test `memory_counts_the_parameters_of_the_built_resnet` checks the count against the
    /// built network)
    ///
    /// Saved floats, an upper bound of what the tape keeps: a convolution's output, a
    /// norm's output and normalised input (frozen BatchNorm, an affine map, only its
    /// output), a ReLU's output, a residual sum, at each layer's resolution.
    pub fn memory(&self, norm: BackboneNorm, h: usize, w: usize) -> BackboneMemory {
        let n = match norm {
            BackboneNorm::FrozenBatchNorm => 1,
            _ => 2,
        };
        let (width, e) = (self.width as u64, if self.bottleneck { 4 } else { 1 });
        // A convolution's weights (no bias: a norm follows every one) and a norm's two
        // vectors.
        let conv = |cin: u64, cout: u64, k: u64| k * k * cin * cout;
        let half = |(a, b): (usize, usize)| (a.div_ceil(2), b.div_ceil(2));
        let area = |(a, b): (usize, usize)| (a * b) as u64;
        let s1 = half((h, w)); // conv1, stride 2
        let mut size = half(s1); // the max-pool, stride 4

        // Stem: conv, norm, ReLU at stride 2, max-pool at stride 4.
        let mut parameters = conv(3, width, 7) + 2 * width;
        let mut saved = width * area(s1) * (2 + n) + width * area(size);
        let mut cin = width;
        for (stage, &blocks) in self.blocks.iter().enumerate() {
            let planes = width << stage;
            let input = area(size);
            if stage > 0 {
                size = half(size);
            }
            let out = area(size);
            for b in 0..blocks {
                let s_in = if b == 0 { input } else { out };
                let shortcut = b == 0 && (stage > 0 || cin != planes * e);
                if self.bottleneck {
                    // 1×1 reduce (at the input's resolution), 3×3 (the stride), 1×1 ×4,
                    // each with its norm, ReLU after all but the last; the sum, its ReLU.
                    parameters += conv(cin, planes, 1)
                        + conv(planes, planes, 3)
                        + conv(planes, 4 * planes, 1)
                        + 2 * (planes + planes + 4 * planes);
                    saved += planes * s_in * (2 + n)
                        + planes * out * (2 + n)
                        + 4 * planes * out * (1 + n + 2);
                } else {
                    // conv, norm, ReLU, conv, norm, the sum, its ReLU.
                    parameters += conv(cin, planes, 3) + conv(planes, planes, 3) + 4 * planes;
                    saved += planes * out * (5 + 2 * n);
                }
                if shortcut {
                    parameters += conv(cin, planes * e, 1) + 2 * planes * e;
                    saved += planes * e * out * (1 + n);
                }
                cin = planes * e;
            }
        }
        BackboneMemory {
            parameters,
            out_channels: self.out_channels(),
            saved_floats: saved,
        }
    }

    pub const RESNET18: ResNetLayout = ResNetLayout {
        blocks: [2, 2, 2, 2],
        bottleneck: false,
        width: 64,
    };
    pub const RESNET34: ResNetLayout = ResNetLayout {
        blocks: [3, 4, 6, 3],
        bottleneck: false,
        width: 64,
    };
    pub const RESNET50: ResNetLayout = ResNetLayout {
        blocks: [3, 4, 6, 3],
        bottleneck: true,
        width: 64,
    };
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
        let mut y = self.bn1.forward_relu(&self.conv1.forward(x));
        y = match &mut self.conv3 {
            // Bottleneck: the middle norm is followed by a ReLU (fused), then conv3, bn3.
            Some((conv3, bn3)) => {
                let h = self.bn2.forward_relu(&self.conv2.forward(&y));
                bn3.forward(&conv3.forward(&h))
            }
            None => self.bn2.forward(&self.conv2.forward(&y)),
        };
        let identity = match &mut self.downsample {
            Some(d) => d.norm.forward(&d.conv.forward(x)),
            None => x.clone(),
        };
        // relu(F(x) + x) as one op: the same bits as add then relu.
        y.add_relu(&identity)
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
    pub fn new(layout: &ResNetLayout, options: &BackboneOptions, rng: &mut Rng) -> ResNet {
        let norm = |c: usize| Norm::new(options.norm, c, options.frozen_bn_eps);
        let (blocks, bottleneck, width) = (layout.blocks, layout.bottleneck, layout.width);
        let expansion = if bottleneck { 4 } else { 1 };
        let conv1 = conv(3, width, 7, 2, rng);
        let bn1 = norm(width);
        let mut layers = Vec::new();
        let mut cin = width;
        for (stage, &n) in blocks.iter().enumerate() {
            let planes = width << stage;
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
        let out_channels = [
            2 * width * expansion,
            4 * width * expansion,
            8 * width * expansion,
        ];
        ResNet {
            conv1,
            bn1,
            maxpool: MaxPool2d::new(3, 2, 1),
            layers,
            out_channels,
        }
    }

    /// Freezes every parameter outside the top `n` stages (see the module
    /// documentation); the parameters inside them train. Frozen BatchNorm's γ and β are
    /// constants either way.
    pub fn set_trainable_layers(&mut self, n: usize) {
        let mut train: Vec<&str> = ["layer4", "layer3", "layer2", "layer1", "conv1"]
            .into_iter()
            .take(n)
            .collect();
        if n >= 5 {
            train.push("bn1");
        }
        focal_nn::for_each_named(self, |name, slot| {
            if let Slot::Param(p) = slot {
                // torchvision's test is a plain prefix test on the name.
                p.frozen = !train.iter().any(|t| name.starts_with(t));
            }
        });
    }

    /// C3, C4, C5 of an (N, 3, H, W) batch.
    pub fn forward(&mut self, x: &Tensor) -> [Tensor; 3] {
        let mut y = self.bn1.forward_relu(&self.conv1.forward(x));
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

impl Backbone for ResNet {
    fn out_channels(&self) -> [usize; 3] {
        self.out_channels
    }

    fn forward(&mut self, images: &Tensor) -> [Tensor; 3] {
        ResNet::forward(self, images)
    }

    fn clone_box(&self) -> Box<dyn Backbone> {
        Box::new(self.clone())
    }

    fn set_trainable_layers(&mut self, n: usize) {
        ResNet::set_trainable_layers(self, n)
    }
}
