//! Normalisation and loss ops against independent references: naive f64 loops, the same
//! function composed from elementary engine ops, and numbers worked out by hand.

use focal_engine::threads::with_threads;
use focal_engine::{
    backward, backward_with, batch_norm_train, bce_with_logits, channel_affine, group_norm, l1,
    sigmoid_focal_loss, smooth_l1, Gradients, ParamId, Reduction, Rng, Tensor,
};

fn randn(rng: &mut Rng, shape: &[usize], mean: f32, std: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, rng.normal_vec(n, mean, std))
}

/// Asserts `|a − b| ≤ abs + rel·|b|` elementwise, naming the first failure.
fn assert_close(what: &str, a: &[f32], b: &[f64], abs: f64, rel: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x as f64 - y).abs();
        assert!(
            err <= abs + rel * y.abs(),
            "{what}: element {i}: got {x}, expected {y} (error {err:e})"
        );
    }
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    t.data().iter().map(|&v| v as f64).collect()
}

// ---------------------------------------------------------------------------------------
// Batch norm, channel affine, group norm
// ---------------------------------------------------------------------------------------

/// Naive training-mode batch norm in f64: (y, mean, biased var, unbiased var).
fn naive_batch_norm(
    x: &Tensor,
    w: &[f32],
    b: &[f32],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    let d = x.data();
    let at = |i: usize, ch: usize, k: usize| d[(i * c + ch) * s + k] as f64;
    let m = (n * s) as f64;
    let (mut means, mut vars, mut unb) = (vec![], vec![], vec![]);
    let mut y = vec![0.0; d.len()];
    for ch in 0..c {
        let mut sum = 0.0;
        for i in 0..n {
            for k in 0..s {
                sum += at(i, ch, k);
            }
        }
        let mu = sum / m;
        let mut ss = 0.0;
        for i in 0..n {
            for k in 0..s {
                ss += (at(i, ch, k) - mu).powi(2);
            }
        }
        let var = ss / m;
        for i in 0..n {
            for k in 0..s {
                y[(i * c + ch) * s + k] =
                    (at(i, ch, k) - mu) / (var + eps).sqrt() * w[ch] as f64 + b[ch] as f64;
            }
        }
        means.push(mu);
        vars.push(var);
        unb.push(ss / (m - 1.0));
    }
    (y, means, vars, unb)
}

