//! The measured FMA peak, and square GEMMs on every path the CPU has.

use std::time::Instant;

use super::timing::{thread_cpu_ns, time_interleaved, Budget, Row};
use crate::gemm::{gemm_with, isa, peak, Isa, MatMut, MatRef};
use crate::rng::Rng;

/// A measured FMA peak (`focal bench peak`).
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    pub isa: Isa,
    /// Threads that ran the loop at once.
    pub threads: usize,
    /// GFLOP/s of all threads together, by the wall clock (one FMA = 2 flops per lane).
    pub gflops: f64,
    /// The sum over the threads of each one's flops per second of its own CPU time:
    /// what the cores deliver while they run our threads. The same as `gflops` on an
    /// idle machine; on a shared one it still measures the hardware, where the wall
    /// clock also counts the time other processes held the cores.
    pub gflops_cpu: f64,
}

/// How long every thread runs the FMA loop before a peak is measured. After an idle
/// spell the first runs of the loop are slow (on Intel Sapphire Rapids, 2 cores under
/// KVM, a first `focal bench peak` read 176 GFLOP/s and the next one 345: the cores'
/// clock and 512-bit units, or the host scheduling an idle virtual CPU back in); a
/// quarter of a second of FMAs on every thread first lets the calibration and the timed
/// runs see the steady rate.
const WARM_UP_SECS: f64 = 0.25;

/// Runs the FMA loop of `isa` on every thread of the pool for `secs` seconds at least.
fn warm_up(isa: Isa, secs: f64) {
    let t = Instant::now();
    rayon::broadcast(|_| {
        while t.elapsed().as_secs_f64() < secs {
            std::hint::black_box(peak::fma_loop(isa, 1 << 14));
        }
    });
}

/// The f32 FMA peak of `isa` with every thread of the current rayon pool running the
/// register-resident loop of `gemm/peak.rs` at once: the best of `reps` runs of about
/// `secs` seconds each (other processes can only lower a run's rate), after a warm-up
/// ([`WARM_UP_SECS`]) that brings the cores to their steady rate.
pub fn measure_peak(isa: Isa, secs: f64, reps: usize) -> Peak {
    let threads = rayon::current_num_threads();
    let per_iter = peak::flops_per_iter(isa) as f64;
    warm_up(isa, WARM_UP_SECS);
    // Calibrate: iterations for about `secs` on one thread.
    let mut iters = 1 << 16;
    loop {
        let t = Instant::now();
        std::hint::black_box(peak::fma_loop(isa, iters));
        let dt = t.elapsed().as_secs_f64();
        if dt > 0.02 {
            iters = ((iters as f64) * secs / dt).max(1.0) as usize;
            break;
        }
        iters *= 4;
    }
    let flops = per_iter * iters as f64;
    let (mut best, mut best_cpu) = (0.0f64, 0.0f64);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let cpu_s: Vec<Option<f64>> = rayon::broadcast(|_| {
            let c0 = thread_cpu_ns();
            std::hint::black_box(peak::fma_loop(isa, iters));
            Some((thread_cpu_ns()?.saturating_sub(c0?)) as f64 * 1e-9)
        });
        let dt = t.elapsed().as_secs_f64();
        best = best.max(flops * threads as f64 / dt / 1e9);
        let cpu_rate: Option<f64> = cpu_s
            .iter()
            .map(|c| c.filter(|&s| s > 0.0).map(|s| flops / s / 1e9))
            .sum();
        best_cpu = best_cpu.max(cpu_rate.unwrap_or(0.0));
    }
    Peak {
        isa,
        threads,
        gflops: best,
        gflops_cpu: if best_cpu > 0.0 { best_cpu } else { best },
    }
}

/// The f32 FMA peak of the process's GEMM path with every thread running (best of 5
/// runs of 0.2 s), in GFLOP/s of CPU time (see [`Peak::gflops_cpu`]): the denominator
/// of every `peak_fraction`.
pub fn measured_peak() -> f64 {
    measure_peak(isa::active(), 0.2, 5).gflops_cpu
}

/// `focal bench peak`: one row per path the CPU has (the process's path first), each
/// the FMA peak with every thread running, and per thread.
pub fn peak_rows() -> Vec<Row> {
    let active = isa::active();
    let mut paths = vec![active];
    paths.extend(
        Isa::ALL
            .into_iter()
            .filter(|&i| i != active && i != Isa::Portable && i.available()),
    );
    paths
        .into_iter()
        .map(|path| {
            let p = measure_peak(path, 0.25, 5);
            // One "run" = one second's worth of flops at the peak rate.
            Row::new(format!("peak/{path}"), 1e3, p.gflops_cpu * 1e9)
                .with("threads", p.threads as f64)
                .with("gflops_per_thread", p.gflops_cpu / p.threads as f64)
                .with("wall_gflops", p.gflops)
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
                    .with("cpu_peak_fraction", cpu_fraction(flops, t[i].cpu_ms, peak))
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

/// Flops per second of CPU time (all threads) over the peak of one thread: how close
/// to the hardware the kernel runs while it has a core, whatever else the machine does.
pub fn cpu_fraction(flops: f64, cpu_ms: f64, peak: f64) -> f64 {
    flops / (cpu_ms * 1e6) / (peak / rayon::current_num_threads() as f64)
}
