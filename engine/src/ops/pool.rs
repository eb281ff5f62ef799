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
use crate::ops::simd_level::Level;
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
///
/// The columns whose windows lie inside the image (all but one or two at each edge) are
/// done a row of outputs at a time, tap by tap: for each input row and kernel column of
/// the window, every output of the row compares one value. The outputs are independent
/// lanes (no chain of compares through one running maximum, no branch on which value
/// wins), and each still sees its window in row-major order, so ties and NaNs resolve as
/// in [`pool_window`], which does the edge columns. Compiled also for AVX2 and AVX-512
/// (`level`); only compares and selects, so every build gives the same result.
fn pool_plane(level: Level, g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
        pool_plane_body(g, x, y, arg)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
        pool_plane_body(g, x, y, arg)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level` names Avx512 only when the CPU has avx512f (detected at run
        // time), so every instruction of this build exists.
        Level::Avx512 => unsafe { avx512(g, x, y, arg) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level` names Avx2 only when the CPU has avx2 (detected).
        Level::Avx2 => unsafe { avx2(g, x, y, arg) },
        _ => pool_plane_body(g, x, y, arg),
    }
}

/// [`pool_plane`]'s loops, compiled into each build.
#[inline(always)]
fn pool_plane_body(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    // Outputs ox in [lo, hi) have x0 = ox·sw − pw ≥ 0 and x0 + kw ≤ w.
    let lo = g.pw.div_ceil(g.sw).min(g.ow);
    let hi = if g.w + g.pw >= g.kw {
        ((g.w + g.pw - g.kw) / g.sw + 1).clamp(lo, g.ow)
    } else {
        lo
    };
    let mut best = vec![f32::NEG_INFINITY; hi - lo];
    let mut at = vec![0u32; hi - lo];
    for oy in 0..g.oh {
        let (y0, y1) = PoolGeom::window(oy, g.sh, g.ph, g.kh, g.h);
        for ox in (0..lo).chain(hi..g.ow) {
            let (v, a) = pool_window(g, x, (y0, y1), ox);
            y[oy * g.ow + ox] = v;
            arg[oy * g.ow + ox] = a;
        }
        if lo == hi {
            continue;
        }
        // The first element of each window (the initial `at`, as in `pool_window`).
        best.fill(f32::NEG_INFINITY);
        for (j, a) in at.iter_mut().enumerate() {
            *a = (y0 * g.w + (lo + j) * g.sw - g.pw) as u32;
        }
        for iy in y0..y1 {
            for kx in 0..g.kw {
                // Input index of output lo + j's tap: first + j·sw.
                let first = iy * g.w + lo * g.sw - g.pw + kx;
                match g.sw {
                    1 => tap_row::<1>(x, first, &mut best, &mut at),
                    2 => tap_row::<2>(x, first, &mut best, &mut at),
                    _ => tap_row_strided(x, first, g.sw, &mut best, &mut at),
                }
            }
        }
        y[oy * g.ow + lo..oy * g.ow + hi].copy_from_slice(&best);
        arg[oy * g.ow + lo..oy * g.ow + hi].copy_from_slice(&at);
    }
}

/// One tap of a row of windows with stride `S` (a constant, so that the loads vectorise):
/// output j compares `x[first + j·S]` with its running maximum.
#[inline(always)]
fn tap_row<const S: usize>(x: &[f32], first: usize, best: &mut [f32], at: &mut [u32]) {
    let n = best.len();
    let xs = x[first..first + (n - 1) * S + 1].chunks(S).map(|c| c[0]);
    for (j, ((b, a), v)) in best.iter_mut().zip(at.iter_mut()).zip(xs).enumerate() {
        // `|`, not `||`: no branch.
        let take = (v > *b) | v.is_nan();
        *b = if take { v } else { *b };
        *a = if take { (first + j * S) as u32 } else { *a };
    }
}

/// [`tap_row`] for any other stride.
#[inline(always)]
fn tap_row_strided(x: &[f32], first: usize, s: usize, best: &mut [f32], at: &mut [u32]) {
    for (j, (b, a)) in best.iter_mut().zip(at.iter_mut()).enumerate() {
        let i = first + j * s;
        let v = x[i];
        let take = (v > *b) | v.is_nan();
        *b = if take { v } else { *b };
        *a = if take { i as u32 } else { *a };
    }
}

/// The max of the window of output (rows `y0..y1`, column `ox`) and where it is: the
/// first in row-major window order on ties, the last NaN if there is one.
#[inline(always)]
fn pool_window(g: &PoolGeom, x: &[f32], (y0, y1): (usize, usize), ox: usize) -> (f32, u32) {
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
    (best, at as u32)
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
    let level = Level::active();
    if ohw > 0 {
        y.par_chunks_mut(ohw)
            .zip(arg.par_chunks_mut(ohw))
            .enumerate()
            .for_each(|(pl, (y, a))| pool_plane(level, &g, &xd[pl * hw..(pl + 1) * hw], y, a));
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

    /// The row-at-a-time interior, in every build, picks the same value and position as
    /// the window-by-window scan: ties (values on a coarse grid), NaNs, −∞, strides 1–3.
    #[test]
    fn every_build_matches_the_window_scan() {
        let mut r = Rng::new(4);
        let levels: Vec<Level> = crate::gemm::Isa::ALL
            .into_iter()
            .filter(|i| i.available())
            .map(Level::of)
            .collect();
        for (h, w, k, s, p) in [
            (9, 13, (3, 3), (2, 2), (1, 1)),
            (8, 8, (3, 3), (1, 1), (1, 1)),
            (7, 11, (2, 3), (3, 3), (1, 1)),
            (6, 20, (3, 2), (2, 1), (0, 1)),
            (5, 5, (1, 1), (2, 2), (0, 0)),
        ] {
            let g = PoolGeom::new(&[1, 1, h, w], k, s, p);
            let mut x: Vec<f32> = (0..h * w).map(|_| (r.below(5) as f32) - 2.0).collect();
            x[3] = f32::NAN;
            x[h * w / 2] = f32::NEG_INFINITY;
            x[h * w - 2] = f32::NAN;
            let n = g.oh * g.ow;
            let mut want = (vec![0.0f32; n], vec![0u32; n]);
            for oy in 0..g.oh {
                let rows = PoolGeom::window(oy, g.sh, g.ph, g.kh, g.h);
                for ox in 0..g.ow {
                    let (v, a) = pool_window(&g, &x, rows, ox);
                    want.0[oy * g.ow + ox] = v;
                    want.1[oy * g.ow + ox] = a;
                }
            }
            for &level in &levels {
                let (mut y, mut arg) = (vec![0.0f32; n], vec![0u32; n]);
                pool_plane(level, &g, &x, &mut y, &mut arg);
                assert_eq!(arg, want.1, "{level:?}, {h}x{w} {k:?} {s:?} {p:?}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&want.0), "{level:?}");
            }
        }
    }

    #[test]
    #[should_panic(
        expected = "max_pool2d: input [1, 1, 4, 4] with kernel (3, 3), stride (1, 1), padding (2, 2)"
    )]
    fn too_much_padding_is_an_error() {
        max_pool2d(&Tensor::zeros(&[1, 1, 4, 4]), (3, 3), (1, 1), (2, 2));
    }
}
