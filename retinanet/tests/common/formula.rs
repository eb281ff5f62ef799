//! The formula weights of the torchvision agreement tests, shared by
//! `retinanet/tests/torchvision_agreement.rs` and the CLI test `tests/cli_pretrained.rs`
//! (which includes this file by path).
//!
//! Every parameter and buffer is a formula of its torchvision state-dict name and flat
//! index, evaluated bit for bit as `retinanet/tests/fixtures/make_torchvision_reference.py`
//! evaluates it in numpy (see that script's docstring):
//!
//! ```text
//! h = splitmix64(fnv1a64(name) + i); u = (h >> 40) / 2^24
//! conv weight (2u − 1)·√(3 / fan_in); running_mean 0.1·(2u − 1); running_var 0.5 + u;
//! norm weight 0.5 + 0.5u; bias 0.1·(2u − 1)
//! ```
//!
//! [`write_detection_weights`] writes torchvision's `retinanet_resnet50_fpn` layout with
//! the class output of `make_torchvision_detections.py` (weight × 10, five COCO classes
//! that score, every other row's bias −30) as a safetensors state dict under torchvision's
//! names with 91 classes: a stand-in for torchvision's own COCO weights file.
#![allow(dead_code)]

use std::path::Path;

use focal_engine::{Rng, Tensor};
use focal_nn::{for_each_named, Slot};
use focal_retinanet::{BackboneName, BackboneNorm, P6Input, RetinaNet, RetinaNetConfig};

pub fn fnv1a64(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value of every element of the tensor `name` (see the module documentation).
pub fn formula(name: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let key = fnv1a64(name);
    let u = |i: usize| (splitmix64(key.wrapping_add(i as u64)) >> 40) as f32 / (1u64 << 24) as f32;
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let u = u(i);
            if shape.len() == 4 {
                let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
                (2.0 * u - 1.0) * (3.0f32 / fan_in).sqrt()
            } else if name.ends_with("running_mean") {
                0.1 * (2.0 * u - 1.0)
            } else if name.ends_with("running_var") {
                0.5 + u
            } else if name.ends_with("weight") {
                0.5 + 0.5 * u
            } else {
                assert!(name.ends_with("bias"), "{name}");
                0.1 * (2.0 * u - 1.0)
            }
        })
        .collect();
    Tensor::from_vec(shape, v)
}

/// Sets every parameter and buffer of `model` by the formula.
pub fn set_by_formula(model: &mut RetinaNet) {
    for_each_named(model, |name, slot| match slot {
        Slot::Param(p) => p.value = formula(name, p.value.shape()),
        Slot::Buffer(t) => *t = formula(name, t.shape()),
        Slot::Counter(_) => {}
    });
}

/// make_torchvision_detections.py's CLASS_WEIGHT_SCALE.
pub const CLASS_WEIGHT_SCALE: f32 = 10.0;
/// make_torchvision_detections.py's BOOSTED: (COCO id, added to the formula bias).
pub const BOOSTED: [(usize, f32); 5] = [(1, 0.0), (3, -0.5), (18, -1.0), (44, -1.5), (62, -2.0)];

/// The 91-class model of torchvision's `retinanet_resnet50_fpn` with the detection test's
/// weights, written to `path` under torchvision's names.
pub fn write_detection_weights(path: &Path) {
    let mut cfg = RetinaNetConfig::torchvision_resnet50_fpn();
    cfg.model.num_classes = 91;
    let mut model = focal_nn::init::without_random_init(|| RetinaNet::new(&cfg, &mut Rng::new(0)))
        .expect("torchvision's layout builds");
    set_by_formula(&mut model);
    let output = &mut model.head.classification.output;
    let w = &output.weight.value;
    let scaled = w.data().iter().map(|&v| v * CLASS_WEIGHT_SCALE).collect();
    output.weight.value = Tensor::from_vec(w.shape(), scaled);
    let name = "head.classification_head.cls_logits.bias";
    let f = formula(name, &[9 * 91]);
    let mut b = vec![-30.0f32; 9 * 91];
    for a in 0..9 {
        for (id, boost) in BOOSTED {
            b[a * 91 + id] = f.data()[a * 91 + id] + boost;
        }
    }
    output
        .bias
        .as_mut()
        .expect("the class output has a bias")
        .value = Tensor::from_vec(&[9 * 91], b);
    focal_nn::export_safetensors(&mut model, path, None).expect("the weights are written");
}

/// A small RetinaNet state dict under torchvision's names, written to `path`: ResNet-18
/// at half width with frozen BatchNorm, F = 64, P6 from P5, one-layer heads, 91 classes,
/// values by the formula. Quick to write and to run.
pub fn write_small_detector(path: &Path) {
    let mut c = RetinaNetConfig::default();
    c.model.depth = BackboneName::parse("resnet18-half").expect("registered");
    c.model.norm = BackboneNorm::FrozenBatchNorm;
    c.model.p6_input = P6Input::P5;
    c.model.fpn_channels = 64;
    c.model.head_width = 64;
    c.model.head_depth = 1;
    c.model.num_classes = 91;
    let mut m = focal_nn::init::without_random_init(|| RetinaNet::new(&c, &mut Rng::new(0)))
        .expect("the small detector builds");
    set_by_formula(&mut m);
    focal_nn::export_safetensors(&mut m, path, None).expect("the weights are written");
}
