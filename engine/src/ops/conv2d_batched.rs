//! conv2d on small output planes: the samples of the batch side by side in one GEMM.
//!
//! The per-sample kernels of `conv2d.rs` multiply `(O/G, K) · (K, P)` once per sample.
//! Deep in the network the planes are tiny (ResNet's C5 is 2x2 on a 64 px image, the
//! top FPN levels 1x1), so `P` is 1..64 and each GEMM is a thin sliver that spends
//! more time packing the weight and starting up than multiplying. Here the columns of
//! all `N` samples are laid side by side, column `n·P + p` for pixel `p` of sample `n`,
//! and each product covers the whole batch (G = ∂L/∂y):
//!
//! ```text
//! forward:  Y_g   (O/G, N·P) = W_g  (O/G, K)   · cols_g (K, N·P)
//! weight:   ∂W_g  (O/G, K)   = Gt_g (O/G, N·P) · cols_gᵀ (N·P, K)
//! input:    ∂cols_g (K, N·P) = W_gᵀ (K, O/G)   · Gt_g (O/G, N·P),  then col2im per sample
//! ```
//!
//! `cols` holds the im2col of every sample and group: a row-major `(C·KH·KW, N·P)`
//! matrix whose rows `g·K .. (g+1)·K` are `cols_g`. `Gt` is `G` reordered from
//! `(N, O, P)` to `(O, N·P)`. `Y` comes out in the same `(O, N·P)` order and is copied
//! back to `(N, O, P)`. These reorderings cost one pass over the output, a small price
//! next to the GEMM on maps this size. The weight gradient is now one sum over all
//! `N·P` columns inside one GEMM instead of `N` partial results added afterwards.
//!
//! **Threads.** Each product is cut into blocks of rows and of columns, computed by
//! independent single-threaded GEMMs on rayon; every entry is still one GEMM's sum over
//! its full inner dimension, in matrixmultiply's fixed order. The cuts depend only on
//! the shapes (`MIN_TASKS`, `MIN_BLOCK_ROWS`, `WEIGHT_GRAD_COLS`, [`TILE`]), so the
//! results are bitwise the same on any number of threads.

use std::cell::Cell;

use rayon::prelude::*;

use super::conv2d::{
    runs, with_buffer, with_scratch, Geom, MIN_BLOCK_ROWS, MIN_TASKS, TILE, WEIGHT_GRAD_COLS,
};
use crate::gemm::sgemm;

/// Output planes with fewer pixels than this go through the batched kernels. At 256
/// pixels (a 16x16 map) the per-sample GEMMs are already wide enough
/// (`focal bench conv --preset small`, heads and FPN at 16²).
pub(crate) const SMALL_PLANE: usize = 256;

/// Whether `g` takes the batched path: a small output plane, and the default tile
/// (`focal bench conv --tiles` and the tile tests force the per-sample kernels with a
/// smaller one).
pub(crate) fn applies(g: &Geom) -> bool {
    let p = g.p();
    p > 0 && p < SMALL_PLANE && g.tile >= p
}

thread_local! {
    /// The whole batch's columns, kept between calls (the calling thread's).
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// `Gt`, the output gradient reordered to `(O, N·P)`.
    static GRAD_T: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// For each kernel tap `(ky, kx)` and output pixel `p`, the offset `iy·W + ix` of the
/// input pixel it reads within a plane, or `None` in the padding (see `im2col.rs` for
/// the formulas): a `(KH·KW, P)` table. On planes this small, looking the offsets up
/// is cheaper than `im2col.rs`'s walk in runs of output rows, whose runs here are only
/// 1..15 pixels long.
fn gather_table(g: &Geom) -> Vec<Option<u32>> {
    let mut table = Vec::with_capacity(g.taps() * g.p());
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let iy = (oy * g.sh + ky * g.dh).checked_sub(g.ph);
                    let ix = (ox * g.sw + kx * g.dw).checked_sub(g.pw);
                    table.push(match (iy, ix) {
                        (Some(iy), Some(ix)) if iy < g.h && ix < g.w => {
                            Some((iy * g.w + ix) as u32)
                        }
                        _ => None,
                    });
                }
            }
        }
    }
    table
}

/// Fills `cols` (`(C·KH·KW, N·P)`, see the module doc) from `x`, one task per block of
/// input channels (rows `c·KH·KW ..` of every sample). Every entry is written.
fn build_cols(g: &Geom, table: &[Option<u32>], x: &[f32], cols: &mut [f32]) {
    let (p, taps, hw) = (g.p(), g.taps(), g.hw());
    let np = g.n * p;
    let (per_block, _) = runs(g.c, MIN_TASKS);
    cols.par_chunks_mut(per_block * taps * np)
        .enumerate()
        .for_each(|(b, block)| {
            // Row (c, tap), sample n: cols[(c·KH·KW + tap)·N·P + n·P + p].
            for (ct, row) in block.chunks_mut(np).enumerate() {
                let (c, tap) = (b * per_block + ct / taps, ct % taps);
                let offsets = &table[tap * p..(tap + 1) * p];
                for (n, dst) in row.chunks_mut(p).enumerate() {
                    let plane = &x[(n * g.c + c) * hw..(n * g.c + c + 1) * hw];
                    for (d, at) in dst.iter_mut().zip(offsets) {
                        *d = at.map_or(0.0, |i| plane[i as usize]);
                    }
                }
            }
        });
}

