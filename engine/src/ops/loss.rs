//! Losses: binary cross-entropy with logits, smooth L1, L1 and the sigmoid focal loss.
//!
//! Each loss is a sum of independent per-element terms `ℓ(x_i, t_i)` of a prediction `x` and
//! a target `t` of the same shape, optionally reduced ([`Reduction`]). The gradient goes to
//! the prediction only: targets are constants, and passing a target that is recorded on the
//! tape is an error (detach it) rather than a gradient silently dropped.
//!
//! | op                 | ℓ(x, t)                                          | ∂ℓ/∂x                    |
//! |--------------------|--------------------------------------------------|--------------------------|
//! | bce_with_logits    | max(x,0) − x·t + ln(1 + e^−\|x\|)                 | σ(x) − t                 |
//! | smooth_l1 (β > 0)  | 0.5·d²/β if \|d\| < β else \|d\| − 0.5·β, d = x − t | d/β or sign(d)       |
//! | l1                 | \|x − t\|                                          | sign(x − t) (0 at 0)     |
//! | sigmoid_focal_loss | α_t·(1 − p_t)^γ·BCE(x, t)                        | see [`sigmoid_focal_loss`] |
//!
//! Forward and backward are each one pass over the elements, in fixed chunks run in
//! parallel. `Sum` and `Mean` accumulate in f64 per chunk and add the chunk sums in chunk
//! order, so the loss is bitwise the same for any thread count; with a reduction the forward
//! never materialises the per-element losses. BCE and the L1 losses recompute what their
//! backward needs from the saved inputs (shared, not copied); the focal loss computes each
//! element's gradient in its forward pass (`focal_kernel.rs`, vectorised) and keeps only
//! that.

use rayon::prelude::*;

use crate::gradcheck::case::{randn, Case, STEP};
use crate::op::Op;
use crate::ops::focal_kernel::{focal_loss_and_grad, lane_sum, Focal, Level};
use crate::ops::unary::sigmoid_f32;
use crate::rng::Rng;
use crate::shape::ShapeFmt;
use crate::tape::{is_grad_enabled, record};
use crate::tensor::Tensor;
use crate::threads::{map_indexed, sum_chunks, CHUNK, PAR_THRESHOLD};

/// How per-element losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// One loss per element: the output has the input's shape.
    None,
    /// Sum over every element, as a scalar (shape `[]`).
    Sum,
    /// Sum divided by the number of elements, as a scalar.
    Mean,
}

/// Checks the shapes, that the targets are constants, and that a mean is defined.
fn check_inputs(op: Op, x: &Tensor, t: &Tensor, reduction: Reduction) {
    assert!(
        x.shape() == t.shape(),
        "{}: the targets must have the input's shape; got input {} and targets {}",
        op.name(),
        ShapeFmt(x.shape()),
        ShapeFmt(t.shape())
    );
    assert!(
        !t.is_tracked(),
        "{}: the targets are recorded on the tape, but this loss treats them as constants \
         and sends no gradient to them; pass targets.detach()",
        op.name()
    );
    assert!(
        !(reduction == Reduction::Mean && x.numel() == 0),
        "{}: Reduction::Mean of an empty input (shape {}) is undefined; use Reduction::Sum",
        op.name(),
        ShapeFmt(x.shape())
    );
}

