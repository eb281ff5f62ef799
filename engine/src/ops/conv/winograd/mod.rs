//! Winograd convolution for 3x3, stride-1 convolutions: forward, input gradient and
//! weight gradient (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! arXiv 1509.09308).
//!
//! **The idea.** `F(m×m, 3×3)` computes an `m × m` block of a 3x3 correlation from an
//! `α × α` block of input (`α = m + 2`) as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! with small constant matrices `Bᵀ (α×α)`, `G (α×3)`, `Aᵀ (m×α)` (written out in
//! `transforms.rs`, and in `docs/winograd.md`). Summed over the input channels, the elementwise product becomes,
//! for each of the `α²` transform positions `ξ`, a matrix product over channels:
//! `M_ξ (O, tiles) = U_ξ (O, C) · V_ξ (C, tiles)`. A direct convolution spends `9·C`
//! multiply-adds per output pixel; Winograd spends `α²·C/m²`: `4·C` with F(2x2,3x3)
//! (2.25× fewer) and `2.25·C` with F(4x4,3x3) (4× fewer), plus the transforms, whose
//! cost grows with `C + O` rather than `C·O`.
//!
//! **Backward.**
//! - Input gradient: `∂x` of a 3x3 stride-1 conv with padding `p` is itself a 3x3
//!   stride-1 conv of `∂y` with padding `2 − p` and the filters turned by 180° with the
//!   input and output channels swapped: `∂x[c] = Σ_o conv(∂y[o], rot180(w[o, c]))`. It
//!   runs through the same kernel as the forward pass (`forward.rs`).
//! - Weight gradient: formed in the transform domain, `dU = Σ_tiles (A dY Aᵀ) ⊙ V`,
//!   then `∂w = Gᵀ dU G` (derived in `weight_grad.rs`).
//! - Bias gradient: the same sum as the direct path's.
//!
//! **Determinism.** The transforms are plain f32 code, the same operations in the same
//! order on every machine (their AVX2 and AVX-512 builds too, `simd.rs`); every product
//! is one `plan::tile_gemm` call per task; the work is cut by shapes only (see
//! `plan.rs`). So the results are the same bits on any number of threads.
//!
//! **Numerical error.** Winograd is exact in exact arithmetic; in f32 the transforms
//! add rounding, and F(4x4)'s larger entries (up to 8 in `Aᵀ`, 5 in `Bᵀ`, and the
//! inexact 1/6, 1/12, 1/24 in `G`) amplify it. Measured against the naive reference
//! (f64 accumulation) with N(0, 1) inputs and output gradients and Kaiming-normal
//! weights (std √(2/(9·C))), as `max |result − reference| / max |reference|` over each
//! tensor (forward / input gradient / weight gradient; `engine/tests/winograd.rs`):
//!
//! | layer, batch 2        | direct              | F(2x2,3x3)          | F(4x4,3x3)          |
//! |-----------------------|---------------------|---------------------|---------------------|
//! | 64 → 64 at 32²        | 4.9e-7 2.2e-7 3.7e-7 | 3.7e-7 3.2e-7 6.8e-7 | 7.2e-6 5.8e-6 6.3e-6 |
//! | 128 → 128 at 16²      | 4.3e-7 2.9e-7 4.8e-7 | 4.7e-7 4.9e-7 5.8e-7 | 7.7e-6 1.0e-5 3.4e-6 |
//! | 256 → 256 at 16²      | 4.5e-7 3.5e-7 4.2e-7 | 6.2e-7 6.0e-7 5.9e-7 | 1.2e-5 1.1e-5 4.3e-6 |
//! | 512 → 512 at 8²       | 3.4e-7 2.8e-7 4.5e-7 | 5.5e-7 5.0e-7 3.7e-7 | 9.3e-6 1.1e-5 4.0e-6 |
//! | 256 → 256 at 64² (head) | 4.1e-7 3.6e-7 3.2e-7 | 7.0e-7 6.1e-7 6.6e-7 | 1.6e-5 1.2e-5 7.3e-6 |
//! | 64 → 64 at 128² (layer1) | 5.6e-7 2.0e-7 3.3e-7 | 4.2e-7 3.5e-7 6.6e-7 | 9.9e-6 7.2e-6 6.6e-6 |
//!
//! F(2x2) is as accurate as the direct kernels (within 2×); F(4x4) is 15-40× less
//! accurate, about 1e-5 of the output's scale — a hundred times smaller than the
//! relative change one optimiser step typically makes to a weight. **The bound the
//! tests enforce**, on every shape they run: `max |error| ≤ 5e-6·max |reference|` for
//! F(2x2) (and the direct kernels) and `≤ 5e-5·max |reference|` for F(4x4), three to
//! ten times the largest error measured.
//!
//! **Which tile, and when** (`--conv-algo`, [`ConvAlgo`]): the rule of `auto` and the
//! measurements behind it are in `algo.rs`. In short, with today's GEMM, on the 2-core
//! AMD EPYC Zen 5 (AVX-512): Winograd runs forward + backward 1.1-2× faster than the
//! direct kernels on 3x3 convs with at least 128 channels in and out, planes of 16² or
//! more and enough tiles; F(4x4) wins over F(2x2) only on the largest planes (512 of
//! its tiles); 64-channel convs and small planes stay direct — which includes every 3x3
//! conv of the 96-px default model, so `focal train`'s default run is unchanged.
//!
//! **GEMM.** The products run on focal's own GEMM (`crate::gemm`), on the path the
//! caller names (the process's `FOCAL_ISA` choice in conv2d; the tests run each). The
//! transformed filters `U_ξ` are packed once per call ([`crate::gemm::PackedA`]) and
//! reused for every chunk of tiles; each product `M_ξ = U_ξ·V_ξ` is stored once by
//! the GEMM (β = 0, no zero fill); the weight gradient's `dU_ξ` continues its FMA chains
//! across the chunks (β = 1). The transforms run in the vector build that goes with the
//! GEMM path (`simd.rs`), and compute the same bits in every build.

