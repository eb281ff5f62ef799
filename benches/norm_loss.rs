//! `cargo bench --bench norm_loss`: the fused focal loss against the same loss composed
//! from elementwise ops, GroupNorm on an FPN-level activation and BatchNorm on a stem
//! activation, forward and backward, at RetinaNet sizes (best of a few runs, in ms).

use std::time::Instant;

use focal_engine::{
    backward, backward_with, batch_norm_train, group_norm, sigmoid_focal_loss,
    sigmoid_focal_loss_rows, ParamId, Reduction, Rng, RowTarget, Tensor,
};

fn randn(rng: &mut Rng, shape: &[usize], mean: f32, std: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, rng.normal_vec(n, mean, std))
}

/// FL = −α_t (1 − p_t)^γ log p_t from elementary ops (each with its own tape node), the
/// unfused baseline of the timing.
fn composed_focal(x: &Tensor, y: &Tensor, alpha: f32, gamma: f32) -> Tensor {
    let values = |f: &dyn Fn(f32) -> f32| {
        Tensor::from_vec(y.shape(), y.data().iter().map(|&t| f(t)).collect())
    };
    let sign = values(&|t| 2.0 * t - 1.0);
    let at = values(&|t| if t == 1.0 { alpha } else { 1.0 - alpha });
    let xt = x.mul(&sign);
    let log_pt = xt.log_sigmoid();
    let q = xt.neg().sigmoid();
    q.pow_scalar(gamma).mul(&log_pt).mul(&at).neg()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The best (forward, backward) times in ms of `runs` runs of `f`, which returns them.
fn best_of(runs: usize, mut f: impl FnMut() -> (f64, f64)) -> (f64, f64) {
    (0..runs).fold((f64::MAX, f64::MAX), |best, _| {
        let (a, b) = f();
        (best.0.min(a), best.1.min(b))
    })
}

/// Best forward and backward times of a normalisation `norm(x, weight, bias)` on `x`
/// (weight 1, bias 0 per channel), with a seed gradient equal to the output.
fn time_norm(
    runs: usize,
    x: &Tensor,
    norm: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
) -> (f64, f64) {
    let c = x.shape()[1];
    let (w, b) = (Tensor::ones(&[c]), Tensor::zeros(&[c]));
    best_of(runs, || {
        let (xt, wt, bt) = (
            x.track(ParamId::fresh()),
            w.track(ParamId::fresh()),
            b.track(ParamId::fresh()),
        );
        let t0 = Instant::now();
        let out = norm(&xt, &wt, &bt);
        let f = ms(t0);
        let seed = out.detach();
        let t1 = Instant::now();
        let _ = backward_with(&out, seed);
        (f, ms(t1))
    })
}

fn main() {
    let mut r = Rng::new(12);

    // Focal loss: 2 images × 49,104 anchors (800×~1000 px) × 80 classes ≈ 7.9 M entries.
    let n = 2 * 49_104 * 80;
    let x = Tensor::from_vec(&[2, 49_104, 80], r.uniform_vec(n, -8.0, 4.0));
    let y = Tensor::from_vec(
        &[2, 49_104, 80],
        (0..n).map(|_| r.bernoulli(0.002) as u8 as f32).collect(),
    );
    for (name, fused) in [("fused", true), ("composed", false)] {
        let (f, b) = best_of(3, || {
            let id = ParamId::fresh();
            let xt = x.track(id);
            let t0 = Instant::now();
            let loss = if fused {
                sigmoid_focal_loss(&xt, &y, Some(0.25), 2.0, Reduction::Sum)
            } else {
                composed_focal(&xt, &y, 0.25, 2.0).sum_all()
            };
            let f = ms(t0);
            let t1 = Instant::now();
            let g = backward(&loss);
            let b = ms(t1);
            assert!(g.get(id).is_some());
            (f, b)
        });
        println!("focal loss {name:<8} {n} elements: forward {f:7.1} ms, backward {b:7.1} ms");
    }

    // The per-row form training uses: the same logits, one label per anchor, 1 % ignored.
    let rows: Vec<RowTarget> = (0..2 * 49_104)
        .map(|_| {
            if r.bernoulli(0.01) {
                RowTarget::Ignored
            } else if r.bernoulli(0.01) {
                RowTarget::Class(r.below(80))
            } else {
                RowTarget::Background
            }
        })
        .collect();
    let x2 = x.reshape(&[2 * 49_104, 80]);
    let (f, b) = best_of(3, || {
        let id = ParamId::fresh();
        let xt = x2.track(id);
        let t0 = Instant::now();
        let loss = sigmoid_focal_loss_rows(&xt, &rows, Some(0.25), 2.0);
        let f = ms(t0);
        let t1 = Instant::now();
        let g = backward(&loss);
        let b = ms(t1);
        assert!(g.get(id).is_some());
        (f, b)
    });
    println!("focal loss rows     {n} elements: forward {f:7.1} ms, backward {b:7.1} ms");

    // Group norm (2, 256, 64, 64), 32 groups: an FPN-level head activation.
    let x = randn(&mut r, &[2, 256, 64, 64], 0.0, 1.0);
    let (f, b) = time_norm(5, &x, |x, w, b| group_norm(x, 32, w, b, 1e-5));
    println!("group_norm (2,256,64,64) G=32: forward {f:7.1} ms, backward {b:7.1} ms");

    // Batch norm on a ResNet stem activation (2, 64, 256, 256).
    let x = randn(&mut r, &[2, 64, 256, 256], 0.0, 1.0);
    let (f, b) = time_norm(3, &x, |x, w, b| batch_norm_train(x, w, b, 1e-5).0);
    println!("batch_norm (2,64,256,256): forward {f:7.1} ms, backward {b:7.1} ms");
    println!("threads: {}", focal_engine::threads::num_threads());
}
