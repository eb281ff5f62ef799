//! The AVX2 + FMA micro-kernel: a 6 × 16 tile of `C` in 12 ymm registers.
//!
//! ```text
//!            B micro-panel: 2 vectors of 8 per k
//!            [ b0 .. b7 | b8 .. b15 ]
//!   A   a0   [ acc 0,0  | acc 0,1   ]     acc[i][v] += a_i · b_v
//!       ..   [   ...    |   ...     ]     (one FMA each, per k)
//!       a5   [ acc 5,0  | acc 5,1   ]
//! ```
//!
//! 12 accumulators + 2 `B` vectors + 1 broadcast = 15 of the 16 ymm registers; 12
//! independent FMA chains cover two FMA pipes of 4-5 cycles latency. Per step of `k`:
//! 2 loads and 6 broadcasts for 12 FMAs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::kernel::{MicroKernel, TileStart};

/// The AVX2 kernel.
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    const KC: usize = 256;
    const NC: usize = 480;
    const VL: usize = 8;

    unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        start: TileStart,
    ) {
        // SAFETY: forwarded contract (MicroKernel::tile and the CPU check made before
        // any kernel of this path is chosen).
        unsafe { tile::<2>(kc, a, b, c, ldc, start) }
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
        // SAFETY: forwarded contract (MicroKernel::tile_narrow).
        unsafe {
            if vectors == 1 {
                tile::<1>(kc, a, b, c, ldc, start)
            } else {
                tile::<2>(kc, a, b, c, ldc, start)
            }
        }
    }
}

/// The first `NV` vectors (of 8) of the 6 × 16 tile; the B panel's rows are 16 floats.
///
/// # Safety
/// As [`MicroKernel::tile`] with `MR = 6`, `NR = 16`, `NV ≤ 2`, and the CPU has AVX2
/// and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    start: TileStart,
) {
    const MR: usize = 6;
    // SAFETY: the caller guarantees the CPU features and that every pointer below stays
    // inside the memory described in MicroKernel::tile: A at a + k·6 + i, B at
    // b + k·16 + lane, C at c + i·ldc + lane (lane < 8·NV ≤ 16), the bias at bias + i
    // (i < 6).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        match start {
            TileStart::Zero => {}
            TileStart::Load => {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = _mm256_loadu_ps(c.add(i * ldc + 8 * v));
                    }
                }
            }
            TileStart::Scale(beta) => {
                let bv = _mm256_set1_ps(beta);
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = _mm256_mul_ps(bv, _mm256_loadu_ps(c.add(i * ldc + 8 * v)));
                    }
                }
            }
            TileStart::RowBias(bias) => {
                for (i, row) in acc.iter_mut().enumerate() {
                    *row = [_mm256_set1_ps(*bias.add(i)); NV];
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, r) in bv.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(b.add(8 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_set1_ps(*a.add(i));
                for (r, bvv) in row.iter_mut().zip(&bv) {
                    *r = _mm256_fmadd_ps(ai, *bvv, *r);
                }
            }
            a = a.add(MR);
            b = b.add(16);
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, r) in row.iter().enumerate() {
                _mm256_storeu_ps(c.add(i * ldc + 8 * v), *r);
            }
        }
    }
}
