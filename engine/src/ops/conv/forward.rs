//! The forward pass as an implicit GEMM: `y = W·cols + b`, per group.
//!
//! ```text
//!   per (sample n, group g), planes of at least SMALL_PLANE pixels:
//!     y[n, g] (O/G, P) = W_g (O/G, K) · cols (K, P)      cols packed from x[n] (im2col.rs)
//!   small planes, the whole batch in one product per group:
//!     Y_g (O/G, N·P)   = W_g (O/G, K) · cols (K, N·P)    then copied to y[n, g]
//!
//!   W_g packed once (gemm::PackedA) for every sample and every block of pixels;
//!   each tile of y starts from the bias of its rows and is stored once.
//! ```
//!
//! The blocking inside each product is the GEMM's (`gemm/driver.rs`): blocks of `KC`
//! receptive-field rows and `NC` pixels of `cols` are packed straight from the image
//! into micro-panels, never as a whole column matrix.

use std::cell::Cell;

use rayon::prelude::*;

use super::geometry::Geom;
use super::geometry::SMALL_PLANE;
use super::im2col::Im2col;
use super::scratch::with_buffer;
use crate::gemm::{gemm_packed, isa, Isa, MatMut, MatRef, PackedA, Start};

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

/// `y = conv(x, w) + b` into `out` (`N·O·P` floats, every one written).
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let batched = g.p() < SMALL_PLANE && g.n > 1;
    forward_with(g, x, w, bias, out, batched, isa::active())
}

/// [`forward`] with the batched layout and the GEMM path chosen by the caller (tests
/// run them all).
pub(crate) fn forward_with(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    batched: bool,
    isa: Isa,
) {
    let (cg, og, p) = (g.cg(), g.og(), g.p());
    if out.is_empty() {
        return;
    }
    let win = g.window();
    let packed = packed_weights(g, w, isa);
    let start = |grp: usize| match bias {
        Some(b) => Start::RowBias(&b[grp * og..(grp + 1) * og]),
        None => Start::Beta(0.0),
    };
    if batched {
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
