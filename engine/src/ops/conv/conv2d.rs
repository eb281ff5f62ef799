//! The conv2d op: the forward pass, and the backward closure recorded on the tape that
//! calls the three gradient kernels (see the folder's `mod.rs` for the map).

use super::forward::forward;
use super::geometry::{Conv2dOptions, Geom};
use super::input_grad::input_grad;
use super::relu::{relu_backward, relu_in_place};
use super::weight_grad::weight_grad;
use super::winograd::{self, ConvAlgo};
use crate::gemm::isa;
use crate::op::Op;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;

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
    conv2d_with(x, weight, bias, opts, winograd::conv_algo())
}

/// [`conv2d`] with an explicit algorithm instead of the process-wide setting
/// ([`winograd::set_conv_algo`], the CLI's `--conv-algo`): `Direct` always runs the
/// implicit-GEMM kernels; the Winograd choices apply to 3x3 stride-1 convolutions
/// (dilation 1, one group) and fall back to the implicit GEMM elsewhere. The choice
/// made here is kept for the backward pass.
pub fn conv2d_with(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOptions,
    algo: ConvAlgo,
) -> Tensor {
    conv2d_op(x, weight, bias, opts, algo, Activation::None)
}

/// What the forward pass applies to each output element after the bias: nothing
/// (`conv2d`), or `max(y, 0)` (`conv2d_relu`, see `relu.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    None,
    Relu,
}

/// The conv2d op and the fused conv2d + ReLU op (`act`): the forward dispatch to the
/// implicit GEMM or Winograd, and the backward closure, which for the fused op first
/// masks `∂y` where the output is not positive (`relu.rs`).
pub(crate) fn conv2d_op(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOptions,
    algo: ConvAlgo,
    act: Activation,
) -> Tensor {
    let g = Geom::new(x.shape(), weight.shape(), opts);
    let wino = winograd::choose(&g, algo);
    let isa = isa::active();
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
    let b = bias.map(|b| b.data());
    let relu = act == Activation::Relu;
    match wino {
        // The Winograd output transform applies the ReLU as it stores each row.
        Some(tile) => winograd::forward(tile, isa, &g, x.data(), weight.data(), b, relu, &mut out),
        None => {
            forward(&g, x.data(), weight.data(), b, &mut out);
            if relu {
                relu_in_place(&mut out);
            }
        }
    }
    let out = Tensor::from_vec(&shape, out);
    // The fused op's backward masks ∂y by its own output (ReLU's derivative).
    let saved_out = relu.then(|| out.detach());
    let mut inputs = vec![x, weight];
    if let Some(b) = bias {
        inputs.push(b);
    }
    let op = if relu { Op::Conv2dRelu } else { Op::Conv2d };
    record(op, out, &inputs, |needs| {
        let (need_x, need_w) = (needs[0], needs[1]);
        let need_b = needs.get(2).copied().unwrap_or(false);
        // ∂x needs the weight, ∂W needs the input: keep only what is used.
        let xs = need_w.then(|| x.detach());
        let ws = need_x.then(|| weight.detach());
        let (x_shape, w_shape) = (x.shape().to_vec(), weight.shape().to_vec());
        let has_bias = bias.is_some();
        Box::new(move |gy| {
            let gy = match &saved_out {
                Some(y) => relu_backward(gy, y),
                None => gy,
            };
            let gy = &gy;
            let mut gx = ws.as_ref().map(|_| vec![0.0f32; x_shape.iter().product()]);
            let mut gw = xs.as_ref().map(|_| vec![0.0f32; w_shape.iter().product()]);
            let (xd, wd) = (xs.as_ref().map(|t| t.data()), ws.as_ref().map(|t| t.data()));
            match wino {
                Some(tile) => {
                    let (gxd, gwd) = (gx.as_deref_mut(), gw.as_deref_mut());
                    winograd::backward(tile, isa, &g, xd, wd, gy.data(), gxd, gwd);
                }
                None => {
                    if let (Some(gx), Some(w)) = (gx.as_deref_mut(), wd) {
                        input_grad(&g, w, gy.data(), gx);
                    }
                    if let (Some(gw), Some(x)) = (gw.as_deref_mut(), xd) {
                        weight_grad(&g, x, gy.data(), gw, isa);
                    }
                }
            }
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
