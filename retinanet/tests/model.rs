//! The network's structure, initialisation, modes and gradients.

use focal_engine::gradcheck::{check, Case};
use focal_engine::{backward, clear_tape, no_grad, tape_len, Op, Rng, Tensor};
use focal_nn::{for_each_named, named_params, Module, Slot};
use focal_retinanet::head::Head;
use focal_retinanet::loss::retinanet_loss;
use focal_retinanet::targets::{AnchorLabel, BatchTargets, ImageTargets};
use focal_retinanet::{
    BackboneName, BackboneNorm, GroundTruth, ImageSize, LossConfig, P6Input, RetinaNet,
    RetinaNetConfig,
};

fn config(depth: BackboneName, norm: BackboneNorm) -> RetinaNetConfig {
    let mut c = RetinaNetConfig::default();
    c.model.depth = depth;
    c.model.norm = norm;
    c
}

fn mean_std(t: &Tensor) -> (f64, f64) {
    let n = t.numel() as f64;
    let m = t.data().iter().map(|&x| x as f64).sum::<f64>() / n;
    let v = t
        .data()
        .iter()
        .map(|&x| (x as f64 - m).powi(2))
        .sum::<f64>()
        / n;
    (m, v.sqrt())
}

fn param(model: &mut dyn Module, name: &str) -> focal_nn::Param {
    named_params(model)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
}

#[test]
fn parameter_counts_match_torchvision() {
    // Counts of torchvision's models with the same options (parameters and buffers, BN
    // counters excluded), printed by:
    //   retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91):
    //     sum(p.numel() for p in m.state_dict().values() if p.dtype == float32)
    // ResNet-50 with 91 classes and P6 from P5: 34 121 239 values (make_torchvision_reference.py
    // prints this figure for the same architecture).
    let mut c = RetinaNetConfig::torchvision_resnet50_fpn();
    c.model.num_classes = 91;
    let mut m = RetinaNet::new(&c, &mut Rng::new(0)).unwrap();
    let mut n = 0;
    for_each_named(&mut m, |_, slot| match slot {
        Slot::Param(p) => n += p.numel(),
        Slot::Buffer(t) => n += t.numel(),
        Slot::Counter(_) => {}
    });
    assert_eq!(n, 34_121_239);
}

/// The backbone's parameters (GroupNorm: a weight and a bias per channel, as BatchNorm
/// has) for a ResNet-18 layout of width w, counted by hand: the stem 3·w·7² + 2w; layer1
/// 36w² + 8w; layer2 128w² + 20w; layer3 512w² + 40w; layer4 2048w² + 80w; in all
/// 2724w² + 297w. At w = 64 that is 11 176 512, the parameters of torchvision's
/// `resnet18()` without its classifier (printed by a Python with torchvision:
/// `sum(p.numel() for n, p in resnet18().named_parameters() if not n.startswith("fc."))`);
/// at w = 32 (`resnet18-half`) 2 798 880.
#[test]
fn resnet18_and_its_half_width_variant_have_the_parameters_of_their_layout() {
    let count = |name: &str| {
        let mut c = config(BackboneName::parse(name).unwrap(), BackboneNorm::GroupNorm);
        c.model.fpn_channels = 32;
        let mut m = RetinaNet::new(&c, &mut Rng::new(0)).unwrap();
        named_params(&mut m)
            .iter()
            .filter(|(n, _)| n.starts_with("backbone.body."))
            .map(|(_, p)| p.value.numel())
            .sum::<usize>()
    };
    let by_hand = |w: usize| 2724 * w * w + 297 * w;
    assert_eq!(by_hand(64), 11_176_512);
    assert_eq!(count("resnet18"), by_hand(64));
    assert_eq!(count("resnet18-half"), by_hand(32));
    // Same names as ResNet-18 (so the same code imports and exports it), half the channels.
    let mut m = RetinaNet::new(
        &config(
            BackboneName::parse("resnet18-half").unwrap(),
            BackboneNorm::GroupNorm,
        ),
        &mut Rng::new(0),
    )
    .unwrap();
    assert_eq!(m.body.out_channels(), [64, 128, 256]);
    assert_eq!(
        param(&mut m, "backbone.body.layer4.1.conv2.weight")
            .value
            .shape(),
        &[256, 256, 3, 3]
    );
}