#[test]
fn batch_norm_forward_matches_naive_f64() {
    let mut r = Rng::new(1);
    for (shape, offset) in [
        (vec![6, 4], 0.0),
        (vec![3, 5, 7], 0.0),
        (vec![2, 3, 5, 4], 0.0),
        // a mean far larger than the spread: the shifted sums must not cancel
        (vec![2, 3, 8, 8], 1000.0),
    ] {
        let c = shape[1];
        let x = randn(&mut r, &shape, offset, 2.0);
        let w = randn(&mut r, &[c], 1.0, 0.3);
        let b = randn(&mut r, &[c], 0.0, 1.0);
        let (y, st) = batch_norm_train(&x, &w, &b, 1e-5);
        let (ry, rm, rv, ru) = naive_batch_norm(&x, w.data(), b.data(), 1e-5);
        let what = format!("{shape:?} offset {offset}");
        assert_eq!(y.shape(), &shape[..]);
        assert_close(&format!("y {what}"), y.data(), &ry, 2e-5, 2e-5);
        assert_close(&format!("mean {what}"), &st.mean, &rm, 1e-6, 1e-6);
        assert_close(&format!("var {what}"), &st.var, &rv, 1e-6, 1e-5);
        assert_close(
            &format!("var_unbiased {what}"),
            &st.var_unbiased,
            &ru,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn batch_norm_unbiased_variance_by_hand() {
    // One channel holding 1, 2, 3, 4 over (N=2, S=2): μ = 2.5, Σ(x − μ)² = 2.25 + 0.25 +
    // 0.25 + 2.25 = 5, biased var 5/4 = 1.25, unbiased 5/3 = 1.6667 (what PyTorch blends
    // into running_var).
    let x = Tensor::from_vec(&[2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let (y, st) = batch_norm_train(&x, &Tensor::ones(&[1]), &Tensor::zeros(&[1]), 0.0);
    assert_eq!(st.mean, vec![2.5]);
    assert_eq!(st.var, vec![1.25]);
    assert!((st.var_unbiased[0] - 5.0 / 3.0).abs() < 1e-6);
    // normalised: (x − 2.5)/√1.25
    let k = 1.25f64.sqrt();
    let want: Vec<f64> = [1.0, 2.0, 3.0, 4.0].iter().map(|v| (v - 2.5) / k).collect();
    assert_close("y", y.data(), &want, 1e-6, 1e-6);
}

#[test]
fn unbiased_variance_is_unbiased_on_average() {
    // Many batches of 3 values from N(0, 2²): E[var_unbiased] = 4, E[var] = 4·(2/3).
    let mut r = Rng::new(5);
    let batches = 4000;
    let x = randn(&mut r, &[3, batches], 0.0, 2.0); // each column is one "channel" = one batch
    let (_, st) = batch_norm_train(
        &x,
        &Tensor::ones(&[batches]),
        &Tensor::zeros(&[batches]),
        1e-5,
    );
    let mean_unb: f64 = st.var_unbiased.iter().map(|&v| v as f64).sum::<f64>() / batches as f64;
    let mean_b: f64 = st.var.iter().map(|&v| v as f64).sum::<f64>() / batches as f64;
    // The standard error of each average is about 4·√(2/2)/√4000 ≈ 0.063 (chi-squared with
    // 2 degrees of freedom); 0.25 is four standard errors.
    assert!(
        (mean_unb - 4.0).abs() < 0.25,
        "mean unbiased var {mean_unb}"
    );
    assert!((mean_b - 8.0 / 3.0).abs() < 0.2, "mean biased var {mean_b}");
}

#[test]
#[should_panic(expected = "batch_norm: training needs more than one value per channel")]
fn batch_norm_rejects_a_single_value_per_channel() {
    let x = Tensor::zeros(&[1, 3]);
    let _ = batch_norm_train(&x, &Tensor::ones(&[3]), &Tensor::zeros(&[3]), 1e-5);
}

#[test]
#[should_panic(expected = "batch_norm: weight must have shape [3]")]
fn batch_norm_names_a_bad_parameter_shape() {
    let x = Tensor::zeros(&[2, 3, 2]);
    let _ = batch_norm_train(&x, &Tensor::ones(&[4]), &Tensor::zeros(&[3]), 1e-5);
}

#[test]
fn channel_affine_is_the_batch_norm_eval_formula() {
    let mut r = Rng::new(2);
    let (c, eps) = (4usize, 1e-5f64);
    let x = randn(&mut r, &[3, c, 5, 2], 0.5, 1.5);
    let gamma = randn(&mut r, &[c], 1.0, 0.3);
    let beta = randn(&mut r, &[c], 0.0, 1.0);
    let rmean = randn(&mut r, &[c], 0.2, 0.5);
    let rvar = Tensor::from_vec(&[c], r.uniform_vec(c, 0.3, 3.0));
    // scale = γ/√(running_var + ε), shift = β − running_mean·scale
    let scale: Vec<f32> = (0..c)
        .map(|i| (gamma.data()[i] as f64 / (rvar.data()[i] as f64 + eps).sqrt()) as f32)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|i| (beta.data()[i] as f64 - rmean.data()[i] as f64 * scale[i] as f64) as f32)
        .collect();
    let y = channel_affine(
        &x,
        &Tensor::from_vec(&[c], scale),
        &Tensor::from_vec(&[c], shift),
    );
    let s = 10;
    let want: Vec<f64> = x
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / s) % c;
            (v as f64 - rmean.data()[ch] as f64) / (rvar.data()[ch] as f64 + eps).sqrt()
                * gamma.data()[ch] as f64
                + beta.data()[ch] as f64
        })
        .collect();
    assert_close("eval batch norm", y.data(), &want, 1e-5, 1e-5);

    // With the batch's own (biased) statistics it reproduces training-mode batch norm.
    let (ybn, st) = batch_norm_train(&x, &gamma, &beta, eps as f32);
    let scale: Vec<f32> = (0..c)
        .map(|i| (gamma.data()[i] as f64 / (st.var[i] as f64 + eps).sqrt()) as f32)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|i| (beta.data()[i] as f64 - st.mean[i] as f64 * scale[i] as f64) as f32)
        .collect();
    let ya = channel_affine(
        &x,
        &Tensor::from_vec(&[c], scale),
        &Tensor::from_vec(&[c], shift),
    );
    assert_close("affine vs train", ya.data(), &as_f64(&ybn), 1e-5, 1e-5);
}

/// Naive group norm in f64.
fn naive_group_norm(x: &Tensor, groups: usize, w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    let cg = c / groups;
    let d = x.data();
    let mut y = vec![0.0; d.len()];
    for i in 0..n {
        for g in 0..groups {
            let idx: Vec<(usize, usize)> = (g * cg..(g + 1) * cg)
                .flat_map(|ch| (0..s).map(move |k| (ch, (i * c + ch) * s + k)))
                .collect();
            let m = idx.len() as f64;
            let mu = idx.iter().map(|&(_, j)| d[j] as f64).sum::<f64>() / m;
            let var = idx
                .iter()
                .map(|&(_, j)| (d[j] as f64 - mu).powi(2))
                .sum::<f64>()
                / m;
            for &(ch, j) in &idx {
                y[j] = (d[j] as f64 - mu) / (var + eps).sqrt() * w[ch] as f64 + b[ch] as f64;
            }
        }
    }
    y
}

