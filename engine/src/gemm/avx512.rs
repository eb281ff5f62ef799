//! The AVX-512 micro-kernel: an `MR × 16·NV` tile of `C` held in `MR·NV` zmm registers.
//!
//! ```text
//!            B micro-panel: NV vectors of 16 per k
//!            [ b0 ........ b15 | b16 ..... b31 | ... ]
//!   A   a0   [ acc 0,0         | acc 0,1       | ... ]   acc[i][v] += a_i · b_v
//!   ..  ..   [                 |               |     ]   (one FMA each, per k)
//!       a_MR [ acc MR,0        | ...           |     ]
//! ```
//!
//! Per step of `k`: `NV` vector loads of `B`, `MR` broadcasts of `A`, `MR·NV` FMAs. On
//! Zen 5 (two 512-bit FMA pipes, 4 cycles latency) at least 8 independent accumulators
//! keep both pipes busy; the shape in use (see [`Avx512`]) has 24, plus `NV` `B` vectors
//! and one broadcast: 28 of the 32 zmm registers.
//!
//! The compiled loop is what the diagram says: per `k`, `NV` loads, `MR` broadcasts
//! straight from the packed `A` (`vbroadcastss zmm, [mem]`, a load-port micro-op, no
//! shuffle) and the `MR·NV` FMAs, nothing spilled. Intel Sapphire Rapids has the same two
//! 512-bit FMA ports of 4 cycles. There, called in a loop on one core over panels that
//! sit in L2 (`KC` 256 to 512, ten B micro-panels, the C tiles in L1), 8 × 48, 12 × 32 and
//! 14 × 32 all ran at the FMA peak per CPU-second (0.96-1.03 of `focal bench peak`'s
//! 166 GFLOP/s per thread, best of 5), 6 × 64 at 0.92-0.96: the kernel is not what keeps
//! a GEMM below the peak, and the shape stays 8 × 48 (the most `A` reuse per `B` load
//! with the 8-wide `A` packing of `pack.rs`; see `focal bench gemm --shapes`). In place,
//! inside 1024² and 2048² products on a shared host, the same kernel ran 1.14-1.21×
//! slower than when the driver left out the traffic of `C`, of the `A` panels and the
//! packing of `B` (`docs/gemm.md`); prefetching the next tile's `C` from here, at the
//! start or near the end of the `k` loop, did not measurably recover it.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::kernel::{MicroKernel, TileStart};

/// The tile, generic in its shape so that shapes can be compared
/// (`focal bench gemm --shapes`): `MR` rows, `NV` vectors of 16 columns, the B panel's
/// rows `BS` floats apart (`16·NV` for a whole tile, the full `NR` for a narrow one).
///
/// # Safety
/// As [`MicroKernel::tile`], with `NR = BS ≥ 16·NV`, and the CPU has AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn tile<const MR: usize, const NV: usize, const BS: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    start: TileStart,
) {
    // SAFETY: the caller guarantees the CPU features and that every pointer below stays
    // inside the memory described in MicroKernel::tile: A at a + k·MR + i (k < kc,
    // i < MR), B at b + k·BS + 16v + lane (v < NV, 16·NV ≤ BS), C at c + i·ldc + 16v +
    // lane, the bias at bias + i. All loads and stores are unaligned-tolerant.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        match start {
            TileStart::Zero => {}
            TileStart::Load => {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = _mm512_loadu_ps(c.add(i * ldc + 16 * v));
                    }
                }
            }
            TileStart::Scale(beta) => {
                let bv = _mm512_set1_ps(beta);
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = _mm512_mul_ps(bv, _mm512_loadu_ps(c.add(i * ldc + 16 * v)));
                    }
                }
            }
            TileStart::RowBias(bias) => {
                for (i, row) in acc.iter_mut().enumerate() {
                    *row = [_mm512_set1_ps(*bias.add(i)); NV];
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, r) in bv.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(b.add(16 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (r, bvv) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, *bvv, *r);
                }
            }
            a = a.add(MR);
            b = b.add(BS);
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, r) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(i * ldc + 16 * v), *r);
            }
        }
    }
}

/// Defines a [`MicroKernel`] of the given shape and blocking on top of [`tile`].
macro_rules! avx512_kernel {
    ($(#[$doc:meta])* $name:ident, $mr:expr, $nv:expr, $kc:expr, $nc:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;
        #[cfg(target_arch = "x86_64")]
        impl MicroKernel for $name {
            const MR: usize = $mr;
            const NR: usize = 16 * $nv;
            const KC: usize = $kc;
            const NC: usize = $nc;
            const VL: usize = 16;
            unsafe fn tile(
                kc: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                start: TileStart,
            ) {
                // SAFETY: forwarded contract (MicroKernel::tile and the CPU check made
                // before any kernel of this path is chosen).
                unsafe { tile::<$mr, $nv, { 16 * $nv }>(kc, a, b, c, ldc, start) }
            }
            unsafe fn tile_narrow(
                vectors: usize,
                kc: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                start: TileStart,
            ) {
                // SAFETY: forwarded contract (MicroKernel::tile_narrow); each arm reads
                // `v ≤ NV` vectors of the NR-wide panel rows.
                unsafe {
                    match vectors {
                        1 => tile::<$mr, 1, { 16 * $nv }>(kc, a, b, c, ldc, start),
                        2 if $nv > 2 => tile::<$mr, 2, { 16 * $nv }>(kc, a, b, c, ldc, start),
                        3 if $nv > 3 => tile::<$mr, 3, { 16 * $nv }>(kc, a, b, c, ldc, start),
                        _ => tile::<$mr, $nv, { 16 * $nv }>(kc, a, b, c, ldc, start),
                    }
                }
            }
        }
    };
}

avx512_kernel!(
    /// The AVX-512 kernel in use: 8 × 48.
    Avx512, 8, 3, 256, 480
);
avx512_kernel!(
    /// 14 × 32, for the shape comparison.
    Avx512x14x32, 14, 2, 256, 480
);
avx512_kernel!(
    /// 12 × 32, for the shape comparison.
    Avx512x12x32, 12, 2, 256, 480
);
avx512_kernel!(
    /// 6 × 64, for the shape comparison.
    Avx512x6x64, 6, 4, 256, 448
);
