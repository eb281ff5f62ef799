//! Optimiser steps against hand-computed values, parameter groups, frozen parameters,
//! gradient clipping.
//!
//! The hand arithmetic is written next to each case. The same figures came out of PyTorch
//! 2.x (`python optref.py` with a Python that has torch, `pip install torch`; the script is
//! below), agreeing to the last printed digit:
//!
//! ```text
//! import torch
//! def run(opt_fn, w0, grads):
//!     w = torch.tensor(w0, requires_grad=True); opt = opt_fn([w])
//!     for g in grads: w.grad = torch.tensor(g); opt.step()
//!     return w.detach().tolist()
//! run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01), [1.0,-2.0], [[0.5,0.25],[-1.0,0.5]])
//!   -> [1.0021510124206543, -2.091676950454712]
//! run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.0), [0.5], [[1.0],[1.0]])  -> [0.21000000834465027]
//! run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01), [0.5], [[1.0],[1.0]]) -> [0.20865051448345184]
//! run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), [1.0], [[0.5],[-1.0]])   -> [1.0544999837875366]
//! run(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), [1.0,-0.5], [[0.2,-0.1],[0.1,0.3]])
//!   -> [0.9786892533302307, -0.4939524233341217]
//! ```

use focal_engine::{Gradients, Tensor};
use focal_nn::{clip_grad_norm, freeze, grad_norm, AdamW, Module, Optimizer, Param, Sgd, Visitor};

/// A weight (decayed) and a bias (not decayed, like every bias).
struct Toy {
    w: Param,
    b: Param,
}

impl Toy {
    fn new(w: &[f32], b: &[f32]) -> Toy {
        Toy {
            w: Param::new(Tensor::from_vec(&[w.len()], w.to_vec())),
            b: Param::no_decay(Tensor::from_vec(&[b.len()], b.to_vec())),
        }
    }

    fn grads(&self, gw: &[f32], gb: &[f32]) -> Gradients {
        let mut g = Gradients::default();
        g.insert(self.w.id, Tensor::from_vec(&[gw.len()], gw.to_vec()));
        g.insert(self.b.id, Tensor::from_vec(&[gb.len()], gb.to_vec()));
        g
    }
}

impl Module for Toy {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.param("w", &mut self.w);
        v.param("b", &mut self.b);
    }
}

fn assert_close(got: &Tensor, want: &[f64]) {
    for (g, w) in got.data().iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0),
            "got {:?}, want {want:?}",
            got.data()
        );
    }
}

#[test]
fn sgd_two_steps_with_momentum_and_weight_decay() {
    // lr 0.1, μ 0.9, λ 0.01; w = [1, −2] (decayed), b = [0.5] (not decayed).
    let mut m = Toy::new(&[1.0, -2.0], &[0.5]);
    let mut opt = Sgd::new(0.9, 0.01);
    // Step 1, g = [0.5, 0.25]: g' = g + λw = [0.51, 0.23]; v = g' (first step);
    //   w = w − 0.1·v = [0.949, −2.023]. Bias, g = 1: v = 1, b = 0.5 − 0.1 = 0.4.
    let g = m.grads(&[0.5, 0.25], &[1.0]);
    opt.step(&mut m, &g, 0.1);
    assert_close(&m.w.value, &[0.949, -2.023]);
    assert_close(&m.b.value, &[0.4]);
    // Step 2, g = [−1, 0.5]: g' = [−1 + 0.00949, 0.5 − 0.02023] = [−0.99051, 0.47977];
    //   v = 0.9·[0.51, 0.23] + g' = [−0.53151, 0.68677];
    //   w = [0.949 + 0.053151, −2.023 − 0.068677] = [1.002151, −2.091677].
    //   Bias: v = 0.9·1 + 1 = 1.9, b = 0.4 − 0.19 = 0.21.
    let g = m.grads(&[-1.0, 0.5], &[1.0]);
    opt.step(&mut m, &g, 0.1);
    assert_close(&m.w.value, &[1.002151, -2.091677]);
    assert_close(&m.b.value, &[0.21]);
}

