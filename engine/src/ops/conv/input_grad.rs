//! The input gradient, two ways.
//!
//! **As a convolution** (stride 1, padding at most `d·(K−1)`, which covers every 3x3
//! and 1x1 stride-1 conv of the detector). The input gradient of a stride-1
//! convolution is itself a convolution of `∂y`, with the kernel flipped in both axes,
//! its channel axes swapped, the same dilation and padding `p' = d·(K−1) − p`:
//!
//! ```text
//!   ∂x[n, c, iy, ix] = Σ_{o, ky, kx} W[o, c, ky, kx] · ∂y[n, o, iy + ph − ky·dh, ix + pw − kx·dw]
//!                    = Σ_{o, ky', kx'} W'[c, o, ky', kx'] · ∂y[n, o, iy − ph' + ky'·dh, ix − pw' + kx'·dw]
//!   with W'[c, o, ky', kx'] = W[o, c, KH−1−ky', KW−1−kx']
//!
//!   per (sample n, group g):   ∂x[n, g] (C/G, H·W) = W'_g (C/G, O/G·KH·KW) · cols(∂y[n, g]) (O/G·KH·KW, H·W)
//!   small planes, whole batch: ∂X_g (C/G, N·H·W)  = W'_g · cols(∂y_g) (O/G·KH·KW, N·H·W)
//!   and N·H·W < C/G, swapped:  ∂X_gᵀ (N·H·W, C/G) = cols(∂y_g)ᵀ · W'_gᵀ   (large weights: swap_operands)
//! ```
//!
//! (The swapped form for the same reason as the forward pass's, `forward.rs`: the
//! small column matrix is packed once and the large flipped weight streams through the
//! GEMM's B blocks; the same bits as the batched form.)
//!
//! so it runs through the forward pass's implicit GEMM: `cols(∂y)` is packed from `∂y`,
//! `W'_g` is packed once, and every element of `∂x` is stored once (no zero fill, no
//! scatter, no column buffer).
//!
//! **Through col2im** (strided convolutions, or a padding above `d·(K−1)`): the
//! columns' gradient in blocks of at most [`block_width`] pixels, then added back onto
//! the image:
//!
//! ```text
//!   ∂cols (K, block) = W_gᵀ (K, O/G) · ∂y_g (O/G, block)      block: pixels of the batch in order
//!   col2im(∂cols) += onto ∂x[n, g]                          (col2im.rs)
//! ```
//!
//! Blocks run one after the other (two blocks can touch one pixel of `∂x`); inside a
//! block the GEMM splits over the threads, and col2im runs one task per input channel,
//! which owns that channel's planes. Every pixel receives its terms in (block, tap,
//! output pixel) order, the same on any thread count.

use std::cell::Cell;

use rayon::prelude::*;

use super::col2im::col2im;
use super::forward::{swap_operands, untranspose};
use super::geometry::{Geom, Window, SMALL_PLANE};
use super::im2col::{Grad, Im2col};
use super::scratch::with_buffer;
use crate::gemm::{gemm_packed, isa, Isa, MatMut, MatRef, PackedA, Panels, Start};

thread_local! {
    /// `∂X_g` of the small-plane product, or a block of `∂cols`, kept between calls.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Which way to compute the input gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// As a convolution of `∂y` (stride 1 only), per sample.
    Transposed,
    /// As a convolution of `∂y`, the batch side by side (small planes).
    TransposedBatched,
    /// The same product with its operands swapped (fewer batch pixels than channels).
    TransposedSwapped,
    /// `W_gᵀ·∂y` then col2im.
    Col2im,
}

/// The path [`input_grad`] takes for `g`.
pub(crate) fn path(g: &Geom) -> Path {
    match g.transposed_window() {
        Some(_)
            if g.hw() < SMALL_PLANE
                && g.n > 1
                && swap_operands(g.n * g.hw(), g.cg(), g.og() * g.taps()) =>
        {
            Path::TransposedSwapped
        }
        Some(_) if g.hw() < SMALL_PLANE && g.n > 1 => Path::TransposedBatched,
        Some(_) => Path::Transposed,
        None => Path::Col2im,
    }
}

/// `∂x` into `gx` (`N·C·H·W` floats, every one written; its old contents are ignored).
pub(crate) fn input_grad(g: &Geom, w: &[f32], gy: &[f32], gx: &mut [f32]) {
    input_grad_with(g, w, gy, gx, path(g), isa::active())
}