/// Forward and backward of a loss made of per-element terms: `loss(x, t)` is ℓ and
/// `grad(x, t)` is ∂ℓ/∂x.
fn pointwise_loss<L, D>(
    op: Op,
    x: &Tensor,
    t: &Tensor,
    reduction: Reduction,
    loss: L,
    grad: D,
) -> Tensor
where
    L: Fn(f32, f32) -> f32 + Sync + Send,
    D: Fn(f32, f32) -> f32 + Sync + Send + 'static,
{
    check_inputs(op, x, t, reduction);
    let n = x.numel();
    let (xd, td) = (x.data(), t.data());
    let out = match reduction {
        Reduction::None => x.with_data(map_indexed(n, |i| loss(xd[i], td[i]))),
        Reduction::Sum | Reduction::Mean => {
            let total = sum_chunks(n, |r| r.map(|i| loss(xd[i], td[i]) as f64).sum());
            let value = if reduction == Reduction::Mean {
                total / n as f64
            } else {
                total
            };
            Tensor::scalar(value as f32)
        }
    };
    record(op, out, &[x], move |_| {
        let (x, t) = (x.detach(), t.detach());
        Box::new(move |g| {
            let (xd, td, gd) = (x.data(), t.data(), g.data());
            let dx = match reduction {
                Reduction::None => map_indexed(n, |i| gd[i] * grad(xd[i], td[i])),
                Reduction::Sum | Reduction::Mean => {
                    let k = if reduction == Reduction::Mean {
                        gd[0] / n as f32
                    } else {
                        gd[0]
                    };
                    map_indexed(n, |i| k * grad(xd[i], td[i]))
                }
            };
            vec![Some(x.with_data(dx))]
        })
    })
}

/// ln(1 + e) for e ≥ 0, accurate to a few ulp even where e is below f32's ε.
///
/// This is Goldberg's trick ("What every computer scientist should know about floating-point
/// arithmetic", Theorem 4): with u = 1 + e rounded, `ln(u)·e/(u − 1)` cancels the rounding of
/// u, and for u = 1 the answer is e itself. It costs one `ln` and a division, about half of
/// `f32::ln_1p` here (the focal loss has its own, vectorised, in `focal_kernel.rs`).
/// Measured worst relative error against f64 `ln_1p` over e ∈ [1e-30, 1] (690 k values,
/// geometric steps of 1e-4): 1.6e-7.
#[inline]
fn ln_1p(e: f32) -> f32 {
    let u = 1.0 + e;
    if u == 1.0 {
        e
    } else {
        u.ln() * e / (u - 1.0)
    }
}

/// `ln(1 + e^−|x|)`: the softplus correction, accurate even where e^−|x| is below f32's ε.
#[inline]
fn log1p_exp_neg_abs(x: f32) -> f32 {
    ln_1p((-x.abs()).exp())
}

/// Binary cross-entropy on logits, `−[t·ln σ(x) + (1 − t)·ln(1 − σ(x))]`, in the stable form
/// `max(x, 0) − x·t + ln(1 + e^−|x|)` (no exp of a large positive number, no log of 0).
/// Targets may be any value in [0, 1]. Gradient to the logits: `σ(x) − t`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, reduction: Reduction) -> Tensor {
    pointwise_loss(
        Op::BceWithLogits,
        logits,
        targets,
        reduction,
        |x, t| x.max(0.0) - x * t + log1p_exp_neg_abs(x),
        |x, t| sigmoid_f32(x) - t,
    )
}

/// Below this β smooth L1 is plain L1 (fvcore's rule; it also avoids dividing by ~0).
const SMOOTH_L1_MIN_BETA: f32 = 1e-5;

/// Smooth L1 (Huber divided by β): with d = pred − target,
/// `0.5·d²/β` where |d| < β and `|d| − 0.5·β` elsewhere. The two pieces meet with equal value
/// and slope at |d| = β. β < 1e-5 (in particular 0) is exactly L1. RetinaNet's box loss uses
/// β = 0.11 (the authors' Detectron). Gradient to `pred`: d/β inside, sign(d) outside.
pub fn smooth_l1(pred: &Tensor, target: &Tensor, beta: f32, reduction: Reduction) -> Tensor {
    assert!(
        beta >= 0.0,
        "smooth_l1: beta must be non-negative, got {beta}"
    );
    if beta < SMOOTH_L1_MIN_BETA {
        return pointwise_loss(Op::SmoothL1, pred, target, reduction, l1_term, l1_grad);
    }
    pointwise_loss(
        Op::SmoothL1,
        pred,
        target,
        reduction,
        move |p, t| {
            let d = p - t;
            if d.abs() < beta {
                0.5 * d * d / beta
            } else {
                d.abs() - 0.5 * beta
            }
        },
        move |p, t| {
            let d = p - t;
            if d.abs() < beta {
                d / beta
            } else {
                d.signum()
            }
        },
    )
}

