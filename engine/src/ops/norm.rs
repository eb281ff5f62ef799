//! Normalisation: training-mode batch norm, the per-channel affine map that eval-mode (and
//! frozen) batch norm reduces to, and group norm, each with a fused, hand-written backward.
//!
//! Inputs are `(N, C, ...)`: axis 1 is the channel axis and every axis after it is spatial
//! (`S` = product of the spatial sizes, 1 for a rank-2 input). In memory a channel of one
//! sample is a contiguous run of `S` values.
//!
//! ## The shared math
//!
//! Both norms normalise *groups* of `m` values and then apply a per-channel affine map:
//!
//! ```text
//! μ = (1/m) Σ x          σ² = (1/m) Σ (x − μ)²   (biased)     r = 1/√(σ² + ε)
//! x̂ = (x − μ)·r          y = γ_c·x̂ + β_c
//! ```
//!
//! For batch norm a group is one channel over the whole batch (`m = N·S`); for group norm it
//! is one sample's block of `C/G` consecutive channels (`m = (C/G)·S`).
//!
//! **Backward.** Write `g = γ_c·dy`, the gradient reaching x̂. Every x̂ in a group depends on
//! every x of the group through μ and r. With `∂μ/∂x_j = 1/m` and
//! `∂r/∂x_j = −r³·(x_j − μ)/m`:
//!
//! ```text
//! ∂x̂_i/∂x_j = r·(δ_ij − 1/m − x̂_i·x̂_j/m)
//! dx_j = Σ_i g_i·∂x̂_i/∂x_j = r·(g_j − mean(g) − x̂_j·mean(g·x̂))
//! ```
//!
//! and `dγ_c = Σ dy·x̂`, `dβ_c = Σ dy`, summed over every position of channel c. In batch norm a
//! group has a single γ, so this is the textbook
//! `dx = (1/m)·γ·r·(m·dy − Σdy − x̂·Σ(dy·x̂))`.
//!
//! Every kernel reads its input twice (sums, then the elementwise map) and never builds x̂ or
//! any other temporary of the input's size.
//!
//! ## Fused ReLU
//!
//! Each norm is followed by a ReLU in ResNet and in RetinaNet's subnets, so each also
//! comes as one op with it (`batch_norm_train_relu`, `channel_affine_relu`,
//! `group_norm_relu`): the ReLU is applied to each run of outputs as it is written, so
//! the normalised tensor before the ReLU never exists, and the backward first masks the
//! upstream gradient by `[y > 0]` (ReLU's derivative). Both steps use `Tensor::relu`'s
//! expressions, so a fused op gives the same bits as the norm followed by `relu`.
//!
//! Where the mask comes from differs. `channel_affine_relu` and `group_norm_relu` keep
//! their output, which the next op (a convolution) keeps anyway for its own gradient, so
//! it costs nothing. `batch_norm_train_relu` keeps its input for its own backward, and
//! recomputes `y = max((x − μ)·(r·γ) + β, 0)` from it in the backward, with the same
//! expressions as the forward, so the mask has the same bits without holding `y`: in
//! ResNet's stem the output goes to max pooling, which keeps only the position of each
//! window's maximum, so a saved `y` (33.5 MB at 512 px, batch 2) would be held by
//! nothing else from the forward pass to the end of the backward.
//!
//! ## Determinism
//!
//! Each group's sums are accumulated by one task, in f64, in a fixed order (eight interleaved
//! lanes added together at the end; see `moments`). Elementwise passes are split into chunks
//! whose boundaries depend only on the sizes. Results are therefore bitwise identical for any
//! thread count.

use std::ops::Range;

use rayon::prelude::*;

use crate::gradcheck::case::{away_from_zero, randn, Case};
use crate::op::Op;
use crate::ops::unary::{chain_in_place, relu_derivative, relu_f32};
use crate::rng::Rng;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;
use crate::threads::{for_each_chunk_mut, par_map, PAR_THRESHOLD};

/// Batch statistics of one training-mode batch-norm call, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// μ_c over the batch and the spatial positions.
    pub mean: Vec<f32>,
    /// Biased variance σ²_c = (1/m)·Σ(x − μ_c)²: the one used to normalise.
    pub var: Vec<f32>,
    /// Unbiased variance (1/(m−1))·Σ(x − μ_c)²: the one PyTorch blends into `running_var`.
    pub var_unbiased: Vec<f32>,
}

