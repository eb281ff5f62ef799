//! The transforms compiled for the vector extensions of the CPU at hand.
//!
//! The transform loops are plain Rust on [`super::transforms::Lanes`]; built for the
//! x86-64 baseline they use 128-bit SSE registers. [`multiversion`] compiles a loop a
//! second time with AVX2 enabled; the build a call runs is chosen from the GEMM path of
//! that call ([`Level::of`]), so `FOCAL_ISA` (read once by `gemm::isa`, where forcing a
//! path the CPU lacks is an error) moves the transforms and the products together.
//!
//! **No AVX-512 build.** The AVX-512 path runs the AVX2 build of the transforms. A
//! `Lanes` is eight floats, one 256-bit register, so AVX-512 has nothing wider to offer
//! them; but with it enabled, the compiler turned the loops' moves of lanes between the
//! rows of a tile into AVX-512 gathers and scatters (`vgatherdps`, `vscatterqps`), in
//! all six transform loops, where the AVX2 build uses plain vector loads and stores.
//! On a 2-core AMD EPYC Zen 4 (AVX-512, where a scatter of eight floats takes many
//! cycles), the instruction before each gather or scatter held 14-39 % of each loop's
//! samples, and running the AVX2 build instead made the Winograd convs of `focal bench
//! conv --preset grid` 256 → 256 on 32² and 64² planes 20-30 % faster in CPU time
//! (forward, and forward + backward), with the same bits.
//!
//! **Same bits on every path.** The transforms only add, subtract and multiply by
//! constants; each of these is exactly rounded in IEEE arithmetic, whatever the vector
//! width, and Rust never contracts a multiply and an add into an FMA on its own. So the
//! portable and AVX2 builds of a loop compute the same bits (a test runs both and
//! compares).

/// The build a transform loop runs: the one shared by every multiversioned loop of the
/// ops (`ops/simd_level.rs`).
pub(crate) use crate::ops::simd_level::Level;

/// Defines `fn name<T: Tile>(level: Level, args)` whose body is compiled twice (for the
/// x86-64 baseline and with AVX2) and runs in the AVX2 build when `level` is the AVX2 or
/// the AVX-512 path (see the module doc) and the CPU has AVX2, else in the baseline one.
/// The body and everything it calls that is `#[inline(always)]` (the transforms,
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

            use $crate::ops::conv::winograd::simd::Level;
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the guard detects AVX2 at run time, so every instruction of
                // this build exists on the CPU.
                Level::Avx512 | Level::Avx2 if std::arch::is_x86_feature_detected!("avx2") => unsafe {
                    avx2::<T>($($arg),*)
                },
                _ => body::<T>($($arg),*),
            }
        }
    };
}

pub(crate) use multiversion;
