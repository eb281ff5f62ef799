//! Timing and reporting shared by every kernel benchmark: one [`Row`] per measured
//! case, printed as a table line or a JSON line, and [`time_interleaved`], which runs
//! several variants in turn so that they share the machine's load.

use std::time::Instant;

/// One measured case. `extra` holds case-specific figures (ratios, reference rates).
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub ms: f64,
    pub gflops: f64,
    pub extra: Vec<(&'static str, f64)>,
}

impl Row {
    pub fn new(name: String, ms: f64, flops: f64) -> Row {
        Row {
            name,
            ms,
            gflops: flops / (ms * 1e6),
            extra: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: f64) -> Row {
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
            s.push_str(&format!(",\"{k}\":{}", figure(*v, 4)));
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
            s.push_str(&format!("  {k}={}", figure(*v, 3)));
        }
        s
    }
}

/// `v` with `decimals` decimals, or in scientific notation when that would print only
/// zeros (the output differences of `bench conv --compare-algos` are around 1e-6).
fn figure(v: f64, decimals: usize) -> String {
    if v != 0.0 && v.abs() < 10f64.powi(-(decimals as i32)) {
        format!("{v:.2e}")
    } else {
        format!("{v:.decimals$}")
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
pub fn process_cpu_ns() -> Option<u64> {
    cpu_clock_ns(2) // CLOCK_PROCESS_CPUTIME_ID
}

/// CPU time used so far by the calling thread, in nanoseconds, or `None`.
pub fn thread_cpu_ns() -> Option<u64> {
    cpu_clock_ns(3) // CLOCK_THREAD_CPUTIME_ID
}

/// `clock_gettime` on one of Linux's CPU-time clocks.
#[cfg(target_os = "linux")]
fn cpu_clock_ns(clock: i32) -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime (POSIX, from the C library std already links on Linux)
    // writes one `struct timespec` — two 64-bit fields on 64-bit Linux, matching the
    // #[repr(C)] struct above — to the pointer it is given, which points to `ts`, a live
    // local we own exclusively. It reads no other memory of ours.
    #[cfg(target_pointer_width = "64")]
    let ok = unsafe { clock_gettime(clock, &mut ts) } == 0;
    #[cfg(not(target_pointer_width = "64"))]
    let ok = false;
    ok.then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn cpu_clock_ns(_clock: i32) -> Option<u64> {
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

/// A line describing the threading and the GEMM path the figures were measured with.
pub fn threading_note() -> String {
    format!(
        "rayon threads: {}; GEMM path: {} (FOCAL_ISA=avx512|avx2|portable to force one); CPU: {}",
        rayon::current_num_threads(),
        crate::gemm::isa::active(),
        crate::gemm::isa::cpu_model(),
    )
}