#[test]
fn initialisation_follows_the_paper_and_torchvision() {
    let mut m = RetinaNet::new(
        &config(BackboneName::RESNET18, BackboneNorm::GroupNorm),
        &mut Rng::new(7),
    )
    .unwrap();
    // Class output bias −ln((1 − 0.01)/0.01) = −4.59512, weights N(0, 0.01).
    let b = param(&mut m, "head.classification_head.cls_logits.bias");
    assert!(b.value.data().iter().all(|&v| (v + 4.59512).abs() < 1e-5));
    let w = param(&mut m, "head.classification_head.cls_logits.weight");
    let (mean, std) = mean_std(&w.value);
    assert!(
        mean.abs() < 5e-4 && (std - 0.01).abs() < 3e-4,
        "{mean} {std}"
    );
    let w = param(&mut m, "head.regression_head.conv.2.0.weight");
    let (_, std) = mean_std(&w.value);
    assert!((std - 0.01).abs() < 3e-4, "{std}");
    assert!(param(&mut m, "head.regression_head.bbox_reg.bias")
        .value
        .data()
        .iter()
        .all(|&v| v == 0.0));
    // FPN: Kaiming-uniform a = 1: bound √(3/fan_in); the 3×3 output conv has fan_in 256·9.
    let w = param(&mut m, "backbone.fpn.layer_blocks.0.0.weight");
    let bound = (3.0f32 / (256.0 * 9.0)).sqrt();
    let max = w.value.data().iter().fold(0f32, |a, &v| a.max(v.abs()));
    assert!(max <= bound && max > 0.99 * bound, "{max} vs {bound}");
    assert!(param(&mut m, "backbone.fpn.extra_blocks.p6.bias")
        .value
        .data()
        .iter()
        .all(|&v| v == 0.0));
    // P6 from C5: 512 input channels on ResNet-18.
    assert_eq!(
        param(&mut m, "backbone.fpn.extra_blocks.p6.weight")
            .value
            .shape(),
        &[256, 512, 3, 3]
    );
    // Backbone: Kaiming-normal, fan-out, ReLU gain: layer3.0.conv2 is 256×256×3×3,
    // std √2/√(256·9) = 0.029463.
    let w = param(&mut m, "backbone.body.layer3.0.conv2.weight");
    let (_, std) = mean_std(&w.value);
    assert!((std - 0.029463).abs() < 5e-4, "{std}");
    // GroupNorm weights 1, biases 0.
    let g = param(&mut m, "backbone.body.layer1.0.bn1.weight");
    assert!(g.value.data().iter().all(|&v| v == 1.0));
    // The same seed gives the same model.
    let mut m2 = RetinaNet::new(
        &config(BackboneName::RESNET18, BackboneNorm::GroupNorm),
        &mut Rng::new(7),
    )
    .unwrap();
    let a = named_params(&mut m);
    let b = named_params(&mut m2);
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.0 == y.0 && x.1.value.data() == y.1.value.data()));
}