fn l1_term(p: f32, t: f32) -> f32 {
    (p - t).abs()
}

/// sign(p − t), 0 where they are equal.
fn l1_grad(p: f32, t: f32) -> f32 {
    let d = p - t;
    if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// L1 loss `|pred − target|`. Gradient to `pred`: sign(pred − target), 0 where equal.
pub fn l1(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    pointwise_loss(Op::L1, pred, target, reduction, l1_term, l1_grad)
}

/// Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", eq. 5) computed
/// from logits:
///
/// ```text
/// FL(x, y) = α_t · (1 − p_t)^γ · BCE(x, y)
/// p = σ(x),  p_t = p·y + (1 − p)(1 − y),  α_t = α·y + (1 − α)(1 − y)  (α = None: α_t = 1)
/// ```
///
/// Targets must be exactly 0 or 1 (anything else is an error naming the first bad value).
/// γ = 0 gives α-balanced BCE; RetinaNet uses α = 0.25, γ = 2.
///
/// ## Stable forward
///
/// Following the paper's appendix, write y± = +1 for y = 1 and −1 for y = 0, and
/// x_t = y±·x. Then p_t = σ(x_t), 1 − p_t = σ(−x_t) and BCE = −ln p_t = −ln σ(x_t). With
/// e = e^−|x_t| ∈ (0, 1]:
///
/// ```text
/// ln p_t = min(x_t, 0) − ln(1 + e)          (accurate even when e < ε)
/// p_t, 1 − p_t = 1/(1+e), e/(1+e)  for x_t ≥ 0   (swapped for x_t < 0)
/// FL = −α_t · (1 − p_t)^γ · ln p_t
/// ```
///
/// Nothing overflows (e ≤ 1) and no probability is rounded before its log is taken: at
/// x_t = −100 the loss is α_t·100, at x_t = +100 it is ≈ 0, both finite.
///
/// ## Fused gradient (the paper's Appendix B), computed in the forward pass
///
/// Differentiate FL = −α_t·(1 − p_t)^γ·ln p_t with respect to x_t, using
/// dp_t/dx_t = p_t(1 − p_t):
///
/// ```text
/// dFL/dx_t = −α_t·[ −γ(1 − p_t)^(γ−1)·p_t(1 − p_t)·ln p_t + (1 − p_t)^γ·(1/p_t)·p_t(1 − p_t) ]
///          = α_t·(1 − p_t)^γ·(γ·p_t·ln p_t + p_t − 1)
/// ```
///
/// and dx_t/dx = y±, so
///
/// ```text
/// dFL/dx = α_t · y± · (1 − p_t)^γ · (γ·p_t·ln p_t + p_t − 1)
/// ```
///
/// which is the paper's `y(1 − p_t)^γ(γ p_t log p_t + p_t − 1)` with α_t added. The factor
/// (1 − p_t) of dp_t/dx_t cancels the power γ − 1 analytically, so the gradient never forms
/// (1 − p_t)^(γ−1), which is infinite at p_t = 1 for γ < 1. Here p_t − 1 is −σ(−x_t) and
/// ln p_t the stable log-sigmoid above, so the gradient is finite for every finite logit:
/// at x_t = −100 it is −α_t·y±, at x_t = +100 it is 0.
///
/// The forward pass computes this gradient with the loss, in one vectorised pass over
/// the elements (`focal_kernel.rs`), and keeps it instead of the logits and targets; the
/// backward multiplies it by the incoming gradient in place.
pub fn sigmoid_focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    alpha: Option<f32>,
    gamma: f32,
    reduction: Reduction,
) -> Tensor {
    let op = Op::SigmoidFocalLoss;
    check_focal_params(op, alpha, gamma);
    check_inputs(op, logits, targets, reduction);
    check_binary(op, targets);
    let n = logits.numel();
    let want_grad = logits.is_tracked() && is_grad_enabled();
    let mut grad = if want_grad {
        vec![0.0f32; n]
    } else {
        Vec::new()
    };
    let (xd, td) = (logits.data(), targets.data());
    let (c, level) = (Focal::new(alpha, gamma), Level::active());
    let out = if reduction == Reduction::None {
        let mut loss = vec![0.0f32; n];
        focal_chunks(
            n,
            CHUNK,
            Some(&mut loss),
            want_grad.then_some(&mut grad),
            |r, l, g| {
                focal_loss_and_grad(level, &xd[r.clone()], &td[r], l, g, c);
                0.0
            },
        );
        logits.with_data(loss)
    } else {
        let partials = focal_chunks(n, CHUNK, None, want_grad.then_some(&mut grad), |r, l, g| {
            focal_loss_and_grad(level, &xd[r.clone()], &td[r], l, g, c);
            lane_sum(l)
        });
        let total: f64 = partials.iter().sum();
        let value = if reduction == Reduction::Mean {
            total / n as f64
        } else {
            total
        };
        Tensor::scalar(value as f32)
    };
    let shape = logits.shape().to_vec();
    record(op, out, &[logits], move |_| {
        let saved = Tensor::from_vec(&shape, grad);
        Box::new(move |g| {
            let gd = g.data();
            let k = match reduction {
                Reduction::None => None,
                Reduction::Sum => Some(gd[0]),
                Reduction::Mean => Some(gd[0] / n as f32),
            };
            vec![Some(scale_saved_gradient(saved, k, gd))]
        })
    })
}

