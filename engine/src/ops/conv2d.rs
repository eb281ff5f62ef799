//! 2-D convolution (cross-correlation, as in PyTorch) with stride, padding, dilation,
//! groups and an optional bias, computed as im2col + GEMM.
//!
//! Notation: input `x: (N, C, H, W)`, weight `w: (O, C/G, KH, KW)`, output
//! `y: (N, O, OH, OW)` with `OH = ⌊(H + 2·ph − dh·(KH−1) − 1) / sh⌋ + 1` (same for W).
//! `K = C/G·KH·KW` is the length of one receptive field, `P = OH·OW` the number of output
//! pixels. For one sample `n` and one group `g`, the weight is a row-major `(O/G, K)`
//! matrix `W_g`, and the convolution is the matrix product
//!
//! ```text
//! y[n, g] (O/G, P) = W_g (O/G, K) · cols (K, P)
//! ```
//!
//! where column `p` of `cols` holds the `K` input values under output pixel `p`'s window
//! (zero in the padding). Building `cols` is **im2col** (`im2col.rs`); its adjoint, adding
//! a `(K, P)` matrix back onto the image, is **col2im**.
//!
//! **Tiles.** `cols` for a whole image is `K·P` floats (the stem conv at 800 px: 147 ×
//! 160 000 = 94 MB), so it is built for one tile of output pixels at a time: the column
//! buffer holds `K·T` floats for a tile of `T` pixels, whatever the image size.
//!
//! **1x1, stride 1, no padding.** Then `cols` *is* `x[n, g]` seen as a `(C/G, H·W)`
//! matrix, and the GEMM reads it in place: no im2col, no buffer.
//!
//! **Backward**, with `G = ∂L/∂y`:
//! - input: `∂cols = W_gᵀ · G[n, g]`, `(K, O/G)·(O/G, T)`, then col2im adds `∂cols`
//!   back onto `∂x` (several windows overlap on one pixel, so this is a sum);
//! - weight: `∂W_g = Σ_n G[n, g] · colsᵀ`, `(O/G, T)·(T, K)` per tile, summed over tiles
//!   and samples. The columns are rebuilt from the saved input instead of being kept
//!   from the forward pass (which would cost `K/O`·the output size per conv);
//! - bias: `∂b[o] = Σ_{n, p} G[n, o, p]`.
//!
//! Transposes are never copied: `W_gᵀ` and `colsᵀ` are the same buffers read with
//! swapped strides (see [`crate::gemm`]). The gradient of an input whose `needs` flag is
//! off (the image fed to the stem) is not computed at all.
//!
//! **Threads.** Forward: one task per (sample, group). Backward: one task per (sample,
//! group, block of input channels); each task owns the rows of `∂x` of its channels, and
//! its share of `∂W` goes into a private buffer that is summed over samples in sample
//! order afterwards. Task boundaries depend only on the shapes, so the result is the
//! same for any thread count.

use rayon::prelude::*;

use crate::gemm::sgemm;
use crate::gradcheck::{randn, Case};
use crate::op::Op;
use crate::rng::Rng;
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

/// Output length along one axis (PyTorch's formula), or `None` when the dilated kernel
/// does not fit in the padded input.
pub fn conv_output_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    (len + 2 * p >= span).then(|| (len + 2 * p - span) / s + 1)
}

/// Output pixels per im2col tile: the column buffer is `K × TILE` floats.
pub const TILE: usize = 512;

/// Every size the kernels need, checked once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
    /// Output pixels per tile.
    pub tile: usize,
}

impl Geom {
    pub(crate) fn new(x: &[usize], w: &[usize], opts: Conv2dOptions) -> Geom {
        let fail = |why: String| -> ! {
            panic!(
                "conv2d: input {} and weight {} with {opts:?}: {why}",
                ShapeFmt(x),
                ShapeFmt(w)
            )
        };
        if x.len() != 4 {
            fail("the input must be (N, C, H, W)".into());
        }
        if w.len() != 4 {
            fail("the weight must be (O, C/groups, KH, KW)".into());
        }
        let Conv2dOptions {
            stride: (sh, sw),
            padding: (ph, pw),
            dilation: (dh, dw),
            groups,
        } = opts;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || groups == 0 {
            fail("stride, dilation and groups must be at least 1".into());
        }
        let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
        if kh == 0 || kw == 0 {
            fail("the kernel must be at least 1x1".into());
        }
        if c % groups != 0 || o % groups != 0 {
            fail(format!(
                "input channels {c} and output channels {o} must both be divisible by groups"
            ));
        }
        if cg != c / groups {
            fail(format!(
                "the weight expects {cg} channels per group, the input has {c}/{groups} = {}",
                c / groups
            ));
        }
        let (Some(oh), Some(ow)) = (
            conv_output_len(h, kh, sh, ph, dh),
            conv_output_len(wd, kw, sw, pw, dw),
        ) else {
            fail("the dilated kernel is larger than the padded input".into());
        };
        Geom {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            groups,
            oh,
            ow,
            tile: (oh * ow).clamp(1, TILE),
        }
    }