/// Adds `dcols` (`(channels·KH·KW, samples·P)`, rows `ld` floats apart, the columns of
/// sample `s` at `s·P`) onto `planes[s]` (`channels` planes of `H·W` each): col2im.
/// Each input pixel receives its terms in (tap, output pixel) order.
fn scatter_cols(
    g: &Geom,
    table: &[Option<u32>],
    dcols: &[f32],
    ld: usize,
    channels: usize,
    planes: Vec<&mut [f32]>,
) {
    let (p, taps, hw) = (g.p(), g.taps(), g.hw());
    for (s, gx) in planes.into_iter().enumerate() {
        for c in 0..channels {
            let plane = &mut gx[c * hw..(c + 1) * hw];
            for tap in 0..taps {
                let at = (c * taps + tap) * ld + s * p;
                let src = &dcols[at..at + p];
                for (v, i) in src.iter().zip(&table[tap * p..(tap + 1) * p]) {
                    if let Some(i) = i {
                        plane[*i as usize] += v;
                    }
                }
            }
        }
    }
}

/// `(rows per block, blocks)` for the rows of a product, and then the same for its
/// columns (`items` of `width` columns each), so that there are about [`MIN_TASKS`]
/// tasks over the `groups`, none with fewer than [`MIN_BLOCK_ROWS`] rows or
/// [`MIN_BLOCK_COLS`] columns (unless the whole product is smaller), and none with more
/// than `max_width` columns. Rows are split first: a row block packs only its own rows
/// of the (large) left operand.
fn split(
    groups: usize,
    rows: usize,
    items: usize,
    width: usize,
    max_width: usize,
) -> ((usize, usize), (usize, usize)) {
    let per_group = MIN_TASKS.div_ceil(groups);
    let row_blocks = runs(rows, per_group.min((rows / MIN_BLOCK_ROWS).max(1)));
    let most = ((items * width) / MIN_BLOCK_COLS).max(1);
    let wanted = per_group
        .div_ceil(row_blocks.1)
        .min(most)
        .max((items * width).div_ceil(max_width.max(1)));
    (row_blocks, runs(items, wanted))
}

/// Task `i` of a row-major `(_, mid, inner)` grid of tasks, as its three indices.
fn grid(i: usize, mid: usize, inner: usize) -> (usize, usize, usize) {
    (i / (mid * inner), i / inner % mid, i % inner)
}

/// Narrowest column block worth its own task: below this the GEMM's fixed costs
/// (packing the whole left operand, partial microkernel tiles) dominate.
const MIN_BLOCK_COLS: usize = 64;

/// `y = conv(x, w) + b` into `out` (`N·O·P` floats, every one written).
///
/// Tasks (group, block of output channels, block of samples), each one GEMM into its
/// scratch, copied out to the `(N, O, P)` planes it owns.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (og, k, p) = (g.og(), g.k(), g.p());
    let np = g.n * p;
    let table = gather_table(g);
    with_buffer(&COLS, g.c * g.taps() * np, |cols| {
        build_cols(g, &table, x, cols);
        let ((rows_per, rblocks), (samples_per, sblocks)) = split(g.groups, og, g.n, p, TILE);
        // Plane (n, o) of the output belongs to task (group, row block, sample block).
        let tasks = g.groups * rblocks * sblocks;
        let mut planes: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::new()).collect();
        for (i, plane) in out.chunks_mut(p).enumerate() {
            let (n, oi) = (i / g.o, i % g.o);
            let (grp, o) = (oi / og, oi % og);
            planes[(grp * rblocks + o / rows_per) * sblocks + n / samples_per].push(plane);
        }
        let cols = &*cols;
        planes
            .into_par_iter()
            .enumerate()
            .for_each(|(task, planes)| {
                let (grp, rb, sb) = grid(task, rblocks, sblocks);
                let (o0, o1) = (rb * rows_per, ((rb + 1) * rows_per).min(og));
                let (n0, n1) = (sb * samples_per, ((sb + 1) * samples_per).min(g.n));
                let (m, width) = (o1 - o0, (n1 - n0) * p);
                with_scratch(m * width, |y| {
                    // Rows o0..o1 of W_g times the columns of samples n0..n1:
                    // (rows, C/G·KH·KW) · (C/G·KH·KW, samples·P) -> (rows, samples·P)
                    sgemm(
                        m,
                        k,
                        width,
                        1.0,
                        &w[(grp * og + o0) * k..],
                        k as isize,
                        1,
                        &cols[grp * k * np + n0 * p..],
                        np as isize,
                        1,
                        0.0,
                        y,
                        width as isize,
                        1,
                    );
                    // The planes arrive in (sample, channel) order.
                    for (j, plane) in planes.into_iter().enumerate() {
                        let (s, o) = (j / m, j % m);
                        let b = bias.map_or(0.0, |b| b[grp * og + o0 + o]);
                        let src = &y[o * width + s * p..o * width + (s + 1) * p];
                        for (d, v) in plane.iter_mut().zip(src) {
                            *d = v + b;
                        }
                    }
                });
            });
    });
}