/// [`input_grad`] along a given path and GEMM path (tests run them all; `Transposed*`
/// needs [`Geom::transposed_window`]).
pub(crate) fn input_grad_with(
    g: &Geom,
    w: &[f32],
    gy: &[f32],
    gx: &mut [f32],
    path: Path,
    isa: Isa,
) {
    if gx.is_empty() {
        return;
    }
    match (path, g.transposed_window()) {
        (Path::Col2im, _) => through_col2im(g, w, gy, gx, isa),
        (Path::TransposedSwapped, Some(tw)) => swapped(g, &tw, w, gy, gx, isa),
        (_, Some(tw)) => transposed(g, &tw, w, gy, gx, path == Path::TransposedBatched, isa),
        (_, None) => panic!("conv2d input gradient: no transposed window for {g:?}"),
    }
}

/// `W'_gᵀ` (`O/G·KH·KW × C/G`) as a GEMM source: element `((o, t'), c)` is
/// `W[g·O/G + o, c, taps − 1 − t']`, the flipped kernel with its channel axes swapped,
/// packed straight from the weight (no flipped copy is made).
struct FlippedT<'a> {
    w: &'a [f32],
    og: usize,
    cg: usize,
    taps: usize,
}

impl Panels for FlippedT<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.og * self.taps, self.cg)
    }

    /// For output channel `o`, the `cols` input channels of a panel and their taps are
    /// one contiguous run of the weight (`cols · taps` floats), read once per `o` and
    /// written tap-reversed, one panel row per tap.
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        let (cg, taps) = (self.cg, self.taps);
        for (pi, panel) in out.chunks_mut(kc * w).take(nc.div_ceil(w)).enumerate() {
            let c0 = j0 + pi * w;
            let cols = w.min(j0 + nc - c0);
            let (mut o, mut t) = (k0 / taps, k0 % taps);
            let mut run = &self.w[(o * cg + c0) * taps..(o * cg + c0 + cols) * taps];
            for dst in panel.chunks_exact_mut(w) {
                let tr = taps - 1 - t;
                for (jj, d) in dst[..cols].iter_mut().enumerate() {
                    *d = run[jj * taps + tr];
                }
                dst[cols..].fill(0.0);
                t += 1;
                if t == taps && o + 1 < self.og {
                    (o, t) = (o + 1, 0);
                    run = &self.w[(o * cg + c0) * taps..(o * cg + c0 + cols) * taps];
                }
            }
        }
    }
}

/// `W'_g` packed for the GEMM, one per group.
fn flipped_weights(g: &Geom, w: &[f32], isa: Isa) -> Vec<PackedA> {
    let (cg, og, taps) = (g.cg(), g.og(), g.taps());
    let per_group = og * cg * taps;
    (0..g.groups)
        .map(|grp| {
            let src = FlippedT {
                w: &w[grp * per_group..(grp + 1) * per_group],
                og,
                cg,
                taps,
            };
            PackedA::from_panels(isa, 1.0, &src)
        })
        .collect()
}

fn transposed(
    g: &Geom,
    tw: &Window,
    w: &[f32],
    gy: &[f32],
    gx: &mut [f32],
    batched: bool,
    isa: Isa,
) {
    let (cg, og, hw) = (g.cg(), g.og(), g.hw());
    let packed = flipped_weights(g, w, isa);
    if batched {
        let nhw = g.n * hw;
        with_buffer(&SCRATCH, cg * nhw, |xt| {
            for (grp, wt) in packed.iter().enumerate() {
                let cols = Im2col::new(*tw, gy, g.o, (grp * og, og), (0, g.n));
                // (C/G, O/G·KH·KW) · (O/G·KH·KW, N·H·W) -> (C/G, N·H·W)
                gemm_packed(wt, &cols, Start::Beta(0.0), MatMut::row_major(xt, cg, nhw));
                let xt = &*xt;
                gx.par_chunks_mut(g.c * hw).enumerate().for_each(|(n, xn)| {
                    for c in 0..cg {
                        xn[(grp * cg + c) * hw..(grp * cg + c + 1) * hw]
                            .copy_from_slice(&xt[c * nhw + n * hw..c * nhw + (n + 1) * hw]);
                    }
                });
            }
        });
        return;
    }
    gx.par_chunks_mut(cg * hw).enumerate().for_each(|(ng, xs)| {
        let (n, grp) = (ng / g.groups, ng % g.groups);
        let xs = MatMut::row_major(xs, cg, hw);
        if g.pointwise() {
            // 1x1: ∂y's planes are the columns. (C/G, O/G) · (O/G, H·W) -> (C/G, H·W)
            let gs = &gy[(n * g.o + grp * og) * hw..(n * g.o + (grp + 1) * og) * hw];
            gemm_packed(
                &packed[grp],
                &MatRef::row_major(gs, og, hw),
                Start::Beta(0.0),
                xs,
            );
        } else {
            let cols = Im2col::new(*tw, gy, g.o, (grp * og, og), (n, 1));
            // (C/G, O/G·KH·KW) · (O/G·KH·KW, H·W) -> (C/G, H·W)
            gemm_packed(&packed[grp], &cols, Start::Beta(0.0), xs);
        }
    });
}

