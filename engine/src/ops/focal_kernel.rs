//! The sigmoid focal loss's per-element work: one pass over the logits that gives each
//! element's loss *and* its gradient, in branch-free arithmetic that the compiler turns
//! into vector code.
//!
//! Forward already knows everything the backward needs (see [`super::loss::sigmoid_focal_loss`]
//! for the formulas), so the op computes ∂FL/∂x together with FL and keeps it; the
//! backward is then one multiply by the incoming gradient. The loss's `e^−|x_t|` and
//! `ln(1 + e)` are the two functions below, [`exp_nonpositive`] and [`ln_1p`], written
//! with multiplies, adds, one division and bit operations only, instead of calls into
//! libm: a loop of calls cannot be vectorised, a loop of these can.
//!
//! **Same bits on every path.** The loop is compiled three times: for the x86-64
//! baseline (SSE), with AVX2 and with AVX-512 enabled, and the build that runs follows
//! the GEMM path (`FOCAL_ISA`). Every operation in it is an IEEE add, multiply, divide,
//! compare or select, each exactly rounded whatever the vector width, and Rust never
//! contracts a multiply and an add into an FMA, so the three builds give the same bits
//! (a test runs all three). Sums run in [`LANES`] fixed f64 lanes added in lane order.

pub(crate) use super::simd_level::Level;
#[cfg(test)]
use crate::gemm::Isa;

/// ln 2 split in two: `LN2_HI` has 9 significant bits, so `n·LN2_HI` is exact for the
/// |n| ≤ 151 of [`exp_nonpositive`] (Cody and Waite's reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// e^x for x ≤ 0 (NaN stays NaN), subnormal results included: worst relative error
/// 1.0e-7 over [−87, 0] in steps of 3.7e-4 (the test), within 2 steps below.
///
/// x = n·ln 2 + r with n = round(x·log₂e) and |r| ≲ ln 2 / 2; e^r by its Taylor series to
/// r⁷ (the next term is below 6e-9 relative); then e^x = e^r · 2^n, applied as two powers
/// of two 2^⌊n/2⌋ · 2^(n−⌊n/2⌋) so that both are normal numbers and a subnormal result is
/// rounded once. Below −104, e^x < 2^−150 rounds to 0.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    // A comparison, not f32::max: NaN must stay NaN (a NaN logit must give a NaN loss).
    let x = if x < -104.0 { -104.0 } else { x };
    // Adding 1.5·2²³ rounds to an integer (to nearest even) in the low bits.
    const SHIFTER: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // t and SHIFTER share their exponent, so the difference of their bits is n ∈ [−151, 0].
    let ni = t.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let two_to = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    p * two_to(n1) * two_to(n2)
}

/// ln(1 + e) for e ∈ [0, 1], accurate also where e is below f32's ε: worst relative error
/// 1.6e-7 over [1e-30, 1] in geometric steps of 1e-3 (the test), as Goldberg's form in
/// `loss.rs` that calls libm.
///
/// ln(1 + e) = 2·atanh(s) with s = e/(2 + e) ∈ [0, 1/3]: no cancellation anywhere, and
/// 2·atanh(s) = 2s·(1 + s²/3 + s⁴/5 + …), truncated after s¹⁴/15 (the rest is below 3e-9
/// relative). For tiny e the answer is 2s = e to rounding.
#[inline(always)]
pub(crate) fn ln_1p(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let s2 = s * s;
    let tail = s2
        * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0
                    + s2 * (1.0 / 9.0
                        + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0 + s2 * (1.0 / 15.0)))))));
    let two_s = 2.0 * s;
    two_s + two_s * tail
}

/// The per-element quantities of the focal loss for logit x and binary target y, with the
/// paper's notation (see [`super::loss::sigmoid_focal_loss`]):
///
/// - `sign` = y± ∈ {+1, −1} (y = 1 ↦ +1, y = 0 ↦ −1) and x_t = y±·x;
/// - `log_pt` = ln p_t = min(x_t, 0) − ln(1 + e^−|x_t|), never the log of a rounded
///   probability;
/// - `pt` = p_t = σ(x_t) and `q` = 1 − p_t = σ(−x_t), both from e^−|x_t| ∈ (0, 1] (so
///   1 − p_t is not computed as a difference, which would round to 0 when p_t ≈ 1).
pub(crate) struct FocalTerms {
    pub sign: f32,
    pub log_pt: f32,
    pub pt: f32,
    pub q: f32,
}

