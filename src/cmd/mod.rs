//! One module per subcommand: its clap `Args` and its `run`.

pub mod bench;
pub mod cocoeval;
pub mod detect;
pub mod eval;
pub mod gradcheck;
pub mod synth;
pub mod train;