#[test]
fn sgd_decay_on_norm_and_bias_when_asked() {
    // The same bias with decay applied: step 1 g' = 1 + 0.01·0.5 = 1.005, v = 1.005,
    // b = 0.3995; step 2 g' = 1 + 0.003995 = 1.003995, v = 0.9045 + 1.003995 = 1.908495,
    // b = 0.3995 − 0.1908495 = 0.2086505.
    let mut m = Toy::new(&[0.0], &[0.5]);
    let mut opt = Sgd::new(0.9, 0.01).decay_norm_and_bias(true);
    for _ in 0..2 {
        let g = m.grads(&[0.0], &[1.0]);
        opt.step(&mut m, &g, 0.1);
    }
    assert_close(&m.b.value, &[0.2086505]);
}

#[test]
fn sgd_nesterov() {
    // lr 0.1, μ 0.9, no decay, w = 1.
    // Step 1, g = 0.5: v = 0.5, d = g + μv = 0.95, w = 1 − 0.095 = 0.905.
    // Step 2, g = −1: v = 0.45 − 1 = −0.55, d = −1 + 0.9·(−0.55) = −1.495, w = 0.905 + 0.1495 = 1.0545.
    let mut m = Toy::new(&[1.0], &[0.0]);
    let mut opt = Sgd::new(0.9, 0.0).nesterov(true);
    let g = m.grads(&[0.5], &[0.0]);
    opt.step(&mut m, &g, 0.1);
    assert_close(&m.w.value, &[0.905]);
    let g = m.grads(&[-1.0], &[0.0]);
    opt.step(&mut m, &g, 0.1);
    assert_close(&m.w.value, &[1.0545]);
}

#[test]
fn plain_sgd_without_momentum() {
    // μ = 0: w = 2 − 0.5·(1 + 0.1·2) = 1.4.
    let mut m = Toy::new(&[2.0], &[0.0]);
    let mut opt = Sgd::new(0.0, 0.1);
    let g = m.grads(&[1.0], &[0.0]);
    opt.step(&mut m, &g, 0.5);
    assert_close(&m.w.value, &[1.4]);
    assert!(opt.state().params.iter().all(|p| p.tensors.is_empty()));
}

#[test]
fn adamw_two_steps() {
    // lr 0.01, λ 0.1, β = (0.9, 0.999), ε = 1e-8; w = [1, −0.5].
    let mut m = Toy::new(&[1.0, -0.5], &[0.0]);
    let mut opt = AdamW::new(0.1);
    // Step 1, g = [0.2, −0.1]: w·(1 − 0.001) = [0.999, −0.4995]; m = 0.1g, v = 0.001g²;
    //   with 1 − β₁ = 0.1 and 1 − β₂ = 0.001 the corrected moments are g and g², so the
    //   update is lr·g/(|g| + ε) = ±0.01 (to 5e-10): w = [0.989, −0.4895].
    let g = m.grads(&[0.2, -0.1], &[0.0]);
    opt.step(&mut m, &g, 0.01);
    assert_close(&m.w.value, &[0.989, -0.4895]);
    // Step 2, g = [0.1, 0.3]: w·0.999 = [0.988011, −0.4890105];
    //   m = 0.9·[0.02, −0.01] + 0.1·[0.1, 0.3] = [0.028, 0.021];
    //   v = 0.999·[4e-5, 1e-5] + 0.001·[0.01, 0.09] = [4.996e-5, 9.999e-5];
    //   1 − β₁² = 0.19, √(1 − β₂²) = √0.001999 = 0.04471018;
    //   denom = √v/0.04471018 + ε = [0.1580898, 0.2236500];
    //   update = (0.01/0.19)·m/denom = [0.0093216, 0.0049420];
    //   w = [0.9786894, −0.4939525].
    let g = m.grads(&[0.1, 0.3], &[0.0]);
    opt.step(&mut m, &g, 0.01);
    assert_close(&m.w.value, &[0.9786893, -0.4939524]);
    // The bias had zero gradients and no decay: unchanged.
    assert_eq!(m.b.value.data(), &[0.0]);
}

#[test]
fn frozen_and_gradientless_parameters_are_left_alone() {
    let mut m = Toy::new(&[1.0], &[1.0]);
    assert_eq!(freeze(&mut m, "b"), 1);
    let mut opt = AdamW::new(0.1);
    // Only w has a gradient entry here; b is frozen and has one too.
    let g = m.grads(&[1.0], &[1.0]);
    opt.step(&mut m, &g, 0.1);
    assert_ne!(m.w.value.data(), &[1.0]);
    assert_eq!(m.b.value.data(), &[1.0]);
    let mut only_b = Gradients::default();
    only_b.insert(m.b.id, Tensor::from_vec(&[1], vec![1.0]));
    let before = m.w.value.to_vec();
    let mut sgd = Sgd::new(0.9, 0.1);
    sgd.step(&mut m, &only_b, 0.1);
    assert_eq!(
        m.w.value.to_vec(),
        before,
        "no gradient, no update (and no decay)"
    );
    assert!(sgd.state().params.is_empty());
}

