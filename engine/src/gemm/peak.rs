//! The machine's measured f32 FMA peak: the denominator of every "fraction of peak".
//!
//! The loops here are timed by `focal_engine::bench::gemm::measure_peak`. Each thread
//! runs a loop of fused multiply-adds on independent vector accumulators
//! that never leave the registers (`acc = acc·m + a`, converging to a fixed point, so
//! nothing overflows and nothing can be folded away): 16 chains of zmm (12 of ymm, as
//! 16 ymm would not fit in the registers with the two constants), enough to cover two
//! FMA pipes of up to 6-8 cycles latency. All threads run at once, so the figure
//! includes whatever the cores share (a hyperthread sibling halves it, as it should).

use super::isa::Isa;

/// Flops per loop iteration of [`fma_loop`]: chains × lanes × 2.
pub fn flops_per_iter(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16 * 16 * 2,
        Isa::Avx2 => 12 * 8 * 2,
        Isa::Portable => 16 * 2,
    }
}

#[cfg(target_arch = "x86_64")]
mod loops {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(iters: usize) -> f32 {
        let m = _mm512_set1_ps(0.999);
        let add = _mm512_set1_ps(1e-3);
        let mut acc = [_mm512_set1_ps(0.5); 16];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, add);
            }
        }
        let mut s = _mm512_setzero_ps();
        for a in acc {
            s = _mm512_add_ps(s, a);
        }
        _mm512_reduce_add_ps(s)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(iters: usize) -> f32 {
        let m = _mm256_set1_ps(0.999);
        let add = _mm256_set1_ps(1e-3);
        // 12 chains + 2 constants: 14 of the 16 ymm registers (16 chains would spill).
        let mut acc = [_mm256_set1_ps(0.5); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, add);
            }
        }
        let mut s = [0.0f32; 8];
        let mut t = _mm256_setzero_ps();
        for a in acc {
            t = _mm256_add_ps(t, a);
        }
        // SAFETY: `s` holds 8 floats, one ymm register.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), t) };
        s.iter().sum()
    }
}

/// The portable path's denominator: a plain multiply-then-add loop on 16 chains, as
/// the compiler vectorises it for the baseline target (no FMA is assumed: without the
/// instruction, `f32::mul_add` is a slow library call). A yardstick for CPUs without
/// AVX2; matrixmultiply itself uses whatever SIMD it detects.
fn scalar(iters: usize) -> f32 {
    let mut acc = [0.5f32; 16];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * 0.999 + 1e-3;
        }
    }
    acc.iter().sum()
}

/// Runs `iters` iterations of the FMA loop of `isa` on this thread and returns a value
/// computed from the accumulators (so that the loop cannot be left out).
///
/// # Panics
/// When the CPU lacks the path's instruction set.
pub fn fma_loop(isa: Isa, iters: usize) -> f32 {
    assert!(isa.available(), "{}", isa.check().unwrap_err());
    match isa {
        // SAFETY: the assert above checked that the CPU has the features the loop needs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { loops::avx512(iters) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { loops::avx2(iters) },
        _ => scalar(iters),
    }
}
