//! Which instruction set the GEMM kernels use.
//!
//! Three paths, all computing the same products:
//!
//! | path       | micro-kernel                      | needs                 |
//! |------------|-----------------------------------|-----------------------|
//! | `avx512`   | 8 × 48 (AVX-512F + FMA), `avx512.rs` | AVX-512F, FMA       |
//! | `avx2`     | 6 × 16 (AVX2 + FMA), `avx2.rs`    | AVX2, FMA             |
//! | `portable` | `matrixmultiply` (any CPU)        | nothing               |
//!
//! The best path the CPU has is detected once per process (`is_x86_feature_detected!`).
//! The environment variable `FOCAL_ISA=avx512|avx2|portable` forces one, so that every
//! path can be run and tested on one machine; forcing a path the CPU lacks is an error
//! reported by [`init_from_env`] (the CLI calls it at start-up and exits with the
//! message), never a crash inside a kernel.
//!
//! The two SIMD paths give the **same bits**: each output element is one fused
//! multiply-add chain over `k` in increasing order, whatever the tile shape (see
//! `driver.rs`). `portable` agrees with them to rounding.

use std::sync::OnceLock;

/// A GEMM code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// 512-bit vectors: the 8 × 48 micro-kernel of `avx512.rs`.
    Avx512,
    /// 256-bit vectors with FMA: the 6 × 16 micro-kernel of `avx2.rs`.
    Avx2,
    /// `matrixmultiply`, for CPUs without AVX2 + FMA and other architectures.
    Portable,
}

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name used by `FOCAL_ISA` and printed by `focal bench`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Parses a `FOCAL_ISA` value.
    pub fn parse(text: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == text.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("FOCAL_ISA={text:?} is not a GEMM path: expected avx512, avx2 or portable")
            })
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest path this CPU has.
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Portable)
    }

    /// The CPU features the path needs, for messages.
    pub fn requires(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512F and FMA",
            Isa::Avx2 => "AVX2 and FMA",
            Isa::Portable => "nothing",
        }
    }

    /// `Ok(self)` when the CPU can run it, else an error naming what is missing.
    pub fn check(self) -> Result<Isa, String> {
        if self.available() {
            Ok(self)
        } else {
            Err(format!(
                "the {} GEMM path needs {}, which this CPU does not have (it has: {})",
                self.name(),
                self.requires(),
                Isa::ALL
                    .into_iter()
                    .filter(|i| i.available())
                    .map(Isa::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The path chosen for this process: `FOCAL_ISA` if set (checked), else the best one
/// the CPU has. Decided on first use and never changed.
static ACTIVE: OnceLock<Result<Isa, String>> = OnceLock::new();

fn choose() -> Result<Isa, String> {
    match std::env::var("FOCAL_ISA") {
        Ok(v) if !v.trim().is_empty() => Isa::parse(&v)?
            .check()
            .map_err(|e| format!("FOCAL_ISA={v}: {e}")),
        _ => Ok(Isa::detect()),
    }
}

/// Decides the process's GEMM path now (reading `FOCAL_ISA`) and returns it, or the
/// error to show the user when `FOCAL_ISA` names an unknown path or one this CPU lacks.
/// The CLI calls this before any work.
pub fn init_from_env() -> Result<Isa, String> {
    ACTIVE.get_or_init(choose).clone()
}

/// The process's GEMM path (see [`init_from_env`]).
///
/// # Panics
/// When `FOCAL_ISA` is invalid and [`init_from_env`] was not called first to report it.
pub fn active() -> Isa {
    match ACTIVE.get_or_init(choose) {
        Ok(isa) => *isa,
        Err(e) => panic!("{e}"),
    }
}

/// A short description of the CPU: the model name from `/proc/cpuinfo` where there is
/// one, the architecture otherwise.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_errors() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
        }
        assert_eq!(Isa::parse(" AVX2 "), Ok(Isa::Avx2));
        let e = Isa::parse("sse9").unwrap_err();
        assert!(
            e.contains("sse9") && e.contains("avx512, avx2 or portable"),
            "{e}"
        );
    }

    #[test]
    fn portable_is_always_available_and_detection_picks_an_available_path() {
        assert!(Isa::Portable.available());
        assert!(Isa::detect().available());
        for isa in Isa::ALL {
            match isa.check() {
                Ok(i) => assert_eq!(i, isa),
                Err(e) => assert!(!isa.available() && e.contains(isa.requires()), "{e}"),
            }
        }
    }
}