#[inline(always)]
pub(crate) fn focal_terms(x: f32, y: f32) -> FocalTerms {
    let sign = if y == 1.0 { 1.0 } else { -1.0 };
    let xt = sign * x;
    let e = exp_nonpositive(-xt.abs());
    // min(x_t, 0) written so that a NaN x_t stays NaN.
    let min0 = if xt > 0.0 { 0.0 } else { xt };
    let log_pt = min0 - ln_1p(e);
    let inv = 1.0 / (1.0 + e);
    let e_inv = e * inv;
    // σ(z) = 1/(1 + e^−z) for z ≥ 0 and e^z/(1 + e^z) for z < 0, with e = e^−|x_t|.
    let nonneg = xt >= 0.0;
    FocalTerms {
        sign,
        log_pt,
        pt: if nonneg { inv } else { e_inv },
        q: if nonneg { e_inv } else { inv },
    }
}

/// The constants of one call: α_t for each target value (α and 1 − α, or 1 and 1 without
/// α) and γ.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Focal {
    pub alpha_pos: f32,
    pub alpha_neg: f32,
    pub gamma: f32,
}

impl Focal {
    pub(crate) fn new(alpha: Option<f32>, gamma: f32) -> Focal {
        let (alpha_pos, alpha_neg) = match alpha {
            Some(a) => (a, 1.0 - a),
            None => (1.0, 1.0),
        };
        Focal {
            alpha_pos,
            alpha_neg,
            gamma,
        }
    }
}

/// FL(x, y) and dFL/dx for one element; `pow(q)` is q^γ.
#[inline(always)]
fn element(x: f32, y: f32, c: Focal, pow: impl Fn(f32) -> f32) -> (f32, f32) {
    let f = focal_terms(x, y);
    let alpha_t = if y == 1.0 { c.alpha_pos } else { c.alpha_neg };
    let w = pow(f.q);
    let loss = -alpha_t * w * f.log_pt;
    let grad = alpha_t * f.sign * w * (c.gamma * f.pt * f.log_pt - f.q);
    (loss, grad)
}

/// The loop: `loss[i] = FL(x[i], y[i])` and, when `GRAD`, `grad[i] = dFL/dx(x[i], y[i])`.
#[inline(always)]
fn run<const GRAD: bool>(
    x: &[f32],
    y: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    c: Focal,
    pow: impl Fn(f32) -> f32 + Copy,
) {
    let n = x.len();
    let (y, loss) = (&y[..n], &mut loss[..n]);
    if GRAD {
        let grad = &mut grad[..n];
        for i in 0..n {
            let (l, g) = element(x[i], y[i], c, pow);
            loss[i] = l;
            grad[i] = g;
        }
    } else {
        for i in 0..n {
            loss[i] = element(x[i], y[i], c, pow).0;
        }
    }
}