#[test]
fn norm_options_freeze_what_torchvision_freezes() {
    // frozen-bn: BatchNorm is a buffer, the stem and layer1 are frozen, layer2 trains.
    let mut m = RetinaNet::new(
        &config(BackboneName::RESNET34, BackboneNorm::FrozenBatchNorm),
        &mut Rng::new(1),
    )
    .unwrap();
    let params = named_params(&mut m);
    assert!(!params
        .iter()
        .any(|(n, _)| n.contains(".bn") || n.contains("downsample.1")));
    let frozen: Vec<&String> = params
        .iter()
        .filter(|(_, p)| p.frozen)
        .map(|(n, _)| n)
        .collect();
    assert!(frozen.contains(&&"backbone.body.conv1.weight".to_string()));
    assert!(frozen.contains(&&"backbone.body.layer1.2.conv2.weight".to_string()));
    assert!(frozen
        .iter()
        .all(|n| n.starts_with("backbone.body.conv1") || n.starts_with("backbone.body.layer1.")));
    // ResNet-34: 3 + 4 + 6 + 3 blocks.
    assert!(params
        .iter()
        .any(|(n, _)| n == "backbone.body.layer3.5.conv2.weight"));
    // bn: trainable BatchNorm with running statistics and counters; nothing frozen.
    let mut m = RetinaNet::new(
        &config(BackboneName::RESNET18, BackboneNorm::BatchNorm),
        &mut Rng::new(1),
    )
    .unwrap();
    let params = named_params(&mut m);
    assert!(params
        .iter()
        .any(|(n, _)| n == "backbone.body.layer2.0.downsample.1.weight"));
    assert!(params.iter().all(|(_, p)| !p.frozen));
    let mut counters = 0;
    for_each_named(&mut m, |_, s| {
        counters += matches!(s, Slot::Counter(_)) as usize
    });
    assert_eq!(counters, 1 + 2 * 8 + 3); // stem, two per block, three downsample norms
}

#[test]
fn output_layout_matches_the_anchors() {
    let mut c = config(BackboneName::RESNET18, BackboneNorm::GroupNorm);
    c.model.num_classes = 5;
    c.model.fpn_channels = 64;
    c.model.head_width = 32;
    c.model.head_depth = 2;
    c.model.p6_input = P6Input::P5;
    let mut m = RetinaNet::new(&c, &mut Rng::new(2)).unwrap();
    let x = Tensor::from_vec(
        &[2, 3, 96, 64],
        Rng::new(3).normal_vec(2 * 3 * 96 * 64, 0.0, 1.0),
    );
    let out = no_grad(|| m.forward(&x));
    let anchors = m.anchors(96, 64);
    assert_eq!(
        out.level_sizes,
        vec![(12, 8), (6, 4), (3, 2), (2, 1), (1, 1)]
    );
    assert_eq!(out.cls_logits.shape(), &[2, anchors.len(), 5]);
    assert_eq!(out.box_deltas.shape(), &[2, anchors.len(), 4]);
    // At initialisation every logit is close to the prior bias.
    let (mean, _) = mean_std(&out.cls_logits);
    assert!((mean + 4.595).abs() < 0.05, "{mean}");
}

#[test]
fn detect_records_nothing_and_restores_the_mode() {
    let mut m = RetinaNet::new(
        &config(BackboneName::RESNET18, BackboneNorm::BatchNorm),
        &mut Rng::new(4),
    )
    .unwrap();
    let x = Tensor::from_vec(
        &[1, 3, 64, 64],
        Rng::new(5).normal_vec(3 * 64 * 64, 0.0, 1.0),
    );
    clear_tape();
    let before = focal_nn::named_buffers(&mut m);
    let dets = m.detect(&x, &[ImageSize::unscaled(64, 64)]);
    assert_eq!(tape_len(), 0, "inference must not record");
    assert_eq!(dets.len(), 1);
    // Evaluation mode during detection: BatchNorm's running statistics are untouched.
    let after = focal_nn::named_buffers(&mut m);
    assert!(before
        .iter()
        .zip(&after)
        .all(|(a, b)| a.1.data() == b.1.data()));
    assert!(m.is_training());
    // At initialisation every score is σ(−4.6) ≈ 0.01 < 0.05: nothing is detected.
    assert!(dets[0].is_empty());
}

