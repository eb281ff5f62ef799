//! 2-D convolution (cross-correlation, as in PyTorch) with stride, padding, dilation,
//! groups and an optional bias, computed as implicit GEMMs on focal's own GEMM.
//!
//! With the notation of `geometry.rs` (input `(N, C, H, W)`, weight `(O, C/G, KH, KW)`,
//! output `(N, O, OH, OW)`, `K = C/G·KH·KW`, `P = OH·OW`), for one sample and one
//! group the convolution is the matrix product
//!
//! ```text
//! y[n, g] (O/G, P) = W_g (O/G, K) · cols (K, P)
//! ```
//!
//! where column `p` of `cols` holds the `K` input values under output pixel `p`'s window
//! (zero in the padding). `cols` is never built: the GEMM packs its blocks straight
//! from the image (`im2col.rs`). Backward, with `∂y = ∂L/∂y`:
//!
//! | pass | product | file |
//! |---|---|---|
//! | forward | `y[n, g] = W_g · cols + b`, bias in the GEMM's store | `forward.rs` |
//! | input gradient, stride 1 | `∂x[n, g] = W'_g · cols(∂y[n, g])`, a convolution of `∂y` | `input_grad.rs` |
//! | input gradient, strided | `∂cols = W_gᵀ · ∂y_g`, then col2im | `input_grad.rs`, `col2im.rs` |
//! | weight gradient | `∂W_g = ∂y_g · colsᵀ`, one sum over the batch's pixels | `weight_grad.rs` |
//! | bias gradient | `∂b[o] = Σ_{n, p} ∂y[n, o, p]` | `conv2d.rs` |
//!
//! `conv2d_relu` (`relu.rs`) is the same op with a ReLU applied as the output is
//! stored, and `∂y` masked by `[y > 0]` before the backward products.
//!
//! **Small planes.** When `P` is under `SMALL_PLANE` (256) pixels (deep ResNet stages, the
//! top FPN levels), one product per sample would be a thin sliver; the samples are laid
//! side by side instead, `(O/G, N·P)` per group, and the result copied out. When the
//! batch has fewer pixels than a large weight has rows (layer4 at 96 px: 72 pixels,
//! 512 × 4608 weights), the forward product and the stride-1 input gradient swap their
//! operands (`Yᵀ = colsᵀ·Wᵀ`, `forward.rs`): the small column matrix is packed once and
//! the weight streams through the GEMM's blocks, with the same bits.
//!
//! **Winograd.** The 3x3 stride-1 convolutions can also run as Winograd F(2×2, 3×3) or
//! F(4×4, 3×3) (`winograd/`: forward, input gradient, weight gradient, on the same
//! GEMM), chosen per shape where it measured faster (`--conv-algo`, [`ConvAlgo`];
//! `winograd/algo.rs`). `conv2d.rs` dispatches; the choice made in the forward pass is
//! kept for the backward pass.
//!
//! **Threads and determinism.** Each product splits over the threads inside the GEMM
//! (rows and columns of its result, never its inner dimension), and the per-sample
//! products run as parallel tasks; every element is one fused multiply-add chain in a
//! fixed order (`gemm/kernel.rs`), so the results are bitwise the same on any number of
//! threads and on both SIMD instruction sets (`engine/tests/determinism.rs`). The
//! gradient of an input whose `needs` flag is off (the image fed to the stem) is not
//! computed at all.

mod col2im;
mod conv2d;
mod forward;
mod geometry;
pub(crate) mod gradcheck_cases;
mod im2col;
mod input_grad;
mod relu;
mod scratch;
mod weight_grad;
pub mod winograd;

pub use conv2d::{conv2d, conv2d_with};
pub use geometry::{conv_output_len, Conv2dOptions};
pub use relu::{conv2d_relu, conv2d_relu_with};
pub use winograd::{conv_algo, set_conv_algo, ConvAlgo};

#[cfg(test)]
mod tests;
