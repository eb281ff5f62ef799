//! The forward pass as an implicit GEMM: `y = W·cols + b`, per group.
//!
//! ```text
//!   per (sample n, group g), planes of at least SMALL_PLANE pixels:        Form::PerSample
//!     y[n, g] (O/G, P) = W_g (O/G, K) · cols (K, P)      cols packed from x[n] (im2col.rs)
//!   small planes, the whole batch in one product per group:                Form::Batched
//!     Y_g (O/G, N·P)   = W_g (O/G, K) · cols (K, N·P)    then copied to y[n, g]
//!   small planes, N·P < O/G and a large weight (swap_operands):           Form::Swapped
//!     Y_gᵀ (N·P, O/G)  = colsᵀ (N·P, K) · W_gᵀ (K, O/G)   then copied, transposed, to y[n, g]
//!
//!   PerSample, Batched: W_g packed once (gemm::PackedA) for every sample and block of
//!   pixels; each tile of y starts from the bias of its rows and is stored once.
//!   Swapped: colsᵀ packed once, W_gᵀ packed block by block as the GEMM's B operand.
//! ```
//!
//! The blocking inside each product is the GEMM's (`gemm/driver.rs`): blocks of `KC`
//! receptive-field rows and `NC` pixels of `cols` are packed straight from the image
//! into micro-panels, never as a whole column matrix.
//!
//! **Why swap.** The GEMM packs its `A` operand whole, once per product, and its `B`
//! operand one L2-sized block at a time; its tile is `MR` rows by a wide `NR` columns
//! (8 × 48 on AVX-512). On the deepest small planes (ResNet's layer4 at 96 px: 512
//! channels, N·P = 8·3² = 72 pixels) the weight is far larger than the columns and
//! each of its values is used only N·P times: packing it whole (a 9 MiB buffer per call)
//! cost about as much as the product, and 72 columns fill 48 + 24 of two 48-wide
//! tiles. Swapped, the small column matrix is packed once and the weight streams
//! through the B blocks, and the 72 pixels are 9 full rows of 8. Every element is still
//! one fused multiply-add chain over `k` in increasing order starting from its bias
//! (the bias is written into `Y_gᵀ` first and the product continues from it, `β = 1`),
//! and `a·b = b·a` exactly, so the two batched forms give the same bits.
//!
use std::cell::Cell;

use rayon::prelude::*;

use super::geometry::Geom;
use super::geometry::SMALL_PLANE;
use super::im2col::{interleave8, Im2col};
use super::scratch::with_buffer;
use crate::gemm::{gemm_packed, isa, Isa, MatMut, MatRef, PackedA, Panels, Start};

thread_local! {
    /// `Y_g` of the small-plane product, kept between calls.
    static Y_T: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `W_g` packed for the GEMM on `isa`, one per group.
fn packed_weights(g: &Geom, w: &[f32], isa: Isa) -> Vec<PackedA> {
    let (og, k) = (g.og(), g.k());
    (0..g.groups)
        .map(|grp| {
            let wg = MatRef::row_major(&w[grp * og * k..(grp + 1) * og * k], og, k);
            PackedA::from_panels(isa, 1.0, &wg.t())
        })
        .collect()
}

/// How the forward pass lays out its products (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// One product per sample and group.
    PerSample,
    /// The batch side by side: `Y_g = W_g · cols`.
    Batched,
    /// The batch side by side, operands swapped: `Y_gᵀ = colsᵀ · W_gᵀ`.
    Swapped,
}

impl Form {
    /// Every form, for the tests.
    #[cfg(test)]
    pub(crate) const ALL: [Form; 3] = [Form::PerSample, Form::Batched, Form::Swapped];

    /// The form [`forward`] takes for `g`: batched on small planes, swapped when the
    /// batch has fewer pixels than a group has output channels and the weight is large
    /// ([`swap_operands`]).
    pub(crate) fn of(g: &Geom) -> Form {
        if g.p() >= SMALL_PLANE || g.n == 1 {
            Form::PerSample
        } else if swap_operands(g.n * g.p(), g.og(), g.k()) {
            Form::Swapped
        } else {
            Form::Batched
        }
    }
}

/// Fewest weight values (`rows × K` of one group) for the swapped products: below it
/// the weight packs quickly anyway, and the swap's extra steps (the transposed copy
/// back) made the 64-channel head convs on the 2² and 1² maps (36 864 values) slower
/// (1 thread, Xeon Sapphire Rapids): 51 → 66 µs and 39 → 47 µs forward.
pub(crate) const SWAP_MIN_WEIGHT: usize = 1 << 17;

/// Whether a batched product over `pixels` columns with a `rows × k` weight runs with
/// its operands swapped: fewer pixels than weight rows, and a weight of at least
/// [`SWAP_MIN_WEIGHT`] values (ResNet's layer4 at 96 px: 72 pixels, 512 × 4608).
pub(crate) fn swap_operands(pixels: usize, rows: usize, k: usize) -> bool {
    pixels < rows && rows * k >= SWAP_MIN_WEIGHT
}

/// `W_gᵀ` (`K × rows`) as a GEMM source, for the swapped products: element `(k, o)` is
/// `w[o·k_len + k]`, a row-major `rows × K` weight read row by row, eight rows at a
/// time transposed into the panel (`im2col::interleave8`).
pub(crate) struct WeightT<'a> {
    pub w: &'a [f32],
    pub rows: usize,
    pub k: usize,
}