#[test]
fn training_loss_backpropagates_to_every_trainable_parameter() {
    let mut m = RetinaNet::new(
        &config(BackboneName::RESNET18, BackboneNorm::GroupNorm),
        &mut Rng::new(6),
    )
    .unwrap();
    let x = Tensor::from_vec(
        &[2, 3, 128, 96],
        Rng::new(7).normal_vec(2 * 3 * 128 * 96, 0.0, 1.0),
    );
    let gt = vec![
        GroundTruth {
            boxes: vec![[10., 20., 60., 90.]],
            labels: vec![3],
        },
        GroundTruth::default(),
    ];
    let losses = m.training_loss(&x, &gt).unwrap();
    assert!(losses.num_positive > 0);
    // Initial classification loss ≈ 1.128 + A·K·7.5378e−7/positives.
    let anchors = m.anchors(128, 96).len();
    let positive_entry = 0.25 * 0.99f64.powi(2) * 100f64.ln(); // 1.12838
    let expected =
        positive_entry + (2 * anchors * 80) as f64 * 7.5378e-7 / losses.num_positive as f64;
    let got = losses.classification.item() as f64;
    assert!(
        (got - expected).abs() < 0.01 * expected,
        "{got} vs {expected}"
    );
    let grads = backward(&losses.total());
    for (name, p) in named_params(&mut m) {
        let g = grads
            .get(p.id)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(g.data().iter().all(|v| v.is_finite()), "{name}");
    }
    assert!(
        m.training_loss(&x, &gt[..1]).is_err(),
        "one ground truth for two images"
    );
}

/// A tiny head on a small pyramid with random targets. With GroupNorm(32) the levels are
/// at least 2×2, so that every group normalises 4 or more values (a group of 1 or 2
/// values is nearly a step function of its inputs).
fn tiny_head(group_norm: bool, rng: &mut Rng) -> (Head, Vec<Tensor>, BatchTargets) {
    let (f, width, k) = (4, if group_norm { 32 } else { 3 }, 2);
    let mut head = Head::new(f, width, 2, group_norm, 9, k, 0.01, rng);
    // Weights of order 1 instead of 0.01, so that every path carries gradient; GroupNorm
    // scales near 1; output convs after a GroupNorm tower smaller, to keep logits of
    // order 1 (the towers' outputs are normalised, so 0.4·√(32·9) would give logits of 7).
    for_each_named(&mut head, |name, slot| {
        if let Slot::Param(p) = slot {
            let output = name.contains("cls_logits") || name.contains("bbox_reg");
            let std = if group_norm && output { 0.05 } else { 0.4 };
            let v = rng.normal_vec(p.numel(), 0.0, std);
            let v = if name.ends_with(".1.weight") {
                v.iter().map(|x| 1.0 + 0.5 * x).collect()
            } else {
                v
            };
            p.value = Tensor::from_vec(p.value.shape(), v);
        }
    });
    let sizes: &[(usize, usize)] = if group_norm {
        &[(4, 3), (2, 2)]
    } else {
        &[(3, 2), (2, 1), (1, 1)]
    };
    let levels: Vec<Tensor> = sizes
        .iter()
        .map(|&(h, w)| Tensor::from_vec(&[1, f, h, w], rng.normal_vec(f * h * w, 0.0, 1.0)))
        .collect();
    let a_total = sizes.iter().map(|(h, w)| h * w * 9).sum();
    let mut labels = Vec::new();
    let mut positives = Vec::new();
    let mut box_targets = Vec::new();
    for a in 0..a_total {
        labels.push(match rng.below(4) {
            0 => AnchorLabel::Ignored,
            1 => {
                positives.push(a);
                box_targets.push([rng.normal(), rng.normal(), rng.normal(), rng.normal()]);
                AnchorLabel::Class(rng.below(k))
            }
            _ => AnchorLabel::Background,
        });
    }
    let targets = BatchTargets {
        images: vec![ImageTargets {
            labels,
            positives,
            box_targets,
        }],
        num_anchors: a_total,
        num_classes: k,
    };
    (head, levels, targets)
}

