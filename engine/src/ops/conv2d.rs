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
//! **Small planes.** When `P` is under `conv2d_batched::SMALL_PLANE` pixels (deep
//! ResNet stages and the top FPN levels on small images), the per-sample GEMMs below
//! are too thin to run well; `conv2d_batched.rs` lays the columns of all samples side
//! by side and multiplies once for the whole batch. Everything below is the per-sample
//! path for larger planes.
//!
//! **Threads.** rayon tasks, each running single-threaded GEMMs (on 2 cores this measured
//! as fast or faster than matrixmultiply's own threading, and it composes with the
//! rayon-parallel elementwise kernels without oversubscribing the cores):
//! - forward: one task per (sample, group, tile of output pixels), each writing its own
//!   piece of the output;
//! - backward, weight: one task per (sample, group, block of input channels, run of
//!   tiles), each summing into a private buffer; the buffers are added in (sample, run)
//!   order;
//! - backward, input: one task per (sample, group, block of input channels), each owning
//!   the planes of `∂x` of its channels.
//!
//! Every split is computed from the shapes (the constants [`TILE`], `MIN_TASKS`,
//! `WEIGHT_GRAD_COLS`), never from the thread count, so the results are bitwise the same
//! on any number of threads (`engine/tests/determinism.rs`).

use std::cell::Cell;
use std::thread::LocalKey;

use rayon::prelude::*;

use super::conv2d_batched as batched;
use super::im2col::{col2im, im2col};
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
/// does not fit in the padded input (or a size is 0).
pub fn conv_output_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let span = d * (k - 1) + 1;
    (len + 2 * p >= span).then(|| (len + 2 * p - span) / s + 1)
}

/// Output pixels per im2col tile. The column buffer is `K × TILE` floats (for ResNet's
/// 512-channel 3x3 convs 4608 × 512 × 4 B = 9.4 MB, whatever the image size), and each
/// tile's GEMM result is `(rows, TILE)`.
///
/// Chosen with `focal bench conv --tiles 128,256,512,1024,2048` (all tile sizes timed
/// interleaved, 2 threads, batch 2 at 512 px, on the shared 2-core machine), forward /
/// backward in ms:
///
/// | tile | stem 7x7 s2 | layer1 3x3 64 @128² | head 3x3 256 @64² |
/// |------|-------------|---------------------|-------------------|
/// | 128  | 122 / 86    | 92 / 163            | 150 / 304         |
/// | 256  | 118 / 92    | 80 / 164            | 159 / 293         |
/// | 512  | 122 / 78    | 106 / 152           | 157 / 282         |
/// | 1024 | 123 / 88    | 98 / 174            | 152 / 354         |
/// | 2048 | 130 / 96    | 116 / 184           | 180 / 442         |
///
/// Forward times from 128 to 1024 are within the run-to-run noise of that machine;
/// 512 gave the fastest backward on all three, and 2048 was the slowest everywhere
/// (backward 21–57% slower than 512): beyond ~1024 columns the packed GEMM operands and
/// the result no longer fit in the 2 MB L2 cache together.
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

thread_local! {
    /// Per-thread scratch for column tiles and GEMM outputs, kept between calls so the
    /// hot path allocates nothing (it grows to the largest tile seen, `K·T + O/G·T`).
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch buffer. The contents are
/// arbitrary: every user overwrites what it reads.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&SCRATCH, len, f)
}

/// Runs `f` on `len` floats of the thread-local buffer `key`, grown as needed and kept
/// for the next call, so a hot path allocates nothing. (A nested call on the same key,
/// which does not happen today, would find the buffer taken and simply allocate its
/// own.)
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