impl Panels for WeightT<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.k, self.rows)
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        for (pi, panel) in out.chunks_mut(kc * w).take(nc.div_ceil(w)).enumerate() {
            let o0 = j0 + pi * w;
            let cols = w.min(j0 + nc - o0);
            for g0 in (0..w).step_by(8) {
                let g = 8.min(w - g0).min(cols.saturating_sub(g0));
                if g == 8 {
                    let rows = &self.w[(o0 + g0) * self.k + k0..];
                    interleave8(rows, self.k, kc, panel, w, g0);
                    continue;
                }
                for (kk, dst) in panel.chunks_exact_mut(w).enumerate() {
                    for (t, d) in dst[g0..w.min(g0 + 8)].iter_mut().enumerate() {
                        *d = if t < g {
                            self.w[(o0 + g0 + t) * self.k + k0 + kk]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// `out[n, c0 + c, p] = t[(n·P + p)·cs + c]` for `c < channels`: the planes of a
/// `(N·P) × cs` product written back as `channels` planes per sample (`per_sample`
/// planes of `P` pixels each in `out`), one task per sample.
pub(crate) fn untranspose(
    t: &[f32],
    cs: usize,
    out: &mut [f32],
    per_sample: usize,
    (c0, channels): (usize, usize),
    p: usize,
) {
    out.par_chunks_mut(per_sample * p)
        .enumerate()
        .for_each(|(n, planes)| {
            let rows = &t[n * p * cs..(n + 1) * p * cs];
            for c in 0..channels {
                let plane = &mut planes[(c0 + c) * p..(c0 + c + 1) * p];
                for (d, row) in plane.iter_mut().zip(rows.chunks_exact(cs)) {
                    *d = row[c];
                }
            }
        });
}

/// `y = conv(x, w) + b` into `out` (`N·O·P` floats, every one written).
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    forward_with(g, x, w, bias, out, Form::of(g), isa::active())
}

/// [`forward`] in the form and on the GEMM path chosen by the caller (tests run them
/// all).
pub(crate) fn forward_with(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    form: Form,
    isa: Isa,
) {
    let (cg, og, p) = (g.cg(), g.og(), g.p());
    if out.is_empty() {
        return;
    }
    let win = g.window();
    if form == Form::Swapped {
        let (np, k) = (g.n * p, g.k());
        with_buffer(&Y_T, np * og, |yt| {
            for grp in 0..g.groups {
                let cols = Im2col::new(win, x, g.c, (grp * cg, cg), (0, g.n));
                // colsᵀ (N·P × K), packed once from its transpose cols.
                let cols_t = PackedA::from_panels(isa, 1.0, &cols);
                let start = match bias {
                    Some(b) => {
                        for row in yt.chunks_exact_mut(og) {
                            row.copy_from_slice(&b[grp * og..(grp + 1) * og]);
                        }
                        Start::Beta(1.0)
                    }
                    None => Start::Beta(0.0),
                };
                let wt = WeightT {
                    w: &w[grp * og * k..(grp + 1) * og * k],
                    rows: og,
                    k,
                };
                // (N·P, C/G·KH·KW) · (C/G·KH·KW, O/G) -> (N·P, O/G)
                gemm_packed(&cols_t, &wt, start, MatMut::row_major(yt, np, og));
                untranspose(yt, og, out, g.o, (grp * og, og), p);
            }
        });
        return;
    }
    let packed = packed_weights(g, w, isa);
    let start = |grp: usize| match bias {
        Some(b) => Start::RowBias(&b[grp * og..(grp + 1) * og]),
        None => Start::Beta(0.0),
    };
    if form == Form::Batched {
        let np = g.n * p;
        with_buffer(&Y_T, og * np, |yt| {
            for (grp, wg) in packed.iter().enumerate() {
                let cols = Im2col::new(win, x, g.c, (grp * cg, cg), (0, g.n));
                // (O/G, C/G·KH·KW) · (C/G·KH·KW, N·P) -> (O/G, N·P)
                gemm_packed(wg, &cols, start(grp), MatMut::row_major(yt, og, np));
                let yt = &*yt;
                out.par_chunks_mut(g.o * p).enumerate().for_each(|(n, yn)| {
                    for o in 0..og {
                        yn[(grp * og + o) * p..(grp * og + o + 1) * p]
                            .copy_from_slice(&yt[o * np + n * p..o * np + (n + 1) * p]);
                    }
                });
            }
        });
        return;
    }
    out.par_chunks_mut(og * p).enumerate().for_each(|(ng, y)| {
        let (n, grp) = (ng / g.groups, ng % g.groups);
        let y = MatMut::row_major(y, og, p);
        if g.pointwise() {
            // The planes are the columns: (O/G, C/G) · (C/G, H·W) -> (O/G, H·W)
            let xs = &x[(n * g.c + grp * cg) * p..(n * g.c + (grp + 1) * cg) * p];
            gemm_packed(&packed[grp], &MatRef::row_major(xs, cg, p), start(grp), y);
        } else {
            let cols = Im2col::new(win, x, g.c, (grp * cg, cg), (n, 1));
            // (O/G, C/G·KH·KW) · (C/G·KH·KW, P) -> (O/G, P)
            gemm_packed(&packed[grp], &cols, start(grp), y);
        }
    });
}
