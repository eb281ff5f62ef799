//! A gradient-check case, and the random inputs cases are built from.
//!
//! A leaf module: it knows ops only by name ([`Op`]) and tensors, so that every op's
//! file can declare its own cases (`ops/*::gradcheck_cases`) without importing the
//! checker, and the checker (`gradcheck/mod.rs`) can collect them all.

use crate::op::Op;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Finite-difference step.
pub const STEP: f32 = 1e-2;

/// Pass criterion `|a − n| ≤ abs + rel·|n|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            abs: 1e-3,
            rel: 2e-3,
        }
    }
}

type CaseFn = Box<dyn Fn(&[Tensor]) -> Tensor>;

/// One gradient-check case: an op, a description of the option being exercised, the
/// inputs and the function built from them.
pub struct Case {
    pub op: Op,
    pub name: String,
    pub inputs: Vec<Tensor>,
    /// Which inputs are differentiated (the others are passed as constants).
    pub wrt: Vec<bool>,
    pub f: CaseFn,
    pub tol: Tolerance,
    /// Finite-difference step ([`STEP`] unless the case says otherwise).
    pub step: f32,
}

impl Case {
    /// A case differentiating every input.
    pub fn new(
        op: Op,
        name: impl Into<String>,
        inputs: Vec<Tensor>,
        f: impl Fn(&[Tensor]) -> Tensor + 'static,
    ) -> Case {
        let wrt = vec![true; inputs.len()];
        Case {
            op,
            name: name.into(),
            inputs,
            wrt,
            f: Box::new(f),
            tol: Tolerance::default(),
            step: STEP,
        }
    }

    /// Only the inputs marked `true` are differentiated.
    pub fn wrt(mut self, wrt: &[bool]) -> Case {
        assert_eq!(wrt.len(), self.inputs.len());
        self.wrt = wrt.to_vec();
        self
    }

    /// A different tolerance, for an op whose numerics need it (say why at the call).
    pub fn tol(mut self, abs: f64, rel: f64) -> Case {
        self.tol = Tolerance { abs, rel };
        self
    }

    /// A different finite-difference step (say why at the call): a larger one divides
    /// the f32 rounding noise of `f` by more, and costs nothing in truncation error when
    /// `f` is linear in each single input element (a convolution).
    pub fn step(mut self, h: f32) -> Case {
        self.step = h;
        self
    }
}

/// Random inputs for cases: normal values, deterministic per seed.
pub fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = crate::shape::numel(shape);
    Tensor::from_vec(shape, rng.normal_vec(n, 0.0, 1.0))
}

/// Random values in ±[lo, hi], uniformly, never within `lo` of zero (for ops with a kink
/// at 0: relu, abs).
pub fn away_from_zero(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = crate::shape::numel(shape);
    Tensor::from_vec(
        shape,
        (0..n)
            .map(|_| {
                let m = rng.uniform_range(lo, hi);
                if rng.bernoulli(0.5) {
                    m
                } else {
                    -m
                }
            })
            .collect(),
    )
}

/// A random permutation of evenly spaced values `offset + spacing·k` (distinct, with gaps
/// wider than the finite-difference step, for max and max-pool).
pub fn distinct(rng: &mut Rng, shape: &[usize], spacing: f32) -> Tensor {
    let n = crate::shape::numel(shape);
    let mut v: Vec<f32> = (0..n)
        .map(|k| (k as f32 - n as f32 / 2.0) * spacing)
        .collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(shape, v)
}