mod algo;
mod forward;
pub(crate) mod gradcheck_cases;
mod plan;
pub(crate) mod simd;
mod transforms;
mod weight_grad;

pub(crate) use algo::{choose, TileKind};
pub use algo::{conv_algo, set_conv_algo, ConvAlgo};

use super::geometry::Geom;
use crate::gemm::Isa;
use plan::{packed_filters, Conv3, Grid, CHUNK_FLOATS};
use transforms::{Tile, F2, F4};

/// The forward conv of `g` as a [`Conv3`].
fn forward_conv(g: &Geom) -> Conv3 {
    Conv3 {
        n: g.n,
        s: g.c,
        h: g.h,
        w: g.w,
        r: g.o,
        oh: g.oh,
        ow: g.ow,
        py: g.ph as isize,
        px: g.pw as isize,
    }
}

/// The input gradient of `g` as a [`Conv3`] on `∂y`: `∂x (N, C, H, W)` from
/// `∂y (N, O, OH, OW)`, padding `2 − p` (an offset: negative when `p > 2`).
fn input_grad_conv(g: &Geom) -> Conv3 {
    Conv3 {
        n: g.n,
        s: g.o,
        h: g.oh,
        w: g.ow,
        r: g.c,
        oh: g.h,
        ow: g.w,
        py: 2 - g.ph as isize,
        px: 2 - g.pw as isize,
    }
}

/// `out = conv(x, w) + bias` (`N·O·OH·OW` floats, every one written) for an eligible
/// `g` (see [`algo::eligible`]), on the GEMM path `isa`.
pub(crate) fn forward(
    tile: TileKind,
    isa: Isa,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    forward_in_chunks(tile, isa, g, x, w, bias, out, CHUNK_FLOATS);
}

/// [`forward`] with `chunk_floats` per chunk of tiles (the tests force several chunks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_in_chunks(
    tile: TileKind,
    isa: Isa,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    chunk_floats: usize,
) {
    fn run<T: Tile>(
        isa: Isa,
        g: &Geom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        chunk_floats: usize,
    ) {
        let u = packed_filters::<T>(isa, w, g.o, g.c, false);
        let c = forward_conv(g);
        forward::conv::<T>(&c, &Grid::new::<T>(&c, chunk_floats), x, &u, bias, out);
    }
    match tile {
        TileKind::F2 => run::<F2>(isa, g, x, w, bias, out, chunk_floats),
        TileKind::F4 => run::<F4>(isa, g, x, w, bias, out, chunk_floats),
    }
}

/// Gradients of the input and of the weight (each only if asked for), on the GEMM
/// path `isa`: both are overwritten (their old contents are ignored).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    tile: TileKind,
    isa: Isa,
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: Option<&mut [f32]>,
) {
    backward_in_chunks(tile, isa, g, x, w, gy, gx, gw, CHUNK_FLOATS);
}

/// [`backward`] with `chunk_floats` per chunk of tiles (the tests force several chunks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_in_chunks(
    tile: TileKind,
    isa: Isa,
    g: &Geom,
    x: Option<&[f32]>,
    w: Option<&[f32]>,
    gy: &[f32],
    gx: Option<&mut [f32]>,
    gw: Option<&mut [f32]>,
    chunk_floats: usize,
) {
    fn run<T: Tile>(
        isa: Isa,
        g: &Geom,
        x: Option<&[f32]>,
        w: Option<&[f32]>,
        gy: &[f32],
        (gx, gw): (Option<&mut [f32]>, Option<&mut [f32]>),
        chunk_floats: usize,
    ) {
        if let (Some(gw), Some(x)) = (gw, x) {
            let c = forward_conv(g);
            let grid = Grid::new::<T>(&c, chunk_floats);
            weight_grad::weight_grad::<T>(isa, &c, &grid, x, gy, gw);
        }
        if let (Some(gx), Some(w)) = (gx, w) {
            let u = packed_filters::<T>(isa, w, g.o, g.c, true);
            let c = input_grad_conv(g);
            forward::conv::<T>(&c, &Grid::new::<T>(&c, chunk_floats), gy, &u, None, gx);
        }
    }
    match tile {
        TileKind::F2 => run::<F2>(isa, g, x, w, gy, (gx, gw), chunk_floats),
        TileKind::F4 => run::<F4>(isa, g, x, w, gy, (gx, gw), chunk_floats),
    }
}

#[cfg(test)]
mod tests;
