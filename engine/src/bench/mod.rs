//! The kernel benchmarks behind `focal bench peak|gemm|conv` and the `cargo bench`
//! targets `gemm` and `conv`, in one place so that both print the same figures.
//!
//! - [`timing`]: one [`Row`] per case (table or JSON line), interleaved timing;
//! - [`gemm`]: the FMA peak and square GEMMs on every path the CPU has;
//! - [`conv`]: conv2d forward and forward + backward on the layer shapes of a
//!   ResNet-18 RetinaNet, beside the GEMM of the same size.
//!
//! Every measurement is the median of repeated runs after one warm-up run (and the
//! best run beside it). FLOP counts are multiply-adds × 2: a GEMM `(M, K)·(K, N)` is
//! `2·M·N·K`, a convolution `2·N·O·OH·OW·(C/G)·KH·KW`, and its backward twice that
//! (input and weight gradients), minus the input half when the input needs no gradient
//! (the stem's image). Rates are also given as a fraction of the measured FMA peak
//! (`peak_fraction`, by the wall clock; `cpu_peak_fraction`, per second of CPU time
//! over one thread's peak, the steadier figure on a shared machine), so that a figure
//! means the same on every machine.

pub mod conv;
pub mod gemm;
pub mod timing;

pub use timing::{
    process_cpu_ns, thread_cpu_ns, threading_note, time_interleaved, Budget, Row, Timing,
};
