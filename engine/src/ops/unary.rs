//! Elementwise unary ops. Each is a forward map and its derivative:
//!
//! | op              | forward y                     | dy/dx                       | saved |
//! |-----------------|-------------------------------|-----------------------------|-------|
//! | neg             | −x                            | −1                          | —     |
//! | add_scalar(c)   | x + c                         | 1                           | —     |
//! | mul_scalar(c)   | c·x                           | c                           | —     |
//! | exp             | eˣ                            | y                           | y     |
//! | log             | ln x                          | 1/x                         | x     |
//! | sqrt            | √x                            | 1/(2y)                      | y     |
//! | pow_scalar(p)   | xᵖ                            | p·xᵖ⁻¹                      | x     |
//! | abs             | abs(x)                        | sign(x) (0 at 0)            | x     |
//! | relu            | max(x, 0)                     | 1 if x > 0 else 0           | y     |
//! | sigmoid         | σ(x) = 1/(1+e⁻ˣ)              | y(1−y)                      | y     |
//! | log_sigmoid     | ln σ(x) = min(x,0) − ln(1+e^−abs(x)) | 1 − σ(x) = σ(−x)     | x     |
//! | clamp(lo, hi)   | min(max(x, lo), hi)           | 1 if lo ≤ x ≤ hi else 0     | x     |
//!
//! `select(mask, a, b)` picks `a` where the mask is non-zero and `b` elsewhere; its
//! gradient goes to `a` where the mask is set and to `b` where it is not.

use crate::op::Op;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;
use crate::threads::{for_each_chunk_mut, map_indexed};