/// ∂loss/∂x from the per-element gradients saved by the forward pass, in place: times
/// the scalar `k` of a reduced loss, or elementwise times `g` (`k` = None).
fn scale_saved_gradient(mut saved: Tensor, k: Option<f32>, g: &[f32]) -> Tensor {
    crate::threads::for_each_chunk_mut(saved.data_mut(), |start, d| match k {
        Some(k) => d.iter_mut().for_each(|v| *v *= k),
        None => {
            let len = d.len();
            for (v, &gi) in d.iter_mut().zip(&g[start..start + len]) {
                *v *= gi;
            }
        }
    });
    saved
}

/// Runs `f(range, loss, grad)` on consecutive chunks of `chunk` elements of `0..n`, in
/// parallel when `n` is large, handing it that range's part of `loss` and `grad` (a
/// scratch buffer for `loss` when none is given; nothing for `grad` when none is given);
/// returns `f`'s values in chunk order. The chunks depend on `n` and `chunk` only.
fn focal_chunks<F>(
    n: usize,
    chunk: usize,
    loss: Option<&mut [f32]>,
    grad: Option<&mut Vec<f32>>,
    f: F,
) -> Vec<f64>
where
    F: Fn(std::ops::Range<usize>, &mut [f32], Option<&mut [f32]>) -> f64 + Sync + Send,
{
    let (losses, grads) = (
        split_chunks(n, chunk, loss),
        split_chunks(n, chunk, grad.map(|g| g.as_mut_slice())),
    );
    let part = |(i, (l, g)): (usize, ChunkPair)| {
        let r = i * chunk..((i + 1) * chunk).min(n);
        let mut scratch;
        let l = match l {
            Some(l) => l,
            None => {
                scratch = vec![0.0f32; r.len()];
                &mut scratch[..]
            }
        };
        f(r, l, g)
    };
    if n < PAR_THRESHOLD {
        losses
            .into_iter()
            .zip(grads)
            .enumerate()
            .map(part)
            .collect()
    } else {
        losses
            .into_par_iter()
            .zip(grads)
            .enumerate()
            .map(part)
            .collect()
    }
}

/// One chunk's part of the per-element losses and gradients, where there are any.
type ChunkPair<'a> = (Option<&'a mut [f32]>, Option<&'a mut [f32]>);

/// `v` cut into chunks of `chunk` elements, or as many `None`s as `0..n` has chunks.
fn split_chunks(n: usize, chunk: usize, v: Option<&mut [f32]>) -> Vec<Option<&mut [f32]>> {
    match v {
        Some(v) => v.chunks_mut(chunk).map(Some).collect(),
        None => (0..n.div_ceil(chunk)).map(|_| None).collect(),
    }
}

