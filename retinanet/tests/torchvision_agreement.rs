//! focal's RetinaNet against torchvision 0.29.2 (PyTorch 2.15), on two seeded models:
//!
//! - `resnet50_p5_frozenbn`: torchvision's `retinanet_resnet50_fpn` architecture (ResNet-50,
//!   frozen BatchNorm, P6 from P5, 91 COCO classes), input 1×3×64×96;
//! - `resnet18_c5_gn`: ResNet-18 with GroupNorm(32), F = 128, P6 from C5, GroupNorm in the
//!   towers, 3 classes, input 1×3×136×200 (not a multiple of 32: odd pyramid sizes).
//!
//! The fixtures (`tests/fixtures/tv_*.safetensors`) were made by
//! `python retinanet/tests/fixtures/make_torchvision_reference.py` (a Python with torch,
//! torchvision and safetensors: `pip install torch torchvision safetensors`); they
//! hold the input, torchvision's P3..P7, class logits and box regressions computed in
//! float64 (the exact answer), torchvision's own float32 error on each, and torchvision's
//! state-dict names and shapes. Every weight is a formula of its name and
//! index (see the script), evaluated here bit for bit. The weights are written to a
//! safetensors file under torchvision's names and loaded with
//! [`focal_retinanet::load_torchvision`], so the 91 → 80 class remap is exercised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use focal_engine::{no_grad, Rng, Tensor};
use focal_nn::{for_each_named, read_safetensors, FileTensor, Slot};
use focal_retinanet::import::COCO_IDS;
use focal_retinanet::{
    load_torchvision, BackboneName, BackboneNorm, P6Input, RetinaNet, RetinaNetConfig,
};

fn fnv1a64(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The script's formula (see its docstring).
fn formula(name: &str, shape: &[usize]) -> Tensor {
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

fn fixture_path(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/tv_{kind}.safetensors"))
}

fn read_fixture(kind: &str) -> HashMap<String, Tensor> {
    read_safetensors(&fixture_path(kind))
        .unwrap()
        .into_iter()
        .map(|(name, t, _)| match t {
            FileTensor::Float(t) => (name, t),
            _ => panic!("{name}: not a float tensor"),
        })
        .collect()
}

/// A JSON entry of the fixture's safetensors metadata.
fn metadata<T: serde::de::DeserializeOwned>(kind: &str, key: &str) -> T {
    let bytes = std::fs::read(fixture_path(kind)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    serde_json::from_str(header["__metadata__"][key].as_str().unwrap()).unwrap()
}

/// torchvision's state-dict (name, shape) list.
fn torchvision_names(kind: &str) -> Vec<(String, Vec<usize>)> {
    metadata(kind, "state_dict")
}

/// focal's (name, shape) list: parameters, buffers and counters in visiting order.
fn focal_names(model: &mut RetinaNet) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for_each_named(model, |name, slot| {
        let shape = match slot {
            Slot::Param(p) => p.value.shape().to_vec(),
            Slot::Buffer(t) => t.shape().to_vec(),
            Slot::Counter(_) => vec![],
        };
        out.push((name.to_string(), shape));
    });
    out
}

/// Sets every parameter and buffer of `model` by the formula.
fn set_by_formula(model: &mut RetinaNet) {
    for_each_named(model, |name, slot| match slot {
        Slot::Param(p) => p.value = formula(name, p.value.shape()),
        Slot::Buffer(t) => *t = formula(name, t.shape()),
        Slot::Counter(_) => {}
    });
}

fn temp_file(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "focal-agreement-{tag}-{}.safetensors",
        std::process::id()
    ))
}

/// Checks focal's float32 output `a` against torchvision's float64 output `b` (stored as
/// f32). The allowance is 4× torchvision's own float32 error on the same output, or 2e-5,
/// whichever is larger: focal must be about as accurate as PyTorch.
fn compare(what: &str, a: &Tensor, b: &Tensor, tv_f32_error: f64) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let diff = a.max_abs_diff(b) as f64;
    let scale = b.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    println!(
        "{what:<36} max |focal − exact| = {diff:.2e}, torchvision f32: {tv_f32_error:.2e} \
         (max |value| {scale:.3})"
    );
    let allowed = (4.0 * tv_f32_error).max(2e-5);
    assert!(
        diff <= allowed,
        "{what}: focal is off by {diff:.3e} > {allowed:.3e}"
    );
}