/// Checks that `x` is `(N, C, ...)` and that every per-channel parameter has shape `[C]`.
/// Returns `(N, C, S)`.
fn nc_spatial(op: &str, x: &Tensor, params: &[(&str, &Tensor)]) -> (usize, usize, usize) {
    assert!(
        x.rank() >= 2,
        "{op}: the input must be (N, C, ...) of rank at least 2, got shape {}",
        ShapeFmt(x.shape())
    );
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    for (name, p) in params {
        assert!(
            p.shape() == [c],
            "{op}: {name} must have shape [{c}] (one value per channel of the input {}), got {}",
            ShapeFmt(x.shape()),
            ShapeFmt(p.shape())
        );
    }
    (n, c, s)
}

/// Number of f64 accumulators in [`moments`] and [`dot_moments`]: independent lanes let the
/// compiler vectorise the loop, and adding them in lane order keeps the result fixed.
const LANES: usize = 8;

/// `(Σ (x − k), Σ (x − k)²)` in f64.
///
/// Shifting by a value `k` taken from the data (the group's first element) keeps the one-pass
/// variance `Σd²/m − (Σd/m)²` free of cancellation even when |μ| is much larger than σ.
fn moments(x: &[f32], k: f32) -> (f64, f64) {
    let k = k as f64;
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            let d = c[l] as f64 - k;
            s1[l] += d;
            s2[l] += d * d;
        }
    }
    let (mut a, mut b) = (0.0, 0.0);
    for l in 0..LANES {
        a += s1[l];
        b += s2[l];
    }
    for &v in it.remainder() {
        let d = v as f64 - k;
        a += d;
        b += d * d;
    }
    (a, b)
}

/// `(Σ dy, Σ dy·(x − k))` in f64, over slices of equal length.
fn dot_moments(dy: &[f32], x: &[f32], k: f32) -> (f64, f64) {
    debug_assert_eq!(dy.len(), x.len());
    let k = k as f64;
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut ig = dy.chunks_exact(LANES);
    let mut ix = x.chunks_exact(LANES);
    for (g, v) in (&mut ig).zip(&mut ix) {
        for l in 0..LANES {
            let gl = g[l] as f64;
            s1[l] += gl;
            s2[l] += gl * (v[l] as f64 - k);
        }
    }
    let (mut a, mut b) = (0.0, 0.0);
    for l in 0..LANES {
        a += s1[l];
        b += s2[l];
    }
    for (&g, &v) in ig.remainder().iter().zip(ix.remainder()) {
        a += g as f64;
        b += g as f64 * (v as f64 - k);
    }
    (a, b)
}

/// Per-channel sums over the batch: for every channel `c`, adds `f(range)` over the runs
/// `range` of channel c in samples 0, 1, ..., N−1 (in that order), one task per channel.
fn per_channel(
    n: usize,
    c: usize,
    s: usize,
    f: impl Fn(usize, Range<usize>) -> (f64, f64) + Sync + Send,
) -> Vec<(f64, f64)> {
    par_map(c, |ch| {
        let mut acc = (0.0, 0.0);
        for b in 0..n {
            let start = (b * c + ch) * s;
            let (p, q) = f(ch, start..start + s);
            acc.0 += p;
            acc.1 += q;
        }
        acc
    })
}

/// Fills `out` (an `(N, C, S)` buffer) run by run: `f(c, range, run)` receives each maximal
/// run of `out` that lies in one channel, with its channel and its index range in `out`. Chunks are
/// of fixed size and processed in parallel for large buffers.
fn for_each_channel_run(
    out: &mut [f32],
    c: usize,
    s: usize,
    f: impl Fn(usize, Range<usize>, &mut [f32]) + Sync + Send,
) {
    if s == 0 {
        return;
    }
    for_each_chunk_mut(out, |start, chunk| {
        let end = start + chunk.len();
        let mut pos = start;
        while pos < end {
            let run = pos / s; // index of the (sample, channel) run
            let run_end = ((run + 1) * s).min(end);
            f(
                run % c,
                pos..run_end,
                &mut chunk[pos - start..run_end - start],
            );
            pos = run_end;
        }
    });
}

