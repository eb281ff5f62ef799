//! 2-D max pooling, PyTorch semantics (`ceil_mode = False`, no dilation).
//!
//! `y[n, c, oy, ox] = max x[n, c, oy·sh − ph + ky, ox·sw − pw + kx]` over the `KH × KW`
//! window, the padding counting as −∞ (it is never chosen). Output size
//! `⌊(H + 2·ph − KH) / sh⌋ + 1`. ResNet's stem pool is `3x3, stride 2, padding 1`.
//!
//! The forward pass records, for every output, where its maximum came from (the first
//! one in row-major window order on ties; a NaN wins, as in PyTorch). Backward sends each
//! output gradient to that position; positions shared by overlapping windows receive the
//! sum, added in output order.
//!
//! Threads: one task per (sample, channel) plane, in forward and backward.

use rayon::prelude::*;

use crate::gradcheck::case::{distinct, Case};
use crate::op::Op;
use crate::rng::Rng;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;

/// Sizes of one pooling, checked.
#[derive(Clone, Copy)]
struct PoolGeom {
    planes: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

impl PoolGeom {
    fn new(
        x: &[usize],
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
    ) -> PoolGeom {
        let fail = |why: &str| -> ! {
            panic!(
                "max_pool2d: input {} with kernel ({kh}, {kw}), stride ({sh}, {sw}), \
                 padding ({ph}, {pw}): {why}",
                ShapeFmt(x)
            )
        };
        if x.len() != 4 {
            fail("the input must be (N, C, H, W)");
        }
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            fail("kernel and stride must be at least 1");
        }
        if 2 * ph > kh || 2 * pw > kw {
            fail("padding must be at most half the kernel size");
        }
        let (h, w) = (x[2], x[3]);
        if h + 2 * ph < kh || w + 2 * pw < kw {
            fail("the kernel is larger than the padded input");
        }
        PoolGeom {
            planes: x[0] * x[1],
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            oh: (h + 2 * ph - kh) / sh + 1,
            ow: (w + 2 * pw - kw) / sw + 1,
        }
    }

    /// The input rows (or columns) `[start, end)` of window `o` along an axis.
    fn window(o: usize, s: usize, p: usize, k: usize, len: usize) -> (usize, usize) {
        let start = (o * s) as isize - p as isize;
        let end = (start + k as isize).min(len as isize);
        (start.max(0) as usize, end.max(0) as usize)
    }
}

/// Max of every window of one plane, and where it was (flat index in the plane).
fn pool_plane(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    for oy in 0..g.oh {
        let (y0, y1) = PoolGeom::window(oy, g.sh, g.ph, g.kh, g.h);
        for ox in 0..g.ow {
            let (x0, x1) = PoolGeom::window(ox, g.sw, g.pw, g.kw, g.w);
            // Padding ≤ half the kernel, so every window holds at least one real pixel.
            let mut best = f32::NEG_INFINITY;
            let mut at = y0 * g.w + x0;
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let v = x[iy * g.w + ix];
                    if v > best || v.is_nan() {
                        best = v;
                        at = iy * g.w + ix;
                    }
                }
            }
            y[oy * g.ow + ox] = best;
            arg[oy * g.ow + ox] = at as u32;
        }
    }
}