/// Where a forward task writes its `(O/G, tile)` block.
enum Dest<'a> {
    /// The tile is the whole plane: the task owns the contiguous `(O/G, P)` output of
    /// its (sample, group) and the GEMM writes straight into it.
    Whole(&'a mut [f32]),
    /// One piece of `tile` pixels of each of the O/G output rows; the GEMM writes to
    /// scratch and the block is copied out.
    Pieces(Vec<&'a mut [f32]>),
}

/// The columns of output pixels `[p0, p0 + tn)` of one (sample, group), multiplied by
/// the weights into `y_tile` (`(O/G, tn)`, row-major).
#[allow(clippy::too_many_arguments)]
fn forward_tile(
    g: &Geom,
    xs: &[f32],
    wg: &[f32],
    p0: usize,
    tn: usize,
    cols: &mut [f32],
    y_tile: &mut [f32],
) {
    let (cg, og, k, p) = (g.cg(), g.og(), g.k(), g.p());
    if g.pointwise() {
        // 1x1, stride 1, no padding: the planes are the columns, read in place.
        // (O/G, C/G) · (C/G, tile) -> (O/G, tile)
        sgemm(
            og,
            k,
            tn,
            1.0,
            wg,
            k as isize,
            1,
            &xs[p0..],
            p as isize,
            1,
            0.0,
            y_tile,
            tn as isize,
            1,
        );
    } else {
        im2col(g, xs, cg, p0, tn, cols);
        // (O/G, C/G·KH·KW) · (C/G·KH·KW, tile) -> (O/G, tile)
        sgemm(
            og,
            k,
            tn,
            1.0,
            wg,
            k as isize,
            1,
            cols,
            tn as isize,
            1,
            0.0,
            y_tile,
            tn as isize,
            1,
        );
    }
}

/// `y = conv(x, w) + b` into `out` (`N·O·P` floats).
///
/// One task per (sample, group, tile of output pixels). A task builds its columns and
/// multiplies; the output is cut into per-task pieces up front, so tasks never share
/// memory.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (cg, og, k, p, hw) = (g.cg(), g.og(), g.k(), g.p(), g.hw());
    if out.is_empty() {
        return;
    }
    if batched::applies(g) {
        return batched::forward(g, x, w, bias, out);
    }
    let t = g.tile;
    let tiles = p.div_ceil(t);
    let mut tasks: Vec<(usize, usize, Dest)> = Vec::with_capacity(out.len() / (og * p) * tiles);
    for (ng, y) in out.chunks_mut(og * p).enumerate() {
        if tiles == 1 {
            tasks.push((ng, 0, Dest::Whole(y)));
            continue;
        }
        let first = tasks.len();
        tasks.extend((0..tiles).map(|ti| (ng, ti, Dest::Pieces(Vec::with_capacity(og)))));
        for row in y.chunks_mut(p) {
            for (ti, piece) in row.chunks_mut(t).enumerate() {
                if let Dest::Pieces(rows) = &mut tasks[first + ti].2 {
                    rows.push(piece);
                }
            }
        }
    }
    tasks.into_par_iter().for_each(|(ng, ti, dest)| {
        let (n, grp) = (ng / g.groups, ng % g.groups);
        let (p0, tn) = (ti * t, t.min(p - ti * t));
        let xs = &x[(n * g.c + grp * cg) * hw..(n * g.c + (grp + 1) * cg) * hw];
        let wg = &w[grp * og * k..(grp + 1) * og * k];
        let bias_of = |o: usize| bias.map_or(0.0, |b| b[grp * og + o]);
        let col_len = if g.pointwise() { 0 } else { k * tn };
        match dest {
            Dest::Whole(y) => {
                with_scratch(col_len, |cols| forward_tile(g, xs, wg, p0, tn, cols, y));
                if bias.is_some() {
                    for (o, row) in y.chunks_mut(tn).enumerate() {
                        let b = bias_of(o);
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
            Dest::Pieces(mut rows) => with_scratch(col_len + og * tn, |buf| {
                let (cols, y_tile) = buf.split_at_mut(col_len);
                forward_tile(g, xs, wg, p0, tn, cols, y_tile);
                for (o, row) in rows.iter_mut().enumerate() {
                    let b = bias_of(o);
                    for (d, s) in row.iter_mut().zip(&y_tile[o * tn..(o + 1) * tn]) {
                        *d = s + b;
                    }
                }
            }),
        }
    });
}

/// Tasks per backward phase that we aim for: enough for a few threads to balance even
/// at batch 1-2 (and when a neighbour process takes a core). A constant, so every split
/// below depends on the shapes only, never on the thread count.
pub(crate) const MIN_TASKS: usize = 8;

/// Smallest row count of the input-gradient GEMM `W_blockᵀ · G` worth splitting down to
/// (four 16-row panels of the AVX-512 microkernel).
pub(crate) const MIN_BLOCK_ROWS: usize = 64;

/// Columns of the weight gradient computed per task (channel blocks of at most this
/// many `C/G·KH·KW` entries): the measured GEMM rate drops once an `(O/G, columns)`
/// result no longer fits in the 2 MB L2 cache next to the packed operands.
pub(crate) const WEIGHT_GRAD_COLS: usize = 576;

/// `n` items cut into at most `parts` runs of equal size (the last one shorter):
/// returns (run length, number of runs).
pub(crate) fn runs(n: usize, parts: usize) -> (usize, usize) {
    let len = n.div_ceil(parts.clamp(1, n.max(1))).max(1);
    (len, n.div_ceil(len).max(1))
}

/// Gradients of the input and of the weight (each only if asked for), in two phases.
///
/// **Weight**, tasks (sample, group, block of input channels, run of tiles): for each
/// tile, rebuild the block's columns and accumulate `G_tile · colsᵀ` into the task's
/// private `(O/G, cb·KH·KW)` buffer; the buffers are then summed in (sample, run) order.
///
/// **Input**, tasks (sample, group, block of input channels): for each tile,
/// `∂cols = W_blockᵀ · G_tile`, then col2im onto the block's planes of `∂x`, which the
/// task owns. (Input tasks cannot split the pixels: windows of neighbouring tiles
/// overlap on the input.)
///
/// `gx` must arrive zeroed (col2im adds into it); `gw` is overwritten.
pub(crate) fn backward(
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: Option<&mut [f32]>,
) {
    let (cg, og, k, p, hw, taps) = (g.cg(), g.og(), g.k(), g.p(), g.hw(), g.taps());
    let (t, pointwise) = (g.tile, g.pointwise());
    if og * k * p == 0 {
        return; // no output or no weights: the (pre-zeroed) gradients stay zero
    }
    if batched::applies(g) {
        return batched::backward(g, x, w, gy, gx, gw);
    }
    let tiles = p.div_ceil(t);
    let samples_groups = (g.n * g.groups).max(1);
    // G[n, g] as an (O/G, P) matrix.
    let gy_of =
        |n: usize, grp: usize| &gy[(n * g.o + grp * og) * p..(n * g.o + (grp + 1) * og) * p];

    if let (Some(gw), Some(x)) = (gw, x) {
        // Channel blocks keep each task's (O/G, cb·KH·KW) result small enough to stay in
        // cache while it is accumulated over the tiles; runs of tiles add tasks when
        // there are few samples and blocks.
        let (per_block, blocks) = runs(cg, k.div_ceil(WEIGHT_GRAD_COLS));
        let (tiles_per_run, nruns) = runs(tiles, MIN_TASKS.div_ceil(samples_groups * blocks));
        // Task order: (sample, group, block, run).
        let parts: Vec<Vec<f32>> = (0..g.n * g.groups * blocks * nruns)
            .into_par_iter()
            .map(|task| {
                let run = task % nruns;
                let b = task / nruns % blocks;
                let ng = task / (nruns * blocks);
                let (n, grp) = (ng / g.groups, ng % g.groups);
                let (c0, c1) = (b * per_block, ((b + 1) * per_block).min(cg));
                let (cb, kb) = (c1 - c0, (c1 - c0) * taps);
                let x_blk = &x[(n * g.c + grp * cg + c0) * hw..(n * g.c + grp * cg + c1) * hw];
                let gy_ng = gy_of(n, grp);
                let mut part = vec![0.0f32; og * kb];
                let first = run * tiles_per_run;
                let col_len = if pointwise { 0 } else { kb * t };
                with_scratch(col_len, |cols| {
                    for ti in first..(first + tiles_per_run).min(tiles) {
                        let (p0, tn) = (ti * t, t.min(p - ti * t));
                        let (cols, rs) = if pointwise {
                            (&x_blk[p0..], p)
                        } else {
                            im2col(g, x_blk, cb, p0, tn, &mut cols[..kb * tn]);
                            (&cols[..kb * tn], tn)
                        };
                        let beta = if ti == first { 0.0 } else { 1.0 };
                        // colsᵀ is the column buffer read with strides (1, tile).
                        // (O/G, tile) · (tile, cb·KH·KW) -> (O/G, cb·KH·KW), summed over tiles
                        sgemm(
                            og,
                            tn,
                            kb,
                            1.0,
                            &gy_ng[p0..],
                            p as isize,
                            1,
                            cols,
                            1,
                            rs as isize,
                            beta,
                            &mut part,
                            kb as isize,
                            1,
                        );
                    }
                });
                part
            })
            .collect();
        // ∂W_g[:, block b] = Σ_{n, run} part(n, g, b, run), in that order.
        gw.par_chunks_mut(k).enumerate().for_each(|(oi, row)| {
            let (grp, o) = (oi / og, oi % og);
            for b in 0..blocks {
                let (c0, c1) = (b * per_block, ((b + 1) * per_block).min(cg));
                let kb = (c1 - c0) * taps;
                let dst = &mut row[c0 * taps..c1 * taps];
                for n in 0..g.n {
                    for run in 0..nruns {
                        let part = &parts[((n * g.groups + grp) * blocks + b) * nruns + run];
                        let src = &part[o * kb..(o + 1) * kb];
                        if n == 0 && run == 0 {
                            dst.copy_from_slice(src);
                        } else {
                            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                        }
                    }
                }
            }
        });
    }

    if let (Some(gx), Some(w)) = (gx, w) {
        let max_blocks = (k / MIN_BLOCK_ROWS).max(1);
        // Enough blocks for MIN_TASKS tasks and to keep the `(cb·KH·KW, tile)` column
        // gradient cache-sized, but none thinner than MIN_BLOCK_ROWS rows.
        let wanted = MIN_TASKS
            .div_ceil(samples_groups)
            .max(k.div_ceil(WEIGHT_GRAD_COLS));
        let (per_block, blocks) = runs(cg, wanted.min(max_blocks));
        // Task (n, grp, b) owns the contiguous planes of its channels in ∂x.
        let mut pieces: Vec<&mut [f32]> = Vec::with_capacity(g.n * g.groups * blocks);
        let mut rest = gx;
        while !rest.is_empty() {
            for b in 0..blocks {
                let cb = per_block.min(cg - b * per_block);
                let (head, tail) = rest.split_at_mut(cb * hw);
                pieces.push(head);
                rest = tail;
            }
        }
        pieces
            .into_par_iter()
            .enumerate()
            .for_each(|(task, gx_blk)| {
                let (ng, b) = (task / blocks, task % blocks);
                let (n, grp) = (ng / g.groups, ng % g.groups);
                let c0 = b * per_block;
                let cb = gx_blk.len() / hw.max(1);
                let kb = cb * taps;
                let gy_ng = gy_of(n, grp);
                // W_g restricted to the block's columns: element (o, r) is w_blk[o·K + r].
                let w_blk = &w[grp * og * k + c0 * taps..(grp + 1) * og * k];
                if pointwise {
                    // The planes are the columns, so ∂x receives the product directly.
                    // (cb, O/G) · (O/G, P) -> (cb, P)
                    sgemm(
                        cb, og, p, 1.0, w_blk, 1, k as isize, gy_ng, p as isize, 1, 0.0, gx_blk,
                        p as isize, 1,
                    );
                    return;
                }
                // col2im adds into ∂x, which the caller hands over zeroed.
                with_scratch(kb * t, |dcols| {
                    for ti in 0..tiles {
                        let (p0, tn) = (ti * t, t.min(p - ti * t));
                        let dcols = &mut dcols[..kb * tn];
                        // W_blockᵀ is the weight read with strides (1, K).
                        // (cb·KH·KW, O/G) · (O/G, tile) -> (cb·KH·KW, tile)
                        sgemm(
                            kb,
                            og,
                            tn,
                            1.0,
                            w_blk,
                            1,
                            k as isize,
                            &gy_ng[p0..],
                            p as isize,
                            1,
                            0.0,
                            dcols,
                            tn as isize,
                            1,
                        );
                        col2im(g, dcols, cb, p0, tn, gx_blk);
                    }
                });
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

/// The kernels with an explicit tile size, for the tile-size experiment of
/// `focal bench conv --tiles` ([`conv2d`] always uses [`TILE`]).
#[doc(hidden)]
pub mod tuning {
    use super::*;

    /// Forward pass without bias, with `tile` output pixels per column buffer.
    pub fn forward(x: &Tensor, w: &Tensor, opts: Conv2dOptions, tile: usize) -> Vec<f32> {
        let g = Geom {
            tile: tile.max(1),
            ..Geom::new(x.shape(), w.shape(), opts)
        };
        let mut out = vec![0.0f32; g.out_shape().iter().product()];
        super::forward(&g, x.data(), w.data(), None, &mut out);
        out
    }

    /// Weight gradient, and the input gradient when `input_grad`.
    pub fn backward(
        x: &Tensor,
        w: &Tensor,
        gy: &Tensor,
        opts: Conv2dOptions,
        tile: usize,
        input_grad: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>) {
        let g = Geom {
            tile: tile.max(1),
            ..Geom::new(x.shape(), w.shape(), opts)
        };
        let mut gx = input_grad.then(|| vec![0.0f32; x.numel()]);
        let mut gw = vec![0.0f32; w.numel()];
        super::backward(
            &g,
            Some(x.data()),
            Some(w.data()),
            gy.data(),
            gx.as_deref_mut(),
            Some(&mut gw),
        );
        (gx, gw)
    }
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
                // Without an input gradient the tasks split the tiles instead of the
                // channels; each gradient alone must not change.
                let mut gw_only = vec![0.0; w.numel()];
                backward(
                    &g,
                    Some(x.data()),
                    None,
                    gy.data(),
                    None,
                    Some(&mut gw_only),
                );
                assert!(
                    close(&gw_only, want_gw.data()),
                    "weight grad alone, tile {tile}"
                );
                let mut gx_only = vec![0.0; x.numel()];
                backward(
                    &g,
                    None,
                    Some(w.data()),
                    gy.data(),
                    Some(&mut gx_only),
                    None,
                );
                assert_eq!(gx_only, gx, "input grad alone, tile {tile}");
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
        assert_eq!(conv_output_len(5, 0, 1, 0, 1), None);
        assert_eq!(conv_output_len(5, 3, 0, 0, 1), None);
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