/// Compares an analytic derivative with central differences of `f` at steps 1e-2, 3e-3
/// and 1e-3 and returns the smallest error, in units of the allowance
/// `1e-3 + rel·|numeric|`. The head has hundreds of ReLUs; a step that carries one of
/// them across its kink gives a wrong difference, while the f32 rounding of a small step
/// adds noise of ~1e-7·|loss|/h, so the best of three steps is the fair one. A wrong
/// backward is wrong at every step.
fn fd_error(analytic: f64, rel: f64, mut f: impl FnMut(f32) -> f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, 0.0);
    for h in [1e-2f32, 3e-3, 1e-3] {
        let numeric = (f(h) - f(-h)) / (2.0 * h as f64);
        let err = (numeric - analytic).abs() / (1e-3 + rel * numeric.abs());
        if err < best.0 {
            best = (err, numeric);
        }
    }
    best
}

#[test]
fn gradient_check_of_a_tiny_head_and_the_loss() {
    let cfg = LossConfig {
        box_loss: focal_retinanet::BoxLoss::SmoothL1 { beta: 1.0 },
        ..LossConfig::default()
    };
    // Without GroupNorm, with the engine's checker (w.r.t. the pyramid features).
    let (head, levels, targets) = tiny_head(false, &mut Rng::new(11));
    let c = cfg.clone();
    let case = Case::new(
        Op::SigmoidFocalLoss,
        "head + loss w.r.t. features",
        levels,
        move |x| {
            let (cls, deltas) = head.forward(x);
            retinanet_loss(&c, &cls, &deltas, &targets).total()
        },
    );
    let r = check(&case);
    println!("engine checker, features: max abs {:.2e}", r.max_abs);
    assert!(r.passed, "{r:?}");

    // Both tower kinds: every feature entry and three entries of every parameter.
    // (A GroupNorm head with 64-wide towers and logits of ~7 was also compared once with
    // PyTorch's float64 autograd on exported weights: largest difference 3.0e-7 for feature
    // gradients up to 0.88, while finite differences there were off by up to 5% from kinks
    // and f32 rounding, which is why this one keeps its logits of order 1.)
    for group_norm in [false, true] {
        let rel = 5e-3;
        let (mut head, levels, targets) = tiny_head(group_norm, &mut Rng::new(12));
        let loss_of = |head: &Head, levels: &[Tensor]| -> f64 {
            no_grad(|| {
                let (cls, deltas) = head.forward(levels);
                retinanet_loss(&cfg, &cls, &deltas, &targets).total().item() as f64
            })
        };
        let ids: Vec<_> = levels
            .iter()
            .map(|_| focal_engine::ParamId::fresh())
            .collect();
        let tracked: Vec<Tensor> = levels
            .iter()
            .zip(&ids)
            .map(|(l, &id)| l.track(id))
            .collect();
        let (cls, deltas) = head.forward(&tracked);
        let grads = backward(&retinanet_loss(&cfg, &cls, &deltas, &targets).total());
        let mut worst = 0f64;
        let mut checked = 0;
        for (l, id) in ids.iter().enumerate() {
            let g = grads.get(*id).unwrap();
            for j in 0..levels[l].numel() {
                let (err, numeric) = fd_error(g.data()[j] as f64, rel, |d| {
                    let mut x = levels.to_vec();
                    x[l].data_mut()[j] += d;
                    loss_of(&head, &x)
                });
                assert!(
                    err <= 1.0,
                    "GN {group_norm}, level {l}[{j}]: analytic {}, numeric {numeric}",
                    g.data()[j]
                );
                worst = worst.max(err);
                checked += 1;
            }
        }
        for (name, p) in named_params(&mut head) {
            let g = grads.get(p.id).unwrap().clone();
            for j in [0, p.numel() / 2, p.numel() - 1] {
                let (err, numeric) = fd_error(g.data()[j] as f64, rel, |d| {
                    for_each_named(&mut head, |n, slot| {
                        if let Slot::Param(q) = slot {
                            if n == name {
                                q.value.data_mut()[j] = p.value.data()[j] + d;
                            }
                        }
                    });
                    let v = loss_of(&head, &levels);
                    for_each_named(&mut head, |n, slot| {
                        if let Slot::Param(q) = slot {
                            if n == name {
                                q.value.data_mut()[j] = p.value.data()[j];
                            }
                        }
                    });
                    v
                });
                assert!(
                    err <= 1.0,
                    "GN {group_norm}, {name}[{j}]: analytic {}, numeric {numeric}",
                    g.data()[j]
                );
                worst = worst.max(err);
                checked += 1;
            }
        }
        println!(
            "group_norm {group_norm}: {checked} derivatives, worst error {worst:.2} of the \
             allowance 1e-3 + {rel}·|numeric|"
        );
    }
}

