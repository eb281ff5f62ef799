//! The weight gradient in the transform domain.
//!
//! The forward pass computes, for one tile of one sample (sums over the input channel
//! `c`, then positions `ξ`; `⊙` is the elementwise product),
//!
//! ```text
//! Y_o = Aᵀ [ Σ_c U_{o,c} ⊙ V_c ] A,     U_{o,c} = G g_{o,c} Gᵀ,   V_c = Bᵀ d_c B.
//! ```
//!
//! Everything is linear in `g`, so with `dY_o = ∂L/∂Y_o` (zero on the outputs that hang
//! over the plane, which were dropped) the chain rule through each linear map is its
//! transpose:
//!
//! ```text
//! dM_o      = A dY_o Aᵀ                                  (α × α, adjoint of Aᵀ·A)
//! dU_{o,c}  = Σ_{samples, tiles} dM_o ⊙ V_c              (adjoint of U ⊙ V in U)
//! ∂L/∂g_{o,c} = Gᵀ dU_{o,c} G                            (adjoint of G·Gᵀ)
//! ```
//!
//! This is the exact gradient of the function the Winograd forward computes; in exact
//! arithmetic that function *is* the convolution, so it is the exact weight gradient
//! of the convolution (`focal gradcheck` checks it against finite differences and the
//! tests against the direct definition).
//!
//! The middle line is, for each of the α² positions `ξ`, one GEMM over the tiles:
//! `dU_ξ (R, S) = dM_ξ (R, tiles) · V_ξᵀ (tiles, S)`, accumulated over the chunks in
//! chunk order (the chunks depend only on the shapes, so the sum order is fixed).

use rayon::prelude::*;

use super::plan::{split_phases, transform_inputs, Conv3, Grid};
use super::simd::{multiversion, Level};
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::{gemm_with, Isa, MatMut, MatRef};

/// `gw (R, S, 3, 3) = ∂L/∂k` for the forward conv `c` with input `x` and output
/// gradient `gy`, on the GEMM path `isa`. `gw` is overwritten.
pub(crate) fn weight_grad<T: Tile>(
    isa: Isa,
    c: &Conv3,
    grid: &Grid,
    x: &[f32],
    gy: &[f32],
    gw: &mut [f32],
) {
    let a2 = T::ALPHA * T::ALPHA;
    let level = Level::of(isa);
    if grid.rows(c) * grid.tw == 0 {
        gw.fill(0.0); // no output pixel: nothing depends on the weights
        return;
    }
    // dU laid out [α²][R][S]: each position's (R, S) block is one task's.
    let mut du = vec![0.0f32; a2 * c.r * c.s];
    // Buffers for the largest chunk, allocated once per call (see `plan.rs`).
    let most = grid.rows_per_chunk * grid.tw;
    let (mut v_buf, mut dm_buf) = (vec![0.0f32; c.s * a2 * most], vec![0.0f32; c.r * a2 * most]);
    for (ci, (r0, r1)) in grid.chunks(c).enumerate() {
        let tiles = (r1 - r0) * grid.tw;
        let v = &mut v_buf[..c.s * a2 * tiles];
        transform_inputs::<T>(level, c, grid, x, (r0, r1), v);
        let dm = &mut dm_buf[..c.r * a2 * tiles];
        transform_output_grads::<T>(level, c, grid, gy, (r0, r1), dm);
        let (v, dm) = (&*v, &*dm);
        let beta = if ci == 0 { 0.0 } else { 1.0 };
        du.par_chunks_mut(c.r * c.s)
            .enumerate()
            .for_each(|(xi, du_xi)| {
                // dM_ξ (R, tiles): rows α²·tiles floats apart. V_ξᵀ (tiles, S) is V_ξ
                // read with strides (1, α²·tiles).
                let dm_xi = MatRef::new(&dm[xi * tiles..], c.r, tiles, a2 * tiles, 1);
                let v_xi_t = MatRef::new(&v[xi * tiles..], c.s, tiles, a2 * tiles, 1).t();
                // dM_ξ (R, tiles) · V_ξᵀ (tiles, S) -> dU_ξ (R, S); β = 1 after the first
                // chunk continues each entry's FMA chain over the tiles in order.
                let du_xi = MatMut::row_major(du_xi, c.r, c.s);
                gemm_with(isa, 1.0, dm_xi, v_xi_t, beta, du_xi);
            });
    }
    // ∂L/∂g = Gᵀ dU G, one task per output channel.
    let du = &*du;
    gw.par_chunks_mut(c.s * 9)
        .enumerate()
        .for_each(|(o, gwo)| filter_grad_row::<T>(level, du, c.r, o, gwo));
}