/// Gradients of the input and of the weight (each only if asked for); see
/// `conv2d::backward` for the contract (`gx` arrives zeroed, `gw` is overwritten).
pub(crate) fn backward(
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: Option<&mut [f32]>,
) {
    let (cg, og, k, p, hw, taps) = (g.cg(), g.og(), g.k(), g.p(), g.hw(), g.taps());
    let np = g.n * p;
    let table = gather_table(g);
    with_buffer(&GRAD_T, g.o * np, |gt| {
        // Gt[o, n·P + p] = G[n, o, p]
        gt.par_chunks_mut(np)
            .with_min_len(16)
            .enumerate()
            .for_each(|(o, row)| {
                for (n, dst) in row.chunks_mut(p).enumerate() {
                    dst.copy_from_slice(&gy[(n * g.o + o) * p..(n * g.o + o + 1) * p]);
                }
            });
        let gt = &*gt;

        if let (Some(gw), Some(x)) = (gw, x) {
            with_buffer(&COLS, g.c * taps * np, |cols| {
                build_cols(g, &table, x, cols);
                let cols = &*cols;
                // Tasks (group, block of output channels, block of ∂W columns).
                let ((rows_per, rblocks), (cols_per, cblocks)) =
                    split(g.groups, og, k, 1, WEIGHT_GRAD_COLS);
                let tasks = g.groups * rblocks * cblocks;
                let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::new()).collect();
                for (oi, row) in gw.chunks_mut(k).enumerate() {
                    let (grp, o) = (oi / og, oi % og);
                    for (cb, piece) in row.chunks_mut(cols_per).enumerate() {
                        pieces[(grp * rblocks + o / rows_per) * cblocks + cb].push(piece);
                    }
                }
                pieces
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(task, pieces)| {
                        let (grp, rb, cb) = grid(task, rblocks, cblocks);
                        let (o0, o1) = (rb * rows_per, ((rb + 1) * rows_per).min(og));
                        let (r0, r1) = (cb * cols_per, ((cb + 1) * cols_per).min(k));
                        let (m, width) = (o1 - o0, r1 - r0);
                        with_scratch(m * width, |part| {
                            // colsᵀ is the column buffer read with strides (1, N·P).
                            // (rows, N·P) · (N·P, cols) -> (rows, cols), the sum over the batch
                            sgemm(
                                m,
                                np,
                                width,
                                1.0,
                                &gt[(grp * og + o0) * np..],
                                np as isize,
                                1,
                                &cols[(grp * k + r0) * np..],
                                1,
                                np as isize,
                                0.0,
                                part,
                                width as isize,
                                1,
                            );
                            for (i, piece) in pieces.into_iter().enumerate() {
                                piece.copy_from_slice(&part[i * width..(i + 1) * width]);
                            }
                        });
                    });
            });
        }

        if let (Some(gx), Some(w)) = (gx, w) {
            // Tasks (group, block of input channels, block of samples); each owns the
            // planes of its channels in its samples' ∂x (col2im adds into them).
            let max_blocks = (k / MIN_BLOCK_ROWS).max(1);
            let per_group = MIN_TASKS.div_ceil(g.groups);
            let (per_block, blocks) = runs(cg, per_group.min(max_blocks));
            let most = (np / MIN_BLOCK_COLS).max(1);
            let (samples_per, sblocks) = runs(g.n, per_group.div_ceil(blocks).min(most));
            let tasks = g.groups * blocks * sblocks;
            let mut planes: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::new()).collect();
            for (i, sample_group) in gx.chunks_mut(cg * hw).enumerate() {
                let (n, grp) = (i / g.groups, i % g.groups);
                for (b, block) in sample_group.chunks_mut(per_block * hw).enumerate() {
                    planes[(grp * blocks + b) * sblocks + n / samples_per].push(block);
                }
            }
            planes
                .into_par_iter()
                .enumerate()
                .for_each(|(task, planes)| {
                    let (grp, b, sb) = grid(task, blocks, sblocks);
                    let c0 = b * per_block;
                    let cb = per_block.min(cg - c0);
                    let kb = cb * taps;
                    let n0 = sb * samples_per;
                    let width = planes.len() * p;
                    with_scratch(kb * width, |dcols| {
                        // W_blockᵀ is the weight read with strides (1, K).
                        // (cb·KH·KW, O/G) · (O/G, samples·P) -> (cb·KH·KW, samples·P)
                        sgemm(
                            kb,
                            og,
                            width,
                            1.0,
                            &w[grp * og * k + c0 * taps..],
                            1,
                            k as isize,
                            &gt[grp * og * np + n0 * p..],
                            np as isize,
                            1,
                            0.0,
                            dcols,
                            width as isize,
                            1,
                        );
                        scatter_cols(g, &table, dcols, width, cb, planes);
                    });
                });
        }
    });
}