/// `∂X_gᵀ = cols(∂y_g)ᵀ · W'_gᵀ` per group, the batch side by side, then written back
/// transposed into `∂x`.
fn swapped(g: &Geom, tw: &Window, w: &[f32], gy: &[f32], gx: &mut [f32], isa: Isa) {
    let (cg, og, hw, taps) = (g.cg(), g.og(), g.hw(), g.taps());
    let nhw = g.n * hw;
    let per_group = og * cg * taps;
    with_buffer(&SCRATCH, nhw * cg, |xt| {
        for grp in 0..g.groups {
            let cols = Im2col::new(*tw, gy, g.o, (grp * og, og), (0, g.n));
            // cols(∂y_g)ᵀ (N·H·W × O/G·KH·KW), packed once from its transpose.
            let cols_t = PackedA::from_panels(isa, 1.0, &cols);
            let wt = FlippedT {
                w: &w[grp * per_group..(grp + 1) * per_group],
                og,
                cg,
                taps,
            };
            // (N·H·W, O/G·KH·KW) · (O/G·KH·KW, C/G) -> (N·H·W, C/G)
            gemm_packed(
                &cols_t,
                &wt,
                Start::Beta(0.0),
                MatMut::row_major(xt, nhw, cg),
            );
            untranspose(xt, cg, gx, g.c, (grp * cg, cg), hw);
        }
    });
}

/// Pixels per block of `∂cols`: about a million floats (4 MiB, an L2-to-L3-sized
/// buffer), at least 64 and at most 2048 pixels.
pub(crate) fn block_width(k: usize) -> usize {
    ((1 << 20) / k.max(1)).clamp(64, 2048)
}

fn through_col2im(g: &Geom, w: &[f32], gy: &[f32], gx: &mut [f32], isa: Isa) {
    let (cg, og, k, p, hw) = (g.cg(), g.og(), g.k(), g.p(), g.hw());
    gx.fill(0.0);
    let win = g.window();
    // On small planes the scatter looks its offsets up (see im2col.rs).
    let table = (p < SMALL_PLANE).then(|| win.gather_table());
    let np = g.n * p;
    let width = block_width(k);
    for grp in 0..g.groups {
        let wg = &w[grp * og * k..(grp + 1) * og * k];
        // W_gᵀ (K × O/G), packed from its transpose W_g.
        let wt = PackedA::from_panels(isa, 1.0, &MatRef::row_major(wg, og, k));
        let grad = Grad {
            gy,
            o_total: g.o,
            o0: grp * og,
            og,
            p,
            n0: 0,
            samples: g.n,
        };
        for j0 in (0..np).step_by(width) {
            let nb = width.min(np - j0);
            with_buffer(&SCRATCH, k * nb, |dcols| {
                // W_gᵀ · the block's columns of ∂y_g:
                // (C/G·KH·KW, O/G) · (O/G, block) -> (C/G·KH·KW, block)
                gemm_packed(
                    &wt,
                    &Block(grad, j0, nb),
                    Start::Beta(0.0),
                    MatMut::row_major(dcols, k, nb),
                );
                let dcols = &*dcols;
                // The planes of this group's channels in the block's samples, by channel.
                let (s0, s1) = (j0 / p, (j0 + nb - 1) / p);
                let mut by_channel: Vec<Vec<(usize, &mut [f32])>> =
                    (0..cg).map(|_| Vec::new()).collect();
                for (i, plane) in gx.chunks_mut(hw).enumerate() {
                    let (n, c) = (i / g.c, i % g.c);
                    if (s0..=s1).contains(&n) && (grp * cg..(grp + 1) * cg).contains(&c) {
                        by_channel[c - grp * cg].push((n, plane));
                    }
                }
                by_channel
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(c, planes)| {
                        for (n, plane) in planes {
                            // This sample's pixels within the block: [a, b) of its plane.
                            let a = j0.max(n * p) - n * p;
                            let b = (j0 + nb).min((n + 1) * p) - n * p;
                            col2im(
                                &win,
                                table.as_deref(),
                                &dcols[c * g.taps() * nb..],
                                nb,
                                n * p + a - j0,
                                a,
                                b - a,
                                plane,
                            );
                        }
                    });
            });
        }
    }
}

/// Columns `j0..j0+nb` of a [`Grad`] as a matrix of their own.
struct Block<'a>(Grad<'a>, usize, usize);

impl Panels for Block<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.0.og, self.2)
    }
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        self.0.pack(k0, kc, self.1 + j0, nc, w, out)
    }
}
