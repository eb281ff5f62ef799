//! The width of the `B` micro-panels each GEMM path reads, for callers that lay out a
//! `B` operand in that order as they compute it (the Winograd transformed inputs), so
//! that packing it is one contiguous copy per micro-panel.

use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::kernel::MicroKernel;

/// Columns per `B` micro-panel of the kernel `isa` runs (`NR`, see `pack.rs`). The
/// portable path packs through `matrixmultiply`, which takes any layout: 16 there.
pub fn b_panel_width(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::avx512::Avx512::NR,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => super::avx2::Avx2::NR,
        _ => 16,
    }
}
