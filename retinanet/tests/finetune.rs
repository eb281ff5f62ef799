//! Fine-tuning from pretrained weights: which backbone parameters train
//! (`trainable_layers`, torchvision's `trainable_backbone_layers`), and what happens to the
//! class output when the dataset's classes are not the weights' (`train --init`).

mod common;

use std::path::PathBuf;

use focal_engine::Rng;
use focal_nn::{named_params, Module};
use focal_retinanet::pretrained::{coco_classes, export_weights};
use focal_retinanet::train::{init_from_safetensors, ClassHead, ClassName, TrainConfig};
use focal_retinanet::{BackboneName, BackboneNorm, RetinaNet, RetinaNetConfig};

/// The parameters of torchvision's ResNet-18 body (FrozenBatchNorm2d, so its norms are
/// buffers) that keep `requires_grad` after `_resnet_fpn_extractor(resnet18(norm_layer=
/// FrozenBatchNorm2d), N, ...)`, printed by torchvision 0.29 with a Python with torch and
/// torchvision (pip install torch torchvision):
///
/// ```text
/// b = _resnet_fpn_extractor(resnet18(norm_layer=FrozenBatchNorm2d), n,
///                           returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
/// [k for k, p in b.body.named_parameters() if p.requires_grad]
/// ```
const TORCHVISION_TRAINABLE: [&[&str]; 6] = [
    &[],
    &[
        "layer4.0.conv1.weight",
        "layer4.0.conv2.weight",
        "layer4.0.downsample.0.weight",
        "layer4.1.conv1.weight",
        "layer4.1.conv2.weight",
    ],
    &[
        "layer3.0.conv1.weight",
        "layer3.0.conv2.weight",
        "layer3.0.downsample.0.weight",
        "layer3.1.conv1.weight",
        "layer3.1.conv2.weight",
        "layer4.0.conv1.weight",
        "layer4.0.conv2.weight",
        "layer4.0.downsample.0.weight",
        "layer4.1.conv1.weight",
        "layer4.1.conv2.weight",
    ],
    &[
        "layer2.0.conv1.weight",
        "layer2.0.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.1.conv1.weight",
        "layer2.1.conv2.weight",
        "layer3.0.conv1.weight",
        "layer3.0.conv2.weight",
        "layer3.0.downsample.0.weight",
        "layer3.1.conv1.weight",
        "layer3.1.conv2.weight",
        "layer4.0.conv1.weight",
        "layer4.0.conv2.weight",
        "layer4.0.downsample.0.weight",
        "layer4.1.conv1.weight",
        "layer4.1.conv2.weight",
    ],
    &[
        "layer1.0.conv1.weight",
        "layer1.0.conv2.weight",
        "layer1.1.conv1.weight",
        "layer1.1.conv2.weight",
        "layer2.0.conv1.weight",
        "layer2.0.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.1.conv1.weight",
        "layer2.1.conv2.weight",
        "layer3.0.conv1.weight",
        "layer3.0.conv2.weight",
        "layer3.0.downsample.0.weight",
        "layer3.1.conv1.weight",
        "layer3.1.conv2.weight",
        "layer4.0.conv1.weight",
        "layer4.0.conv2.weight",
        "layer4.0.downsample.0.weight",
        "layer4.1.conv1.weight",
        "layer4.1.conv2.weight",
    ],
    &[
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer1.0.conv2.weight",
        "layer1.1.conv1.weight",
        "layer1.1.conv2.weight",
        "layer2.0.conv1.weight",
        "layer2.0.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.1.conv1.weight",
        "layer2.1.conv2.weight",
        "layer3.0.conv1.weight",
        "layer3.0.conv2.weight",
        "layer3.0.downsample.0.weight",
        "layer3.1.conv1.weight",
        "layer3.1.conv2.weight",
        "layer4.0.conv1.weight",
        "layer4.0.conv2.weight",
        "layer4.0.downsample.0.weight",
        "layer4.1.conv1.weight",
        "layer4.1.conv2.weight",
    ],
];

/// A model built only to read which parameters are frozen (no random values drawn).
fn built(cfg: &RetinaNetConfig) -> RetinaNet {
    focal_nn::init::without_random_init(|| RetinaNet::new(cfg, &mut Rng::new(0))).unwrap()
}

fn small(norm: BackboneNorm, trainable: Option<usize>) -> RetinaNetConfig {
    let mut c = RetinaNetConfig::default();
    c.model.depth = BackboneName::RESNET18;
    c.model.norm = norm;
    c.model.fpn_channels = 32;
    c.model.head_width = 32;
    c.model.head_depth = 1;
    c.model.num_classes = 3;
    c.model.trainable_layers = trainable;
    c
}

/// (trainable, frozen) parameter names of the backbone, without `backbone.body.`.
fn backbone_params(m: &mut RetinaNet) -> (Vec<String>, Vec<String>) {
    let (mut train, mut frozen) = (Vec::new(), Vec::new());
    for (name, p) in named_params(m) {
        if let Some(n) = name.strip_prefix("backbone.body.") {
            if p.frozen {
                frozen.push(n.to_string());
            } else {
                train.push(n.to_string());
            }
        } else {
            assert!(!p.frozen, "{name}: the FPN and the head always train");
        }
    }
    train.sort();
    (train, frozen)
}

