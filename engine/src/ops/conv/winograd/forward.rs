//! The Winograd convolution `out = conv3x3(src, k)` of a [`Conv3`], used by the forward
//! pass (`src = x`, `k = w`) and by the input gradient (`src = ∂y`, `k = w` turned by
//! 180° with its channel axes swapped).
//!
//! Per chunk of tiles (see `plan.rs`), with `U = G k Gᵀ` computed and packed for the
//! GEMM once per call (`plan::packed_filters`):
//!
//! ```text
//! 1. V[s, ξ, j]  = (Bᵀ d_{s,j} B)[ξ]            written in the GEMM's B micro-panel
//!                                               order (`packed_inputs.rs`), one task
//!                                               per (panel of tiles, channel group)
//! 2. M_ξ (R, J)  = U_ξ (R, S) · V_ξ (S, J)      one GEMM per position ξ (α² tasks),
//!                                               U_ξ prepacked, V_ξ packed by one copy
//!                                               per micro-panel, β = 0 (no zero fill)
//! 3. out tile j of channel r = Aᵀ M[r, ·, j] A (+ bias)   one task per channel r;
//!                                               M laid out [R][α²][J], so a channel's
//!                                               products are one block
//! ```
//!
//! `J` is the number of tiles in the chunk. Step 2 is where the multiplications are
//! saved: a direct convolution does `9·S` multiply-adds per output pixel, this does
//! `α²·S` per tile of `m²` pixels (`16·S/4 = 4·S` for F(2x2,3x3), `36·S/16 = 2.25·S`
//! for F(4x4,3x3)).

use rayon::prelude::*;

use super::packed_inputs::{packed_len, transform_inputs_packed, PackedInputs};
use super::plan::{Conv3, Grid};
use super::simd::{multiversion, Level};
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::{b_panel_width, gemm_packed, MatMut, PackedA, Start};
use crate::ops::unary::relu_f32;

/// `out (N, R, OH, OW) = conv(src, k) + bias`, every element written, `max(·, 0)` of it
/// when `store.1` (the fused `conv2d_relu`; `store.0` is the bias). `u` holds the
/// filters' transforms `U_ξ` (`R × S`), packed for the GEMM (`plan::packed_filters`);
/// the GEMM path is theirs, and the transforms run in the build that goes with it.
pub(crate) fn conv<T: Tile>(
    c: &Conv3,
    grid: &Grid,
    src: &[f32],
    u: &[PackedA],
    (bias, relu): (Option<&[f32]>, bool),
    out: &mut [f32],
) {
    let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
    debug_assert_eq!(u.len(), a2);
    let level = Level::of(u[0].isa());
    let plane = c.oh * c.ow;
    debug_assert_eq!(out.len(), c.n * c.r * plane);
    // V in the GEMM's B micro-panel order (`packed_inputs.rs`), panels of `w` tiles.
    let w = b_panel_width(u[0].isa());
    // Buffers for the largest chunk, allocated once per call (see `plan.rs`).
    let most = grid.rows_per_chunk * grid.tw;
    let mut v_buf = vec![0.0f32; packed_len(a2, c.s, most, w)];
    let mut prod_buf = vec![0.0f32; a2 * c.r * most];
    for (r0, r1) in grid.chunks(c) {
        let tiles = (r1 - r0) * grid.tw;
        let v = &mut v_buf[..packed_len(a2, c.s, tiles, w)];
        transform_inputs_packed::<T>(level, c, grid, src, (r0, r1), w, v);

        // M laid out [R][α²][tiles]: M_ξ is columns ξ·tiles .. of an (R, α²·tiles)
        // matrix, and the α² products of one output channel are one contiguous block
        // for step 3 to read.
        let prod = &mut prod_buf[..a2 * c.r * tiles];
        let mut products = Vec::with_capacity(a2);
        let mut rest = MatMut::row_major(prod, c.r, a2 * tiles);
        for _ in 0..a2 {
            let (m_xi, right) = rest.split_cols(tiles);
            products.push(m_xi);
            rest = right;
        }
        let v = &*v;
        products.into_par_iter().enumerate().for_each(|(xi, m_xi)| {
            let v_xi = PackedInputs::new(v, xi, a2, c.s, tiles, w);
            // U_ξ (R, S) · V_ξ (S, tiles) -> M_ξ (R, tiles)
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
            output_channel::<T>(level, c, grid, prod, r0, o, (b, relu), list);
        });
    }
}

multiversion! {
    /// Step 3 for output channel `o` of the chunk starting at tile row `r0`: each piece
    /// `(sample, first tile row, rows of the plane)` receives `Aᵀ M A + b`, or
    /// `max(Aᵀ M A + b, 0)` with `relu`.
    fn output_channel<T: Tile>(
        c: &Conv3,
        grid: &Grid,
        prod: &[f32],
        r0: usize,
        o: usize,
        store: (f32, bool),
        list: Vec<(usize, usize, &mut [f32])>,
    ) {
        let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
        let (b, relu) = store;
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
                        let at = (o * a2 + xi) * tiles + j_row + tx0;
                        *v = Lanes::load(&prod[at..][..count]);
                        // The α² rows are more streams than the hardware prefetchers
                        // follow: ask for each one's line of four groups ahead.
                        prefetch(prod, at + 4 * LANES);
                    }
                    T::output(&mm[..a2], &mut y[..m * m]);
                    // Row i of these tiles is one run of the output row; the outputs
                    // hanging over the bottom and right edges are dropped.
                    let (x0, x1) = (tx0 * m, ((tx0 + count) * m).min(c.ow));
                    for (i, yi) in y.chunks_exact(m).take(m.min(rows - tyl * m)).enumerate() {
                        // Tile `lane` covers run[lane·m ..]; its last one may be cut. The
                        // row is put together in registers and stored as one run.
                        let mut row = [0.0f32; 4 * LANES];
                        for lane in 0..LANES {
                            for (k, v) in yi.iter().enumerate() {
                                row[lane * m + k] = v.0[lane] + b;
                            }
                        }
                        if relu {
                            for v in &mut row {
                                *v = relu_f32(*v);
                            }
                        }
                        let run = &mut dst[(tyl * m + i) * c.ow..][x0..x1];
                        run.copy_from_slice(&row[..x1 - x0]);
                    }
                }
            }
        }
    }
}

/// Asks the CPU to bring the cache line holding `s[at]` into L1 ahead of its use: a
/// hint, with no effect on any value (nothing when `at` is past the end).
#[inline(always)]
fn prefetch(s: &[f32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = s.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists on every
        // CPU this build runs on; a prefetch reads no memory the program can observe and
        // cannot fault, and the pointer is to an element of `s` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((v as *const f32).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, at);
}