#[test]
fn group_norm_forward_matches_naive_f64() {
    let mut r = Rng::new(3);
    for (shape, groups) in [
        (vec![2, 8, 3, 3], 1),
        (vec![2, 8, 3, 3], 2),
        (vec![2, 8, 3, 3], 4),
        (vec![2, 8, 3, 3], 8),
        (vec![3, 6, 10], 3),
        (vec![2, 4], 2),
        (vec![1, 64, 16, 16], 32),
    ] {
        let c = shape[1];
        let x = randn(&mut r, &shape, 3.0, 2.0);
        let w = randn(&mut r, &[c], 1.0, 0.3);
        let b = randn(&mut r, &[c], 0.0, 1.0);
        let y = group_norm(&x, groups, &w, &b, 1e-5);
        let want = naive_group_norm(&x, groups, w.data(), b.data(), 1e-5);
        assert_eq!(y.shape(), &shape[..]);
        assert_close(
            &format!("group_norm {shape:?} groups {groups}"),
            y.data(),
            &want,
            3e-5,
            2e-5,
        );
    }
}

#[test]
#[should_panic(expected = "group_norm: 6 channels cannot be split into 4 equal groups")]
fn group_norm_rejects_indivisible_channels() {
    let x = Tensor::zeros(&[1, 6, 2, 2]);
    let _ = group_norm(&x, 4, &Tensor::ones(&[6]), &Tensor::zeros(&[6]), 1e-5);
}

/// Tracks `inputs`, runs `f`, backpropagates a fixed random seed, returns output and grads.
fn grads_of(
    inputs: &[Tensor],
    seed_rng: u64,
    f: impl Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let ids: Vec<ParamId> = inputs.iter().map(|_| ParamId::fresh()).collect();
    let tracked: Vec<Tensor> = inputs
        .iter()
        .zip(&ids)
        .map(|(x, &id)| x.track(id))
        .collect();
    let out = f(&tracked);
    let mut r = Rng::new(seed_rng);
    let seed = Tensor::from_vec(out.shape(), r.normal_vec(out.numel(), 0.0, 1.0));
    let grads: Gradients = backward_with(&out, seed);
    let g = ids
        .iter()
        .map(|&id| grads.get(id).unwrap().clone())
        .collect();
    (out.detach(), g)
}

#[test]
fn fused_norm_backwards_match_composed_ops() {
    let mut r = Rng::new(4);
    let (n, c, h, w, eps) = (3usize, 8usize, 5usize, 4usize, 1e-5f32);
    let x = randn(&mut r, &[n, c, h, w], 0.7, 1.3);
    let gamma = randn(&mut r, &[c], 1.0, 0.3);
    let beta = randn(&mut r, &[c], 0.0, 0.5);
    let inputs = [x, gamma, beta];

    // Batch norm: x̂ = (x − mean)/√(var + ε) over axes (0, 2, 3), then γ x̂ + β.
    let (y1, g1) = grads_of(&inputs, 9, |t| batch_norm_train(&t[0], &t[1], &t[2], eps).0);
    let (y2, g2) = grads_of(&inputs, 9, |t| {
        let mu = t[0].mean(&[0, 2, 3], true);
        let xc = t[0].sub(&mu);
        let var = xc.mul(&xc).mean(&[0, 2, 3], true);
        let xhat = xc.div(&var.add_scalar(eps).sqrt());
        xhat.mul(&t[1].reshape(&[1, c, 1, 1]))
            .add(&t[2].reshape(&[1, c, 1, 1]))
    });
    assert_close("bn y", y1.data(), &as_f64(&y2), 1e-5, 1e-5);
    for (k, name) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
        assert_close(
            &format!("bn {name}"),
            g1[k].data(),
            &as_f64(&g2[k]),
            2e-5,
            1e-4,
        );
    }

    // Group norm with 4 groups: reshape to (N, G, C/G·H·W) and normalise the last axis.
    let groups = 4;
    let (y1, g1) = grads_of(&inputs, 10, |t| {
        group_norm(&t[0], groups, &t[1], &t[2], eps)
    });
    let (y2, g2) = grads_of(&inputs, 10, |t| {
        let xg = t[0].reshape(&[n, groups, c / groups * h * w]);
        let mu = xg.mean(&[2], true);
        let xc = xg.sub(&mu);
        let var = xc.mul(&xc).mean(&[2], true);
        let xhat = xc.div(&var.add_scalar(eps).sqrt()).reshape(&[n, c, h, w]);
        xhat.mul(&t[1].reshape(&[1, c, 1, 1]))
            .add(&t[2].reshape(&[1, c, 1, 1]))
    });
    assert_close("gn y", y1.data(), &as_f64(&y2), 1e-5, 1e-5);
    for (k, name) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
        assert_close(
            &format!("gn {name}"),
            g1[k].data(),
            &as_f64(&g2[k]),
            2e-5,
            1e-4,
        );
    }
}

