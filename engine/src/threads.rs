//! Multithreading with rayon, in a way that never changes a result.
//!
//! Work is cut into chunks whose boundaries depend only on the problem size, never on
//! the number of threads; each chunk is computed by one thread in a fixed order, and
//! partial results (sums) are combined in chunk order. So a run on 1 thread and a run on
//! 16 threads produce bitwise identical tensors.
//!
//! The thread count is set once per process with [`set_num_threads`] (the CLI's
//! `--threads N`) or the `FOCAL_THREADS` environment variable; tests that compare thread
//! counts build local pools with [`with_threads`].

use rayon::prelude::*;

/// Elements per chunk of an elementwise or reduction kernel.
pub const CHUNK: usize = 1 << 14;

/// Below this many elements a kernel runs on the calling thread (spawning costs more).
pub const PAR_THRESHOLD: usize = 1 << 15;

/// The most worker threads focal starts: four per core (more only adds switching), and
/// never fewer than 4.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).max(4)
}

/// Configures the global rayon pool with `n` threads, 1 to [`max_threads`]. The first
/// call wins; a later call returns an error (the pool is already running). An error is
/// final: the caller must not use the global pool afterwards (rayon would panic trying
/// to start it again), which is why `focal` exits on it.
pub fn set_num_threads(n: usize) -> Result<(), String> {
    let max = max_threads();
    if n == 0 || n > max {
        return Err(format!(
            "--threads {n} is out of range: 1 to {max} (four per core of this machine's {})",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| format!("cannot start the pool of {n} worker threads: {e}"))
}

/// Applies `FOCAL_THREADS` if it is set. Returns an error for a value that is not a
/// positive integer.
pub fn init_from_env() -> Result<(), String> {
    match std::env::var("FOCAL_THREADS") {
        Ok(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("FOCAL_THREADS={v:?} is not a positive integer"))?;
            set_num_threads(n)
        }
        Err(_) => Ok(()),
    }
}

/// Threads available to kernels right now.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` inside a private pool of `n` threads (used by the determinism tests).
pub fn with_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("building a thread pool")
        .install(f)
}

/// Calls `f(start, chunk)` on consecutive chunks of `out` (of [`CHUNK`] elements), in
/// parallel when `out` is large. `start` is the chunk's offset in `out`.
pub fn for_each_chunk_mut<F>(out: &mut [f32], f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if out.len() < PAR_THRESHOLD {
        for (i, c) in out.chunks_mut(CHUNK).enumerate() {
            f(i * CHUNK, c);
        }
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(i * CHUNK, c));
    }
}

/// `out[i] = f(i)` for every index, in parallel for large outputs.
pub fn map_indexed<F>(n: usize, f: F) -> Vec<f32>
where
    F: Fn(usize) -> f32 + Sync + Send,
{
    // Collected straight into the new vector (no zero-fill first, every element is
    // `f(i)`); in pieces of at least `CHUNK` when large.
    if n < PAR_THRESHOLD {
        (0..n).map(f).collect()
    } else {
        let mut out = Vec::new();
        (0..n)
            .into_par_iter()
            .with_min_len(CHUNK)
            .map(f)
            .collect_into_vec(&mut out);
        out
    }
}

/// Sum of `f(range)` over fixed chunks of `0..n`, combined in chunk order (f64).
pub fn sum_chunks<F>(n: usize, f: F) -> f64
where
    F: Fn(std::ops::Range<usize>) -> f64 + Sync + Send,
{
    let chunks = n.div_ceil(CHUNK);
    let part = |c: usize| f(c * CHUNK..((c + 1) * CHUNK).min(n));
    let partials: Vec<f64> = if n < PAR_THRESHOLD {
        (0..chunks).map(part).collect()
    } else {
        (0..chunks).into_par_iter().map(part).collect()
    };
    partials.iter().sum()
}

/// Runs `f(i)` for `i in 0..n` in parallel (each task independent), collecting in order.
pub fn par_map<T: Send, F>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> T + Sync + Send,
{
    if n <= 1 {
        (0..n).map(f).collect()
    } else {
        (0..n).into_par_iter().map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `map_indexed` gives `f(i)` at every index, small or large, on 1 or 3 threads.
    #[test]
    fn map_indexed_writes_f_of_every_index() {
        let f = |i: usize| (i as f32) * 0.5 - 3.0;
        for n in [0, 1, 100, PAR_THRESHOLD - 1, PAR_THRESHOLD, 3 * CHUNK + 5] {
            let want: Vec<f32> = (0..n).map(f).collect();
            for threads in [1, 3] {
                assert_eq!(with_threads(threads, || map_indexed(n, f)), want, "n {n}");
            }
        }
    }
}