/// Max pooling of `x: (N, C, H, W)` with the given kernel, stride and padding (each
/// (vertical, horizontal)); the padding is −∞.
///
/// ```
/// use focal_engine::ops::pool::max_pool2d;
/// use focal_engine::Tensor;
/// let x = Tensor::from_vec(&[1, 1, 2, 3], vec![1.0, 5.0, 2.0, 4.0, 0.0, 6.0]);
/// let y = max_pool2d(&x, (2, 2), (1, 1), (0, 0));
/// assert_eq!(y.to_vec(), vec![5.0, 6.0]);
/// ```
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Tensor {
    let g = PoolGeom::new(x.shape(), kernel, stride, padding);
    assert!(
        g.h * g.w <= u32::MAX as usize,
        "max_pool2d: plane {}x{} too large",
        g.h,
        g.w
    );
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0.0f32; g.planes * ohw];
    let mut arg = vec![0u32; g.planes * ohw];
    let xd = x.data();
    if ohw > 0 {
        y.par_chunks_mut(ohw)
            .zip(arg.par_chunks_mut(ohw))
            .enumerate()
            .for_each(|(pl, (y, a))| pool_plane(&g, &xd[pl * hw..(pl + 1) * hw], y, a));
    }
    let s = x.shape();
    let out = Tensor::from_vec(&[s[0], s[1], g.oh, g.ow], y);
    let x_shape = s.to_vec();
    record(Op::MaxPool2d, out, &[x], move |_| {
        Box::new(move |gy| {
            let mut gx = vec![0.0f32; g.planes * hw];
            let gd = gy.data();
            if hw > 0 && ohw > 0 {
                gx.par_chunks_mut(hw).enumerate().for_each(|(pl, gx)| {
                    let range = pl * ohw..(pl + 1) * ohw;
                    for (&a, &v) in arg[range.clone()].iter().zip(&gd[range]) {
                        gx[a as usize] += v;
                    }
                });
            }
            vec![Some(Tensor::from_vec(&x_shape, gx))]
        })
    })
}

pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(23);
    // Distinct values 0.05 apart: no ties, and a finite-difference step of 1e-2 never
    // changes which element is the maximum.
    let mut case = |name: &str, shape: &[usize], k, s, p| {
        Case::new(
            Op::MaxPool2d,
            name,
            vec![distinct(&mut r, shape, 0.05)],
            move |x| max_pool2d(&x[0], k, s, p),
        )
    };
    vec![
        case("2x2 stride 2", &[1, 2, 4, 4], (2, 2), (2, 2), (0, 0)),
        case(
            "3x3 stride 2 pad 1 (ResNet), odd",
            &[2, 2, 7, 7],
            (3, 3),
            (2, 2),
            (1, 1),
        ),
        case(
            "3x3 stride 2 pad 1, even",
            &[1, 1, 6, 8],
            (3, 3),
            (2, 2),
            (1, 1),
        ),
        case(
            "3x3 stride 1 overlapping",
            &[1, 2, 5, 5],
            (3, 3),
            (1, 1),
            (0, 0),
        ),
        case(
            "2x3 stride (1,2) pad (1,1)",
            &[1, 1, 5, 6],
            (2, 3),
            (1, 2),
            (1, 1),
        ),
        case("kernel 1 stride 2", &[1, 2, 5, 5], (1, 1), (2, 2), (0, 0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_pool_by_hand() {
        // 4x4 input 0..15, 3x3 s2 p1 → 2x2: windows rows {0,1}/{1,2,3} × cols {0,1}/{1,2,3}.
        let x = Tensor::from_vec(&[1, 1, 4, 4], (0..16).map(|v| v as f32).collect());
        let y = max_pool2d(&x, (3, 3), (2, 2), (1, 1));
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    }

    #[test]
    fn ties_go_to_the_first_maximum() {
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![3.0, 3.0, 3.0, 3.0]);
        let id = crate::ParamId::fresh();
        let xt = x.track(id);
        let y = max_pool2d(&xt, (2, 2), (1, 1), (0, 0));
        let g = crate::backward(&y.sum_all());
        assert_eq!(g.get(id).unwrap().to_vec(), vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn negative_inputs_never_pick_the_padding() {
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![-5.0, -4.0, -3.0, -2.0]);
        let y = max_pool2d(&x, (3, 3), (2, 2), (1, 1));
        assert_eq!(y.to_vec(), vec![-2.0]);
    }

    #[test]
    #[should_panic(
        expected = "max_pool2d: input [1, 1, 4, 4] with kernel (3, 3), stride (1, 1), padding (2, 2)"
    )]
    fn too_much_padding_is_an_error() {
        max_pool2d(&Tensor::zeros(&[1, 1, 4, 4]), (3, 3), (1, 1), (2, 2));
    }
}