#[test]
fn norms_are_bitwise_identical_for_any_thread_count() {
    let mut r = Rng::new(6);
    // 4·16·32·32 = 65536 elements: above the parallel threshold.
    let x = randn(&mut r, &[4, 16, 32, 32], 0.3, 1.2);
    let gamma = randn(&mut r, &[16], 1.0, 0.3);
    let beta = randn(&mut r, &[16], 0.0, 0.5);
    let inputs = [x, gamma, beta];
    let run = || {
        let (y, g) = grads_of(&inputs, 11, |t| {
            batch_norm_train(&t[0], &t[1], &t[2], 1e-5).0
        });
        let (z, h) = grads_of(&inputs, 12, |t| group_norm(&t[0], 4, &t[1], &t[2], 1e-5));
        let (a, k) = grads_of(&inputs, 13, |t| channel_affine(&t[0], &t[1], &t[2]));
        let mut all = Vec::new();
        for t in [&y, &z, &a].into_iter().chain(&g).chain(&h).chain(&k) {
            all.extend(t.data().iter().map(|v| v.to_bits()));
        }
        all
    };
    let one = with_threads(1, run);
    for threads in [2, 3, 7] {
        assert!(
            one == with_threads(threads, run),
            "results differ between 1 and {threads} threads"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------------------

/// ln(p/(1 − p)): the logit whose sigmoid is p.
fn logit(p: f64) -> f32 {
    (p / (1.0 - p)).ln() as f32
}

fn one(v: f32) -> Tensor {
    Tensor::from_vec(&[1], vec![v])
}

fn rel_err(got: f32, want: f64) -> f64 {
    (got as f64 - want).abs() / want.abs()
}

// The figures are the paper's worked values (docs/focal-loss.md), typed as published
// (2.302585 is ln 10 and 1.12838 happens to
// be close to 2/√π): spelling them as constants would hide what is being checked.
#[allow(clippy::approx_constant)]
#[test]
fn focal_loss_facts_from_the_paper() {
    // γ = 2, α_t = 1. p_t = 0.9: CE = −ln 0.9 = 0.105361, FL = 0.1²·CE = 0.00105361.
    // p_t = 0.1: CE = −ln 0.1 = 2.302585, FL = 0.9²·CE = 1.865094.
    // For y = 1 p_t = p, so x = logit(p_t); for y = 0 p_t = 1 − p, so x = logit(1 − p_t).
    for (pt, ce, fl) in [(0.9, 0.105361, 0.00105361), (0.1, 2.302585, 1.865094)] {
        for (y, x) in [(1.0, logit(pt)), (0.0, logit(1.0 - pt))] {
            let got_ce = bce_with_logits(&one(x), &one(y), Reduction::Sum).item();
            let got_fl = sigmoid_focal_loss(&one(x), &one(y), None, 2.0, Reduction::Sum).item();
            assert!(
                rel_err(got_ce, ce) < 5e-6,
                "CE at p_t {pt}, y {y}: {got_ce}"
            );
            assert!(
                rel_err(got_fl, fl) < 5e-6,
                "FL at p_t {pt}, y {y}: {got_fl}"
            );
        }
    }
}

#[allow(clippy::approx_constant)]
#[test]
fn focal_loss_at_the_prior_initialisation() {
    // Classification bias −ln((1 − π)/π) with π = 0.01: σ(x) = 0.01 for every entry.
    // Negative (y = 0): α_t = 0.75, p_t = 0.99: 0.75·0.01²·(−ln 0.99) = 0.75e-4·0.01005034
    //   = 7.5378e-7.
    // Positive (y = 1): α_t = 0.25, p_t = 0.01: 0.25·0.99²·ln 100 = 0.25·0.9801·4.605170
    //   = 1.12838.
    let x = -((1.0f64 - 0.01) / 0.01).ln() as f32;
    let neg = sigmoid_focal_loss(&one(x), &one(0.0), Some(0.25), 2.0, Reduction::Sum).item();
    let pos = sigmoid_focal_loss(&one(x), &one(1.0), Some(0.25), 2.0, Reduction::Sum).item();
    assert!(rel_err(neg, 7.5378e-7) < 2e-5, "negative entry {neg:e}");
    assert!(rel_err(pos, 1.12838) < 5e-6, "positive entry {pos}");
}

#[test]
fn focal_loss_with_gamma_zero_is_alpha_balanced_bce() {
    let mut r = Rng::new(7);
    let n = 500;
    let x = Tensor::from_vec(&[n], r.uniform_vec(n, -20.0, 20.0));
    let y = Tensor::from_vec(&[n], (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect());
    let bce = bce_with_logits(&x, &y, Reduction::None);
    for alpha in [None, Some(0.25f32), Some(0.9)] {
        let fl = sigmoid_focal_loss(&x, &y, alpha, 0.0, Reduction::None);
        let want: Vec<f64> = bce
            .data()
            .iter()
            .zip(y.data())
            .map(|(&b, &t)| {
                let at = match alpha {
                    None => 1.0,
                    Some(a) if t == 1.0 => a as f64,
                    Some(a) => 1.0 - a as f64,
                };
                at * b as f64
            })
            .collect();
        assert_close(&format!("γ = 0, α {alpha:?}"), fl.data(), &want, 1e-7, 2e-6);
    }
}

#[test]
fn focal_loss_is_finite_for_large_logits() {
    let xs = [-100.0f32, -50.0, 50.0, 100.0];
    for gamma in [0.0f32, 0.5, 1.0, 2.0, 5.0] {
        for alpha in [None, Some(0.25f32)] {
            for y in [0.0f32, 1.0] {
                let id = ParamId::fresh();
                let x = Tensor::from_vec(&[4], xs.to_vec()).track(id);
                let t = Tensor::full(&[4], y);
                let loss = sigmoid_focal_loss(&x, &t, alpha, gamma, Reduction::None);
                let vals = loss.to_vec();
                let grads = backward(&loss.sum_all());
                let g = grads.get(id).unwrap().to_vec();
                let sign = if y == 1.0 { 1.0 } else { -1.0 };
                let at = match alpha {
                    None => 1.0,
                    Some(a) if y == 1.0 => a,
                    Some(a) => 1.0 - a,
                };
                for k in 0..4 {
                    let case = format!("x {} y {y} γ {gamma} α {alpha:?}", xs[k]);
                    assert!(
                        vals[k].is_finite() && vals[k] >= 0.0,
                        "loss {case}: {}",
                        vals[k]
                    );
                    assert!(g[k].is_finite(), "gradient {case}: {}", g[k]);
                    let xt = sign * xs[k];
                    if xt < 0.0 {
                        // badly wrong: 1 − p_t = 1, ln p_t = x_t, so FL = −α_t·x_t and
                        // dFL/dx = −α_t·y±
                        assert!(rel_err(vals[k], (-at * xt) as f64) < 1e-6, "loss {case}");
                        assert!(rel_err(g[k], (-at * sign) as f64) < 1e-6, "grad {case}");
                    } else {
                        // well classified: both below e^−50 ≈ 2e-22
                        assert!(vals[k] < 1e-21 && g[k].abs() < 1e-21, "{case}");
                    }
                }
            }
        }
    }
}

/// The focal loss composed from elementary engine ops, the way one would write it without
/// a fused kernel: x_t = y±·x, FL = −α_t·σ(−x_t)^γ·ln σ(x_t).
fn composed_focal(x: &Tensor, y: &Tensor, alpha: Option<f32>, gamma: f32) -> Tensor {
    let sign = y.with_values(|t| 2.0 * t - 1.0);
    let at = y.with_values(|t| match alpha {
        None => 1.0,
        Some(a) if t == 1.0 => a,
        Some(a) => 1.0 - a,
    });
    let xt = x.mul(&sign);
    let log_pt = xt.log_sigmoid();
    let q = xt.neg().sigmoid();
    q.pow_scalar(gamma).mul(&log_pt).mul(&at).neg()
}

trait WithValues {
    fn with_values(&self, f: impl Fn(f32) -> f32) -> Tensor;
}

impl WithValues for Tensor {
    fn with_values(&self, f: impl Fn(f32) -> f32) -> Tensor {
        Tensor::from_vec(self.shape(), self.data().iter().map(|&v| f(v)).collect())
    }
}

#[test]
fn fused_focal_backward_matches_the_composed_form() {
    let mut r = Rng::new(8);
    let n = 400;
    // Logits in [−6, 6]: there σ(−x_t) > 2e-3, so pow_scalar's own backward (which forms
    // q^(γ−1)) is well conditioned even for γ = 0.5.
    let x = Tensor::from_vec(&[4, n / 4], r.uniform_vec(n, -6.0, 6.0));
    let y = Tensor::from_vec(
        &[4, n / 4],
        (0..n).map(|_| r.bernoulli(0.3) as u8 as f32).collect(),
    );
    for gamma in [0.0f32, 0.5, 1.0, 2.0, 5.0] {
        for alpha in [None, Some(0.25f32)] {
            let what = format!("γ {gamma}, α {alpha:?}");
            let yc = y.clone();
            let (f1, g1) = grads_of(std::slice::from_ref(&x), 20, |t| {
                sigmoid_focal_loss(&t[0], &yc, alpha, gamma, Reduction::None)
            });
            let (f2, g2) = grads_of(std::slice::from_ref(&x), 20, |t| {
                composed_focal(&t[0], &yc, alpha, gamma)
            });
            assert_close(&format!("loss {what}"), f1.data(), &as_f64(&f2), 1e-7, 1e-5);
            assert_close(
                &format!("grad {what}"),
                g1[0].data(),
                &as_f64(&g2[0]),
                1e-7,
                1e-4,
            );
            // The Sum reduction's gradient is the None gradient with an all-ones seed.
            let id = ParamId::fresh();
            let xs = x.track(id);
            let grads = backward(&sigmoid_focal_loss(&xs, &y, alpha, gamma, Reduction::Sum));
            let xs2 = x.track(id);
            let ones = composed_focal(&xs2, &y, alpha, gamma).sum_all();
            let grads2 = backward(&ones);
            assert_close(
                &format!("sum grad {what}"),
                grads.get(id).unwrap().data(),
                &as_f64(grads2.get(id).unwrap()),
                1e-7,
                1e-4,
            );
        }
    }
}

#[test]
fn bce_matches_f64_and_stays_finite() {
    let mut r = Rng::new(9);
    let n = 300;
    let mut xs = r.uniform_vec(n - 4, -30.0, 30.0);
    xs.extend([-100.0, 100.0, 0.0, -0.0]);
    let x = Tensor::from_vec(&[n], xs);
    let t = Tensor::from_vec(&[n], r.uniform_vec(n, 0.0, 1.0));
    let got = bce_with_logits(&x, &t, Reduction::None);
    // −[t ln σ(x) + (1 − t) ln σ(−x)], with ln σ(z) = −ln(1 + e^−z) in f64 (finite here).
    let want: Vec<f64> = x
        .data()
        .iter()
        .zip(t.data())
        .map(|(&x, &t)| {
            let (x, t) = (x as f64, t as f64);
            let ls = |z: f64| -(-z).exp().ln_1p();
            -(t * ls(x) + (1.0 - t) * ls(-x))
        })
        .collect();
    assert_close("bce", got.data(), &want, 1e-6, 1e-6);
    let sum = bce_with_logits(&x, &t, Reduction::Sum).item() as f64;
    let mean = bce_with_logits(&x, &t, Reduction::Mean).item() as f64;
    let wsum: f64 = want.iter().sum();
    assert!((sum - wsum).abs() < 1e-6 * wsum.abs());
    assert!((mean - wsum / n as f64).abs() < 1e-6 * wsum.abs() / n as f64);
    // Gradient σ(x) − t, finite at ±100.
    let id = ParamId::fresh();
    let g = backward(&bce_with_logits(&x.track(id), &t, Reduction::Sum));
    for (i, &gv) in g.get(id).unwrap().data().iter().enumerate() {
        let xv = x.data()[i] as f64;
        let want = 1.0 / (1.0 + (-xv).exp()) - t.data()[i] as f64;
        assert!((gv as f64 - want).abs() < 1e-6, "bce gradient at x = {xv}");
    }
}

#[test]
fn smooth_l1_by_hand() {
    // β = 0.11, target 0, so d = pred exactly:
    //   d = 0.05  (inside):  0.5·0.05²/0.11 = 0.0113636…
    //   d = −0.5  (outside): 0.5 − 0.055 = 0.445
    //   d = 0.11  (at β, the linear piece): 0.11 − 0.055 = 0.055 (the quadratic piece agrees)
    //   d = 0:    0
    let pred = Tensor::from_vec(&[4], vec![0.05, -0.5, 0.11, 0.0]);
    let target = Tensor::zeros(&[4]);
    let want = [0.0025 / 0.22, 0.445, 0.055, 0.0];
    let got = smooth_l1(&pred, &target, 0.11, Reduction::None);
    assert_close("smooth_l1", got.data(), &want, 1e-7, 1e-6);
    let total: f64 = want.iter().sum();
    let s = smooth_l1(&pred, &target, 0.11, Reduction::Sum);
    assert_eq!(s.shape(), &[] as &[usize]);
    assert!((s.item() as f64 - total).abs() < 1e-6);
    let m = smooth_l1(&pred, &target, 0.11, Reduction::Mean).item() as f64;
    assert!((m - total / 4.0).abs() < 1e-6);
    // Gradients: d/β = 0.4545…, sign = −1, sign = +1 (|d| = β is the linear piece), 0.
    let id = ParamId::fresh();
    let g = backward(&smooth_l1(&pred.track(id), &target, 0.11, Reduction::Sum));
    assert_close(
        "smooth_l1 grad",
        g.get(id).unwrap().data(),
        &[0.05 / 0.11, -1.0, 1.0, 0.0],
        1e-6,
        1e-6,
    );
}

#[test]
fn smooth_l1_with_beta_zero_is_l1() {
    let mut r = Rng::new(10);
    let p = randn(&mut r, &[5, 4], 0.0, 1.0);
    let t = randn(&mut r, &[5, 4], 0.0, 1.0);
    for red in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        for beta in [0.0, 1e-6] {
            let a = smooth_l1(&p, &t, beta, red);
            let b = l1(&p, &t, red);
            assert_eq!(a.shape(), b.shape());
            assert_eq!(a.to_vec(), b.to_vec(), "β {beta}, {red:?}");
        }
    }
    // And l1 is |p − t|.
    let want: Vec<f64> = p
        .data()
        .iter()
        .zip(t.data())
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .collect();
    assert_close("l1", l1(&p, &t, Reduction::None).data(), &want, 1e-7, 1e-6);
}

#[test]
fn reductions_shapes_and_empty_inputs() {
    let p = Tensor::from_vec(&[2, 3], vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.25]);
    let t = Tensor::zeros(&[2, 3]);
    assert_eq!(l1(&p, &t, Reduction::None).shape(), &[2, 3]);
    assert_eq!(l1(&p, &t, Reduction::Sum).item(), 5.25);
    assert_eq!(l1(&p, &t, Reduction::Mean).item(), 5.25 / 6.0);
    // No positives in a batch: the box loss over zero anchors sums to 0 (and its gradient is
    // an empty tensor), instead of failing.
    let e = Tensor::zeros(&[0, 4]);
    let id = ParamId::fresh();
    let s = smooth_l1(&e.track(id), &e, 0.11, Reduction::Sum);
    assert_eq!(s.item(), 0.0);
    assert_eq!(backward(&s).get(id).unwrap().shape(), &[0, 4]);
}

#[test]
#[should_panic(expected = "smooth_l1: Reduction::Mean of an empty input (shape [0, 4])")]
fn mean_of_nothing_is_an_error() {
    let e = Tensor::zeros(&[0, 4]);
    let _ = smooth_l1(&e, &e, 0.11, Reduction::Mean);
}

#[test]
#[should_panic(
    expected = "sigmoid_focal_loss: the targets must have the input's shape; got input [2, 3] and targets [3, 2]"
)]
fn loss_shape_mismatch_names_op_and_shapes() {
    let _ = sigmoid_focal_loss(
        &Tensor::zeros(&[2, 3]),
        &Tensor::zeros(&[3, 2]),
        Some(0.25),
        2.0,
        Reduction::Sum,
    );
}