#[test]
fn optimiser_state_round_trips_and_refuses_another_kind() {
    let mut m = Toy::new(&[1.0, 2.0], &[3.0]);
    let mut a = AdamW::new(0.05).betas(0.8, 0.99);
    let g = m.grads(&[0.1, 0.2], &[0.3]);
    a.step(&mut m, &g, 0.01);
    let state = a.state();
    let mut b = AdamW::new(0.0);
    b.load_state(&state).unwrap();
    assert_eq!(b.state(), state);
    assert_eq!((b.beta1, b.beta2, b.weight_decay), (0.8, 0.99, 0.05));
    let err = Sgd::new(0.9, 0.0)
        .load_state(&state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("adamw") && err.contains("sgd"), "{err}");
}

#[test]
fn clipping_by_global_norm() {
    // Gradients [3, 4] and [12]: norm √(9 + 16 + 144) = 13.
    let mut m = Toy::new(&[0.0, 0.0], &[0.0]);
    let mut g = m.grads(&[3.0, 4.0], &[12.0]);
    assert_eq!(grad_norm(&mut m, &g), 13.0);
    // Under the limit: unchanged.
    assert_eq!(clip_grad_norm(&mut m, &mut g, 20.0), 13.0);
    assert_eq!(g.get(m.w.id).unwrap().data(), &[3.0, 4.0]);
    // Over it: scaled by 6.5/(13 + 1e-6), to norm 6.5.
    assert_eq!(clip_grad_norm(&mut m, &mut g, 6.5), 13.0);
    assert_close(g.get(m.w.id).unwrap(), &[1.5, 2.0]);
    assert_close(g.get(m.b.id).unwrap(), &[6.0]);
    // Frozen parameters do not count.
    freeze(&mut m, "b");
    assert!((grad_norm(&mut m, &g) - 2.5).abs() < 1e-6);
}

/// A parameter of 100 003 elements (four update chunks and a ragged end), so the update
/// runs in parallel tasks: on 1 and 3 threads it must equal, bit for bit, the scalar
/// loop of each rule written out here.
#[test]
fn large_parameters_update_like_the_scalar_rule_on_any_thread_count() {
    let n = 100_003;
    let w0: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 250.0)
        .collect();
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|s| {
            (0..n)
                .map(|i| ((i * 13 + s * 7) % 997) as f32 / 997.0 - 0.5)
                .collect()
        })
        .collect();
    let (lr, wd) = (0.01f32, 0.1f32);

    // AdamW, as in the module documentation, in f32.
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (mut w, mut m, mut v) = (w0.clone(), vec![0f32; n], vec![0f32; n]);
    for (t, g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        let bias1 = (1.0 - (b1 as f64).powi(t)) as f32;
        let bias2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt() as f32;
        for i in 0..n {
            w[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= (lr / bias1) * m[i] / (v[i].sqrt() / bias2_sqrt + eps);
        }
    }
    let want_adamw = w;

    // SGD with momentum 0.9 and weight decay (the first step seeds the buffer with g).
    let (mut w, mut buf) = (w0.clone(), vec![0f32; n]);
    for (t, g) in grads.iter().enumerate() {
        for i in 0..n {
            let gi = g[i] + wd * w[i];
            buf[i] = if t == 0 { gi } else { 0.9 * buf[i] + gi };
            w[i] -= lr * buf[i];
        }
    }
    let want_sgd = w;

    for threads in [1, 3] {
        let run = |opt: &mut dyn Optimizer| {
            let mut toy = Toy::new(&w0, &[0.0]);
            for g in &grads {
                let gr = toy.grads(g, &[0.0]);
                opt.step(&mut toy, &gr, lr);
            }
            toy.w.value.to_vec()
        };
        let (adamw, sgd) = focal_engine::threads::with_threads(threads, || {
            (run(&mut AdamW::new(wd)), run(&mut Sgd::new(0.9, wd)))
        });
        assert!(adamw == want_adamw, "AdamW on {threads} threads differs");
        assert!(sgd == want_sgd, "SGD on {threads} threads differs");
    }
}
