//! The conv2d op: the forward pass, and the backward closure recorded on the tape that
//! calls the three gradient kernels (see the folder's `mod.rs` for the map).

use super::forward::forward;
use super::geometry::{Conv2dOptions, Geom};
use super::input_grad::input_grad;
use super::weight_grad::weight_grad;
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
    forward(
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
                input_grad(&g, w.data(), gy.data(), &mut gx);
                gx
            });
            let gw = xs.as_ref().map(|x| {
                let mut gw = vec![0.0f32; w_shape.iter().product()];
                weight_grad(&g, x.data(), gy.data(), &mut gw, isa::active());
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
