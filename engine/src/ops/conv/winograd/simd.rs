//! The transforms compiled for the vector extensions of the CPU at hand.
//!
//! The transform loops are plain Rust on [`super::transforms::Lanes`]; built for the
//! x86-64 baseline they use 128-bit SSE registers. [`multiversion`] compiles a loop a
//! second and third time with AVX2 and AVX-512 enabled; the build a call runs is chosen
//! from the GEMM path of that call ([`Level::of`]), so `FOCAL_ISA` (read once by
//! `gemm::isa`, where forcing a path the CPU lacks is an error) moves the transforms and
//! the products together.
//!
//! **Same bits on every path.** The transforms only add, subtract and multiply by
//! constants; each of these is exactly rounded in IEEE arithmetic, whatever the vector
//! width, and Rust never contracts a multiply and an add into an FMA on its own. So the
//! portable, AVX2 and AVX-512 builds of a loop compute the same bits (a test runs all
//! three and compares).

/// The build a transform loop runs: the one shared by every multiversioned loop of the
/// ops (`ops/simd_level.rs`).
pub(crate) use crate::ops::simd_level::Level;

/// Defines `fn name<T: Tile>(level: Level, args)` whose body is compiled three times
/// (for the x86-64 baseline, with AVX2 and with AVX-512) and runs in the build `level`
/// names (see [`Level::of`], which only names a build the CPU can run). The body and
/// everything it calls that is `#[inline(always)]` (the transforms,
/// [`super::transforms::Lanes`]) is inlined into each build.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident<T: Tile>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<T: Tile>(level: $crate::ops::conv::winograd::simd::Level, $($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<T: Tile>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<T: Tile>($($arg: $ty),*) {
                body::<T>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<T: Tile>($($arg: $ty),*) {
                body::<T>($($arg),*)
            }

            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Level::of` names Avx512 only when the CPU has avx512f and
                // avx512vl (detected at run time), so every instruction of this build
                // exists.
                $crate::ops::conv::winograd::simd::Level::Avx512 => unsafe { avx512::<T>($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Level::of` names Avx2 only when the CPU has avx2 (detected).
                $crate::ops::conv::winograd::simd::Level::Avx2 => unsafe { avx2::<T>($($arg),*) },
                _ => body::<T>($($arg),*),
            }
        }
    };
}

pub(crate) use multiversion;