/// The class target of one row of logits in [`sigmoid_focal_loss_rows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowTarget {
    /// Left out of the loss: no loss, and a zero gradient.
    Ignored,
    /// Every class's target is 0.
    Background,
    /// This class's target is 1, every other class's 0.
    Class(usize),
}

/// The summed sigmoid focal loss of `logits` (R, K) whose targets are given per row: for
/// row r, `rows[r]` says whether it is left out, all-background or positive for one class.
///
/// The same loss and gradient as [`sigmoid_focal_loss`] with `Reduction::Sum` on the rows
/// that are not ignored against their one-hot targets, without building those targets
/// or copying the rows out: RetinaNet's ~10⁵ anchors × K classes per image. Ignored rows
/// get a zero gradient. The sum runs over chunks of whole rows (about [`CHUNK`] elements,
/// fixed by K) and may differ from the dense call's in the last bits.
pub fn sigmoid_focal_loss_rows(
    logits: &Tensor,
    rows: &[RowTarget],
    alpha: Option<f32>,
    gamma: f32,
) -> Tensor {
    let op = Op::SigmoidFocalLoss;
    check_focal_params(op, alpha, gamma);
    assert!(
        logits.rank() == 2 && logits.dim(0) == rows.len(),
        "{}: the logits must be (rows, classes) with one target per row; got logits {} and {} row targets",
        op.name(),
        ShapeFmt(logits.shape()),
        rows.len()
    );
    let k = logits.dim(1);
    if let Some((r, c)) = rows.iter().enumerate().find_map(|(r, t)| match *t {
        RowTarget::Class(c) if c >= k => Some((r, c)),
        _ => None,
    }) {
        panic!(
            "{}: row {r} is positive for class {c}, but the logits have {k} classes",
            op.name()
        );
    }
    let n = logits.numel();
    let want_grad = logits.is_tracked() && is_grad_enabled();
    let mut grad = if want_grad {
        vec![0.0f32; n]
    } else {
        Vec::new()
    };
    let xd = logits.data();
    let (c, level) = (Focal::new(alpha, gamma), Level::active());
    let chunk_rows = (CHUNK / k.max(1)).max(1);
    let partials = focal_chunks(
        n,
        chunk_rows * k.max(1),
        None,
        want_grad.then_some(&mut grad),
        |r, l, mut g| {
            let first = r.start / k;
            let rows = &rows[first..first + r.len() / k];
            let x = &xd[r];
            let mut y = vec![0.0f32; x.len()];
            for (j, t) in rows.iter().enumerate() {
                if let RowTarget::Class(c) = *t {
                    y[j * k + c] = 1.0;
                }
            }
            // Runs of consecutive rows that count; ignored rows keep loss and gradient 0.
            let mut j = 0;
            while j < rows.len() {
                if rows[j] == RowTarget::Ignored {
                    j += 1;
                    continue;
                }
                let start = j;
                while j < rows.len() && rows[j] != RowTarget::Ignored {
                    j += 1;
                }
                let e = start * k..j * k;
                let g = g.as_deref_mut().map(|g| &mut g[e.clone()]);
                focal_loss_and_grad(level, &x[e.clone()], &y[e.clone()], &mut l[e], g, c);
            }
            lane_sum(l)
        },
    );
    let total: f64 = partials.iter().sum();
    let shape = logits.shape().to_vec();
    record(op, Tensor::scalar(total as f32), &[logits], move |_| {
        let saved = Tensor::from_vec(&shape, grad);
        Box::new(move |g| vec![Some(scale_saved_gradient(saved, Some(g.data()[0]), &[]))])
    })
}

/// Panics unless γ is finite and ≥ 0 and α (if any) lies in [0, 1].
fn check_focal_params(op: Op, alpha: Option<f32>, gamma: f32) {
    assert!(
        gamma >= 0.0 && gamma.is_finite(),
        "{}: gamma must be a finite value ≥ 0, got {gamma}",
        op.name()
    );
    if let Some(a) = alpha {
        assert!(
            (0.0..=1.0).contains(&a),
            "{}: alpha must lie in [0, 1], got {a}",
            op.name()
        );
    }
}

