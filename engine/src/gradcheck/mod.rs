//! The finite-difference gradient checker.
//!
//! For a function `f` of some input tensors, the checker compares the gradient the tape
//! computes with a numerical estimate. It contracts the output with a random upstream
//! gradient `r` (never all ones, which would hide a backward that mixes up positions),
//! so the scalar being differentiated is `L(x) = Σ_i f(x)_i · r_i`:
//!
//! - analytic: `backward_with(f(x), r)`, the gradient of every input element at once;
//! - numeric: for every element `x_j`, the central difference
//!   `(L(x + h e_j) − L(x − h e_j)) / (x_j⁺ − x_j⁻)`.
//!
//! **Why f32 is good enough here, and the choice of h.** focal's kernels are f32 only,
//! so `f` is evaluated in f32; everything around it (the contraction with `r`, the
//! difference, the division) is done in f64. The central difference has a truncation
//! error of `h²·|f'''|/6` and a rounding error of about `ε₃₂·Σ|f_i r_i| / h` (ε₃₂ ≈ 6e-8).
//! With `h = 1e-2` and inputs of order 1 the first is below 2e-5·|f'''| and the second
//! below 1e-4 for the small outputs used in the cases, both far under the tolerance.
//! The denominator is the difference of the two perturbed inputs *after* rounding to
//! f32, so the step the function actually saw is the step we divide by.
//!
//! **Tolerance.** An element passes when `|analytic − numeric| ≤ abs + rel·|numeric|`,
//! with `abs = 1e-3` and `rel = 2e-3` by default. A backward that is wrong by 1% in a
//! single element of order-1 gradient exceeds that (1e-2 > 3e-3), which the tests check.
//! Non-smooth ops (relu, abs, clamp, max, max-pool) are checked on inputs kept more than
//! `h` away from their kinks and ties.

use std::fmt::Write;

pub mod case;

pub use case::{away_from_zero, distinct, randn, Case, Tolerance, STEP};

use crate::op::Op;
use crate::rng::Rng;
use crate::tape::{backward_with, clear_tape, no_grad, recorded_ops, ParamId};
use crate::tensor::Tensor;

/// The outcome of checking one case.
#[derive(Clone, Debug)]
pub struct Report {
    pub op: Op,
    pub case: String,
    /// Largest |analytic − numeric| over all checked elements.
    pub max_abs: f64,
    /// Largest |analytic − numeric| / max(|analytic|, |numeric|) over elements where
    /// either is above 1e-6.
    pub max_rel: f64,
    pub passed: bool,
    /// Ops the case recorded on the tape (used to prove every op is covered).
    pub recorded: Vec<Op>,
    /// The worst element, for diagnosis: (input, flat index, analytic, numeric).
    pub worst: Option<(usize, usize, f64, f64)>,
}

fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// `Σ f(inputs)_i · r_i` in f64, without recording.
fn contract(case: &Case, inputs: &[Tensor], r: &Tensor) -> f64 {
    no_grad(|| {
        let out = (case.f)(inputs);
        out.data()
            .iter()
            .zip(r.data())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    })
}

/// Checks one case.
pub fn check(case: &Case) -> Report {
    clear_tape();
    let ids: Vec<ParamId> = case.inputs.iter().map(|_| ParamId::fresh()).collect();
    let tracked: Vec<Tensor> = case
        .inputs
        .iter()
        .zip(&case.wrt)
        .zip(&ids)
        .map(|((x, &w), &id)| if w { x.track(id) } else { x.detach() })
        .collect();
    let out = (case.f)(&tracked);
    let recorded = recorded_ops();
    let mut rng = Rng::new(seed_of(&case.name) ^ case.op as u64);
    // Upstream gradient: uniform in ±[0.5, 1.5], so no entry is near zero and none equal.
    let r = Tensor::from_vec(
        out.shape(),
        (0..out.numel())
            .map(|_| {
                let m = rng.uniform_range(0.5, 1.5);
                if rng.bernoulli(0.5) {
                    m
                } else {
                    -m
                }
            })
            .collect(),
    );
    let mut grads = if out.is_tracked() {
        backward_with(&out, r.clone())
    } else {
        Default::default()
    };
    clear_tape();

    let mut max_abs = 0.0f64;
    let mut max_rel = 0.0f64;
    let mut passed = true;
    let mut worst: Option<(usize, usize, f64, f64)> = None;
    let mut worst_excess = f64::NEG_INFINITY;
    for (i, x) in case.inputs.iter().enumerate() {
        if !case.wrt[i] {
            continue;
        }
        let analytic = grads
            .remove(ids[i])
            .unwrap_or_else(|| Tensor::zeros(x.shape()));
        let mut inputs: Vec<Tensor> = case.inputs.iter().map(|t| t.detach()).collect();
        for j in 0..x.numel() {
            let v = x.data()[j];
            inputs[i].data_mut()[j] = v + case.step;
            let plus_x = inputs[i].data()[j];
            let plus = contract(case, &inputs, &r);
            inputs[i].data_mut()[j] = v - case.step;
            let minus_x = inputs[i].data()[j];
            let minus = contract(case, &inputs, &r);
            inputs[i].data_mut()[j] = v;
            let numeric = (plus - minus) / (plus_x as f64 - minus_x as f64);
            let a = analytic.data()[j] as f64;
            let err = (a - numeric).abs();
            let allowed = case.tol.abs + case.tol.rel * numeric.abs();
            if err.is_nan() || err > allowed {
                passed = false;
            }
            let excess = if err.is_nan() {
                f64::INFINITY
            } else {
                err - allowed
            };
            if excess > worst_excess {
                worst_excess = excess;
                worst = Some((i, j, a, numeric));
            }
            max_abs = max_abs.max(err);
            let denom = a.abs().max(numeric.abs());
            if denom > 1e-6 {
                max_rel = max_rel.max(err / denom);
            }
        }
    }
    Report {
        op: case.op,
        case: case.name.clone(),
        max_abs,
        max_rel,
        passed,
        recorded,
        worst,
    }
}

/// Every registered case, or those of one op.
pub fn cases_for(op: Option<Op>) -> Vec<Case> {
    crate::gradcheck_cases::cases()
        .into_iter()
        .filter(|c| op.is_none_or(|o| c.op == o))
        .collect()
}

/// Runs the cases and formats the table printed by `focal gradcheck`.
pub fn run_table(op: Option<Op>) -> (String, Vec<Report>) {
    let reports: Vec<Report> = cases_for(op).iter().map(check).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:<44} {:>12} {:>12}  result",
        "op", "case", "max abs err", "max rel err"
    );
    for r in &reports {
        let _ = writeln!(
            s,
            "{:<20} {:<44} {:>12.3e} {:>12.3e}  {}",
            r.op.name(),
            r.case,
            r.max_abs,
            r.max_rel,
            if r.passed { "pass" } else { "FAIL" }
        );
    }
    let failed = reports.iter().filter(|r| !r.passed).count();
    let _ = writeln!(
        s,
        "{} cases, {} passed, {} failed",
        reports.len(),
        reports.len() - failed,
        failed
    );
    (s, reports)
}