multiversion! {
    /// Row `o` of the weight gradient, `∂L/∂g[o, s] = Gᵀ dU[·, o, s] G`, for
    /// `LANES` input channels at a time (`dU[ξ, o, s0 ..]` is contiguous).
    fn filter_grad_row<T: Tile>(du: &[f32], r: usize, o: usize, gwo: &mut [f32]) {
        let a2 = T::ALPHA * T::ALPHA;
        let s = gwo.len() / 9;
        let mut t = [Lanes::ZERO; 36];
        let mut g = [Lanes::ZERO; 9];
        for s0 in (0..s).step_by(LANES) {
            let count = (s - s0).min(LANES);
            for (xi, v) in t[..a2].iter_mut().enumerate() {
                *v = Lanes::load(&du[(xi * r + o) * s + s0..][..count]);
            }
            T::filter_adjoint(&t[..a2], &mut g);
            for (l, dst) in gwo[s0 * 9..].chunks_exact_mut(9).take(count).enumerate() {
                for (d, gi) in dst.iter_mut().zip(&g) {
                    *d = gi.0[l];
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` for every (output channel, tile) of the chunk `[r0, r1)`, laid out
/// `[R][α²][tiles]`; `dY` is zero past the plane's bottom and right edges. One task per
/// output channel.
fn transform_output_grads<T: Tile>(
    level: Level,
    c: &Conv3,
    grid: &Grid,
    gy: &[f32],
    (r0, r1): (usize, usize),
    dm: &mut [f32],
) {
    let a2 = T::ALPHA * T::ALPHA;
    let tiles = (r1 - r0) * grid.tw;
    dm.par_chunks_mut(a2 * tiles)
        .enumerate()
        .for_each(|(o, dmo)| output_grad_channel::<T>(level, c, grid, gy, r0, r1, o, dmo));
}

multiversion! {
    /// [`transform_output_grads`] for output channel `o`: the `m` rows of each row of
    /// tiles split by column phase, then `A dY Aᵀ` on `LANES` tiles at a time.
    fn output_grad_channel<T: Tile>(
        c: &Conv3,
        grid: &Grid,
        gy: &[f32],
        r0: usize,
        r1: usize,
        o: usize,
        dmo: &mut [f32],
    ) {
        let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
        let tiles = (r1 - r0) * grid.tw;
        let plane = c.oh * c.ow;
        let len = grid.tw.next_multiple_of(LANES);
        let mut rows = vec![0.0f32; m * m * len];
        let mut line = vec![0.0f32; m * len];
        let mut dy = [Lanes::ZERO; 16];
        let mut t = [Lanes::ZERO; 36];
        for r in r0..r1 {
            let (n, ty) = (r / grid.th, r % grid.th);
            let pl = &gy[(n * c.r + o) * plane..(n * c.r + o + 1) * plane];
            let y0 = (ty * m) as isize;
            split_phases::<T>(pl, c.oh, c.ow, y0, 0, m, &mut line, &mut rows);
            let j_row = (r - r0) * grid.tw;
            for tx0 in (0..grid.tw).step_by(LANES) {
                for (ik, v) in dy[..m * m].iter_mut().enumerate() {
                    *v = Lanes::load(&rows[ik * len + tx0..]);
                }
                T::output_adjoint(&dy[..m * m], &mut t[..a2]);
                let count = (grid.tw - tx0).min(LANES);
                for (xi, val) in t[..a2].iter().enumerate() {
                    val.store(&mut dmo[xi * tiles + j_row + tx0..][..count]);
                }
            }
        }
    }
}
