//! Kernel benchmarks: GEMM, and conv2d on the layer shapes of a ResNet-18 RetinaNet.
//!
//! Shared by `focal bench gemm|conv` and the `cargo bench` targets in `benches/`
//! (which include this file by path), so both print the same figures.
//!
//! Every measurement is the median of repeated runs after one warm-up run. FLOP counts
//! are multiply-adds × 2: a GEMM `(M, K)·(K, N)` is `2·M·N·K`, a convolution is
//! `2·N·O·OH·OW·(C/G)·KH·KW`, and its backward is twice that (input and weight
//! gradients, each the same GEMM size), minus the input half when the input needs no
//! gradient (the stem's image).

use std::time::Instant;

use focal_engine::gemm::{sgemm, sgemm_rows_par};
use focal_engine::{backward_with, conv2d, Conv2dOptions, ParamId, Rng, Tensor};
use rayon::prelude::*;

/// One measured case. `extra` holds case-specific figures (ratios, reference rates).
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub ms: f64,
    pub gflops: f64,
    pub extra: Vec<(&'static str, f64)>,
}

impl Row {
    fn new(name: String, ms: f64, flops: f64) -> Row {
        Row {
            name,
            ms,
            gflops: flops / (ms * 1e6),
            extra: Vec::new(),
        }
    }

    fn with(mut self, key: &'static str, value: f64) -> Row {
        self.extra.push((key, value));
        self
    }

    /// One line of JSON: `{"name": .., "ms": .., "gflops": .., <extra>..}`.
    pub fn json(&self) -> String {
        let mut s = format!(
            "{{\"name\":\"{}\",\"ms\":{:.4},\"gflops\":{:.2}",
            self.name.replace('\\', "\\\\").replace('"', "\\\""),
            self.ms,
            self.gflops
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(",\"{k}\":{v:.4}"));
        }
        s.push('}');
        s
    }

    /// One line of a human-readable table.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{:<44} {:>10.3} ms {:>8.1} GFLOP/s",
            self.name, self.ms, self.gflops
        );
        for (k, v) in &self.extra {
            s.push_str(&format!("  {k}={v:.3}"));
        }
        s
    }
}

/// How long to measure each case.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Keep repeating until this many seconds have been spent...
    pub min_secs: f64,
    /// ...and at least this many runs were timed.
    pub min_reps: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            min_secs: 1.0,
            min_reps: 3,
        }
    }
}

/// CPU time used so far by all threads of this process, in nanoseconds, or `None`
/// where it cannot be read.
///
/// On a machine shared with other jobs the wall time of a run includes the time our
/// threads waited for a core; the CPU time does not, so it is the steadier figure for
/// comparing two variants of a kernel.
#[cfg(target_os = "linux")]
pub fn process_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime (POSIX, from the C library std already links on Linux)
    // writes one `struct timespec` — two 64-bit fields on 64-bit Linux, matching the
    // #[repr(C)] struct above — to the pointer it is given, which points to `ts`, a live
    // local we own exclusively. It reads no other memory of ours.
    #[cfg(target_pointer_width = "64")]
    let ok = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
    #[cfg(not(target_pointer_width = "64"))]
    let ok = false;
    ok.then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
pub fn process_cpu_ns() -> Option<u64> {
    None
}

/// Median wall time and median CPU time (all threads) of one closure, in ms, and its
/// fastest wall time: other processes can only ever add time to a run, so on a shared
/// machine the best run is the closest to what the kernel itself costs, while the
/// median is what a user should expect.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub best_ms: f64,
}