    /// Channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Kernel taps `KH·KW`.
    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }
    /// Receptive field length `K = C/G·KH·KW` (a row of the weight matrix).
    pub fn k(&self) -> usize {
        self.cg() * self.taps()
    }
    /// Output pixels per plane.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Input pixels per plane.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    /// 1x1, stride 1, no padding: the input plane is already the column matrix.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }
}

/// Visits the pieces of a column buffer for a tile of output pixels `[p0, p0 + t)` and
/// the input channels `0..channels` of one plane stack.
///
/// Row `r = (c·KH + ky)·KW + kx` of the buffer holds, for each pixel of the tile, the
/// input value under tap `(ky, kx)` of channel `c`. A tile spans one or more output
/// rows; for each (buffer row, output row) the callback gets a [`Segment`].
fn for_each_segment(g: &Geom, channels: usize, p0: usize, t: usize, mut f: impl FnMut(Segment)) {
    for c in 0..channels {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                // Input column of output column ox: ix = ox·sw + off.
                let off = (kx * g.dw) as isize - g.pw as isize;
                let mut p = p0;
                while p < p0 + t {
                    let (oy, ox0) = (p / g.ow, p % g.ow);
                    let ox1 = g.ow.min(ox0 + (p0 + t - p));
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    let iy = (iy >= 0 && (iy as usize) < g.h).then_some(iy as usize);
                    // Output columns whose input column is inside the image: 0 ≤ ox·sw + off < W.
                    let lo = if off >= 0 {
                        ox0
                    } else {
                        ox0.max(((-off) as usize).div_ceil(g.sw)).min(ox1)
                    };
                    let lim = g.w as isize - off; // ox·sw < lim
                    let hi = if lim <= 0 {
                        lo
                    } else {
                        ox1.min((lim as usize).div_ceil(g.sw)).max(lo)
                    };
                    f(Segment {
                        c,
                        at: row * t + (p - p0),
                        ox0,
                        ox1,
                        iy,
                        lo,
                        hi,
                        off,
                    });
                    p += ox1 - ox0;
                }
            }
        }
    }
}

/// One run of a column-buffer row that maps to one output row.
struct Segment {
    /// Input channel (within the stack passed in).
    c: usize,
    /// Buffer index of output column `ox0`.
    at: usize,
    /// Output columns `[ox0, ox1)`.
    ox0: usize,
    ox1: usize,
    /// Input row, or `None` when the tap lands in the vertical padding.
    iy: Option<usize>,
    /// Output columns `[lo, hi)` read inside the image; the rest is horizontal padding.
    lo: usize,
    hi: usize,
    /// `ix = ox·sw + off`.
    off: isize,
}

/// Fills `cols` (`channels·KH·KW` rows of `t` pixels) from the planes `x`
/// (`channels` planes of `H·W`) for the output pixels `[p0, p0 + t)`.
pub(crate) fn im2col(g: &Geom, x: &[f32], channels: usize, p0: usize, t: usize, cols: &mut [f32]) {
    let (hw, w, sw) = (g.hw(), g.w, g.sw);
    for_each_segment(g, channels, p0, t, |s| {
        let dst = &mut cols[s.at..s.at + (s.ox1 - s.ox0)];
        let Some(iy) = s.iy else {
            dst.fill(0.0);
            return;
        };
        let src = &x[s.c * hw + iy * w..s.c * hw + (iy + 1) * w];
        let (a, b) = (s.lo - s.ox0, s.hi - s.ox0);
        dst[..a].fill(0.0);
        dst[b..].fill(0.0);
        let ix0 = (s.lo * sw) as isize + s.off;
        if s.hi > s.lo {
            let ix0 = ix0 as usize;
            if sw == 1 {
                dst[a..b].copy_from_slice(&src[ix0..ix0 + (b - a)]);
            } else {
                for (j, d) in dst[a..b].iter_mut().enumerate() {
                    *d = src[ix0 + j * sw];
                }
            }
        }
    });
}

