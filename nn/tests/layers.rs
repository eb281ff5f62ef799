//! Layers and the module tree: names, train/eval switch, BatchNorm's three modes against
//! hand-computed values, freezing a subtree.

use focal_engine::{backward, Rng, Tensor};
use focal_nn::{
    for_each_named, freeze, in_subtree, named_buffers, named_params, param_count, set_train,
    trainable_param_count, BatchNorm2d, BnMode, Conv2d, Layer, Linear, MaxPool2d, Module,
    Optimizer, ReLU, Sequential, Sgd, Slot, Visitor,
};

fn close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

/// A ResNet-like fragment with torchvision's names.
struct Fragment {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layer1: Sequential,
}

impl Module for Fragment {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("conv1", &mut self.conv1);
        v.child("bn1", &mut self.bn1);
        v.scope("layer1", |v| self.layer1.visit(v));
    }
}

fn fragment(rng: &mut Rng) -> Fragment {
    Fragment {
        conv1: Conv2d::new(3, 4, 3, rng).padding(1).no_bias(),
        bn1: BatchNorm2d::new(4),
        layer1: Sequential::new()
            .push(Conv2d::new(4, 4, 3, rng).padding(1))
            .push(ReLU)
            .push(BatchNorm2d::frozen(4))
            .push(Sequential::new().push(Conv2d::new(4, 2, 1, rng))),
    }
}

#[test]
fn names_follow_torchvision_and_visit_order() {
    let mut m = fragment(&mut Rng::new(0));
    let mut all = Vec::new();
    for_each_named(&mut m, |name, slot| {
        let kind = match slot {
            Slot::Param(_) => "param",
            Slot::Buffer(_) => "buffer",
            Slot::Counter(_) => "counter",
        };
        all.push(format!("{kind} {name}"));
    });
    assert_eq!(
        all,
        [
            "param conv1.weight",
            "param bn1.weight",
            "param bn1.bias",
            "buffer bn1.running_mean",
            "buffer bn1.running_var",
            "counter bn1.num_batches_tracked",
            "param layer1.0.weight",
            "param layer1.0.bias",
            // A frozen BatchNorm is all buffers and has no counter (FrozenBatchNorm2d).
            "buffer layer1.2.weight",
            "buffer layer1.2.bias",
            "buffer layer1.2.running_mean",
            "buffer layer1.2.running_var",
            "param layer1.3.0.weight",
            "param layer1.3.0.bias",
        ]
    );
    // 4·3·9 + 4 + 4 + 4·4·9 + 4 + 2·4 + 2 = 108 + 8 + 148 + 10 = 274.
    assert_eq!(param_count(&mut m), 274);
    let p = named_params(&mut m);
    assert!(p[0].1.decay, "conv weights decay");
    assert!(!p[1].1.decay && !p[2].1.decay, "norm weights do not");
    assert!(!p[4].1.decay, "biases do not");
    assert_eq!(named_buffers(&mut m).len(), 6);
}

#[test]
fn subtree_prefixes_match_whole_components() {
    assert!(in_subtree("layer1.0.conv1.weight", "layer1"));
    assert!(in_subtree("layer1.0.conv1.weight", "layer1.0"));
    assert!(!in_subtree("layer10.weight", "layer1"));
    assert!(in_subtree("anything", ""));
}

#[test]
fn set_train_reaches_nested_layers_but_not_frozen_norms() {
    let mut m = fragment(&mut Rng::new(0));
    assert_eq!(m.bn1.mode(), BnMode::Train);
    set_train(&mut m, false);
    assert_eq!(m.bn1.mode(), BnMode::Eval);
    set_train(&mut m, true);
    assert_eq!(m.bn1.mode(), BnMode::Train);
    let mut frozen = BatchNorm2d::frozen(3);
    set_train(&mut frozen, true);
    assert_eq!(frozen.mode(), BnMode::Frozen);
}

fn bn_input() -> Tensor {
    // (N=2, C=2, 1, 2): channel 0 holds 1, 2 | 3, 6; channel 1 holds 0, 0 | 4, 4.
    Tensor::from_vec(&[2, 2, 1, 2], vec![1.0, 2.0, 0.0, 0.0, 3.0, 6.0, 4.0, 4.0])
}