/// Runs `f(i, block)` on consecutive blocks of `block_len` elements of `out` (in parallel when
/// `out` is large) and returns the results in block order.
fn map_blocks<T: Send>(
    out: &mut [f32],
    block_len: usize,
    f: impl Fn(usize, &mut [f32]) -> T + Sync + Send,
) -> Vec<T> {
    if block_len == 0 {
        return Vec::new();
    }
    if out.len() < PAR_THRESHOLD {
        out.chunks_mut(block_len)
            .enumerate()
            .map(|(i, b)| f(i, b))
            .collect()
    } else {
        out.par_chunks_mut(block_len)
            .enumerate()
            .map(|(i, b)| f(i, b))
            .collect()
    }
}

/// `max(v, 0)` over a run of outputs just written, when the op is fused with a ReLU.
#[inline]
fn relu_run(relu: bool, run: &mut [f32]) {
    if relu {
        for v in run {
            *v = relu_f32(*v);
        }
    }
}

/// The upstream gradient reaching the norm: `g` itself, or `g·[y > 0]` for the fused ReLU
/// (`y` its saved output), masked in `g`'s own buffer when nothing else shares it.
fn masked(g: Tensor, relu_out: Option<&Tensor>) -> Tensor {
    match relu_out {
        Some(y) => chain_in_place(g, y, relu_derivative),
        None => g,
    }
}

/// `g·[y > 0]` with `y = max((x − μ)·k + b, 0)` recomputed per channel from the input,
/// exactly as `batch_norm_train_op` computed it (same expressions, so the same bits):
/// the ReLU mask of the fused batch norm without its output kept. Written over `g` when
/// nothing else shares it, as [`chain_in_place`] does.
fn masked_by_recomputed_output(
    g: Tensor,
    x: &Tensor,
    c: usize,
    s: usize,
    (mean, scale, shift): (&[f32], &[f32], &[f32]),
) -> Tensor {
    let xd = x.data();
    assert_eq!(g.numel(), xd.len());
    // A recorded gradient (double backward is not supported anyway) is copied first.
    let mut g = if g.node.is_some() { g.detach() } else { g };
    for_each_channel_run(g.data_mut(), c, s, |ch, range, run| {
        let (mu, k, b) = (mean[ch], scale[ch], shift[ch]);
        for (o, &v) in run.iter_mut().zip(&xd[range]) {
            *o *= relu_derivative(relu_f32((v - mu) * k + b));
        }
    });
    g
}

/// Training-mode batch normalisation of an `(N, C, ...)` input.
///
/// For each channel c, μ_c and the biased σ²_c are taken over the batch and every spatial
/// position (`m = N·S` values), and `y = γ_c·(x − μ_c)/√(σ²_c + ε) + β_c`. Returns the output
/// and the batch statistics; the caller updates its running averages from
/// [`BatchStats::mean`] and [`BatchStats::var_unbiased`] (PyTorch's convention).
///
/// Gradients flow to `x`, `weight` (γ) and `bias` (β) through the fused backward described in
/// the module documentation. Panics, naming the shapes, when the input has rank < 2, when a
/// parameter is not `[C]`, or when a channel has a single value (no variance to normalise by).
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> (Tensor, BatchStats) {
    batch_norm_train_op(x, weight, bias, eps, false)
}

/// `max(batch_norm_train(..), 0)` as one op (see [Fused ReLU](self#fused-relu)): the same
/// bits as `batch_norm_train(..).0.relu()`.
pub fn batch_norm_train_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> (Tensor, BatchStats) {
    batch_norm_train_op(x, weight, bias, eps, true)
}

