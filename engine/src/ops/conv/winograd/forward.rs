//! The Winograd convolution `out = conv3x3(src, k)` of a [`Conv3`], used by the forward
//! pass (`src = x`, `k = w`) and by the input gradient (`src = ∂y`, `k = w` turned by
//! 180° with its channel axes swapped).
//!
//! Per chunk of tiles (see `plan.rs`), with `U = G k Gᵀ` computed and packed for the
//! GEMM once per call (`plan::packed_filters`):
//!
//! ```text
//! 1. V[s, ξ, j]  = (Bᵀ d_{s,j} B)[ξ]            one task per source channel s
//! 2. M_ξ (R, J)  = U_ξ (R, S) · V_ξ (S, J)      one GEMM per position ξ (α² tasks),
//!                                               U_ξ prepacked, β = 0 (no zero fill)
//! 3. out tile j of channel r = Aᵀ M[·, r, j] A (+ bias)   one task per channel r
//! ```
//!
//! `J` is the number of tiles in the chunk. Step 2 is where the multiplications are
//! saved: a direct convolution does `9·S` multiply-adds per output pixel, this does
//! `α²·S` per tile of `m²` pixels (`16·S/4 = 4·S` for F(2x2,3x3), `36·S/16 = 2.25·S`
//! for F(4x4,3x3)).

use rayon::prelude::*;

use super::plan::{transform_inputs, Conv3, Grid};
use super::simd::{multiversion, Level};
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::{gemm_packed, MatMut, MatRef, PackedA, Start};

/// `out (N, R, OH, OW) = conv(src, k) + bias`, every element written. `u` holds the
/// filters' transforms `U_ξ` (`R × S`), packed for the GEMM (`plan::packed_filters`);
/// the GEMM path is theirs, and the transforms run in the build that goes with it.
pub(crate) fn conv<T: Tile>(
    c: &Conv3,
    grid: &Grid,
    src: &[f32],
    u: &[PackedA],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
    debug_assert_eq!(u.len(), a2);
    let level = Level::of(u[0].isa());
    let plane = c.oh * c.ow;
    debug_assert_eq!(out.len(), c.n * c.r * plane);
    // Buffers for the largest chunk, allocated once per call (see `plan.rs`).
    let most = grid.rows_per_chunk * grid.tw;
    let (mut v_buf, mut prod_buf) = (vec![0.0f32; c.s * a2 * most], vec![0.0f32; a2 * c.r * most]);
    for (r0, r1) in grid.chunks(c) {
        let tiles = (r1 - r0) * grid.tw;
        let v = &mut v_buf[..c.s * a2 * tiles];
        transform_inputs::<T>(level, c, grid, src, (r0, r1), v);

        // M laid out [α²][R][tiles]: each position's product is one contiguous block.
        let prod = &mut prod_buf[..a2 * c.r * tiles];
        let v = &*v;
        prod.par_chunks_mut(c.r * tiles)
            .enumerate()
            .for_each(|(xi, m_xi)| {
                // V_ξ: rows α²·tiles floats apart, contiguous columns.
                let v_xi = MatRef::new(&v[xi * tiles..], c.s, tiles, a2 * tiles, 1);
                // U_ξ (R, S) · V_ξ (S, tiles) -> M_ξ (R, tiles)
                let m_xi = MatMut::row_major(m_xi, c.r, tiles);
                gemm_packed(&u[xi], &v_xi, Start::Beta(0.0), m_xi);
            });

        // The rows of each output plane that this chunk's tiles cover: one contiguous
        // piece per (sample, channel), handed to the task of its channel.
        let mut pieces: Vec<Vec<(usize, usize, &mut [f32])>> =
            (0..c.r).map(|_| Vec::new()).collect();
        for (i, pl) in out.chunks_mut(plane).enumerate() {
            let (n, o) = (i / c.r, i % c.r);
            let (lo, hi) = (r0.max(n * grid.th), r1.min((n + 1) * grid.th));
            if lo >= hi {
                continue;
            }
            let (ty0, ty1) = (lo - n * grid.th, hi - n * grid.th);
            let (y0, y1) = (ty0 * m, (ty1 * m).min(c.oh));
            pieces[o].push((n, ty0, &mut pl[y0 * c.ow..y1 * c.ow]));
        }
        let prod = &*prod;
        pieces.into_par_iter().enumerate().for_each(|(o, list)| {
            let b = bias.map_or(0.0, |b| b[o]);
            output_channel::<T>(level, c, grid, prod, r0, o, b, list);
        });
    }
}

multiversion! {
    /// Step 3 for output channel `o` of the chunk starting at tile row `r0`: each piece
    /// `(sample, first tile row, rows of the plane)` receives `Aᵀ M A + b`.
    fn output_channel<T: Tile>(
        c: &Conv3,
        grid: &Grid,
        prod: &[f32],
        r0: usize,
        o: usize,
        b: f32,
        list: Vec<(usize, usize, &mut [f32])>,
    ) {
        let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
        let tiles = prod.len() / (a2 * c.r);
        let mut mm = [Lanes::ZERO; 36];
        let mut y = [Lanes::ZERO; 16];
        for (n, ty0, dst) in list {
            let rows = dst.len() / c.ow;
            for tyl in 0..rows.div_ceil(m) {
                let j_row = (n * grid.th + ty0 + tyl - r0) * grid.tw;
                for tx0 in (0..grid.tw).step_by(LANES) {
                    // Position ξ of LANES consecutive tiles: consecutive floats of M_ξ.
                    let count = (grid.tw - tx0).min(LANES);
                    for (xi, v) in mm[..a2].iter_mut().enumerate() {
                        *v = Lanes::load(&prod[(xi * c.r + o) * tiles + j_row + tx0..][..count]);
                    }
                    T::output(&mm[..a2], &mut y[..m * m]);
                    // Row i of these tiles is one run of the output row; the outputs
                    // hanging over the bottom and right edges are dropped.
                    let (x0, x1) = (tx0 * m, ((tx0 + count) * m).min(c.ow));
                    for (i, yi) in y.chunks_exact(m).take(m.min(rows - tyl * m)).enumerate() {
                        let run = &mut dst[(tyl * m + i) * c.ow..][x0..x1];
                        // Tile `lane` covers run[lane·m ..]; its last one may be cut.
                        for (lane, out) in run.chunks_mut(m).enumerate() {
                            for (d, v) in out.iter_mut().zip(yi) {
                                *d = v.0[lane] + b;
                            }
                        }
                    }
                }
            }
        }
    }
}
