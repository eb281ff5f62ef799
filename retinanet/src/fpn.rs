//! The feature pyramid network (Lin et al., 2017) with RetinaNet's two extra levels:
//! from C3, C4, C5 to P3..P7, every level with F channels (RetinaNet §4 and footnote 2).
//!
//! ```text
//!   M5 = lateral5(C5)                          lateral: 1×1 conv C_l → F
//!   M4 = lateral4(C4) + nearest_up(M5 → size of C4)
//!   M3 = lateral3(C3) + nearest_up(M4 → size of C3)
//!   P_l = output_l(M_l), l = 3, 4, 5           output: 3×3 conv F → F
//!   P6 = 3×3 stride-2 conv of C5 (the paper; or of P5, torchvision v1)
//!   P7 = 3×3 stride-2 conv of ReLU(P6)
//! ```
//!
//! No norm and no ReLU (other than before P7). The upsampling goes to the lateral's exact
//! size (torchvision), so inputs that are not multiples of 32 work.
//!
//! Initialisation: every conv Kaiming-uniform with a = 1 (bound √(3/fan_in)), bias 0.
//! Names as torchvision's `BackboneWithFPN.fpn`: `inner_blocks.{0,1,2}.0`,
//! `layer_blocks.{0,1,2}.0`, `extra_blocks.p6`, `extra_blocks.p7`.

use focal_engine::{upsample_nearest_to, Conv2dOptions, Rng, Tensor};
use focal_nn::init::{kaiming_uniform, FanMode};
use focal_nn::{Conv2d, Module, Visitor};

use crate::config::P6Input;

fn conv(cin: usize, cout: usize, k: usize, stride: usize, rng: &mut Rng) -> Conv2d {
    let w = kaiming_uniform(&[cout, cin, k, k], 1.0, FanMode::FanIn, rng);
    Conv2d::from_parts(
        w,
        Some(Tensor::zeros(&[cout])),
        Conv2dOptions::sp(stride, k / 2),
    )
}

/// A conv inside a one-element `Sequential` in torchvision (`inner_blocks.0.0.weight`).
struct Wrapped<'a>(&'a mut Conv2d);

impl Module for Wrapped<'_> {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("0", self.0);
    }
}

#[derive(Clone)]
pub struct Fpn {
    /// The lateral 1×1 convs of C3, C4, C5.
    pub inner: Vec<Conv2d>,
    /// The 3×3 output convs of P3, P4, P5.
    pub output: Vec<Conv2d>,
    pub p6: Conv2d,
    pub p7: Conv2d,
    pub p6_input: P6Input,
}

impl Fpn {
    /// `in_channels` are those of C3, C4, C5; `f` the pyramid's channels.
    pub fn new(in_channels: [usize; 3], f: usize, p6_input: P6Input, rng: &mut Rng) -> Fpn {
        // torchvision's creation order: for each level, lateral then output; then P6, P7.
        let mut inner = Vec::new();
        let mut output = Vec::new();
        for &c in &in_channels {
            inner.push(conv(c, f, 1, 1, rng));
            output.push(conv(f, f, 3, 1, rng));
        }
        let p6_in = match p6_input {
            P6Input::C5 => in_channels[2],
            P6Input::P5 => f,
        };
        Fpn {
            inner,
            output,
            p6: conv(p6_in, f, 3, 2, rng),
            p7: conv(f, f, 3, 2, rng),
            p6_input,
        }
    }

    /// P3..P7 from C3, C4, C5.
    pub fn forward(&self, c: &[Tensor; 3]) -> Vec<Tensor> {
        let mut merged = self.inner[2].forward(&c[2]);
        let mut p = vec![self.output[2].forward(&merged)];
        for l in (0..2).rev() {
            let lateral = self.inner[l].forward(&c[l]);
            let (h, w) = (lateral.dim(2), lateral.dim(3));
            merged = lateral.add(&upsample_nearest_to(&merged, h, w));
            p.insert(0, self.output[l].forward(&merged));
        }
        let p6 = match self.p6_input {
            P6Input::C5 => self.p6.forward(&c[2]),
            P6Input::P5 => self.p6.forward(&p[2]),
        };
        let p7 = self.p7.forward(&p6.relu());
        p.push(p6);
        p.push(p7);
        p
    }
}

impl Module for Fpn {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.scope("inner_blocks", |v| {
            for (i, c) in self.inner.iter_mut().enumerate() {
                v.child(&i.to_string(), &mut Wrapped(c));
            }
        });
        v.scope("layer_blocks", |v| {
            for (i, c) in self.output.iter_mut().enumerate() {
                v.child(&i.to_string(), &mut Wrapped(c));
            }
        });
        v.scope("extra_blocks", |v| {
            v.child("p6", &mut self.p6);
            v.child("p7", &mut self.p7);
        });
    }
}
