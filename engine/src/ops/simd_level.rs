//! Which build of a vectorised elementwise loop runs: plain Rust loops compiled a second
//! and third time with AVX2 and AVX-512 enabled (`#[target_feature]`), chosen at run time
//! with the GEMM path (`FOCAL_ISA`), so that forcing a path moves every kernel together:
//! the focal loss, max-pool, the Winograd transforms (AVX2 at most, see their `simd.rs`)
//! and im2col's gathers and transposes.
//! The loops use only exactly rounded IEEE operations, compares and selects, never a
//! fused multiply-add, so every build gives the same bits.

use crate::gemm::Isa;

/// A vector extension a loop is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Portable,
    Avx2,
    Avx512,
}

impl Level {
    /// The build that goes with the process's GEMM path (`FOCAL_ISA`), if the CPU has it.
    pub(crate) fn active() -> Level {
        Level::of(crate::gemm::isa::active())
    }

    /// The build for GEMM path `isa`, only ever one this CPU can run (the AVX-512 builds
    /// enable AVX-512F alone).
    pub(crate) fn of(isa: Isa) -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            match isa {
                Isa::Avx512 if is_x86_feature_detected!("avx512f") => return Level::Avx512,
                Isa::Avx512 | Isa::Avx2 if is_x86_feature_detected!("avx2") => return Level::Avx2,
                _ => {}
            }
        }
        let _ = isa;
        Level::Portable
    }
}