/// Runs the comparison; `model` already holds the weights.
fn check_outputs(kind: &str, model: &mut RetinaNet, select_classes: Option<&[usize]>) {
    let fx = read_fixture(kind);
    let tv: HashMap<String, f64> = metadata(kind, "f32_error");
    let x = &fx["input"];
    model.set_train(false);
    let (p, out) = no_grad(|| {
        let c = model.body.forward(x);
        let p = model.fpn.forward(&c);
        (p, model.forward(x))
    });
    for (l, pl) in p.iter().enumerate() {
        let key = format!("p{}", l + 3);
        compare(&format!("{kind} P{}", l + 3), pl, &fx[&key], tv[&key]);
    }
    let reference_cls = match select_classes {
        None => fx["cls_logits"].clone(),
        Some(ids) => fx["cls_logits"].index_select(2, ids),
    };
    let what = format!("{kind} class logits");
    compare(&what, &out.cls_logits, &reference_cls, tv["cls_logits"]);
    let what = format!("{kind} box regression");
    compare(
        &what,
        &out.box_deltas,
        &fx["bbox_regression"],
        tv["bbox_regression"],
    );
    // The anchors' level layout agrees with the network's.
    let anchors = model.anchors(x.dim(2), x.dim(3));
    assert_eq!(anchors.level_sizes, out.level_sizes);
    assert_eq!(anchors.len(), out.cls_logits.dim(1));
}

#[test]
fn resnet50_frozen_bn_p5_loads_torchvision_names_and_agrees() {
    let kind = "resnet50_p5_frozenbn";
    // Build a 91-class model under torchvision's names, fill it by the formula and write
    // it as a safetensors state dict: a stand-in for a torchvision export.
    let mut cfg = RetinaNetConfig::torchvision_resnet50_fpn();
    cfg.model.frozen_bn_eps = 1e-5; // torchvision's FrozenBatchNorm2d default, as in the script
    let mut cfg91 = cfg.clone();
    cfg91.model.num_classes = 91;
    let mut rng = Rng::new(0);
    let mut m91 = RetinaNet::new(&cfg91, &mut rng).unwrap();
    // Every name and shape is torchvision's, in torchvision's order.
    assert_eq!(focal_names(&mut m91), torchvision_names(kind));
    set_by_formula(&mut m91);
    let file = temp_file(kind);
    focal_nn::export_safetensors(&mut m91, &file, None).unwrap();
    drop(m91);

    // focal's 80-class model loads it with the class remap.
    let mut model = RetinaNet::new(&cfg, &mut rng).unwrap();
    let report = load_torchvision(&mut model, &file).unwrap();
    std::fs::remove_file(&file).ok();
    assert!(report.is_complete(), "{:?}", report.problems());
    let ids: Vec<usize> = COCO_IDS.to_vec();
    check_outputs(kind, &mut model, Some(&ids));
}

#[test]
fn resnet18_group_norm_p6_from_c5_agrees() {
    let kind = "resnet18_c5_gn";
    let mut cfg = RetinaNetConfig::default();
    cfg.model.depth = BackboneName::RESNET18;
    cfg.model.norm = BackboneNorm::GroupNorm;
    cfg.model.p6_input = P6Input::C5;
    cfg.model.fpn_channels = 128;
    cfg.model.head_width = 128;
    cfg.model.head_norm = true;
    cfg.model.num_classes = 3;
    let mut model = RetinaNet::new(&cfg, &mut Rng::new(0)).unwrap();
    assert_eq!(focal_names(&mut model), torchvision_names(kind));
    set_by_formula(&mut model);
    // Round trip through a file with load_torchvision (no remap: 3 classes).
    let file = temp_file(kind);
    focal_nn::export_safetensors(&mut model, &file, None).unwrap();
    let mut loaded = RetinaNet::new(&cfg, &mut Rng::new(1)).unwrap();
    let report = load_torchvision(&mut loaded, &file).unwrap();
    std::fs::remove_file(&file).ok();
    assert!(report.is_complete(), "{:?}", report.problems());
    check_outputs(kind, &mut loaded, None);
}