/// Panics, naming the op and the first offending element, unless every target is 0 or 1.
fn check_binary(op: Op, t: &Tensor) {
    let d = t.data();
    let bad = d
        .par_chunks(CHUNK)
        .enumerate()
        .find_map_first(|(c, chunk)| {
            chunk
                .iter()
                .position(|&v| v != 0.0 && v != 1.0)
                .map(|j| c * CHUNK + j)
        });
    if let Some(i) = bad {
        panic!(
            "{}: targets must be 0 or 1, but element {i} of the targets (shape {}) is {}",
            op.name(),
            ShapeFmt(t.shape()),
            d[i]
        );
    }
}

/// Gradient checks: every loss with every reduction, the focal loss for every γ and α
/// variant, smooth L1 for each regime of β.
///
/// All cases use the default tolerance. Inputs stay ≥ 2·STEP away from the kinks of L1 and
/// smooth L1 (d = 0 for L1, |d| = β for smooth L1), so the central difference never straddles
/// one. Logits span [−8, 8], including ±8, where the focal loss is far in its flat or linear
/// regime.
pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(31);
    let reductions = [
        ("none", Reduction::None),
        ("sum", Reduction::Sum),
        ("mean", Reduction::Mean),
    ];
    // Logits covering the range, both extremes included; targets a fixed 0/1 pattern so both
    // classes meet both signs of logit.
    let logits = |r: &mut Rng| {
        let mut v = vec![-8.0, 8.0, -3.0, 2.5, 0.3, -0.6];
        v.extend(r.uniform_vec(6, -5.0, 5.0));
        Tensor::from_vec(&[3, 4], v)
    };
    let labels = Tensor::from_vec(
        &[3, 4],
        vec![1., 0., 0., 1., 1., 0., 0., 1., 1., 0., 1., 0.],
    );
    let mut v = Vec::new();
    for (rname, red) in reductions {
        let soft = Tensor::from_vec(&[3, 4], r.uniform_vec(12, 0.0, 1.0));
        v.push(
            Case::new(
                Op::BceWithLogits,
                format!("{rname}, soft targets"),
                vec![logits(&mut r), soft],
                move |x| bce_with_logits(&x[0], &x[1], red),
            )
            .wrt(&[true, false]),
        );
        v.push(
            Case::new(
                Op::L1,
                rname,
                vec![randn(&mut r, &[3, 4]), randn(&mut r, &[3, 4])],
                move |x| l1(&x[0], &x[1], red),
            )
            .wrt(&[true, false]),
        );
        for gamma in [0.0, 0.5, 1.0, 2.0, 5.0] {
            for alpha in [None, Some(0.25)] {
                let a = alpha.map_or("none".to_string(), |a| a.to_string());
                v.push(
                    Case::new(
                        Op::SigmoidFocalLoss,
                        format!("{rname}, gamma {gamma}, alpha {a}"),
                        vec![logits(&mut r), labels.clone()],
                        move |x| sigmoid_focal_loss(&x[0], &x[1], alpha, gamma, red),
                    )
                    .wrt(&[true, false]),
                );
            }
        }
        for beta in [0.11f32, 1.0, 0.0] {
            // Differences in every regime: inside |d| < β (at least 2·STEP from ±β and,
            // for L1, from 0) and outside on both sides.
            let d: Vec<f32> = if beta > 0.0 {
                let inside = beta - 2.0 * STEP;
                vec![
                    0.0,
                    0.5 * inside,
                    -inside,
                    inside,
                    beta + 2.0 * STEP,
                    -(beta + 0.5),
                    2.0,
                    -1.7,
                ]
            } else {
                vec![0.03, -0.03, 0.5, -0.8, 1.5, -2.0, 0.1, -0.25]
            };
            let target = randn(&mut r, &[2, 4]);
            let pred = Tensor::from_vec(
                &[2, 4],
                target.data().iter().zip(&d).map(|(t, d)| t + d).collect(),
            );
            v.push(
                Case::new(
                    Op::SmoothL1,
                    format!("{rname}, beta {beta}"),
                    vec![pred, target],
                    move |x| smooth_l1(&x[0], &x[1], beta, red),
                )
                .wrt(&[true, false]),
            );
        }
    }
    // The per-row form: an ignored row (zero gradient), background rows and positives.
    let rows = [
        RowTarget::Class(2),
        RowTarget::Ignored,
        RowTarget::Background,
        RowTarget::Class(0),
    ];
    for gamma in [0.0, 2.0, 5.0] {
        for alpha in [None, Some(0.25)] {
            let a = alpha.map_or("none".to_string(), |a| a.to_string());
            v.push(Case::new(
                Op::SigmoidFocalLoss,
                format!("rows, gamma {gamma}, alpha {a}"),
                vec![logits(&mut r).reshape(&[4, 3])],
                move |x| sigmoid_focal_loss_rows(&x[0], &rows, alpha, gamma),
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goldbergs_ln_1p_is_accurate() {
        let mut e = 1e-30f32;
        while e <= 1.0 {
            let want = (e as f64).ln_1p();
            let err = ((ln_1p(e) as f64 - want) / want).abs();
            assert!(err < 3e-7, "ln_1p({e:e}): relative error {err:e}");
            e *= 1.001;
        }
        assert_eq!(ln_1p(0.0), 0.0);
    }

    /// The per-row form is the dense form on the rows that are not ignored: the same
    /// per-element gradients (bits), zero on ignored rows, the same sum to rounding.
    #[test]
    fn rows_form_matches_the_dense_form() {
        let (n, k) = (3000, 7); // several chunks of whole rows
        let mut r = Rng::new(9);
        let x = Tensor::from_vec(&[n, k], r.uniform_vec(n * k, -9.0, 9.0));
        let rows: Vec<RowTarget> = (0..n)
            .map(|i| match i % 5 {
                0 => RowTarget::Ignored,
                1 => RowTarget::Class(i % k),
                _ => RowTarget::Background,
            })
            .collect();
        let valid: Vec<usize> = (0..n).filter(|&i| rows[i] != RowTarget::Ignored).collect();
        let mut onehot = vec![0.0f32; valid.len() * k];
        for (j, &i) in valid.iter().enumerate() {
            if let RowTarget::Class(c) = rows[i] {
                onehot[j * k + c] = 1.0;
            }
        }
        let y = Tensor::from_vec(&[valid.len(), k], onehot);
        let id = crate::tape::ParamId::fresh();
        let xt = x.track(id);
        let loss = sigmoid_focal_loss_rows(&xt, &rows, Some(0.25), 2.0).mul_scalar(0.5);
        let g = crate::tape::backward(&loss).remove(id).unwrap();
        let xt = x.track(id);
        let xv = xt.index_select(0, &valid);
        let dense = sigmoid_focal_loss(&xv, &y, Some(0.25), 2.0, Reduction::Sum).mul_scalar(0.5);
        let (a, b) = (loss.item() as f64, dense.item() as f64);
        assert!((a - b).abs() <= 1e-6 * b, "rows {a} vs dense {b}");
        let gd = crate::tape::backward(&dense).remove(id).unwrap();
        assert_eq!(g.data(), gd.data(), "the gradients differ");
        for i in (0..n).filter(|i| i % 5 == 0) {
            assert!(g.data()[i * k..(i + 1) * k].iter().all(|&v| v == 0.0));
        }
    }

    /// A NaN logit gives a NaN loss (the trainer stops on it), never a finite one.
    #[test]
    fn a_nan_logit_gives_a_nan_loss() {
        for y in [0.0, 1.0] {
            let x = Tensor::from_vec(&[2], vec![0.5, f32::NAN]);
            let t = Tensor::from_vec(&[2], vec![0.0, y]);
            let l = sigmoid_focal_loss(&x, &t, Some(0.25), 2.0, Reduction::Sum);
            assert!(l.item().is_nan());
            let rows = [RowTarget::Class(y as usize)];
            let x = Tensor::from_vec(&[1, 2], vec![f32::NAN, f32::NAN]);
            assert!(sigmoid_focal_loss_rows(&x, &rows, None, 2.0)
                .item()
                .is_nan());
        }
    }
}
