//! One module per subcommand: its clap `Args` and its `run`.

pub mod ablate;
pub mod bench;
pub mod cocoeval;
pub mod detect;
pub mod eval;
pub mod gradcheck;
pub mod loss_cdf;
pub mod synth;
pub mod train;

/// "1 thread" or "N threads": the worker threads the kernels run on.
pub fn threads_text() -> String {
    match focal_engine::threads::num_threads() {
        1 => "1 thread".to_string(),
        n => format!("{n} threads"),
    }
}
