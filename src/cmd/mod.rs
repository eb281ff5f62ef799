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