/// Adds `cols` (as laid out by [`im2col`]) back onto the planes `x`: the adjoint of
/// im2col.
pub(crate) fn col2im(g: &Geom, cols: &[f32], channels: usize, p0: usize, t: usize, x: &mut [f32]) {
    let (hw, w, sw) = (g.hw(), g.w, g.sw);
    for_each_segment(g, channels, p0, t, |s| {
        let Some(iy) = s.iy else { return };
        if s.hi <= s.lo {
            return;
        }
        let src = &cols[s.at + (s.lo - s.ox0)..s.at + (s.hi - s.ox0)];
        let dst = &mut x[s.c * hw + iy * w..s.c * hw + (iy + 1) * w];
        let ix0 = ((s.lo * sw) as isize + s.off) as usize;
        for (j, v) in src.iter().enumerate() {
            dst[ix0 + j * sw] += *v;
        }
    });
}

/// `y = conv(x, w) + b` into `out` (`N·O·P` floats).
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (cg, og, k, p, hw) = (g.cg(), g.og(), g.k(), g.p(), g.hw());
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(og * p).enumerate().for_each(|(ng, y)| {
        let (n, grp) = (ng / g.groups, ng % g.groups);
        let xs = &x[(n * g.c + grp * cg) * hw..(n * g.c + (grp + 1) * cg) * hw];
        let wg = &w[grp * og * k..(grp + 1) * og * k];
        if g.pointwise() {
            // (O/G, C/G) · (C/G, H·W) -> (O/G, H·W): the planes are the columns.
            sgemm(
                og, k, p, 1.0, wg, k as isize, 1, xs, p as isize, 1, 0.0, y, p as isize, 1,
            );
        } else if g.tile >= p {
            let mut cols = vec![0.0f32; k * p];
            im2col(g, xs, cg, 0, p, &mut cols);
            // (O/G, K) · (K, P) -> (O/G, P)
            sgemm(
                og, k, p, 1.0, wg, k as isize, 1, &cols, p as isize, 1, 0.0, y, p as isize, 1,
            );
        } else {
            let t = g.tile;
            let mut cols = vec![0.0f32; k * t];
            let mut tile_out = vec![0.0f32; og * t];
            for p0 in (0..p).step_by(t) {
                let tn = t.min(p - p0);
                im2col(g, xs, cg, p0, tn, &mut cols);
                // (O/G, K) · (K, tile) -> (O/G, tile)
                sgemm(
                    og,
                    k,
                    tn,
                    1.0,
                    wg,
                    k as isize,
                    1,
                    &cols,
                    tn as isize,
                    1,
                    0.0,
                    &mut tile_out,
                    tn as isize,
                    1,
                );
                for o in 0..og {
                    y[o * p + p0..o * p + p0 + tn].copy_from_slice(&tile_out[o * tn..(o + 1) * tn]);
                }
            }
        }
        if let Some(b) = bias {
            for (o, row) in y.chunks_mut(p).enumerate() {
                let bo = b[grp * og + o];
                row.iter_mut().for_each(|v| *v += bo);
            }
        }
    });
}

/// Input-channel blocks per (sample, group) in the backward pass: enough tasks for a
/// few threads even at batch 1-2, never more blocks than channels. Depends on the
/// shapes only.
fn channel_blocks(g: &Geom) -> usize {
    const MIN_TASKS: usize = 4;
    MIN_TASKS.div_ceil(g.n * g.groups).clamp(1, g.cg())
}

