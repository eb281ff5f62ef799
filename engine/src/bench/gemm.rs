//! The measured FMA peak, and square GEMMs on every path the CPU has.

use super::timing::{time_interleaved, Budget, Row};
use crate::gemm::{gemm_with, isa, peak, Isa, MatMut, MatRef};
use crate::rng::Rng;

/// The f32 FMA peak of the process's GEMM path with every thread running (best of 5
/// runs of 0.2 s), in GFLOP/s: the denominator of every `peak_fraction`.
pub fn measured_peak() -> f64 {
    peak::measure(isa::active(), 0.2, 5).gflops
}

/// `focal bench peak`: one row per path the CPU has (the process's path first), each
/// the FMA peak with every thread running, and per thread.
pub fn peak_rows() -> Vec<Row> {
    let active = isa::active();
    let mut paths = vec![active];
    paths.extend(
        Isa::ALL
            .into_iter()
            .filter(|&i| i != active && i.available()),
    );
    paths
        .into_iter()
        .map(|path| {
            let p = peak::measure(path, 0.25, 5);
            // One "run" = one second's worth of flops at the peak rate.
            Row::new(format!("peak/{path}"), 1e3, p.gflops * 1e9)
                .with("threads", p.threads as f64)
                .with("gflops_per_thread", p.gflops / p.threads as f64)
                .with("in_use", (path == active) as u8 as f64)
        })
        .collect()
}

/// Square GEMMs `n × n × n` on every path the CPU has (interleaved, all threads), with
/// each rate as a fraction of `peak` (GFLOP/s) and relative to the process's path.
pub fn gemm_rows(sizes: &[usize], budget: Budget, peak: f64) -> Vec<Row> {
    let mut rng = Rng::new(1);
    let paths: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
    let active = isa::active();
    let mut rows = Vec::new();
    for &n in sizes {
        let a = rng.normal_vec(n * n, 0.0, 1.0);
        let b = rng.normal_vec(n * n, 0.0, 1.0);
        let mut outs: Vec<Vec<f32>> = paths.iter().map(|_| vec![0.0f32; n * n]).collect();
        let flops = 2.0 * (n as f64).powi(3);
        let mut fs: Vec<Box<dyn FnMut() + '_>> = Vec::new();
        for (&path, c) in paths.iter().zip(outs.iter_mut()) {
            let (a, b) = (&a, &b);
            fs.push(Box::new(move || {
                // (n, n) · (n, n) -> (n, n)
                gemm_with(
                    path,
                    1.0,
                    MatRef::row_major(a, n, n),
                    MatRef::row_major(b, n, n),
                    0.0,
                    MatMut::row_major(c, n, n),
                )
            }));
        }
        let mut refs: Vec<&mut dyn FnMut()> = fs.iter_mut().map(|f| f.as_mut() as _).collect();
        let t = time_interleaved(budget, &mut refs);
        let at = paths.iter().position(|&p| p == active).unwrap_or(0);
        for (i, path) in paths.iter().enumerate() {
            rows.push(
                Row::new(format!("gemm/{n}/{path}"), t[i].wall_ms, flops)
                    .with("cpu_ms", t[i].cpu_ms)
                    .with("best_ms", t[i].best_ms)
                    .with("peak_fraction", flops / (t[i].wall_ms * 1e6) / peak)
                    .with("best_peak_fraction", flops / (t[i].best_ms * 1e6) / peak)
                    .with("speed_vs_in_use", t[at].wall_ms / t[i].wall_ms),
            );
        }
    }
    rows
}

/// The micro-kernel shapes compared (`focal bench gemm --shapes`): square products
/// `n × n × n` through the full driver with each tile shape the CPU can run,
/// interleaved, as fractions of `peak`. The evidence behind the AVX-512 kernel's shape.
pub fn shape_rows(sizes: &[usize], budget: Budget, peak: f64) -> Vec<Row> {
    let mut rng = Rng::new(3);
    let variants = crate::gemm::shape_variants();
    let mut rows = Vec::new();
    for &n in sizes {
        let a = rng.normal_vec(n * n, 0.0, 1.0);
        let b = rng.normal_vec(n * n, 0.0, 1.0);
        let mut outs: Vec<Vec<f32>> = variants.iter().map(|_| vec![0.0f32; n * n]).collect();
        let flops = 2.0 * (n as f64).powi(3);
        let mut fs: Vec<Box<dyn FnMut() + '_>> = Vec::new();
        for ((_, f), c) in variants.iter().zip(outs.iter_mut()) {
            let (a, b) = (&a, &b);
            fs.push(Box::new(move || {
                f(
                    MatRef::row_major(a, n, n),
                    MatRef::row_major(b, n, n),
                    MatMut::row_major(c, n, n),
                )
            }));
        }
        let mut refs: Vec<&mut dyn FnMut()> = fs.iter_mut().map(|f| f.as_mut() as _).collect();
        let t = time_interleaved(budget, &mut refs);
        for (i, (name, _)) in variants.iter().enumerate() {
            rows.push(
                Row::new(
                    format!("gemm-shape/{n}/{}", name.replace(' ', "-")),
                    t[i].wall_ms,
                    flops,
                )
                .with("cpu_ms", t[i].cpu_ms)
                .with("best_ms", t[i].best_ms)
                .with("peak_fraction", flops / (t[i].wall_ms * 1e6) / peak)
                .with("best_peak_fraction", flops / (t[i].best_ms * 1e6) / peak)
                .with(
                    "cpu_peak_fraction",
                    flops / (t[i].cpu_ms * 1e6) / peak * rayon::current_num_threads() as f64,
                ),
            );
        }
    }
    rows
}
