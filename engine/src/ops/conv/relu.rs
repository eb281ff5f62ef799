//! `conv2d_relu`: a convolution followed by a ReLU, as one op,
//!
//! ```text
//! y = max(conv(x, W) + b, 0)                      forward
//! ∂z = ∂y · [y > 0],  then conv2d's backward on ∂z   backward (z = conv(x, W) + b)
//! ```
//!
//! which is what RetinaNet's subnets do after each tower conv when they have no
//! GroupNorm (`retinanet/src/head.rs`). Fused, the pre-activation `z` is never a tensor
//! of its own: the Winograd path applies the ReLU in its output transform as it stores
//! each row, the implicit-GEMM path over the output it has just written (still warm in
//! the caches), and no second output buffer is allocated and filled. The backward
//! needs only `y` (ReLU's derivative is 1 where `y > 0`), which the next layer keeps
//! anyway as its input, and masks `∂y` in its own buffer (the tape hands it over), so it
//! holds no more gradient-sized buffers than the unfused pair.
//!
//! Both steps use the same expressions as `Tensor::relu` (`unary::relu_f32`,
//! `unary::relu_derivative`), so `conv2d_relu(x, w, b)` gives the same bits as
//! `conv2d(x, w, b).relu()`, forward and backward (tested below and in `tests.rs`).

use super::conv2d::{conv2d_op, Activation};
use super::geometry::Conv2dOptions;
use super::winograd::{self, ConvAlgo};
use crate::ops::unary::{chain_in_place, relu_derivative, relu_f32};
use crate::tensor::Tensor;
use crate::threads::for_each_chunk_mut;

/// `max(conv2d(x, weight, bias), 0)` as one op (see the module doc); the same bits as
/// `conv2d(..).relu()`.
///
/// ```
/// use focal_engine::ops::conv::{conv2d_relu, Conv2dOptions};
/// use focal_engine::Tensor;
/// let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, -2.0, 3.0, -4.0]);
/// let w = Tensor::ones(&[1, 1, 1, 1]);
/// let y = conv2d_relu(&x, &w, None, Conv2dOptions::default());
/// assert_eq!(y.to_vec(), vec![1.0, 0.0, 3.0, 0.0]);
/// ```
pub fn conv2d_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOptions,
) -> Tensor {
    conv2d_relu_with(x, weight, bias, opts, winograd::conv_algo())
}

/// [`conv2d_relu`] with an explicit algorithm (as [`super::conv2d_with`]).
pub fn conv2d_relu_with(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOptions,
    algo: ConvAlgo,
) -> Tensor {
    conv2d_op(x, weight, bias, opts, algo, Activation::Relu)
}

/// `out[i] = max(out[i], 0)`, in parallel chunks.
pub(crate) fn relu_in_place(out: &mut [f32]) {
    for_each_chunk_mut(out, |_, chunk| {
        for v in chunk {
            *v = relu_f32(*v);
        }
    });
}

/// `∂z = ∂y · [y > 0]`: ReLU's backward from its output `y`, over `∂y`'s own buffer
/// when nothing else shares it.
pub(crate) fn relu_backward(gy: Tensor, y: &Tensor) -> Tensor {
    chain_in_place(gy, y, relu_derivative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::case::randn;
    use crate::rng::Rng;
    use crate::testing::output_and_gradient_bits;

    #[test]
    fn fused_relu_gives_the_bits_of_conv2d_then_relu() {
        let mut r = Rng::new(31);
        // (input, weight, options): a large plane (one product per sample), small planes
        // batched, the swapped small-plane form, a strided conv, and 3x3 stride-1 convs
        // that Winograd can run.
        let cases: [([usize; 4], [usize; 4], Conv2dOptions); 4] = [
            ([2, 3, 17, 19], [5, 3, 3, 3], Conv2dOptions::sp(1, 1)),
            ([2, 4, 6, 5], [6, 4, 3, 3], Conv2dOptions::sp(1, 1)),
            ([2, 128, 2, 2], [136, 128, 3, 3], Conv2dOptions::sp(1, 1)),
            ([2, 3, 9, 8], [4, 3, 3, 3], Conv2dOptions::sp(2, 1)),
        ];
        for (xs, ws, opts) in cases {
            for algo in [ConvAlgo::Direct, ConvAlgo::WinogradF2, ConvAlgo::WinogradF4] {
                let inputs = vec![
                    randn(&mut r, &xs),
                    randn(&mut r, &ws),
                    randn(&mut r, &[ws[0]]),
                ];
                let fused = output_and_gradient_bits(&inputs, 7, |t| {
                    conv2d_relu_with(&t[0], &t[1], Some(&t[2]), opts, algo)
                });
                let apart = output_and_gradient_bits(&inputs, 7, |t| {
                    super::super::conv2d_with(&t[0], &t[1], Some(&t[2]), opts, algo).relu()
                });
                let what = format!("x {xs:?} w {ws:?} {algo:?}");
                assert_eq!(fused.len(), 4, "{what}");
                for (i, (f, a)) in fused.iter().zip(&apart).enumerate() {
                    assert!(f == a, "{what}: output/gradient {i} differs");
                }
                // Both sides of the kink occur, so the mask is exercised.
                let y = &fused[0];
                assert!(y.contains(&0), "{what}: no output clipped");
                assert!(
                    y.iter().any(|&b| f32::from_bits(b) > 0.0),
                    "{what}: none positive"
                );
            }
        }
    }
}