#[test]
fn loss_and_gradients_do_not_depend_on_the_thread_count() {
    let run = |threads: usize| {
        focal_engine::threads::with_threads(threads, || {
            let mut m = RetinaNet::new(
                &config(BackboneName::RESNET18, BackboneNorm::GroupNorm),
                &mut Rng::new(8),
            )
            .unwrap();
            let x = Tensor::from_vec(
                &[2, 3, 96, 64],
                Rng::new(9).normal_vec(2 * 3 * 96 * 64, 0.0, 1.0),
            );
            let gt = vec![
                GroundTruth {
                    boxes: vec![[4., 8., 40., 70.]],
                    labels: vec![1],
                },
                GroundTruth {
                    boxes: vec![[20., 30., 60., 90.]],
                    labels: vec![5],
                },
            ];
            let l = m.training_loss(&x, &gt).unwrap();
            let total = l.total().item();
            let g = backward(&l.total());
            let grads: Vec<Vec<f32>> = named_params(&mut m)
                .iter()
                .map(|(_, p)| g.get(p.id).unwrap().to_vec())
                .collect();
            let dets = m.detect(&x, &[ImageSize::unscaled(96, 64); 2]);
            (total, grads, dets)
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.0.to_bits(), b.0.to_bits());
    assert!(a.1 == b.1, "gradients differ between 1 and 3 threads");
    assert_eq!(a.2, b.2);
}

/// A batch cut into shards (run concurrently, gradients added up) gives the loss and the
/// gradients of the whole batch, to rounding, and the same bits on any thread count.
#[test]
fn a_sharded_pass_equals_the_whole_batch_and_ignores_the_thread_count() {
    use focal_retinanet::train::data_parallel::sharded_pass;
    let model = || {
        RetinaNet::new(
            &config(BackboneName::RESNET18, BackboneNorm::GroupNorm),
            &mut Rng::new(8),
        )
        .unwrap()
    };
    let x = Tensor::from_vec(
        &[3, 3, 64, 64],
        Rng::new(9).normal_vec(3 * 3 * 64 * 64, 0.0, 1.0),
    );
    // Three images, the middle one without objects: shards of sizes 1 and 2.
    let gt = vec![
        GroundTruth {
            boxes: vec![[4., 8., 40., 60.], [30., 2., 62., 20.]],
            labels: vec![1, 3],
        },
        GroundTruth::default(),
        GroundTruth {
            boxes: vec![[20., 30., 60., 62.]],
            labels: vec![5],
        },
    ];

    let mut whole = model();
    let l = whole.training_loss(&x, &gt).unwrap();
    let (cls, boxl) = (l.classification.item(), l.box_regression.item());
    let g = backward(&l.total());
    let reference: Vec<Vec<f32>> = named_params(&mut whole)
        .iter()
        .map(|(_, p)| g.get(p.id).unwrap().to_vec())
        .collect();

    let sharded = |threads: usize| {
        focal_engine::threads::with_threads(threads, || {
            let mut m = model();
            let pass = sharded_pass(&mut m, &x, &gt, 2).unwrap();
            let grads: Vec<Vec<f32>> = named_params(&mut m)
                .iter()
                .map(|(_, p)| pass.grads.get(p.id).unwrap().to_vec())
                .collect();
            (
                pass.classification,
                pass.box_regression,
                pass.num_positive,
                grads,
            )
        })
    };
    let (a, b) = (sharded(1), sharded(3));
    assert_eq!(a.0.to_bits(), b.0.to_bits());
    assert_eq!(a.1.to_bits(), b.1.to_bits());
    assert!(
        a.3 == b.3,
        "sharded gradients differ between 1 and 3 threads"
    );

    assert_eq!(a.2, l.num_positive);
    assert!(
        (a.0 - cls).abs() <= 1e-5 * cls.abs(),
        "cls {} vs {cls}",
        a.0
    );
    assert!(
        (a.1 - boxl).abs() <= 1e-5 * boxl.abs(),
        "box {} vs {boxl}",
        a.1
    );
    let params = named_params(&mut whole);
    for ((name, _), (r, s)) in params.iter().zip(reference.iter().zip(&a.3)) {
        let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (j, (u, v)) in r.iter().zip(s).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 * scale + 1e-7,
                "{name}[{j}]: whole batch {u}, sharded {v} (largest |g| {scale})"
            );
        }
    }
}

