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
//! | bias gradient | `∂b[o] = Σ_{n, p} ∂y[n, o, p]` | here |
//!
//! **Small planes.** When `P` is under [`SMALL_PLANE`] pixels (deep ResNet stages, the
//! top FPN levels), one product per sample would be a thin sliver; the samples are laid
//! side by side instead, `(O/G, N·P)` per group, and the result copied out.
//!
//! **Winograd.** The 3x3 stride-1 convolutions can also run as Winograd F(m×m, 3×3)
//! transforms; that path lives in `winograd.rs` beside these files and is chosen per
//! shape where it measures faster. (This folder is the place for it: the geometry, the
//! gradient-check cases and the dispatch below are shared.)
//!
//! **Threads and determinism.** Each product splits over the threads inside the GEMM
//! (rows and columns of its result, never its inner dimension), and the per-sample
//! products run as parallel tasks; every element is one fused multiply-add chain in a
//! fixed order (`gemm/kernel.rs`), so the results are bitwise the same on any number of
//! threads and on both SIMD instruction sets (`engine/tests/determinism.rs`). The
//! gradient of an input whose `needs` flag is off (the image fed to the stem) is not
//! computed at all.

mod col2im;
mod forward;
mod geometry;
pub(crate) mod gradcheck_cases;
mod im2col;
mod input_grad;
mod weight_grad;

use std::cell::Cell;
use std::thread::LocalKey;

pub use geometry::conv_output_len;
pub(crate) use geometry::Geom;

use crate::op::Op;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;

/// Stride, padding and dilation as (vertical, horizontal), and the number of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dOptions {
    /// Stride 1, no padding, no dilation, one group.
    fn default() -> Self {
        Conv2dOptions {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dOptions {
    /// The same stride in both directions.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }

    /// The same zero padding on all four sides.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }

    /// The same dilation in both directions.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }

    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// Stride `s` and padding `p`, the common case (`3x3, s, p=1`; `7x7, 2, 3`).
    pub fn sp(s: usize, p: usize) -> Self {
        Conv2dOptions::default().with_stride(s).with_padding(p)
    }
}

/// Output planes with fewer pixels than this run as one product for the whole batch
/// (`forward.rs`, `input_grad.rs`). At 256 pixels (a 16x16 map) the per-sample
/// products are already wide enough (`focal bench conv --preset small`, heads and FPN
/// at 16²).
pub(crate) const SMALL_PLANE: usize = 256;

/// Runs `f` on `len` floats of the thread-local buffer `key`, grown as needed and kept
/// for the next call, so a hot path allocates nothing. The contents are arbitrary:
/// every user writes before it reads. (A nested call on the same key finds the buffer
/// taken and simply allocates its own.)
pub(crate) fn with_buffer<R>(
    key: &'static LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = key.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    key.set(buf);
    r
}

/// `∂b[o] = Σ_{n, p} G[n, o, p]`, in sample then pixel order.
fn bias_grad(g: &Geom, gy: &[f32]) -> Vec<f32> {
    let p = g.p();
    crate::threads::par_map(g.o, |o| {
        let mut acc = 0.0f64;
        for n in 0..g.n {
            acc += gy[(n * g.o + o) * p..(n * g.o + o + 1) * p]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
        acc as f32
    })
}

/// 2-D convolution of `x: (N, C, H, W)` with `weight: (O, C/groups, KH, KW)` and an
/// optional `bias: (O)`, giving `(N, O, OH, OW)` (see the module doc for the formulas).
///
/// ```
/// use focal_engine::ops::conv::{conv2d, Conv2dOptions};
/// use focal_engine::Tensor;
/// let x = Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
/// let w = Tensor::ones(&[1, 1, 2, 2]);
/// let y = conv2d(&x, &w, None, Conv2dOptions::default());
/// assert_eq!(y.shape(), &[1, 1, 2, 2]);
/// assert_eq!(y.to_vec(), vec![12.0, 16.0, 24.0, 28.0]); // 1+2+4+5, 2+3+5+6, ...
/// ```
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, opts: Conv2dOptions) -> Tensor {
    let g = Geom::new(x.shape(), weight.shape(), opts);
    if let Some(b) = bias {
        assert!(
            b.shape() == [g.o],
            "conv2d: bias {} does not match the weight {} ({} output channels)",
            ShapeFmt(b.shape()),
            ShapeFmt(weight.shape()),
            g.o
        );
    }
    let shape = g.out_shape();
    let mut out = vec![0.0f32; shape.iter().product()];
    forward::forward(
        &g,
        x.data(),
        weight.data(),
        bias.map(|b| b.data()),
        &mut out,
    );
    let out = Tensor::from_vec(&shape, out);
    let mut inputs = vec![x, weight];
    if let Some(b) = bias {
        inputs.push(b);
    }
    record(Op::Conv2d, out, &inputs, |needs| {
        let (need_x, need_w) = (needs[0], needs[1]);
        let need_b = needs.get(2).copied().unwrap_or(false);
        // ∂x needs the weight, ∂W needs the input: keep only what is used.
        let xs = need_w.then(|| x.detach());
        let ws = need_x.then(|| weight.detach());
        let (x_shape, w_shape) = (x.shape().to_vec(), weight.shape().to_vec());
        let has_bias = bias.is_some();
        Box::new(move |gy| {
            let gx = ws.as_ref().map(|w| {
                let mut gx = vec![0.0f32; x_shape.iter().product()];
                input_grad::input_grad(&g, w.data(), gy.data(), &mut gx);
                gx
            });
            let gw = xs.as_ref().map(|x| {
                let mut gw = vec![0.0f32; w_shape.iter().product()];
                weight_grad::weight_grad(&g, x.data(), gy.data(), &mut gw);
                gw
            });
            let mut grads = vec![
                gx.map(|d| Tensor::from_vec(&x_shape, d)),
                gw.map(|d| Tensor::from_vec(&w_shape, d)),
            ];
            if has_bias {
                grads.push(need_b.then(|| Tensor::from_vec(&[g.o], bias_grad(&g, gy.data()))));
            }
            grads
        })
    })
}

#[cfg(test)]
mod tests;