/// [`run`] with q^γ specialised: γ = 2 (the paper's) is a multiply, γ = 0 and 1 are
/// exact (`powf` gives the same values), anything else calls `powf`.
#[inline(always)]
fn run_gamma<const GRAD: bool>(x: &[f32], y: &[f32], loss: &mut [f32], grad: &mut [f32], c: Focal) {
    let g = c.gamma;
    if g == 2.0 {
        run::<GRAD>(x, y, loss, grad, c, |q| q * q)
    } else if g == 1.0 {
        run::<GRAD>(x, y, loss, grad, c, |q| q)
    } else if g == 0.0 {
        run::<GRAD>(x, y, loss, grad, c, |_| 1.0)
    } else {
        run::<GRAD>(x, y, loss, grad, c, move |q| q.powf(g))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<const GRAD: bool>(
    x: &[f32],
    y: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    c: Focal,
) {
    run_gamma::<GRAD>(x, y, loss, grad, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<const GRAD: bool>(
    x: &[f32],
    y: &[f32],
    loss: &mut [f32],
    grad: &mut [f32],
    c: Focal,
) {
    run_gamma::<GRAD>(x, y, loss, grad, c)
}

/// Per-element focal losses of `x` against binary targets `y` into `loss`, and their
/// gradients into `grad` when `grad` is given (all of `x`'s length), in the build `level`.
pub(crate) fn focal_loss_and_grad(
    level: Level,
    x: &[f32],
    y: &[f32],
    loss: &mut [f32],
    grad: Option<&mut [f32]>,
    c: Focal,
) {
    match grad {
        Some(g) => match level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::of` names Avx512 only when the CPU has avx512f (detected at
            // run time), so every instruction of this build exists.
            Level::Avx512 => unsafe { run_avx512::<true>(x, y, loss, g, c) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::of` names Avx2 only when the CPU has avx2 (detected).
            Level::Avx2 => unsafe { run_avx2::<true>(x, y, loss, g, c) },
            _ => run_gamma::<true>(x, y, loss, g, c),
        },
        None => match level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, avx512f was detected.
            Level::Avx512 => unsafe { run_avx512::<false>(x, y, loss, &mut [], c) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, avx2 was detected.
            Level::Avx2 => unsafe { run_avx2::<false>(x, y, loss, &mut [], c) },
            _ => run_gamma::<false>(x, y, loss, &mut [], c),
        },
    }
}

/// Lanes of [`lane_sum`].
pub(crate) const LANES: usize = 16;

/// Σ v in f64, element i into lane i mod [`LANES`], the lanes then added in order: a fixed
/// order (so the same bits on any thread count and vector width) that still lets the
/// compiler add 16 values at a time.
pub(crate) fn lane_sum(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut blocks = v.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a += x as f64;
        }
    }
    for (a, &x) in acc.iter_mut().zip(blocks.remainder()) {
        *a += x as f64;
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_down_to_subnormals() {
        let mut x = 0.0f32;
        let mut worst = 0.0f64;
        while x > -104.5 {
            let got = exp_nonpositive(x) as f64;
            let want = (x as f64).exp();
            if want > f32::MIN_POSITIVE as f64 {
                worst = worst.max(((got - want) / want).abs());
            } else {
                // Subnormal: the polynomial's ~1.5 ulp (each a subnormal step at the top
                // of the range, less below) and one rounding.
                let step = f32::from_bits(1) as f64;
                assert!(
                    (got - want).abs() <= 2.0 * step,
                    "e^{x}: {got:e} vs {want:e}"
                );
            }
            x -= 0.000_37;
        }
        assert!(worst < 2.5e-7, "worst relative error of e^x: {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-200.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn ln_1p_is_accurate() {
        let mut e = 1e-30f32;
        while e <= 1.0 {
            let want = (e as f64).ln_1p();
            let err = ((ln_1p(e) as f64 - want) / want).abs();
            assert!(err < 3e-7, "ln_1p({e:e}): relative error {err:e}");
            e *= 1.001;
        }
        assert_eq!(ln_1p(0.0), 0.0);
        // A subnormal argument: ln(1 + e) = e to within a subnormal step.
        let tiny = 3.7e-44f32;
        assert!((ln_1p(tiny) - tiny).abs() <= f32::from_bits(1));
    }

    #[test]
    fn focal_terms_are_consistent() {
        for &x in &[-100.0f32, -8.0, -1.0, 0.0, 0.7, 8.0, 100.0] {
            for &y in &[0.0f32, 1.0] {
                let f = focal_terms(x, y);
                let xt = if y == 1.0 { x } else { -x };
                assert!((f.pt + f.q - 1.0).abs() < 1e-6, "p_t + (1 − p_t) at x={x}");
                let want = -(-(xt as f64)).exp().ln_1p();
                let err = (f.log_pt as f64 - want).abs();
                if want.abs() > 1e-37 {
                    assert!(err <= 1e-6 * want.abs(), "ln p_t at x={x}, y={y}: {err}");
                } else {
                    assert!(err < 1e-44, "subnormal ln p_t at x={x}, y={y}: {err}");
                }
                assert!(f.pt.is_finite() && f.q.is_finite() && f.log_pt.is_finite());
            }
        }
        let f = focal_terms(f32::NAN, 0.0);
        assert!(f.log_pt.is_nan() && f.q.is_nan());
    }

    /// The portable, AVX2 and AVX-512 builds give the same bits, for every γ branch.
    #[test]
    fn every_build_gives_the_same_bits() {
        let mut r = crate::rng::Rng::new(5);
        let n = 1000;
        let mut x = r.uniform_vec(n, -20.0, 20.0);
        x[0] = -100.0;
        x[1] = 100.0;
        x[2] = 0.0;
        let y: Vec<f32> = (0..n).map(|i| (i % 7 == 0) as u8 as f32).collect();
        let levels: Vec<Level> = [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.available())
            .map(Level::of)
            .collect();
        for gamma in [0.0, 0.5, 1.0, 2.0, 5.0] {
            let c = Focal::new(Some(0.25), gamma);
            let mut want: Option<(Vec<f32>, Vec<f32>)> = None;
            for &level in &levels {
                let (mut l, mut g) = (vec![0.0; n], vec![0.0; n]);
                focal_loss_and_grad(level, &x, &y, &mut l, Some(&mut g), c);
                let mut l2 = vec![0.0; n];
                focal_loss_and_grad(level, &x, &y, &mut l2, None, c);
                assert_eq!(l, l2, "loss with and without the gradient, {level:?}");
                match &want {
                    None => want = Some((l, g)),
                    Some((wl, wg)) => {
                        assert_eq!(&l, wl, "loss bits of {level:?}, gamma {gamma}");
                        assert_eq!(&g, wg, "gradient bits of {level:?}, gamma {gamma}");
                    }
                }
            }
        }
    }

    #[test]
    fn lane_sum_adds_every_element() {
        let v: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        assert_eq!(lane_sum(&v), (0..37).map(|i| i as f64 * 0.5).sum::<f64>());
        assert_eq!(lane_sum(&[]), 0.0);
    }
}