#[test]
fn trainable_layers_free_exactly_torchvisions_parameters() {
    for (n, want) in TORCHVISION_TRAINABLE.iter().enumerate() {
        let mut m = built(&small(BackboneNorm::FrozenBatchNorm, Some(n)));
        let (train, _) = backbone_params(&mut m);
        assert_eq!(train, *want, "trainable_layers = {n}");
    }
    // The default with frozen BatchNorm is torchvision's 3.
    let mut m = built(&small(BackboneNorm::FrozenBatchNorm, None));
    assert_eq!(backbone_params(&mut m).0, TORCHVISION_TRAINABLE[3]);
    // With a trainable norm, its parameters follow the same rule: torchvision freezes the
    // stem's conv1, bn1.weight and bn1.bias at 4 (printed as above with
    // norm_layer=lambda c: nn.GroupNorm(32, c) and `not p.requires_grad`).
    let mut m = built(&small(BackboneNorm::GroupNorm, Some(4)));
    assert_eq!(
        backbone_params(&mut m).1,
        ["conv1.weight", "bn1.weight", "bn1.bias"]
    );
    let mut m = built(&small(BackboneNorm::GroupNorm, None));
    assert!(
        backbone_params(&mut m).1.is_empty(),
        "GroupNorm trains all by default"
    );
    let bad = small(BackboneNorm::GroupNorm, Some(6));
    assert!(bad
        .validate()
        .unwrap_err()
        .chain()
        .contains("trainable_layers"));
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("focal-finetune-{}-{name}", std::process::id()))
}

fn class(id: i64, name: &str) -> ClassName {
    ClassName {
        id,
        name: name.into(),
    }
}

/// The class output's (weight, bias) values.
fn class_output(m: &RetinaNet) -> (Vec<f32>, Vec<f32>) {
    let o = &m.head.classification.output;
    (
        o.weight.value.data().to_vec(),
        o.bias.as_ref().unwrap().value.data().to_vec(),
    )
}

/// A small detector of COCO's 80 classes with every value set by the formula, exported as
/// a focal export (COCO's 80 written as torchvision's 91 rows).
fn coco_export(path: &std::path::Path) -> RetinaNet {
    let mut cfg = small(BackboneNorm::FrozenBatchNorm, None);
    cfg.model.num_classes = 80;
    let mut m = RetinaNet::new(&cfg, &mut Rng::new(0)).unwrap();
    common::formula::set_by_formula(&mut m);
    let mut train = TrainConfig::shapes();
    train.model = cfg.model.clone();
    train.anchors = cfg.anchors.clone();
    export_weights(&m, &coco_classes(), &train, path).unwrap();
    m
}

#[test]
fn class_head_is_taken_by_coco_id_or_reinitialised_with_the_prior() {
    let file = temp("coco.safetensors");
    let source = coco_export(&file);
    let (src_w, src_b) = class_output(&source);
    let a = 9;
    let per_row = src_w.len() / (a * 80);

    // A dataset of three COCO categories: the rows of ids 3, 18 and 1 (labels 2, 16, 0 of
    // the 80), for every anchor.
    let subset = vec![class(3, "car"), class(18, "dog"), class(1, "person")];
    let mut cfg = small(BackboneNorm::FrozenBatchNorm, None);
    let mut m = RetinaNet::new(&cfg, &mut Rng::new(5)).unwrap();
    let report = init_from_safetensors(&mut m, &file, &subset).unwrap();
    assert_eq!(report.class_head, ClassHead::Selected { file_classes: 91 });
    assert!(
        report.import.is_complete(),
        "{:?}",
        report.import.problems()
    );
    let (w, b) = class_output(&m);
    for anchor in 0..a {
        for (k, label) in [2usize, 16, 0].into_iter().enumerate() {
            assert_eq!(b[anchor * 3 + k], src_b[anchor * 80 + label]);
            let row = |v: &[f32], r: usize| v[r * per_row..(r + 1) * per_row].to_vec();
            assert_eq!(row(&w, anchor * 3 + k), row(&src_w, anchor * 80 + label));
        }
    }

    // Three categories of which one is not COCO's: the class output keeps its fresh
    // initialisation (the prior bias), everything else is loaded, and the report says so.
    let other = vec![class(3, "car"), class(18, "dog"), class(7, "tram")];
    let mut m = RetinaNet::new(&cfg, &mut Rng::new(5)).unwrap();
    let fresh = class_output(&m);
    let report = init_from_safetensors(&mut m, &file, &other).unwrap();
    let ClassHead::Reinitialised { reason } = &report.class_head else {
        panic!("{:?}", report.class_head)
    };
    assert!(reason.contains("tram"), "{reason}");
    assert_eq!(class_output(&m), fresh);
    let prior = focal_nn::init::prior_probability_bias(0.01);
    assert!(class_output(&m).1.iter().all(|&v| v == prior));
    let lines = report.lines(0.01).join("\n");
    assert!(
        lines.contains("class head re-initialised with the prior π = 0.01"),
        "{lines}"
    );
    // The rest came from the file: the box output, for one.
    let reg = |m: &RetinaNet| m.head.regression.output.weight.value.data().to_vec();
    assert_eq!(reg(&m), reg(&source));
    assert_eq!(
        report.import.loaded.len() + 2,
        focal_nn::named_params(&mut m).len() + named_buffers_count(&mut m)
    );

    // COCO's own 80: every row, in order.
    cfg.model.num_classes = 80;
    let mut m = RetinaNet::new(&cfg, &mut Rng::new(5)).unwrap();
    let report = init_from_safetensors(&mut m, &file, &coco_classes()).unwrap();
    assert_eq!(report.class_head, ClassHead::Selected { file_classes: 91 });
    assert_eq!(class_output(&m), (src_w, src_b));
    std::fs::remove_file(&file).ok();
}

fn named_buffers_count(m: &mut dyn Module) -> usize {
    focal_nn::named_buffers(m).len()
}