/// Gradients of the input and of the weight (each only if asked for).
pub(crate) fn backward(
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: Option<&mut [f32]>,
) {
    let (cg, og, k, p, hw, taps) = (g.cg(), g.og(), g.k(), g.p(), g.hw(), g.taps());
    let blocks = channel_blocks(g);
    let per_block = cg.div_ceil(blocks);
    let blocks = cg.div_ceil(per_block);
    let tasks = g.n * g.groups * blocks;
    // Channels [c0, c1) of block b.
    let block_range = |b: usize| (b * per_block, ((b + 1) * per_block).min(cg));
    let want_w = gw.is_some();

    // One task: (sample n, group grp, channel block b). Returns its share of ∂W,
    // (O/G, cb·KH·KW), when the weight gradient is wanted.
    let run = |task: usize, gx_blk: Option<&mut [f32]>| -> Option<Vec<f32>> {
        let b = task % blocks;
        let ng = task / blocks;
        let (n, grp) = (ng / g.groups, ng % g.groups);
        let (c0, c1) = block_range(b);
        let cb = c1 - c0;
        let kb = cb * taps;
        let gy_ng = &gy[(n * g.o + grp * og) * p..(n * g.o + (grp + 1) * og) * p];
        let x_blk = x.map(|x| &x[(n * g.c + grp * cg + c0) * hw..(n * g.c + grp * cg + c1) * hw]);
        // W_g restricted to the block's columns: element (o, r) at w_blk[o·K + r].
        let w_blk = w.map(|w| &w[grp * og * k + c0 * taps..(grp + 1) * og * k]);
        let mut gw_part = want_w.then(|| vec![0.0f32; og * kb]);
        if g.pointwise() {
            if let (Some(gx), Some(w_blk)) = (gx_blk, w_blk) {
                // (cb, O/G) · (O/G, P) -> (cb, P), written straight into ∂x.
                sgemm(
                    cb, og, p, 1.0, w_blk, 1, k as isize, gy_ng, p as isize, 1, 0.0, gx,
                    p as isize, 1,
                );
            }
            if let (Some(part), Some(x_blk)) = (gw_part.as_mut(), x_blk) {
                // (O/G, P) · (P, cb) -> (O/G, cb)
                sgemm(
                    og,
                    p,
                    cb,
                    1.0,
                    gy_ng,
                    p as isize,
                    1,
                    x_blk,
                    1,
                    p as isize,
                    0.0,
                    part,
                    cb as isize,
                    1,
                );
            }
            return gw_part;
        }
        let t = g.tile;
        let mut cols = if want_w {
            vec![0.0f32; kb * t]
        } else {
            Vec::new()
        };
        let mut dcols = if gx_blk.is_some() {
            vec![0.0f32; kb * t]
        } else {
            Vec::new()
        };
        let mut gx_blk = gx_blk;
        if let Some(gx) = gx_blk.as_deref_mut() {
            gx.fill(0.0);
        }
        for p0 in (0..p).step_by(t) {
            let tn = t.min(p - p0);
            let gy_tile = &gy_ng[p0..];
            if let (Some(part), Some(x_blk)) = (gw_part.as_mut(), x_blk) {
                im2col(g, x_blk, cb, p0, tn, &mut cols);
                // (O/G, tile) · (tile, cb·KH·KW) -> (O/G, cb·KH·KW), summed over tiles
                let beta = if p0 == 0 { 0.0 } else { 1.0 };
                sgemm(
                    og,
                    tn,
                    kb,
                    1.0,
                    gy_tile,
                    p as isize,
                    1,
                    &cols,
                    1,
                    tn as isize,
                    beta,
                    part,
                    kb as isize,
                    1,
                );
            }
            if let (Some(gx), Some(w_blk)) = (gx_blk.as_deref_mut(), w_blk) {
                // (cb·KH·KW, O/G) · (O/G, tile) -> (cb·KH·KW, tile)
                sgemm(
                    kb,
                    og,
                    tn,
                    1.0,
                    w_blk,
                    1,
                    k as isize,
                    gy_tile,
                    p as isize,
                    1,
                    0.0,
                    &mut dcols,
                    tn as isize,
                    1,
                );
                col2im(g, &dcols, cb, p0, tn, gx);
            }
        }
        gw_part
    };

    let parts: Vec<Option<Vec<f32>>> = match gx {
        Some(gx) => {
            // ∂x of task (n, grp, b) is the contiguous run of its channels' planes.
            let mut slices: Vec<&mut [f32]> = Vec::with_capacity(tasks);
            let mut rest = gx;
            for task in 0..tasks {
                let (c0, c1) = block_range(task % blocks);
                let (head, tail) = rest.split_at_mut((c1 - c0) * hw);
                slices.push(head);
                rest = tail;
            }
            slices
                .into_par_iter()
                .enumerate()
                .map(|(task, s)| run(task, Some(s)))
                .collect()
        }
        None => (0..tasks)
            .into_par_iter()
            .map(|task| run(task, None))
            .collect(),
    };

    if let Some(gw) = gw {
        // ∂W_g[o, c0·taps..c1·taps] = Σ_n part(n, g, b)[o, ..], summed in sample order.
        gw.par_chunks_mut(k).enumerate().for_each(|(oi, row)| {
            let (grp, o) = (oi / og, oi % og);
            for b in 0..blocks {
                let (c0, c1) = block_range(b);
                let kb = (c1 - c0) * taps;
                let dst = &mut row[c0 * taps..c1 * taps];
                for n in 0..g.n {
                    let part = parts[(n * g.groups + grp) * blocks + b]
                        .as_ref()
                        .expect("weight gradient part");
                    let src = &part[o * kb..(o + 1) * kb];
                    if n == 0 {
                        dst.copy_from_slice(src);
                    } else {
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    }
                }
            }
            if g.n == 0 {
                row.fill(0.0);
            }
        });
    }
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
/// use focal_engine::ops::conv2d::{conv2d, Conv2dOptions};
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
            let mut gx = need_x.then(|| vec![0.0f32; x_shape.iter().product()]);
            let mut gw = need_w.then(|| vec![0.0f32; w_shape.iter().product()]);
            backward(
                &g,
                xs.as_ref().map(|t| t.data()),
                ws.as_ref().map(|t| t.data()),
                gy.data(),
                gx.as_deref_mut(),
                gw.as_deref_mut(),
            );
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

pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(22);
    let mut case = |name: &str, x: &[usize], w: &[usize], bias: bool, opts: Conv2dOptions| {
        let mut inputs = vec![randn(&mut r, x), randn(&mut r, w)];
        if bias {
            inputs.push(randn(&mut r, &[w[0]]));
        }
        Case::new(Op::Conv2d, name, inputs, move |t| {
            conv2d(&t[0], &t[1], t.get(2), opts)
        })
    };
    let d = Conv2dOptions::default();
    let mut v = vec![
        case(
            "3x3 s1 p1 + bias, batch 2",
            &[2, 3, 5, 5],
            &[4, 3, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
        case(
            "3x3 no padding, no bias",
            &[1, 2, 6, 5],
            &[3, 2, 3, 3],
            false,
            d,
        ),
        case(
            "3x3 stride 2 pad 1, odd input",
            &[1, 2, 7, 7],
            &[3, 2, 3, 3],
            true,
            Conv2dOptions::sp(2, 1),
        ),
        case(
            "2x3 kernel, stride (2,1), pad (0,2)",
            &[1, 2, 5, 4],
            &[2, 2, 2, 3],
            true,
            Conv2dOptions {
                stride: (2, 1),
                padding: (0, 2),
                ..d
            },
        ),
        case(
            "3x3 dilation 2 pad 2",
            &[1, 2, 7, 6],
            &[2, 2, 3, 3],
            true,
            Conv2dOptions::sp(1, 2).with_dilation(2),
        ),
        case(
            "dilation (2,1) stride 2",
            &[1, 1, 8, 7],
            &[2, 1, 3, 2],
            false,
            Conv2dOptions {
                stride: (2, 2),
                dilation: (2, 1),
                ..d
            },
        ),
        case(
            "groups 2 (4 -> 6)",
            &[2, 4, 5, 5],
            &[6, 2, 3, 3],
            true,
            Conv2dOptions::sp(1, 1).with_groups(2),
        ),
        case(
            "depthwise groups = C = 3",
            &[1, 3, 5, 5],
            &[3, 1, 3, 3],
            false,
            Conv2dOptions::sp(1, 1).with_groups(3),
        ),
        case(
            "1x1 s1 p0 (no im2col)",
            &[2, 3, 4, 3],
            &[5, 3, 1, 1],
            true,
            d,
        ),
        case(
            "1x1 s1 p0 groups 2",
            &[1, 4, 3, 3],
            &[2, 2, 1, 1],
            false,
            d.with_groups(2),
        ),
        case(
            "1x1 stride 2 (downsample)",
            &[1, 3, 5, 5],
            &[4, 3, 1, 1],
            false,
            d.with_stride(2),
        ),
        case(
            "7x7 stride 2 pad 3 (stem)",
            &[1, 2, 9, 8],
            &[2, 2, 7, 7],
            false,
            Conv2dOptions::sp(2, 3),
        ),
        case(
            "3x3 padding 2 > 1",
            &[1, 2, 4, 4],
            &[2, 2, 3, 3],
            true,
            d.with_padding(2),
        ),
        case(
            "5 channels, batch 3 (channel blocks)",
            &[3, 5, 4, 4],
            &[2, 5, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
        // 24·24 = 576 output pixels > TILE: several column tiles.
        case(
            "several tiles 24x24 output",
            &[1, 1, 24, 24],
            &[2, 1, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
    ];
    v.push(
        case(
            "weight only (input constant)",
            &[1, 3, 5, 5],
            &[2, 3, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        )
        .wrt(&[false, true, true]),
    );
    v.push(
        case(
            "input only",
            &[1, 2, 5, 5],
            &[2, 2, 3, 3],
            false,
            Conv2dOptions::sp(2, 1),
        )
        .wrt(&[true, false]),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the tile forced smaller than a row, and to odd sizes, forward and backward
    /// still match the naive definitions.
    #[test]
    fn tiles_of_any_size_give_the_same_result() {
        let mut r = Rng::new(5);
        for (xs, ws, opts) in [
            ([2, 3, 7, 9], [4, 3, 3, 3], Conv2dOptions::sp(1, 1)),
            (
                [1, 2, 9, 8],
                [3, 2, 3, 2],
                Conv2dOptions {
                    stride: (2, 3),
                    padding: (2, 1),
                    dilation: (1, 2),
                    groups: 1,
                },
            ),
            (
                [1, 4, 6, 6],
                [4, 2, 3, 3],
                Conv2dOptions::sp(2, 1).with_groups(2),
            ),
            // ⌈3/2⌉ = 2 padding columns: a 1-pixel tile can lie wholly in the padding.
            ([1, 2, 11, 9], [2, 2, 7, 7], Conv2dOptions::sp(2, 3)),
            ([2, 3, 5, 7], [2, 3, 1, 1], Conv2dOptions::default()),
        ] {
            let x = randn(&mut r, &xs);
            let w = randn(&mut r, &ws);
            let gref = Geom::new(&xs, &ws, opts);
            let want_y = crate::naive::conv2d(&x, &w, None, opts);
            let gy = randn(&mut r, want_y.shape());
            let want_gx = crate::naive::conv2d_input_grad(&xs, &w, &gy, opts);
            let want_gw = crate::naive::conv2d_weight_grad(&x, &ws, &gy, opts);
            for tile in [1, 3, 7, 13, 64] {
                let g = Geom { tile, ..gref };
                let mut y = vec![0.0; want_y.numel()];
                forward(&g, x.data(), w.data(), None, &mut y);
                let mut gx = vec![0.0; x.numel()];
                let mut gw = vec![0.0; w.numel()];
                backward(
                    &g,
                    Some(x.data()),
                    Some(w.data()),
                    gy.data(),
                    Some(&mut gx),
                    Some(&mut gw),
                );
                let close = |a: &[f32], b: &[f32]| {
                    a.iter()
                        .zip(b)
                        .all(|(a, b)| (a - b).abs() < 1e-4 * (1.0 + b.abs()))
                };
                assert!(
                    close(&y, want_y.data()),
                    "forward, tile {tile}, {xs:?} {ws:?}"
                );
                assert!(
                    close(&gx, want_gx.data()),
                    "input grad, tile {tile}, {xs:?} {ws:?}"
                );
                assert!(
                    close(&gw, want_gw.data()),
                    "weight grad, tile {tile}, {xs:?} {ws:?}"
                );
            }
        }
    }

    #[test]
    fn output_size_follows_pytorch() {
        // ResNet stem on 512 px: (512 + 6 − 6 − 1)/2 + 1 = 256.
        assert_eq!(conv_output_len(512, 7, 2, 3, 1), Some(256));
        // 3x3 s2 p1 on an odd size: (7 + 2 − 2 − 1)/2 + 1 = 4.
        assert_eq!(conv_output_len(7, 3, 2, 1, 1), Some(4));
        // dilation 2: span 5, (6 + 0 − 5)/1 + 1 = 2
        assert_eq!(conv_output_len(6, 3, 1, 0, 2), Some(2));
        assert_eq!(conv_output_len(2, 5, 1, 1, 1), None);
    }

    #[test]
    #[should_panic(expected = "conv2d: input [1, 3, 5, 5] and weight [4, 2, 3, 3]")]
    fn channel_mismatch_names_the_shapes() {
        conv2d(
            &Tensor::zeros(&[1, 3, 5, 5]),
            &Tensor::zeros(&[4, 2, 3, 3]),
            None,
            Conv2dOptions::default(),
        );
    }
}
