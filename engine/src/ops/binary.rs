//! Elementwise binary ops with NumPy broadcasting: `add`, `sub`, `mul`, `div`; and
//! `add_relu`, `max(a + b, 0)` of two same-shaped tensors as one op (ResNet's residual).
//!
//! Forward: `out[i] = f(a[ia], b[ib])` where `ia`, `ib` walk the inputs with stride 0
//! on their broadcast axes. Backward: the chain rule gives a gradient of the *output's*
//! shape for each input; an input that was broadcast received the same value at many
//! output positions, so its gradient is the sum over those positions ([`sum_to`]).
//!
//! | op  | ∂out/∂a | ∂out/∂b     |
//! |-----|---------|-------------|
//! | add | 1       | 1           |
//! | sub | 1       | −1          |
//! | mul | b       | a           |
//! | div | 1/b     | −a/b²       |

use crate::op::Op;
use crate::ops::unary::{chain_in_place, relu_derivative, relu_f32};
use crate::shape::{broadcast_shape, broadcast_strides, numel};
use crate::tape::record;
use crate::tensor::Tensor;
use crate::threads::{for_each_chunk_mut, map_indexed};

/// Computes `f(a, b)` elementwise over the broadcast shape.
fn zip_broadcast(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Tensor {
    let out_shape = broadcast_shape(op, a.shape(), b.shape());
    let (da, db) = (a.data(), b.data());
    let data = if a.shape() == b.shape() {
        map_indexed(da.len(), |i| f(da[i], db[i]))
    } else if b.numel() == 1 && out_shape == a.shape() {
        let s = db[0];
        map_indexed(da.len(), |i| f(da[i], s))
    } else if a.numel() == 1 && out_shape == b.shape() {
        let s = da[0];
        map_indexed(db.len(), |i| f(s, db[i]))
    } else {
        let n = numel(&out_shape);
        let sa = broadcast_strides(a.shape(), &out_shape);
        let sb = broadcast_strides(b.shape(), &out_shape);
        let mut out = vec![0.0; n];
        for_each_chunk_mut(&mut out, |start, chunk| {
            let mut walker = Walker::new(&out_shape, &[&sa, &sb], start);
            for o in chunk.iter_mut() {
                *o = f(da[walker.offsets[0]], db[walker.offsets[1]]);
                walker.step();
            }
        });
        out
    };
    Tensor::from_vec(&out_shape, data)
}

/// Walks a row-major index over `shape`, keeping the matching offset into each of
/// several operands with their own (possibly zero) strides.
pub(crate) struct Walker<'a> {
    shape: &'a [usize],
    strides: Vec<&'a [usize]>,
    index: Vec<usize>,
    pub(crate) offsets: Vec<usize>,
}

impl<'a> Walker<'a> {
    /// Starts at flat position `start` of `shape`.
    pub(crate) fn new(shape: &'a [usize], operand_strides: &[&'a [usize]], start: usize) -> Self {
        let mut index = vec![0; shape.len()];
        let mut rest = start;
        for d in (0..shape.len()).rev() {
            index[d] = rest % shape[d].max(1);
            rest /= shape[d].max(1);
        }
        let offsets = operand_strides
            .iter()
            .map(|s| index.iter().zip(s.iter()).map(|(i, st)| i * st).sum())
            .collect();
        Walker {
            shape,
            strides: operand_strides.to_vec(),
            index,
            offsets,
        }
    }

    /// Advances to the next flat position.
    pub(crate) fn step(&mut self) {
        for d in (0..self.shape.len()).rev() {
            self.index[d] += 1;
            for (o, s) in self.offsets.iter_mut().zip(&self.strides) {
                *o += s[d];
            }
            if self.index[d] < self.shape[d] {
                return;
            }
            for (o, s) in self.offsets.iter_mut().zip(&self.strides) {
                *o -= s[d] * self.shape[d];
            }
            self.index[d] = 0;
        }
    }
}

/// Sums `g` (of a broadcast output shape) down to `shape`, the shape of an input that
/// was broadcast to produce it. This is the adjoint of broadcasting.
pub fn sum_to(g: &Tensor, shape: &[usize]) -> Tensor {
    if g.shape() == shape {
        return g.detach();
    }
    let n_out = numel(shape);
    let mut out = vec![0.0f32; n_out];
    if n_out == 1 {
        out[0] =
            crate::threads::sum_chunks(g.numel(), |r| g.data()[r].iter().map(|&v| v as f64).sum())
                as f32;
        return Tensor::from_vec(shape, out);
    }
    // Each input element receives the sum of the output elements that read it. Visit the
    // output in row-major order and add into place: a fixed order, so deterministic.
    let s = broadcast_strides(shape, g.shape());
    let mut walker = Walker::new(g.shape(), &[&s], 0);
    for &v in g.data() {
        out[walker.offsets[0]] += v;
        walker.step();
    }
    Tensor::from_vec(shape, out)
}