/// With one shard the trainer's pass is exactly `training_loss` + `backward` of the whole
/// batch: the same bits for the losses and every gradient (the trainer has one path for
/// both cases, so the default run must not change by a bit).
#[test]
fn one_shard_is_the_plain_pass_to_the_bit() {
    use focal_retinanet::train::data_parallel::sharded_pass;
    let model = || {
        RetinaNet::new(
            &config(BackboneName::RESNET18, BackboneNorm::BatchNorm),
            &mut Rng::new(5),
        )
        .unwrap()
    };
    let x = Tensor::from_vec(
        &[2, 3, 64, 64],
        Rng::new(6).normal_vec(2 * 3 * 64 * 64, 0.0, 1.0),
    );
    let gt = vec![
        GroundTruth {
            boxes: vec![[4., 8., 40., 60.]],
            labels: vec![2],
        },
        GroundTruth {
            boxes: vec![[20., 30., 60., 62.]],
            labels: vec![7],
        },
    ];
    let mut plain = model();
    let l = plain.training_loss(&x, &gt).unwrap();
    let (cls, boxl) = (l.classification.item(), l.box_regression.item());
    let g = backward(&l.total());
    let mut one = model();
    let pass = sharded_pass(&mut one, &x, &gt, 1).unwrap();
    assert_eq!(pass.classification.to_bits(), cls.to_bits());
    assert_eq!(pass.box_regression.to_bits(), boxl.to_bits());
    assert_eq!(pass.num_positive, l.num_positive);
    for ((name, p), (_, q)) in named_params(&mut plain)
        .iter()
        .zip(named_params(&mut one).iter())
    {
        let (a, b) = (
            g.get(p.id).unwrap().to_vec(),
            pass.grads.get(q.id).unwrap().to_vec(),
        );
        let same = a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits());
        assert!(same && a.len() == b.len(), "{name}: gradients differ");
    }
    // BatchNorm's running statistics were updated alike.
    let buffers = |m: &mut RetinaNet| {
        let mut v = Vec::new();
        for_each_named(m, |name, slot| {
            if let Slot::Buffer(t) = slot {
                v.push((name.to_string(), t.to_vec()));
            }
        });
        v
    };
    assert_eq!(buffers(&mut plain), buffers(&mut one));
}