/// σ(x), computed without overflow for large |x|.
pub fn sigmoid_f32(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// ln σ(x) = min(x, 0) − ln(1 + e^(−|x|)), finite for every finite x.
pub fn log_sigmoid_f32(x: f32) -> f32 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// ReLU, `max(x, 0)`: the one expression both `relu` and the fused `conv2d_relu` use,
/// so that the two give the same bits.
#[inline(always)]
pub(crate) fn relu_f32(x: f32) -> f32 {
    x.max(0.0)
}

/// ReLU's derivative from its output `y`: 1 where `y > 0`, else 0 (also at the kink).
#[inline(always)]
pub(crate) fn relu_derivative(y: f32) -> f32 {
    if y > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// `f` of every element. Each chunk is a zip of slices, a loop without bounds checks
/// that the compiler vectorises where `f` allows.
fn map(x: &Tensor, f: impl Fn(f32) -> f32 + Sync + Send) -> Tensor {
    let d = x.data();
    let mut out = vec![0.0f32; d.len()];
    for_each_chunk_mut(&mut out, |start, o| {
        let src = &d[start..start + o.len()];
        for (o, &v) in o.iter_mut().zip(src) {
            *o = f(v);
        }
    });
    x.with_data(out)
}

/// `g * df(saved)` elementwise, the backward of every op in this file: written over
/// `g`'s own values when no other tensor shares them (the gradient the tape walk hands a
/// backward closure, usually), else into a copy (`Arc::make_mut`), so no second
/// gradient-sized buffer is needed.
pub(crate) fn chain_in_place(
    g: Tensor,
    saved: &Tensor,
    df: impl Fn(f32) -> f32 + Sync + Send,
) -> Tensor {
    let sd = saved.data();
    assert_eq!(g.numel(), sd.len());
    // A recorded gradient (double backward is not supported anyway) is copied first.
    let mut g = if g.node.is_some() { g.detach() } else { g };
    for_each_chunk_mut(g.data_mut(), |start, o| {
        let src = &sd[start..start + o.len()];
        for (o, &s) in o.iter_mut().zip(src) {
            *o *= df(s);
        }
    });
    g
}

/// Records a unary op whose derivative is `df` applied to the saved tensor (input or output).
fn unary(
    op: Op,
    x: &Tensor,
    out: Tensor,
    save_output: bool,
    df: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Tensor {
    let saved_out = if save_output {
        Some(out.detach())
    } else {
        None
    };
    record(op, out, &[x], move |_| {
        let saved = saved_out.unwrap_or_else(|| x.detach());
        Box::new(move |g| vec![Some(chain_in_place(g, &saved, df))])
    })
}

impl Tensor {
    pub fn neg(&self) -> Tensor {
        let out = map(self, |v| -v);
        record(Op::Neg, out, &[self], |_| {
            Box::new(|g| vec![Some(map(&g, |v| -v))])
        })
    }

    pub fn add_scalar(&self, c: f32) -> Tensor {
        let out = map(self, |v| v + c);
        record(Op::AddScalar, out, &[self], |_| {
            Box::new(|g| vec![Some(g.detach())])
        })
    }

    pub fn mul_scalar(&self, c: f32) -> Tensor {
        let out = map(self, |v| v * c);
        record(Op::MulScalar, out, &[self], move |_| {
            Box::new(move |g| vec![Some(map(&g, |v| v * c))])
        })
    }

    pub fn exp(&self) -> Tensor {
        unary(Op::Exp, self, map(self, f32::exp), true, |y| y)
    }

    pub fn log(&self) -> Tensor {
        unary(Op::Log, self, map(self, f32::ln), false, |x| 1.0 / x)
    }

    pub fn sqrt(&self) -> Tensor {
        unary(Op::Sqrt, self, map(self, f32::sqrt), true, |y| 0.5 / y)
    }

    /// `self ^ p` for a scalar exponent.
    pub fn pow_scalar(&self, p: f32) -> Tensor {
        let out = map(self, |v| v.powf(p));
        unary(Op::PowScalar, self, out, false, move |x| {
            p * x.powf(p - 1.0)
        })
    }

    pub fn abs(&self) -> Tensor {
        let sign = |x: f32| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        };
        unary(Op::Abs, self, map(self, f32::abs), false, sign)
    }

    pub fn relu(&self) -> Tensor {
        let out = map(self, relu_f32);
        unary(Op::Relu, self, out, true, relu_derivative)
    }

    pub fn sigmoid(&self) -> Tensor {
        unary(Op::Sigmoid, self, map(self, sigmoid_f32), true, |y| {
            y * (1.0 - y)
        })
    }

    pub fn log_sigmoid(&self) -> Tensor {
        let out = map(self, log_sigmoid_f32);
        unary(Op::LogSigmoid, self, out, false, |x| sigmoid_f32(-x))
    }

    /// Limits every value to [lo, hi]; the gradient is zero where the input was outside.
    pub fn clamp(&self, lo: f32, hi: f32) -> Tensor {
        assert!(lo <= hi, "clamp: lo {lo} > hi {hi}");
        let out = map(self, |v| v.max(lo).min(hi));
        unary(Op::Clamp, self, out, false, move |x| {
            if (lo..=hi).contains(&x) {
                1.0
            } else {
                0.0
            }
        })
    }

    /// `mask != 0 ? a : b`, elementwise; all three of the same shape. The mask carries no
    /// gradient.
    pub fn select(mask: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        assert!(
            mask.shape() == a.shape() && a.shape() == b.shape(),
            "select: mask {}, a {} and b {} must have the same shape",
            ShapeFmt(mask.shape()),
            ShapeFmt(a.shape()),
            ShapeFmt(b.shape())
        );
        let (m, ad, bd) = (mask.data(), a.data(), b.data());
        let out = a.with_data(map_indexed(m.len(), |i| {
            if m[i] != 0.0 {
                ad[i]
            } else {
                bd[i]
            }
        }));
        record(Op::Select, out, &[a, b], |needs| {
            let needs = needs.to_vec();
            let mask = mask.detach();
            Box::new(move |g| {
                let (gd, m) = (g.data(), mask.data());
                let pick = |keep: bool| {
                    g.with_data(map_indexed(gd.len(), |i| {
                        if (m[i] != 0.0) == keep {
                            gd[i]
                        } else {
                            0.0
                        }
                    }))
                };
                vec![needs[0].then(|| pick(true)), needs[1].then(|| pick(false))]
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_sigmoid_and_log_sigmoid_at_extremes() {
        for &x in &[-100.0f32, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0] {
            let s = sigmoid_f32(x);
            let ls = log_sigmoid_f32(x);
            assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            assert!(ls.is_finite() && ls <= 0.0, "log_sigmoid({x}) = {ls}");
            let reference = -((-x as f64).exp().ln_1p());
            assert!((ls as f64 - reference).abs() < 1e-5 * reference.abs().max(1.0));
        }
    }

    #[test]
    fn unary_values() {
        let x = Tensor::from_vec(&[4], vec![-2.0, -0.5, 0.5, 4.0]);
        assert_eq!(x.relu().to_vec(), vec![0.0, 0.0, 0.5, 4.0]);
        assert_eq!(x.abs().to_vec(), vec![2.0, 0.5, 0.5, 4.0]);
        assert_eq!(x.clamp(-1.0, 1.0).to_vec(), vec![-1.0, -0.5, 0.5, 1.0]);
        assert_eq!(x.pow_scalar(2.0).to_vec(), vec![4.0, 0.25, 0.25, 16.0]);
        let m = Tensor::from_vec(&[4], vec![1.0, 0.0, 1.0, 0.0]);
        let y = Tensor::zeros(&[4]);
        assert_eq!(
            Tensor::select(&m, &x, &y).to_vec(),
            vec![-2.0, 0.0, 0.5, 0.0]
        );
    }
}
