//! One module per subcommand: its clap `Args` and its `run`.

pub mod ablate;
pub mod bench;
pub mod cocoeval;
pub mod detect;
pub mod eval;
pub mod gradcheck;
pub mod imbalance;
pub mod loss_cdf;
pub mod model_file;
pub mod synth;
pub mod train;
pub mod weights;

/// "1 thread" or "N threads": the worker threads the kernels run on.
pub fn threads_text() -> String {
    count(focal_engine::threads::num_threads() as u64, "thread")
}

/// `n` and the noun, plural unless `n` is 1: "1 step", "800 steps".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
