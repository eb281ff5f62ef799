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
//! order on every machine (the baseline and AVX2 builds too, `simd.rs`); every product
//! is one GEMM call per task, whose elements are each one FMA chain in a fixed order on
//! both SIMD paths; the work is cut by shapes only (see `plan.rs`). So the results are
//! the same bits on any number of threads and on AVX2 and AVX-512.
//!
//! **Numerical error.** Winograd is exact in exact arithmetic; in f32 the transforms
//! add rounding, and F(4x4)'s larger entries amplify it. Measured against the naive
//! reference (f64 accumulation) on layer shapes with Kaiming-normal weights, as
//! `max |result − reference| / max |reference|`: F(2x2) 3e-7 to 1.1e-6 (as accurate as
//! the direct kernels, 4e-7 to 2.4e-6; weight gradients at full size up to 4.2e-6 and
//! 6.3e-6), F(4x4) 3e-6 to 2.3e-5 (`docs/winograd.md` has the tables). **The bound the
//! tests enforce**: `1e-5·max |reference|` for F(2x2) (and the direct kernels),
//! `5e-5·max |reference|` for F(4x4) (`engine/tests/winograd.rs`).
//!
//! **Which tile, and when** (`--conv-algo`, [`ConvAlgo`]): the rule of `auto` and the
//! measurements behind it are in `algo.rs`. In short, on the 2-core Intel Xeon
//! (Sapphire Rapids, AVX-512) with focal's GEMM: Winograd runs forward + backward
//! 1.1-1.8× faster than the direct kernels on 3x3 convs with at least 256 channels in
//! and out on planes of 32² or more (`auto` uses it there; the 2-core AMD EPYC Zen 5,
//! measured before, also won on 16²); F(4x4) from 128 of its tiles; 64- and
//! 128-channel convs and small planes stay direct, which includes every 3x3 conv of the
//! 96-px default model, so `focal train`'s default run is unchanged.
//!
//! **GEMM.** The products run on focal's own GEMM (`crate::gemm`), on the path the caller
//! names (the process's `FOCAL_ISA` choice in conv2d; the tests run each). The
//! transformed filters `U_ξ` are packed once per call ([`crate::gemm::PackedA`]) and
//! reused for every chunk of tiles; the forward kernel (also the input gradient's) runs
//! each chunk of tiles start to finish on one thread (`forward.rs`), writing the
//! transformed inputs `V_ξ` straight in the GEMM's `B` micro-panel order
//! (`packed_inputs.rs`), where the GEMM reads them in place; each product `M_ξ = U_ξ·V_ξ`
//! is stored once by the GEMM (β = 0, no zero fill); the weight gradient's `dU_ξ`
//! continues its FMA chains across the chunks (β = 1). The transforms run in the vector
//! build that goes with the GEMM path (`simd.rs`), and compute the same bits in every
//! build.

mod algo;
mod forward;
pub(crate) mod gradcheck_cases;
mod packed_inputs;
mod plan;
pub(crate) mod simd;
mod transforms;
mod weight_grad;

pub(crate) use algo::{choose, TileKind};
pub use algo::{conv_algo, set_conv_algo, ConvAlgo};

use super::geometry::Geom;
use crate::gemm::Isa;
use forward::PIPELINE_FLOATS;
use plan::{packed_filters, Conv3, Grid, CHUNK_FLOATS};
use transforms::{Tile, F2, F4};

/// How the kernels cut the tiles of a call: the weight gradient's chunks of tile rows
/// (`plan::Grid`) and the forward kernel's chunks of tiles (`forward.rs`, also the input
/// gradient's), each as a budget in floats of transformed inputs and products.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunks {
    pub grid: usize,
    pub pipeline: usize,
}

impl Chunks {
    /// What the kernels use.
    pub const DEFAULT: Chunks = Chunks {
        grid: CHUNK_FLOATS,
        pipeline: PIPELINE_FLOATS,
    };
    /// The smallest chunks: one row of tiles, one GEMM panel of tiles (for the tests).
    #[cfg(test)]
    pub const SMALLEST: Chunks = Chunks {
        grid: 1,
        pipeline: 1,
    };
}

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
/// `g` (see [`algo::eligible`]), on the GEMM path `isa`; with `relu`, `max(·, 0)` of it
/// (the fused `conv2d_relu`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    tile: TileKind,
    isa: Isa,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    forward_in_chunks(tile, isa, g, x, w, (bias, relu), out, Chunks::DEFAULT);
}

/// [`forward`] with the chunks `chunks` (the tests force other sizes); `store` is the
/// bias and whether a ReLU follows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_in_chunks(
    tile: TileKind,
    isa: Isa,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    store: (Option<&[f32]>, bool),
    out: &mut [f32],
    chunks: Chunks,
) {
    fn run<T: Tile>(
        isa: Isa,
        g: &Geom,
        x: &[f32],
        w: &[f32],
        store: (Option<&[f32]>, bool),
        out: &mut [f32],
        chunks: Chunks,
    ) {
        let u = packed_filters::<T>(isa, w, g.o, g.c, false);
        let c = forward_conv(g);
        forward::conv::<T>(&c, x, &u, store, out, chunks.pipeline);
    }
    match tile {
        TileKind::F2 => run::<F2>(isa, g, x, w, store, out, chunks),
        TileKind::F4 => run::<F4>(isa, g, x, w, store, out, chunks),
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
    backward_in_chunks(tile, isa, g, x, w, gy, gx, gw, Chunks::DEFAULT);
}

/// [`backward`] with the chunks `chunks` (the tests force other sizes).
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
    chunks: Chunks,
) {
    fn run<T: Tile>(
        isa: Isa,
        g: &Geom,
        x: Option<&[f32]>,
        w: Option<&[f32]>,
        gy: &[f32],
        (gx, gw): (Option<&mut [f32]>, Option<&mut [f32]>),
        chunks: Chunks,
    ) {
        if let (Some(gw), Some(x)) = (gw, x) {
            let c = forward_conv(g);
            let grid = Grid::new::<T>(&c, chunks.grid);
            weight_grad::weight_grad::<T>(isa, &c, &grid, x, gy, gw);
        }
        if let (Some(gx), Some(w)) = (gx, w) {
            let u = packed_filters::<T>(isa, w, g.o, g.c, true);
            let c = input_grad_conv(g);
            forward::conv::<T>(&c, gy, &u, (None, false), gx, chunks.pipeline);
        }
    }
    match tile {
        TileKind::F2 => run::<F2>(isa, g, x, w, gy, (gx, gw), chunks),
        TileKind::F4 => run::<F4>(isa, g, x, w, gy, (gx, gw), chunks),
    }
}

#[cfg(test)]
mod tests;