/// Times several closures, run in turn — one run of each per round — after one warm-up
/// round, and returns each one's medians. Interleaving puts every closure under the
/// same load from other processes, so the ratios between them are meaningful on a
/// shared machine.
pub fn time_interleaved(budget: Budget, fs: &mut [&mut dyn FnMut()]) -> Vec<Timing> {
    for f in fs.iter_mut() {
        f();
    }
    let start = Instant::now();
    let mut wall = vec![Vec::new(); fs.len()];
    let mut cpu = vec![Vec::new(); fs.len()];
    let mut rounds = 0;
    while rounds < budget.min_reps
        || (start.elapsed().as_secs_f64() < budget.min_secs && rounds < 200)
    {
        for (i, f) in fs.iter_mut().enumerate() {
            let c0 = process_cpu_ns();
            let t = Instant::now();
            f();
            wall[i].push(t.elapsed().as_secs_f64() * 1e3);
            if let (Some(c0), Some(c1)) = (c0, process_cpu_ns()) {
                cpu[i].push(c1.saturating_sub(c0) as f64 * 1e-6);
            }
        }
        rounds += 1;
    }
    let median = |mut s: Vec<f64>| {
        if s.is_empty() {
            return f64::NAN;
        }
        s.sort_by(|a, b| a.total_cmp(b));
        s[s.len() / 2]
    };
    wall.into_iter()
        .zip(cpu)
        .map(|(w, c)| Timing {
            best_ms: w.iter().copied().fold(f64::NAN, f64::min),
            wall_ms: median(w),
            cpu_ms: median(c),
        })
        .collect()
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.normal_vec(n, 0.0, 1.0)
}

/// Square GEMMs `n × n × n`: one `sgemm` call (single-threaded unless matrixmultiply's
/// own threading is compiled in), and `sgemm_rows_par` (rayon over blocks of rows).
pub fn gemm_rows(sizes: &[usize], budget: Budget) -> Vec<Row> {
    let mut rng = Rng::new(1);
    let mut rows = Vec::new();
    for &n in sizes {
        let a = random(&mut rng, n * n);
        let b = random(&mut rng, n * n);
        let mut c = vec![0.0f32; n * n];
        let flops = 2.0 * (n as f64).powi(3);
        let ni = n as isize;
        let mut c2 = c.clone();
        let t = time_interleaved(
            budget,
            &mut [
                &mut || sgemm(n, n, n, 1.0, &a, ni, 1, &b, ni, 1, 0.0, &mut c, ni, 1),
                &mut || sgemm_rows_par(n, n, n, 1.0, &a, ni, 1, &b, ni, 1, 0.0, &mut c2),
            ],
        );
        rows.push(
            Row::new(format!("gemm/{n}/sgemm"), t[0].wall_ms, flops).with("cpu_ms", t[0].cpu_ms),
        );
        rows.push(
            Row::new(format!("gemm/{n}/rows_par"), t[1].wall_ms, flops)
                .with("cpu_ms", t[1].cpu_ms)
                .with("speedup_vs_sgemm", t[0].wall_ms / t[1].wall_ms),
        );
    }
    rows
}

/// A convolution layer to measure.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    pub name: &'static str,
    /// Input (N, C, H, W).
    pub x: [usize; 4],
    /// Weight (O, C/G, KH, KW).
    pub w: [usize; 4],
    pub opts: Conv2dOptions,
    pub bias: bool,
    /// Whether the input needs a gradient (not for the image fed to the stem).
    pub input_grad: bool,
}

impl ConvCase {
    /// A case with stride `s` and padding `p` on both axes.
    pub fn new(
        name: &'static str,
        x: [usize; 4],
        w: [usize; 4],
        s: usize,
        p: usize,
        bias: bool,
        input_grad: bool,
    ) -> ConvCase {
        ConvCase {
            name,
            x,
            w,
            opts: Conv2dOptions::sp(s, p),
            bias,
            input_grad,
        }
    }
}