#[test]
fn batch_norm_train_mode_uses_batch_statistics_and_updates_running_averages() {
    let mut bn = BatchNorm2d::new(2).eps(0.0);
    bn.weight.value = Tensor::from_vec(&[2], vec![2.0, 1.0]);
    bn.bias.value = Tensor::from_vec(&[2], vec![1.0, 0.0]);
    let y = bn.forward(&bn_input());
    // Channel 0: μ = 3, σ² = (4 + 1 + 0 + 9)/4 = 3.5, unbiased 14/3.
    //   x̂ = (x − 3)/√3.5 = [−1.0690450, −0.5345225, 0, 1.6035675]; y = 2x̂ + 1.
    // Channel 1: μ = 2, σ² = 4, unbiased 16/3; x̂ = (x − 2)/2 = [−1, −1, 1, 1]; y = x̂.
    close(
        y.data(),
        &[-1.1380900, -0.0690450, -1.0, -1.0, 1.0, 4.2071350, 1.0, 1.0],
    );
    // running_mean = 0.9·0 + 0.1·μ = [0.3, 0.2];
    // running_var = 0.9·1 + 0.1·unbiased = [0.9 + 0.4666667, 0.9 + 0.5333333].
    close(bn.running_mean.data(), &[0.3, 0.2]);
    close(bn.running_var.data(), &[1.3666667, 1.4333333]);
    assert_eq!(bn.num_batches_tracked, 1);
    bn.forward(&bn_input());
    // Second update: 0.9·0.3 + 0.1·3 = 0.57.
    close(&bn.running_mean.data()[..1], &[0.57]);
    assert_eq!(bn.num_batches_tracked, 2);
}

#[test]
fn batch_norm_eval_mode_uses_running_statistics_and_trains_its_affine() {
    let mut bn = BatchNorm2d::new(2).eps(0.0);
    bn.weight.value = Tensor::from_vec(&[2], vec![2.0, 1.0]);
    bn.bias.value = Tensor::from_vec(&[2], vec![1.0, -1.0]);
    bn.running_mean = Tensor::from_vec(&[2], vec![1.0, 2.0]);
    bn.running_var = Tensor::from_vec(&[2], vec![4.0, 0.25]);
    set_train(&mut bn, false);
    let y = bn.forward(&bn_input());
    // Channel 0: (x − 1)/2·2 + 1 = x; channel 1: (x − 2)/0.5·1 − 1 = 2x − 5.
    close(y.data(), &[1.0, 2.0, -5.0, -5.0, 3.0, 6.0, 3.0, 3.0]);
    // Statistics untouched.
    close(bn.running_mean.data(), &[1.0, 2.0]);
    assert_eq!(bn.num_batches_tracked, 0);
    // d(Σy)/dβ = the 4 positions per channel; d(Σy)/dγ = Σ x̂:
    //   channel 0: x̂ = (x − 1)/2 → (0 + 0.5 + 1 + 2.5) = 4; channel 1: (x − 2)/0.5 → −4 −4 +4 +4 = 0.
    let grads = backward(&y.sum_all());
    close(grads.get(bn.bias.id).unwrap().data(), &[4.0, 4.0]);
    close(grads.get(bn.weight.id).unwrap().data(), &[4.0, 0.0]);
}

#[test]
fn frozen_batch_norm_is_a_fixed_affine_map_without_gradients() {
    let mut bn = BatchNorm2d::frozen(2).eps(0.0);
    bn.weight.value = Tensor::from_vec(&[2], vec![2.0, 0.5]);
    bn.bias.value = Tensor::from_vec(&[2], vec![1.0, -1.0]);
    bn.running_mean = Tensor::from_vec(&[2], vec![1.0, 2.0]);
    bn.running_var = Tensor::from_vec(&[2], vec![4.0, 0.25]);
    assert!(named_params(&mut bn).is_empty());
    assert_eq!(trainable_param_count(&mut bn), 0);
    // Feed a tracked input so that something is recorded: the only gradient is the input's.
    let mut input = focal_nn::Param::new(bn_input());
    input.frozen = false;
    let y = bn.forward(&input.var());
    // Channel 0: (x − 1)/2·2 + 1 = x; channel 1: (x − 2)/0.5·0.5 − 1 = x − 3.
    close(y.data(), &[1.0, 2.0, -3.0, -3.0, 3.0, 6.0, 1.0, 1.0]);
    let grads = backward(&y.sum_all());
    assert_eq!(grads.len(), 1);
    assert!(grads.get(bn.weight.id).is_none() && grads.get(bn.bias.id).is_none());
    // ε defaults to 1e-5 as torchvision's FrozenBatchNorm2d: (x − 1)/√(4 + 1e-5)·2 + 1.
    let mut bn = BatchNorm2d::frozen(1);
    bn.running_mean = Tensor::from_vec(&[1], vec![1.0]);
    bn.running_var = Tensor::from_vec(&[1], vec![4.0]);
    let y = bn.forward(&Tensor::from_vec(&[1, 1, 1, 1], vec![3.0]));
    close(y.data(), &[2.0 / (4.0f64 + 1e-5).sqrt()]);
}