fn batch_norm_train_op(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    relu: bool,
) -> (Tensor, BatchStats) {
    let (n, c, s) = nc_spatial("batch_norm", x, &[("weight", weight), ("bias", bias)]);
    let m = n * s;
    assert!(
        m > 1,
        "batch_norm: training needs more than one value per channel, got input shape {}",
        ShapeFmt(x.shape())
    );
    let xd = x.data();
    // Pass 1: shifted sums per channel → μ, σ².
    let sums = per_channel(n, c, s, |ch, r| moments(&xd[r], xd[ch * s]));
    let mut stats = BatchStats {
        mean: Vec::with_capacity(c),
        var: Vec::with_capacity(c),
        var_unbiased: Vec::with_capacity(c),
    };
    let mut rstd = Vec::with_capacity(c);
    for (ch, &(s1, s2)) in sums.iter().enumerate() {
        let shift_mean = s1 / m as f64;
        let var = (s2 / m as f64 - shift_mean * shift_mean).max(0.0);
        stats.mean.push((xd[ch * s] as f64 + shift_mean) as f32);
        stats.var.push(var as f32);
        stats
            .var_unbiased
            .push((var * m as f64 / (m - 1) as f64) as f32);
        rstd.push((1.0 / (var + eps as f64).sqrt()) as f32);
    }
    // Pass 2: y = (x − μ)·(r·γ) + β.
    let (wd, bd) = (weight.data(), bias.data());
    let scale: Vec<f32> = (0..c).map(|ch| rstd[ch] * wd[ch]).collect();
    let mut y = vec![0.0f32; x.numel()];
    for_each_channel_run(&mut y, c, s, |ch, range, run| {
        let (mu, k, b) = (stats.mean[ch], scale[ch], bd[ch]);
        for (o, &v) in run.iter_mut().zip(&xd[range]) {
            *o = (v - mu) * k + b;
        }
        relu_run(relu, run);
    });
    let out = x.with_data(y);
    let mean = stats.mean.clone();
    // What the mask is recomputed from (see [Fused ReLU](self#fused-relu)).
    let shift = relu.then(|| bd.to_vec());
    let op = if relu {
        Op::BatchNormRelu
    } else {
        Op::BatchNorm
    };
    let out = record(op, out, &[x, weight, bias], move |needs| {
        let needs = needs.to_vec();
        let (x, weight) = (x.detach(), weight.detach());
        Box::new(move |g| {
            let g = &match &shift {
                Some(b) => masked_by_recomputed_output(g, &x, c, s, (&mean, &scale, b)),
                None => g,
            };
            let (xd, wd, gd) = (x.data(), weight.data(), g.data());
            // Σdy and Σdy·(x − μ) per channel; dβ = Σdy, dγ = Σdy·x̂ = r·Σdy·(x − μ).
            let sums = per_channel(n, c, s, |ch, r| {
                dot_moments(&gd[r.clone()], &xd[r], mean[ch])
            });
            let dbias: Vec<f32> = sums.iter().map(|p| p.0 as f32).collect();
            let dweight: Vec<f32> = sums
                .iter()
                .zip(&rstd)
                .map(|(p, &r)| (p.1 * r as f64) as f32)
                .collect();
            let dx = needs[0].then(|| {
                // dx = γ·r·(dy − Σdy/m − x̂·Σ(dy·x̂)/m)
                let mean_dy: Vec<f32> = sums.iter().map(|p| (p.0 / m as f64) as f32).collect();
                let mean_dy_xhat: Vec<f32> = dweight.iter().map(|&v| v / m as f32).collect();
                let mut dx = vec![0.0f32; xd.len()];
                for_each_channel_run(&mut dx, c, s, |ch, range, run| {
                    let (mu, r, k) = (mean[ch], rstd[ch], wd[ch] * rstd[ch]);
                    let (a, b) = (mean_dy[ch], mean_dy_xhat[ch]);
                    let (xs, gs) = (&xd[range.clone()], &gd[range]);
                    for ((o, &v), &dy) in run.iter_mut().zip(xs).zip(gs) {
                        let xhat = (v - mu) * r;
                        *o = k * (dy - a - xhat * b);
                    }
                });
                x.with_data(dx)
            });
            vec![
                dx,
                needs[1].then(|| Tensor::from_vec(&[c], dweight)),
                needs[2].then(|| Tensor::from_vec(&[c], dbias)),
            ]
        })
    });
    (out, stats)
}

/// `y[n, c, ...] = x[n, c, ...]·scale[c] + shift[c]` for an `(N, C, ...)` input.
///
/// This is batch norm in evaluation mode (and frozen batch norm): with running statistics
/// the normalisation is a fixed affine map per channel, `scale = γ/√(running_var + ε)` and
/// `shift = β − running_mean·scale`, which the caller computes (so gradients can reach γ and
/// β through them when they are trainable).
///
/// Backward: `dx = dy·scale[c]`, `dscale[c] = Σ dy·x`, `dshift[c] = Σ dy`.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Tensor {
    channel_affine_op(x, scale, shift, false)
}