#[test]
#[should_panic(
    expected = "sigmoid_focal_loss: targets must be 0 or 1, but element 4 of the targets (shape [6]) is 0.5"
)]
fn focal_loss_rejects_soft_targets() {
    let t = Tensor::from_vec(&[6], vec![0., 1., 1., 0., 0.5, 1.]);
    let _ = sigmoid_focal_loss(&Tensor::zeros(&[6]), &t, None, 2.0, Reduction::Sum);
}

#[test]
#[should_panic(expected = "l1: the targets are recorded on the tape")]
fn tracked_targets_are_an_error() {
    let t = Tensor::zeros(&[3]).track(ParamId::fresh());
    let _ = l1(&Tensor::ones(&[3]), &t, Reduction::Sum);
}

#[test]
fn losses_are_bitwise_identical_for_any_thread_count() {
    let mut r = Rng::new(11);
    let n = 200_003; // several chunks, and a ragged last one
    let x = Tensor::from_vec(&[n], r.uniform_vec(n, -10.0, 10.0));
    let y = Tensor::from_vec(
        &[n],
        (0..n).map(|_| r.bernoulli(0.1) as u8 as f32).collect(),
    );
    let run = || {
        let mut bits = Vec::new();
        for red in [Reduction::Sum, Reduction::Mean, Reduction::None] {
            let id = ParamId::fresh();
            let xt = x.track(id);
            let losses = [
                sigmoid_focal_loss(&xt, &y, Some(0.25), 2.0, red),
                bce_with_logits(&xt, &y, red),
                smooth_l1(&xt, &y, 0.11, red),
            ];
            let total = losses[0]
                .sum_all()
                .add(&losses[1].sum_all())
                .add(&losses[2].sum_all());
            for l in &losses {
                bits.extend(l.data().iter().map(|v| v.to_bits()));
            }
            let g = backward(&total);
            bits.extend(g.get(id).unwrap().data().iter().map(|v| v.to_bits()));
        }
        bits
    };
    let one = with_threads(1, run);
    for threads in [2, 5] {
        assert!(one == with_threads(threads, run), "1 vs {threads} threads");
    }
}