/// Elementwise product of `g` and `f(a, b)` over the broadcast shape, summed to `shape`.
fn grad_term(
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Tensor {
    let local = zip_broadcast("backward", a, b, f);
    let prod = zip_broadcast("backward", g, &local, |x, y| x * y);
    sum_to(&prod, shape)
}

impl Tensor {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Tensor {
        let out = zip_broadcast("add", self, other, |x, y| x + y);
        let (sa, sb) = (self.shape.clone(), other.shape.clone());
        record(Op::Add, out, &[self, other], move |needs| {
            let needs = needs.to_vec();
            Box::new(move |g| {
                vec![
                    needs[0].then(|| sum_to(&g, &sa)),
                    needs[1].then(|| sum_to(&g, &sb)),
                ]
            })
        })
    }

    /// `max(self + other, 0)` as one op, for two tensors of the same shape: a residual
    /// block's last step in ResNet (`relu(F(x) + x)`). The sum before the ReLU never
    /// exists as a tensor; the backward masks `g` by `[y > 0]` and hands the result to
    /// both inputs. The same expressions as `add` then `relu`, so the same bits.
    pub fn add_relu(&self, other: &Tensor) -> Tensor {
        assert!(
            self.shape() == other.shape(),
            "add_relu: the shapes {} and {} differ (add_relu does not broadcast)",
            crate::shape::ShapeFmt(self.shape()),
            crate::shape::ShapeFmt(other.shape())
        );
        let (da, db) = (self.data(), other.data());
        let out = self.with_data(map_indexed(da.len(), |i| relu_f32(da[i] + db[i])));
        let saved_out = out.detach();
        record(Op::AddRelu, out, &[self, other], move |needs| {
            let needs = needs.to_vec();
            Box::new(move |g| {
                let masked = chain_in_place(g, &saved_out, relu_derivative);
                vec![
                    needs[0].then(|| masked.detach()),
                    needs[1].then(|| masked.detach()),
                ]
            })
        })
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Tensor {
        let out = zip_broadcast("sub", self, other, |x, y| x - y);
        let (sa, sb) = (self.shape.clone(), other.shape.clone());
        record(Op::Sub, out, &[self, other], move |needs| {
            let needs = needs.to_vec();
            Box::new(move |g| {
                vec![
                    needs[0].then(|| sum_to(&g, &sa)),
                    needs[1].then(|| {
                        let s = sum_to(&g, &sb);
                        let neg: Vec<f32> = s.data().iter().map(|v| -v).collect();
                        s.with_data(neg)
                    }),
                ]
            })
        })
    }

    /// `self * other` elementwise, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Tensor {
        let out = zip_broadcast("mul", self, other, |x, y| x * y);
        record(Op::Mul, out, &[self, other], |needs| {
            let needs = needs.to_vec();
            let (a, b) = (self.detach(), other.detach());
            Box::new(move |g| {
                vec![
                    needs[0].then(|| grad_term(&g, &a, &b, a.shape(), |_, y| y)),
                    needs[1].then(|| grad_term(&g, &a, &b, b.shape(), |x, _| x)),
                ]
            })
        })
    }

    /// `self / other` elementwise, broadcasting.
    pub fn div(&self, other: &Tensor) -> Tensor {
        let out = zip_broadcast("div", self, other, |x, y| x / y);
        record(Op::Div, out, &[self, other], |needs| {
            let needs = needs.to_vec();
            let (a, b) = (self.detach(), other.detach());
            Box::new(move |g| {
                vec![
                    needs[0].then(|| grad_term(&g, &a, &b, a.shape(), |_, y| 1.0 / y)),
                    needs[1].then(|| grad_term(&g, &a, &b, b.shape(), |x, y| -x / (y * y))),
                ]
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_relu_gives_the_bits_of_add_then_relu() {
        use crate::gradcheck::case::randn;
        use crate::rng::Rng;
        use crate::testing::output_and_gradient_bits;
        let mut r = Rng::new(3);
        // Large enough for the parallel chunked path.
        let inputs = [
            randn(&mut r, &[2, 64, 45, 47]),
            randn(&mut r, &[2, 64, 45, 47]),
        ];
        let fused = output_and_gradient_bits(&inputs, 4, |t| t[0].add_relu(&t[1]));
        let apart = output_and_gradient_bits(&inputs, 4, |t| t[0].add(&t[1]).relu());
        assert_eq!(fused.len(), 3);
        assert!(fused == apart, "add_relu differs from add then relu");
        let zeros = fused[0].iter().filter(|&&v| v == 0).count();
        assert!(zeros > 0 && zeros < fused[0].len(), "{zeros} clipped");
    }

    #[test]
    #[should_panic(expected = "add_relu: the shapes [2, 3] and [3] differ")]
    fn add_relu_refuses_to_broadcast() {
        let _ = Tensor::zeros(&[2, 3]).add_relu(&Tensor::zeros(&[3]));
    }

    #[test]
    fn broadcasting_forward_and_sum_to() {
        let a = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = Tensor::from_vec(&[3], vec![10., 20., 30.]);
        assert_eq!(a.add(&b).to_vec(), vec![11., 22., 33., 14., 25., 36.]);
        let c = Tensor::from_vec(&[2, 1], vec![2., 3.]);
        assert_eq!(a.mul(&c).to_vec(), vec![2., 4., 6., 12., 15., 18.]);
        let s = sum_to(&a, &[1, 3]);
        assert_eq!(s.shape(), &[1, 3]);
        assert_eq!(s.to_vec(), vec![5., 7., 9.]);
        assert_eq!(sum_to(&a, &[2, 1]).to_vec(), vec![6., 15.]);
        assert_eq!(sum_to(&a, &[]).to_vec(), vec![21.]);
    }

    #[test]
    #[should_panic(expected = "add: shapes [2, 3] and [2] do not broadcast")]
    fn shape_error_names_op_and_shapes() {
        let a = Tensor::zeros(&[2, 3]);
        let b = Tensor::zeros(&[2]);
        let _ = a.add(&b);
    }
}