/// The conv layers of a ResNet-18 backbone at 512 px input, batch 2, and the RetinaNet
/// head conv (256 → 256, 3x3, on the 64x64 P3 map).
pub fn conv_cases() -> Vec<ConvCase> {
    let c = ConvCase::new;
    vec![
        c(
            "stem 7x7 s2 3->64 @512",
            [2, 3, 512, 512],
            [64, 3, 7, 7],
            2,
            3,
            false,
            false,
        ),
        c(
            "layer1 3x3 64->64 @128",
            [2, 64, 128, 128],
            [64, 64, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer2.0 3x3 s2 64->128 @128",
            [2, 64, 128, 128],
            [128, 64, 3, 3],
            2,
            1,
            false,
            true,
        ),
        c(
            "layer2 3x3 128->128 @64",
            [2, 128, 64, 64],
            [128, 128, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer2.down 1x1 s2 64->128 @128",
            [2, 64, 128, 128],
            [128, 64, 1, 1],
            2,
            0,
            false,
            true,
        ),
        c(
            "layer3.0 3x3 s2 128->256 @64",
            [2, 128, 64, 64],
            [256, 128, 3, 3],
            2,
            1,
            false,
            true,
        ),
        c(
            "layer3 3x3 256->256 @32",
            [2, 256, 32, 32],
            [256, 256, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer3.down 1x1 s2 128->256 @64",
            [2, 128, 64, 64],
            [256, 128, 1, 1],
            2,
            0,
            false,
            true,
        ),
        c(
            "layer4.0 3x3 s2 256->512 @32",
            [2, 256, 32, 32],
            [512, 256, 3, 3],
            2,
            1,
            false,
            true,
        ),
        c(
            "layer4 3x3 512->512 @16",
            [2, 512, 16, 16],
            [512, 512, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer4.down 1x1 s2 256->512 @32",
            [2, 256, 32, 32],
            [512, 256, 1, 1],
            2,
            0,
            false,
            true,
        ),
        c(
            "head 3x3 256->256 @64",
            [2, 256, 64, 64],
            [256, 256, 3, 3],
            1,
            1,
            true,
            true,
        ),
    ]
}

/// The conv layers of a small-image model with the widths of `focal train`'s default:
/// ResNet-18 at 128 px, batch 8 (the default feeds 96 px), an FPN 64 channels wide
/// (P3..P7 on 16², 8², 4², 2², 1² maps, P6 from C5) and the towers of the heads (64
/// wide) with their last convs (9 anchors × 5 classes, 9 × 4 box deltas). The feature
/// maps are small, so each image has few output pixels (`OH·OW` = 16 at layer4, 1 on
/// P7).
pub fn conv_cases_small() -> Vec<ConvCase> {
    let c = ConvCase::new;
    vec![
        c(
            "stem 7x7 s2 3->64 @128",
            [8, 3, 128, 128],
            [64, 3, 7, 7],
            2,
            3,
            false,
            false,
        ),
        c(
            "layer1 3x3 64->64 @32",
            [8, 64, 32, 32],
            [64, 64, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer2.0 3x3 s2 64->128 @32",
            [8, 64, 32, 32],
            [128, 64, 3, 3],
            2,
            1,
            false,
            true,
        ),
        c(
            "layer2 3x3 128->128 @16",
            [8, 128, 16, 16],
            [128, 128, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer2.down 1x1 s2 64->128 @32",
            [8, 64, 32, 32],
            [128, 64, 1, 1],
            2,
            0,
            false,
            true,
        ),
        c(
            "layer3.0 3x3 s2 128->256 @16",
            [8, 128, 16, 16],
            [256, 128, 3, 3],
            2,
            1,
            false,
            true,
        ),
        c(
            "layer3 3x3 256->256 @8",
            [8, 256, 8, 8],
            [256, 256, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer3.down 1x1 s2 128->256 @16",
            [8, 128, 16, 16],
            [256, 128, 1, 1],
            2,
            0,
            false,
            true,
        ),
        c(
            "layer4.0 3x3 s2 256->512 @8",
            [8, 256, 8, 8],
            [512, 256, 3, 3],
            2,
            1,
            false,
            true,
        ),
        c(
            "layer4 3x3 512->512 @4",
            [8, 512, 4, 4],
            [512, 512, 3, 3],
            1,
            1,
            false,
            true,
        ),
        c(
            "layer4.down 1x1 s2 256->512 @8",
            [8, 256, 8, 8],
            [512, 256, 1, 1],
            2,
            0,
            false,
            true,
        ),
        c(
            "fpn.lateral 1x1 128->64 @16",
            [8, 128, 16, 16],
            [64, 128, 1, 1],
            1,
            0,
            true,
            true,
        ),
        c(
            "fpn.lateral 1x1 512->64 @4",
            [8, 512, 4, 4],
            [64, 512, 1, 1],
            1,
            0,
            true,
            true,
        ),
        c(
            "fpn.out 3x3 64->64 @16",
            [8, 64, 16, 16],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "fpn.out 3x3 64->64 @4",
            [8, 64, 4, 4],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "fpn.p6 3x3 s2 512->64 @4",
            [8, 512, 4, 4],
            [64, 512, 3, 3],
            2,
            1,
            true,
            true,
        ),
        c(
            "fpn.p7 3x3 s2 64->64 @2",
            [8, 64, 2, 2],
            [64, 64, 3, 3],
            2,
            1,
            true,
            true,
        ),
        c(
            "head 3x3 64->64 @16",
            [8, 64, 16, 16],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "head 3x3 64->64 @8",
            [8, 64, 8, 8],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "head 3x3 64->64 @4",
            [8, 64, 4, 4],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "head 3x3 64->64 @2",
            [8, 64, 2, 2],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "head 3x3 64->64 @1",
            [8, 64, 1, 1],
            [64, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "head.cls 3x3 64->45 @16",
            [8, 64, 16, 16],
            [45, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
        c(
            "head.box 3x3 64->36 @8",
            [8, 64, 8, 8],
            [36, 64, 3, 3],
            1,
            1,
            true,
            true,
        ),
    ]
}

/// The cases of a preset: "512" ([`conv_cases`]) or "small" ([`conv_cases_small`]).
pub fn conv_preset(name: &str) -> Option<Vec<ConvCase>> {
    match name {
        "512" => Some(conv_cases()),
        "small" => Some(conv_cases_small()),
        _ => None,
    }
}

/// Output height and width of a case.
fn out_hw(case: &ConvCase) -> (usize, usize) {
    let len = |l, k, s, p, d| focal_engine::ops::conv2d::conv_output_len(l, k, s, p, d).unwrap();
    let o = case.opts;
    (
        len(case.x[2], case.w[2], o.stride.0, o.padding.0, o.dilation.0),
        len(case.x[3], case.w[3], o.stride.1, o.padding.1, o.dilation.1),
    )
}

/// For each case: forward, the same-size GEMM, and forward + backward.
///
/// Two GEMM references, on ready-made columns:
/// - `gemm_gflops`, `ratio_to_gemm`: one `(O/G, K)·(K, OH·OW)` sgemm per (sample,
///   group), run in parallel over the samples (what the forward pass would cost if
///   im2col were free and each image were its own product);
/// - `batch_gemm_cpu_gflops`: one single-threaded `(O/G, K)·(K, N·OH·OW)` sgemm per
///   group for the whole batch, in GFLOP per CPU-second; `cpu_ratio_to_batch_gemm` is
///   the convolution's GFLOP per CPU-second over that rate (1 = as efficient as one
///   big GEMM; above 1 for backward is possible, its GEMMs have other shapes).
///
/// `best_ms`, `best_ratio_to_gemm` and `best_ratio_to_fwd` are the same comparisons
/// on each closure's fastest run instead of its median (see [`Timing`]).
pub fn conv_rows(cases: &[ConvCase], budget: Budget) -> Vec<Row> {
    let mut rng = Rng::new(2);
    let mut rows = Vec::new();
    for case in cases {
        let n = case.x[0];
        let [o, cg, kh, kw] = case.w;
        let groups = case.opts.groups;
        let (oh, ow) = out_hw(case);
        let (k, p, og) = (cg * kh * kw, oh * ow, o / groups);
        let flops = 2.0 * (n * o * p * k) as f64;
        let x = Tensor::from_vec(&case.x, random(&mut rng, case.x.iter().product()));
        let w = Tensor::from_vec(&case.w, random(&mut rng, case.w.iter().product()));
        let b = Tensor::from_vec(&[o], random(&mut rng, o));
        let bias = case.bias.then_some(&b);

        let mut forward = || {
            let y = focal_engine::no_grad(|| conv2d(&x, &w, bias, case.opts));
            std::hint::black_box(y);
        };

        // Same (M, N, K) as plain GEMMs on precomputed columns.
        let cols: Vec<f32> = random(&mut rng, k * p);
        let mut out = vec![0.0f32; n * o * p];
        let mut gemm = || {
            out.par_chunks_mut(og * p).enumerate().for_each(|(ng, y)| {
                let grp = ng % groups;
                let wg = &w.data()[grp * og * k..(grp + 1) * og * k];
                // (O/G, K) · (K, P) -> (O/G, P)
                sgemm(
                    og, k, p, 1.0, wg, k as isize, 1, &cols, p as isize, 1, 0.0, y, p as isize, 1,
                );
            });
        };

        // The whole batch as one product per group, on one thread: (O/G, K)·(K, N·P) on
        // ready-made columns. Its rate per CPU-second is what the convolution could
        // reach if im2col, packing per task and the scatter into NCHW were free.
        let batch_cols: Vec<f32> = random(&mut rng, k * n * p);
        let mut batch_out = vec![0.0f32; og * n * p];
        let mut batch_gemm = || {
            for grp in 0..groups {
                let wg = &w.data()[grp * og * k..(grp + 1) * og * k];
                let np = (n * p) as isize;
                // (O/G, K) · (K, N·P) -> (O/G, N·P)
                sgemm(
                    og,
                    k,
                    n * p,
                    1.0,
                    wg,
                    k as isize,
                    1,
                    &batch_cols,
                    np,
                    1,
                    0.0,
                    &mut batch_out,
                    np,
                    1,
                );
            }
        };

        let seed = Tensor::from_vec(&[n, o, oh, ow], random(&mut rng, n * o * p));
        let mut forward_backward = || {
            let xt = if case.input_grad {
                x.track(ParamId(u64::MAX - 1))
            } else {
                x.clone()
            };
            let wt = w.track(ParamId(u64::MAX - 2));
            let bt = b.track(ParamId(u64::MAX - 3));
            let y = conv2d(&xt, &wt, case.bias.then_some(&bt), case.opts);
            let g = backward_with(&y, seed.clone());
            std::hint::black_box(g);
        };
        let t = time_interleaved(
            budget,
            &mut [
                &mut forward,
                &mut gemm,
                &mut forward_backward,
                &mut batch_gemm,
            ],
        );
        let (fwd, gemm, fwd_bwd) = (t[0].wall_ms, t[1].wall_ms, t[2].wall_ms);
        let gemm_flops = flops / (gemm * 1e6);
        let bwd_flops = if case.input_grad { 2.0 * flops } else { flops };
        // GFLOP per CPU-second (all threads together).
        let per_cpu_s = |flops: f64, cpu_ms: f64| flops / (cpu_ms * 1e6);
        let batch_rate = per_cpu_s(flops, t[3].cpu_ms);

        rows.push(
            Row::new(format!("conv/{}/fwd", case.name), fwd, flops)
                .with("cpu_ms", t[0].cpu_ms)
                .with("best_ms", t[0].best_ms)
                .with("gemm_gflops", gemm_flops)
                .with("ratio_to_gemm", gemm / fwd)
                .with("best_ratio_to_gemm", t[1].best_ms / t[0].best_ms)
                .with("cpu_ratio_to_gemm", t[1].cpu_ms / t[0].cpu_ms)
                .with("cpu_gflops", per_cpu_s(flops, t[0].cpu_ms))
                .with("batch_gemm_cpu_gflops", batch_rate)
                .with(
                    "cpu_ratio_to_batch_gemm",
                    per_cpu_s(flops, t[0].cpu_ms) / batch_rate,
                ),
        );
        rows.push(
            Row::new(
                format!("conv/{}/fwd+bwd", case.name),
                fwd_bwd,
                flops + bwd_flops,
            )
            .with("cpu_ms", t[2].cpu_ms)
            .with("best_ms", t[2].best_ms)
            .with("ratio_to_fwd", fwd_bwd / fwd)
            .with("best_ratio_to_fwd", t[2].best_ms / t[0].best_ms)
            .with("cpu_ratio_to_fwd", t[2].cpu_ms / t[0].cpu_ms)
            .with("cpu_gflops", per_cpu_s(flops + bwd_flops, t[2].cpu_ms))
            .with(
                "cpu_ratio_to_batch_gemm",
                per_cpu_s(flops + bwd_flops, t[2].cpu_ms) / batch_rate,
            ),
        );
    }
    rows
}

/// The tile-size experiment: for each case, forward and backward (input gradient when
/// the case has one, and weight gradient) with each tile size, all interleaved so that
/// every tile size sees the same machine load. One row per (case, pass, tile).
pub fn tile_rows(cases: &[ConvCase], tiles: &[usize], budget: Budget) -> Vec<Row> {
    use focal_engine::ops::conv2d::tuning;
    let mut rng = Rng::new(3);
    let mut rows = Vec::new();
    for case in cases {
        let (oh, ow) = out_hw(case);
        let [o, cg, kh, kw] = case.w;
        let flops = 2.0 * (case.x[0] * o * oh * ow * cg * kh * kw) as f64;
        let x = Tensor::from_vec(&case.x, random(&mut rng, case.x.iter().product()));
        let w = Tensor::from_vec(&case.w, random(&mut rng, case.w.iter().product()));
        let gy = Tensor::from_vec(
            &[case.x[0], o, oh, ow],
            random(&mut rng, case.x[0] * o * oh * ow),
        );
        let mut fs: Vec<Box<dyn FnMut()>> = Vec::new();
        for &t in tiles {
            let (x, w) = (x.clone(), w.clone());
            let opts = case.opts;
            fs.push(Box::new(move || {
                std::hint::black_box(tuning::forward(&x, &w, opts, t));
            }));
        }
        for &t in tiles {
            let (x, w, gy) = (x.clone(), w.clone(), gy.clone());
            let (opts, input_grad) = (case.opts, case.input_grad);
            fs.push(Box::new(move || {
                std::hint::black_box(tuning::backward(&x, &w, &gy, opts, t, input_grad));
            }));
        }
        let mut refs: Vec<&mut dyn FnMut()> = fs
            .iter_mut()
            .map(|f| f.as_mut() as &mut dyn FnMut())
            .collect();
        let times = time_interleaved(budget, &mut refs);
        let bwd_flops = if case.input_grad { 2.0 * flops } else { flops };
        for (i, &t) in tiles.iter().enumerate() {
            rows.push(
                Row::new(
                    format!("conv-tile/{}/fwd/{t}", case.name),
                    times[i].wall_ms,
                    flops,
                )
                .with("cpu_ms", times[i].cpu_ms),
            );
        }
        for (i, &t) in tiles.iter().enumerate() {
            let tm = times[tiles.len() + i];
            rows.push(
                Row::new(
                    format!("conv-tile/{}/bwd/{t}", case.name),
                    tm.wall_ms,
                    bwd_flops,
                )
                .with("cpu_ms", tm.cpu_ms),
            );
        }
    }
    rows
}

/// A line describing the threading configuration the figures were measured with.
pub fn threading_note() -> String {
    format!(
        "rayon threads: {}; matrixmultiply threading: {}",
        rayon::current_num_threads(),
        if cfg!(feature = "mm-threading") {
            format!(
                "on (MATMUL_NUM_THREADS={})",
                std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "unset".into())
            )
        } else {
            "off".to_string()
        }
    )
}