/// Figures from torchvision's `sigmoid_focal_loss` (composed from torch ops, autograd for the
/// gradient), in float64. Produced by a Python with torch 2.15.0 and torchvision 0.29.2
/// (`pip install torch torchvision`) running:
///
/// ```python
/// import torch
/// from torchvision.ops import sigmoid_focal_loss
/// torch.set_default_dtype(torch.float64)
/// x = torch.tensor([-8.0, -2.5, -0.3, 0.0, 0.7, 3.0, 8.0, -4.59511985013459], requires_grad=True)
/// y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
/// for alpha, gamma in [(0.25, 2.0), (-1, 0.5), (0.25, 5.0)]:   # alpha = -1: no weighting
///     l = sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none")
///     g, = torch.autograd.grad(l.sum(), x)
///     print(alpha, gamma, [f"{v:.9e}" for v in l.tolist()])
///     print("grad", [f"{v:.9e}" for v in g.tolist()])
/// ```
#[test]
fn focal_loss_matches_torchvision() {
    let xs = vec![-8.0, -2.5, -0.3, 0.0, 0.7, 3.0, 8.0, -4.595_12];
    let ys = vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    // (α, γ, loss, gradient)
    type Figures = (Option<f32>, f32, [f64; 8], [f64; 8]);
    let cases: [Figures; 3] = [
        (
            Some(0.25),
            2.0,
            [
                1.998742620e+00,
                3.404760710e-04,
                7.048093406e-02,
                1.299650964e-01,
                1.109763094e-02,
                2.732083112e-05,
                5.996227859e+00,
                1.128381825e+00,
            ],
            [
                -2.510891289e-01,
                9.566886965e-04,
                -1.073766171e-01,
                2.237150964e-01,
                -2.396368061e-02,
                -7.871796162e-05,
                7.532673868e-01,
                -2.651423865e-01,
            ],
        ),
        (
            None,
            0.5,
            [
                7.998993837e+00,
                2.172809757e-02,
                6.475328088e-01,
                4.901290717e-01,
                2.322478431e-01,
                1.058110185e-02,
                7.998993837e+00,
                4.582086481e+00,
            ],
            [
                -1.000838249e+00,
                3.093305768e-02,
                -5.731626091e-01,
                4.760856585e-01,
                -2.687268621e-01,
                -1.536780303e-02,
                1.000838249e+00,
                -1.007947995e+00,
            ],
        ),
        (
            Some(0.25),
            5.0,
            [
                1.996732458e+00,
                1.486256789e-07,
                1.336015141e-02,
                1.624563704e-02,
                4.054221170e-04,
                2.914337964e-09,
                5.990197375e+00,
                1.094867756e+00,
            ],
            [
                -2.528454188e-01,
                8.296703570e-07,
                -3.741052206e-02,
                5.233284261e-02,
                -1.688142963e-03,
                -1.672528555e-08,
                7.585362564e-01,
                -2.901134252e-01,
            ],
        ),
    ];
    let y = Tensor::from_vec(&[8], ys);
    for (alpha, gamma, loss, grad) in cases {
        let id = ParamId::fresh();
        let x = Tensor::from_vec(&[8], xs.clone()).track(id);
        let l = sigmoid_focal_loss(&x, &y, alpha, gamma, Reduction::None);
        // Relative 1e-5: the logits are rounded to f32 (e.g. −0.3 by 1.2e-8) and the
        // kernel runs in f32.
        let what = format!("α {alpha:?} γ {gamma}");
        assert_close(&format!("loss {what}"), l.data(), &loss, 1e-12, 1e-5);
        let g = backward(&l.sum_all());
        assert_close(
            &format!("grad {what}"),
            g.get(id).unwrap().data(),
            &grad,
            1e-12,
            1e-5,
        );
    }
}