#[test]
fn linear_matches_hand_values() {
    let mut lin = Linear::new(3, 2, &mut Rng::new(0));
    // W = [[1, 2, 3], [−1, 0, 1]], b = [0.5, −0.5]; x = [1, 1, 2]:
    // y = [1 + 2 + 6 + 0.5, −1 + 0 + 2 − 0.5] = [9.5, 0.5].
    lin.weight.value = Tensor::from_vec(&[2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
    lin.bias.as_mut().unwrap().value = Tensor::from_vec(&[2], vec![0.5, -0.5]);
    let y = Layer::forward(&mut lin, &Tensor::from_vec(&[1, 3], vec![1.0, 1.0, 2.0]));
    assert_eq!(y.shape(), &[1, 2]);
    close(y.data(), &[9.5, 0.5]);
    let names: Vec<String> = named_params(&mut lin).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
}

#[test]
fn freezing_a_subtree_removes_it_from_gradients_and_the_optimiser() {
    let mut rng = Rng::new(5);
    let mut net = Sequential::new()
        .push(Conv2d::new(1, 2, 3, &mut rng).padding(1))
        .push(ReLU)
        .push(MaxPool2d::new(2, 2, 0))
        .push(Conv2d::new(2, 1, 1, &mut rng));
    assert_eq!(freeze(&mut net, "0"), 2);
    let x = Tensor::from_vec(&[1, 1, 4, 4], Rng::new(1).normal_vec(16, 0.0, 1.0));
    let loss = net.forward(&x).sum_all();
    let grads = backward(&loss);
    let params = named_params(&mut net);
    for (name, p) in &params {
        assert_eq!(grads.get(p.id).is_some(), name.starts_with("3."), "{name}");
    }
    let mut opt = Sgd::new(0.9, 0.1);
    opt.step(&mut net, &grads, 0.1);
    for ((name, before), (_, after)) in params.iter().zip(named_params(&mut net)) {
        let same = before.value.data() == after.value.data();
        assert_eq!(same, name.starts_with("0."), "{name}");
    }
    let state: Vec<String> = opt.state().params.into_iter().map(|p| p.param).collect();
    assert_eq!(state, ["3.bias", "3.weight"]);
}

#[test]
fn lists_and_optional_modules_name_their_entries() {
    struct Fpn {
        inner_blocks: Vec<Conv2d>,
        p6: Option<Conv2d>,
        p7: Option<Conv2d>,
    }
    impl Module for Fpn {
        fn visit(&mut self, v: &mut dyn Visitor) {
            v.child("inner_blocks", &mut self.inner_blocks);
            v.child("p6", &mut self.p6);
            v.child("p7", &mut self.p7);
        }
    }
    let rng = &mut Rng::new(0);
    let mut fpn = Fpn {
        inner_blocks: vec![
            Conv2d::new(2, 2, 1, rng),
            Conv2d::new(4, 2, 1, rng).no_bias(),
        ],
        p6: Some(Conv2d::new(2, 2, 3, rng)),
        p7: None,
    };
    let names: Vec<String> = named_params(&mut fpn).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "inner_blocks.0.weight",
            "inner_blocks.0.bias",
            "inner_blocks.1.weight",
            "p6.weight",
            "p6.bias"
        ]
    );
}

#[test]
fn one_seed_fixes_the_whole_initialisation() {
    let values = |seed: u64| -> Vec<u32> {
        let mut m = fragment(&mut Rng::new(seed));
        named_params(&mut m)
            .into_iter()
            .flat_map(|(_, p)| p.value.to_vec())
            .map(f32::to_bits)
            .collect()
    };
    assert_eq!(values(11), values(11));
    assert_ne!(values(11), values(12));
}