/// `max(channel_affine(..), 0)` as one op (see [Fused ReLU](self#fused-relu)): the same
/// bits as `channel_affine(..).relu()`.
pub fn channel_affine_relu(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Tensor {
    channel_affine_op(x, scale, shift, true)
}

fn channel_affine_op(x: &Tensor, scale: &Tensor, shift: &Tensor, relu: bool) -> Tensor {
    let (n, c, s) = nc_spatial("channel_affine", x, &[("scale", scale), ("shift", shift)]);
    let (xd, kd, bd) = (x.data(), scale.data(), shift.data());
    let mut y = vec![0.0f32; x.numel()];
    for_each_channel_run(&mut y, c, s, |ch, range, run| {
        let (k, b) = (kd[ch], bd[ch]);
        for (o, &v) in run.iter_mut().zip(&xd[range]) {
            *o = v * k + b;
        }
        relu_run(relu, run);
    });
    let out = x.with_data(y);
    let saved_out = relu.then(|| out.detach());
    let op = if relu {
        Op::ChannelAffineRelu
    } else {
        Op::ChannelAffine
    };
    record(op, out, &[x, scale, shift], move |needs| {
        let needs = needs.to_vec();
        let (x, scale) = (x.detach(), scale.detach());
        Box::new(move |g| {
            let g = &masked(g, saved_out.as_ref());
            let (xd, kd, gd) = (x.data(), scale.data(), g.data());
            let sums = (needs[1] || needs[2])
                .then(|| per_channel(n, c, s, |_, r| dot_moments(&gd[r.clone()], &xd[r], 0.0)));
            let dx = needs[0].then(|| {
                let mut dx = vec![0.0f32; gd.len()];
                for_each_channel_run(&mut dx, c, s, |ch, range, run| {
                    let k = kd[ch];
                    for (o, &dy) in run.iter_mut().zip(&gd[range]) {
                        *o = dy * k;
                    }
                });
                g.with_data(dx)
            });
            let per_c = |pick: fn(&(f64, f64)) -> f64| {
                let v = sums
                    .as_ref()
                    .expect("sums computed when a parameter needs them");
                Tensor::from_vec(&[c], v.iter().map(|p| pick(p) as f32).collect())
            };
            vec![
                dx,
                needs[1].then(|| per_c(|p| p.1)),
                needs[2].then(|| per_c(|p| p.0)),
            ]
        })
    })
}

/// Group normalisation (Wu & He, 2018) of an `(N, C, ...)` input with `groups` groups.
///
/// The C channels are split into `groups` consecutive groups of `C/groups`; μ and σ² are
/// taken per (sample, group) over its channels and spatial positions, then
/// `y = γ_c·(x − μ)/√(σ² + ε) + β_c` with a per-channel γ, β. `groups = 1` is layer norm over
/// (C, ...); `groups = C` is instance norm.
///
/// Each (sample, group) block is contiguous in memory; forward and backward run one task per
/// block. Panics, naming the shapes, when C is not divisible by `groups`.
pub fn group_norm(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f32) -> Tensor {
    group_norm_op(x, groups, weight, bias, eps, false)
}

/// `max(group_norm(..), 0)` as one op (see [Fused ReLU](self#fused-relu)): the same bits
/// as `group_norm(..).relu()`.
pub fn group_norm_relu(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Tensor {
    group_norm_op(x, groups, weight, bias, eps, true)
}

fn group_norm_op(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    relu: bool,
) -> Tensor {
    let (n, c, s) = nc_spatial("group_norm", x, &[("weight", weight), ("bias", bias)]);
    assert!(
        groups > 0 && c % groups == 0,
        "group_norm: {c} channels cannot be split into {groups} equal groups (input shape {})",
        ShapeFmt(x.shape())
    );
    let cg = c / groups; // channels per group
    let block = cg * s; // values per (sample, group)
    assert!(
        n == 0 || block > 0,
        "group_norm: empty groups in input shape {}",
        ShapeFmt(x.shape())
    );
    let (xd, wd, bd) = (x.data(), weight.data(), bias.data());
    let mut y = vec![0.0f32; x.numel()];
    // One task per (sample, group): statistics, then y for that block. Returns (μ, r).
    let stats: Vec<(f32, f32)> = map_blocks(&mut y, block, |i, out| {
        let xs = &xd[i * block..(i + 1) * block];
        let (s1, s2) = moments(xs, xs[0]);
        let shift_mean = s1 / block as f64;
        let var = (s2 / block as f64 - shift_mean * shift_mean).max(0.0);
        let mu = (xs[0] as f64 + shift_mean) as f32;
        let r = (1.0 / (var + eps as f64).sqrt()) as f32;
        let c0 = (i % groups) * cg; // first channel of this group
        for j in 0..cg {
            let (k, b) = (r * wd[c0 + j], bd[c0 + j]);
            let run = j * s..(j + 1) * s;
            for (o, &v) in out[run.clone()].iter_mut().zip(&xs[run.clone()]) {
                *o = (v - mu) * k + b;
            }
            relu_run(relu, &mut out[run]);
        }
        (mu, r)
    });
    let out = x.with_data(y);
    let saved_out = relu.then(|| out.detach());
    let op = if relu {
        Op::GroupNormRelu
    } else {
        Op::GroupNorm
    };
    record(op, out, &[x, weight, bias], move |needs| {
        let needs = needs.to_vec();
        let (x, weight) = (x.detach(), weight.detach());
        Box::new(move |g| {
            let g = &masked(g, saved_out.as_ref());
            let (xd, wd, gd) = (x.data(), weight.data(), g.data());
            let mut dx = vec![0.0f32; if needs[0] { xd.len() } else { 0 }];
            // Per block: per-channel (Σdy, Σdy·x̂) for dβ and dγ, and dx when needed.
            let block_sums = |i: usize, dx: Option<&mut [f32]>| -> Vec<(f64, f64)> {
                let (mu, r) = stats[i];
                let base = i * block;
                let c0 = (i % groups) * cg;
                let per_c: Vec<(f64, f64)> = (0..cg)
                    .map(|j| {
                        let run = base + j * s..base + (j + 1) * s;
                        let (sd, sdx) = dot_moments(&gd[run.clone()], &xd[run], mu);
                        (sd, sdx * r as f64)
                    })
                    .collect();
                if let Some(dx) = dx {
                    // g = γ·dy: mean(g) and mean(g·x̂) over the block.
                    let (mut sg, mut sgx) = (0.0f64, 0.0f64);
                    for (j, p) in per_c.iter().enumerate() {
                        sg += wd[c0 + j] as f64 * p.0;
                        sgx += wd[c0 + j] as f64 * p.1;
                    }
                    let (a, b) = ((sg / block as f64) as f32, (sgx / block as f64) as f32);
                    for j in 0..cg {
                        let w = wd[c0 + j];
                        let run = base + j * s..base + (j + 1) * s;
                        let out = &mut dx[j * s..(j + 1) * s];
                        for ((o, &v), &dy) in out.iter_mut().zip(&xd[run.clone()]).zip(&gd[run]) {
                            let xhat = (v - mu) * r;
                            *o = r * (w * dy - a - xhat * b);
                        }
                    }
                }
                per_c
            };
            let partials: Vec<Vec<(f64, f64)>> = if needs[0] {
                map_blocks(&mut dx, block, |i, out| block_sums(i, Some(out)))
            } else {
                par_map(n * groups, |i| block_sums(i, None))
            };
            // dγ_c, dβ_c: sum the per-sample partials in sample order.
            let (mut dweight, mut dbias) = (vec![0.0f64; c], vec![0.0f64; c]);
            for (i, per_c) in partials.iter().enumerate() {
                let c0 = (i % groups) * cg;
                for (j, p) in per_c.iter().enumerate() {
                    dbias[c0 + j] += p.0;
                    dweight[c0 + j] += p.1;
                }
            }
            let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
            vec![
                needs[0].then(|| x.with_data(dx)),
                needs[1].then(|| Tensor::from_vec(&[c], to_f32(dweight))),
                needs[2].then(|| Tensor::from_vec(&[c], to_f32(dbias))),
            ]
        })
    })
}

/// Gradient checks: every option of every normalisation op.
///
/// Tolerances are the defaults. Inputs are standard normal with γ kept away from zero (so
/// every path of the backward carries weight) and ε = 1e-5.
pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(21);
    let eps = 1e-5;
    let mut v = Vec::new();
    for (what, shape) in [
        ("rank 2 (N=5, C=3)", vec![5, 3]),
        ("rank 3 (2,3,4)", vec![2, 3, 4]),
        ("rank 4 NCHW (2,3,2,3)", vec![2, 3, 2, 3]),
    ] {
        let c = shape[1];
        v.push(Case::new(
            Op::BatchNorm,
            format!("train, {what}"),
            vec![
                randn(&mut r, &shape),
                away_from_zero(&mut r, &[c], 0.5, 1.5),
                randn(&mut r, &[c]),
            ],
            move |x| batch_norm_train(&x[0], &x[1], &x[2], eps).0,
        ));
    }
    v.push(
        Case::new(
            Op::BatchNorm,
            "train, input only (frozen γ, β), rank 4",
            vec![
                randn(&mut r, &[3, 2, 2, 2]),
                away_from_zero(&mut r, &[2], 0.5, 1.5),
                randn(&mut r, &[2]),
            ],
            move |x| batch_norm_train(&x[0], &x[1], &x[2], eps).0,
        )
        .wrt(&[true, false, false]),
    );
    for (what, shape) in [
        ("rank 2 (4,3)", vec![4, 3]),
        ("rank 4 NCHW (2,3,2,2)", vec![2, 3, 2, 2]),
    ] {
        let c = shape[1];
        v.push(Case::new(
            Op::ChannelAffine,
            what,
            vec![
                randn(&mut r, &shape),
                randn(&mut r, &[c]),
                randn(&mut r, &[c]),
            ],
            |x| channel_affine(&x[0], &x[1], &x[2]),
        ));
    }
    for (groups, shape) in [
        (1, vec![2, 6, 3]),
        (2, vec![2, 6, 3]),
        (3, vec![2, 6, 3]),
        // instance norm: 5 values per group (with 3, σ can be small enough to make the
        // finite difference's truncation error the largest term)
        (6, vec![2, 6, 5]),
        (2, vec![2, 4, 2, 2]),
        (4, vec![1, 4, 3, 2]),
    ] {
        let c = shape[1];
        let label = if groups == c {
            format!("groups = C = {c}, {}", ShapeFmt(&shape))
        } else {
            format!("groups = {groups}, {}", ShapeFmt(&shape))
        };
        v.push(Case::new(
            Op::GroupNorm,
            label,
            vec![
                randn(&mut r, &shape),
                away_from_zero(&mut r, &[c], 0.5, 1.5),
                randn(&mut r, &[c]),
            ],
            move |x| group_norm(&x[0], groups, &x[1], &x[2], eps),
        ));
    }
    v.extend(relu_cases(&mut r, eps));
    v
}

/// Draws `(x, γ, β)` for an `(N, C, ...)` shape until every output of `norm` is at least
/// 0.1 from ReLU's kink, with outputs on both sides (a finite difference across the
/// kink is meaningless; a step of 0.01 moves a normalised value by about 0.01·γ·r).
fn clear_of_the_kink(
    r: &mut Rng,
    shape: &[usize],
    norm: impl Fn(&[Tensor]) -> Tensor,
) -> Vec<Tensor> {
    let c = shape[1];
    for _ in 0..10_000 {
        let inputs = vec![
            randn(r, shape),
            away_from_zero(r, &[c], 0.5, 1.5),
            randn(r, &[c]),
        ];
        let z = norm(&inputs).to_vec();
        let clear = z.iter().all(|v| v.abs() > 0.1);
        if clear && z.iter().any(|&v| v < 0.0) && z.iter().any(|&v| v > 0.0) {
            return inputs;
        }
    }
    panic!(
        "no draw of shape {} keeps the norm's outputs clear of 0",
        ShapeFmt(shape)
    );
}

/// The norms fused with their ReLU.
fn relu_cases(r: &mut Rng, eps: f32) -> Vec<Case> {
    let bn = clear_of_the_kink(r, &[2, 3, 2, 2], |x| {
        batch_norm_train(&x[0], &x[1], &x[2], eps).0
    });
    let affine = clear_of_the_kink(r, &[2, 3, 2, 2], |x| channel_affine(&x[0], &x[1], &x[2]));
    let gn = clear_of_the_kink(r, &[2, 4, 2, 3], |x| {
        group_norm(&x[0], 2, &x[1], &x[2], eps)
    });
    vec![
        Case::new(
            Op::BatchNormRelu,
            "train, rank 4 NCHW (2,3,2,2)",
            bn,
            move |x| batch_norm_train_relu(&x[0], &x[1], &x[2], eps).0,
        ),
        Case::new(
            Op::ChannelAffineRelu,
            "rank 4 NCHW (2,3,2,2)",
            affine,
            |x| channel_affine_relu(&x[0], &x[1], &x[2]),
        ),
        Case::new(Op::GroupNormRelu, "groups = 2, (2,4,2,3)", gn, move |x| {
            group_norm_relu(&x[0], 2, &x[1], &x[2], eps)
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::output_and_gradient_bits;

    #[test]
    fn fused_relu_gives_the_bits_of_the_norm_then_relu() {
        let mut r = Rng::new(12);
        // Large enough for the parallel chunked paths (runs cut by chunk boundaries).
        let shape = [3, 8, 37, 41];
        let inputs = vec![
            randn(&mut r, &shape),
            randn(&mut r, &[8]),
            randn(&mut r, &[8]),
        ];
        type Norm = fn(&[Tensor]) -> Tensor;
        let pairs: [(&str, Norm, Norm); 3] = [
            (
                "batch_norm",
                |x| batch_norm_train_relu(&x[0], &x[1], &x[2], 1e-5).0,
                |x| batch_norm_train(&x[0], &x[1], &x[2], 1e-5).0.relu(),
            ),
            (
                "channel_affine",
                |x| channel_affine_relu(&x[0], &x[1], &x[2]),
                |x| channel_affine(&x[0], &x[1], &x[2]).relu(),
            ),
            (
                "group_norm",
                |x| group_norm_relu(&x[0], 4, &x[1], &x[2], 1e-5),
                |x| group_norm(&x[0], 4, &x[1], &x[2], 1e-5).relu(),
            ),
        ];
        for (name, fused, apart) in pairs {
            let (a, b) = (
                output_and_gradient_bits(&inputs, 8, fused),
                output_and_gradient_bits(&inputs, 8, apart),
            );
            assert_eq!(a.len(), 4, "{name}");
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(x == y, "{name}: output/gradient {i} differs");
            }
            let zeros = a[0].iter().filter(|&&v| v == 0).count();
            assert!(
                zeros > 0 && zeros < a[0].len(),
                "{name}: the ReLU clipped {zeros}"
            );
        }
    }

    #[test]
    fn moments_match_a_plain_loop() {
        let x: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 100.0)
            .collect();
        let (a, b) = moments(&x, 100.0);
        let ea: f64 = x.iter().map(|&v| v as f64 - 100.0).sum();
        let eb: f64 = x.iter().map(|&v| (v as f64 - 100.0).powi(2)).sum();
        assert!((a - ea).abs() < 1e-9 && (b - eb).abs() < 1e-9);
        let dy: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let (p, q) = dot_moments(&dy, &x, 100.0);
        let ep: f64 = dy.iter().map(|&v| v as f64).sum();
        let eq: f64 = dy
            .iter()
            .zip(&x)
            .map(|(&g, &v)| g as f64 * (v as f64 - 100.0))
            .sum();
        assert!((p - ep).abs() < 1e-9 && (q - eq).abs() < 1e-9);
    }

    #[test]
    fn channel_runs_cover_every_element_once_with_its_channel() {
        // (N=3, C=5, S=7) and the rank-2 case S=1, on a buffer larger than a chunk.
        for &(n, c, s) in &[(3usize, 5usize, 7usize), (9000, 5, 1), (2, 3, 20000)] {
            let mut out = vec![-1.0f32; n * c * s];
            for_each_channel_run(&mut out, c, s, |ch, _, run| {
                for o in run.iter_mut() {
                    *o = ch as f32;
                }
            });
            for (i, &v) in out.iter().enumerate() {
                assert_eq!(v, ((i / s) % c) as f32, "element {i} of ({n},{c},{s})");
            }
        }
    }
}
