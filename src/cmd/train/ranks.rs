//! `focal train` as one of several processes (`mpirun -np N focal train ...`): what the
//! command does differently from one process. Rank 0 prints, draws the progress bar and
//! writes the run folder (the trainer sees to the folder); the other ranks train in
//! silence ([`run_quietly`]) and agree with rank 0 on everything it decides alone.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use focal_retinanet::train::distributed::equal_to_one_process;
use focal_retinanet::train::{Observer, Outcome, TrainConfig, Trainer};

use crate::launch::World;

/// With N processes, a batch is cut into at least N shards, one or more per process: a
/// configuration that leaves `shards` at its default of 1 gets N (one per process), said
/// on rank 0. (Equal to `focal train --shards N` in one process.)
pub fn share_batches(config: &mut TrainConfig, world: &World) {
    let n = world.size();
    if n == 1 {
        return;
    }
    if config.shards == 1 {
        config.shards = n;
        if world.is_root() {
            eprintln!(
                "{n} processes: each batch is cut into {n} shards, one per process (--shards \
                 {n}; the same run as `focal train --shards {n}` in one process)"
            );
        }
    }
    let s = config.shards;
    if world.is_root() && s.is_multiple_of(n) && !equal_to_one_process(s, n) {
        eprintln!(
            "note: with {s} shards on {n} processes ({} each, not a power of two) the run is \
             the same on every repeat, but agrees with `focal train --shards {s}` in one \
             process only to rounding (with 1, 2, 4, ... shards per process it is the same \
             to the bit)",
            s / n
        );
    }
}

/// `path` as rank 0 has it, on every rank (rank 0 chooses the default run folder).
pub fn same_on_every_rank(path: PathBuf, world: &World) -> Result<PathBuf> {
    let mut bytes = path.to_string_lossy().into_owned().into_bytes();
    world.comm().broadcast(&mut bytes)?;
    let text = String::from_utf8(bytes).context("rank 0's run folder is not UTF-8")?;
    Ok(PathBuf::from(text))
}

/// The parallelism of the run, for the start-up line: "2 threads", or "2 processes (Open
/// MPI v4.1.4), 2 shards of each batch per process, 1 thread each".
pub fn threads_text(world: &World, shards: usize) -> String {
    let threads = super::super::threads_text();
    let n = world.size();
    if n == 1 {
        return threads;
    }
    format!(
        "{n} processes ({}), {} of each batch per process, {threads} each",
        world.comm().describe(),
        super::super::count((shards / n) as u64, "shard")
    )
}

/// Says nothing and stops when Ctrl-C or SIGTERM (or the launcher's signal) reaches this
/// process; the trainer makes every rank stop at the same step, and rank 0 writes
/// last.ckpt.
struct Quiet {
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Observer for Quiet {
    fn should_stop(&mut self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The run of a rank other than 0: the same steps, nothing printed or written.
pub fn run_quietly(trainer: &mut Trainer) -> Result<ExitCode> {
    let interrupted =
        crate::interrupt::install("finishing the current step with the other processes")?;
    let mut quiet = Quiet { interrupted };
    match trainer.run(&mut quiet)? {
        Outcome::Stopped { .. } if quiet.should_stop() => {
            Ok(ExitCode::from(crate::interrupt::exit_code()))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
