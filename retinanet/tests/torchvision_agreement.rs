//! focal's RetinaNet against torchvision 0.29.2 (PyTorch 2.15), on two seeded models:
//!
//! - `resnet50_p5_frozenbn`: torchvision's `retinanet_resnet50_fpn` architecture (ResNet-50,
//!   frozen BatchNorm, P6 from P5, 91 COCO classes), input 1×3×64×96;
//! - `resnet18_c5_gn`: ResNet-18 with GroupNorm(32), F = 128, P6 from C5, GroupNorm in the
//!   towers, 3 classes, input 1×3×136×200 (not a multiple of 32: odd pyramid sizes).
//!
//! The fixtures (`tests/fixtures/tv_*.safetensors`) were made by
//! `retinanet/tests/fixtures/make_torchvision_reference.py`, run with a Python with torch
//! and torchvision (pip install torch torchvision); they
//! hold the input, torchvision's P3..P7, class logits and box regressions computed in
//! float64 (the exact answer), torchvision's own float32 error on each, and torchvision's
//! state-dict names and shapes. Every weight is a formula of its name and
//! index (see the script and `common/formula.rs`), evaluated here bit for bit. The weights
//! are written to a safetensors file under torchvision's names and loaded with
//! [`focal_retinanet::load_torchvision`], so the 91 → 80 class remap is exercised.
//!
//! `detections_agree_with_torchvisions_retinanet` runs the whole of torchvision's
//! RetinaNet (transform, anchors, head, post-processing) against focal's on photographs,
//! from `tests/fixtures/tv_detections.safetensors`, made by
//! `make_torchvision_detections.py` (same Python).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod common;

use common::formula::{set_by_formula, write_detection_weights};
use focal_engine::{no_grad, Rng, Tensor};
use focal_nn::{for_each_named, read_safetensors, FileTensor, Slot};
use focal_retinanet::import::COCO_IDS;
use focal_retinanet::{
    load_torchvision, BackboneName, BackboneNorm, P6Input, RetinaNet, RetinaNetConfig,
};

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

/// A detection: (COCO id, score, box in original pixels).
type Det = (i64, f32, [f32; 4]);

/// torchvision's detections of `case`, image `i`, from the fixture.
fn torchvision_detections(fx: &HashMap<String, FileTensor>, case: &str, i: usize) -> Vec<Det> {
    let floats = |key: &str| match &fx[&format!("{case}.{i}.{key}")] {
        FileTensor::Float(t) => t.data().to_vec(),
        _ => panic!("{key}: not floats"),
    };
    let labels = match &fx[&format!("{case}.{i}.labels")] {
        FileTensor::Int(_, v) => v.clone(),
        _ => panic!("labels: not integers"),
    };
    let (boxes, scores) = (floats("boxes"), floats("scores"));
    (0..scores.len())
        .map(|k| {
            let b = [
                boxes[4 * k],
                boxes[4 * k + 1],
                boxes[4 * k + 2],
                boxes[4 * k + 3],
            ];
            (labels[k], scores[k], b)
        })
        .collect()
}

/// torchvision's whole RetinaNet (GeneralizedRCNNTransform, anchors, head,
/// postprocess_detections, rescale) against focal's on four photographs and a batch of
/// two, with the weights written under torchvision's names (91 classes) and loaded by
/// `focal_retinanet::pretrained::load_weights`, the path of `focal eval --weights`: the
/// architecture, ε = 0, torchvision's anchors and 300 detections are all read or defaulted
/// there. Each image has 300 detections (hundreds more candidates pass the threshold), so
/// the top-1000 selection, NMS and the cut all decide. Scores that differ by a float
/// rounding can swap places at a cut or in NMS, so the detections are matched one to one
/// (same class, score within 1e-4, corners within 2e-3 px): at least 97 % of torchvision's
/// must find their match, and the best 50 all of them.
#[test]
fn detections_agree_with_torchvisions_retinanet() {
    use focal_data::batch::collate;
    use focal_data::image_io::read_rgb;
    use focal_data::transforms::transform;
    use focal_data::Sample;
    use focal_retinanet::pretrained::{load_weights, ArchitectureOptions};
    use focal_retinanet::train::detect_batch;

    let file = temp_file("detections");
    write_detection_weights(&file);
    let loaded = load_weights(&file, &ArchitectureOptions::default());
    std::fs::remove_file(&file).ok();
    let mut loaded = loaded.unwrap();
    assert_eq!(loaded.model.config.model.frozen_bn_eps, 0.0);
    assert_eq!(loaded.model.config.inference.detections_per_image, 300);
    assert_eq!(loaded.classes.len(), 80);

    let fx: HashMap<String, FileTensor> = read_safetensors(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tv_detections.safetensors"),
    )
    .unwrap()
    .into_iter()
    .map(|(n, t, _)| (n, t))
    .collect();
    let crops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/preprocess");
    let cases: [(&str, &[&str]); 5] = [
        ("landscape", &["landscape"]),
        ("portrait", &["portrait"]),
        ("wide", &["wide"]),
        ("down", &["down"]),
        ("batch", &["landscape", "down"]),
    ];
    for (case, images) in cases {
        let items = images
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sample = Sample {
                    image: read_rgb(&crops.join(format!("{name}.png"))).unwrap(),
                    boxes: vec![],
                    labels: vec![],
                    image_id: i as i64,
                };
                (i, transform(sample, 192, 320, false))
            })
            .collect();
        let batch = collate(items);
        let found = detect_batch(&mut loaded.model, &batch);
        for (i, dets) in found.iter().enumerate() {
            let want = torchvision_detections(&fx, case, i);
            let got: Vec<Det> = (0..dets.len())
                .map(|k| {
                    (
                        COCO_IDS[dets.labels[k]] as i64,
                        dets.scores[k],
                        dets.boxes[k],
                    )
                })
                .collect();
            let mut used = vec![false; got.len()];
            let mut unmatched = Vec::new();
            let (mut max_score, mut max_box) = (0f32, 0f32);
            for (rank, w) in want.iter().enumerate() {
                let hit = got.iter().enumerate().position(|(j, g)| {
                    !used[j]
                        && g.0 == w.0
                        && (g.1 - w.1).abs() <= 1e-4
                        && g.2.iter().zip(&w.2).all(|(a, b)| (a - b).abs() <= 2e-3)
                });
                match hit {
                    Some(j) => {
                        used[j] = true;
                        max_score = max_score.max((got[j].1 - w.1).abs());
                        for (a, b) in got[j].2.iter().zip(&w.2) {
                            max_box = max_box.max((a - b).abs());
                        }
                    }
                    None => unmatched.push(rank),
                }
            }
            println!(
                "{case}[{i}]: torchvision {} detections, focal {}, {} matched (max |Δscore| \
                 {max_score:.1e}, max |Δcorner| {max_box:.1e} px), unmatched ranks {unmatched:?}",
                want.len(),
                got.len(),
                want.len() - unmatched.len()
            );
            assert_eq!(got.len(), want.len(), "{case}[{i}]: number of detections");
            assert!(
                unmatched.len() * 100 <= 3 * want.len(),
                "{case}[{i}]: {} of torchvision's {} detections unmatched",
                unmatched.len(),
                want.len()
            );
            assert!(
                unmatched.iter().all(|&r| r >= 50),
                "{case}[{i}]: a best-50 detection is unmatched: {unmatched:?}"
            );
        }
    }
}
