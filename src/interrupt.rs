//! Ctrl-C (SIGINT), SIGTERM (what `kill`, `docker stop` and Slurm send) and SIGUSR1 for
//! long commands: the first signal sets a flag that the command checks between steps (it
//! then finishes the step or abandons an evaluation, saves, and exits); a second one exits
//! at once. The exit status is the one a shell reports for a process ended by that
//! signal: 130 (128 + SIGINT 2) after Ctrl-C, 143 (128 + SIGTERM 15) after SIGTERM, 138
//! (128 + SIGUSR1 10) after SIGUSR1, so a script or a scheduler sees how the run ended.
//!
//! SIGUSR1 is for runs under an MPI launcher: Open MPI's `mpirun` answers SIGTERM and
//! Ctrl-C by killing its processes, SIGTERM then SIGKILL within its
//! `odls_base_sigkill_timeout` (1 s by default), which leaves no time to finish a step and
//! save (measured with Open MPI 4.1), but it passes SIGUSR1 on to every process untouched;
//! Slurm sends it on request (`scancel --signal=USR1`, `sbatch --signal=USR1@SECONDS`).
//!
//! The signals are received by a thread of their own (signal-hook's iterator), not in a
//! signal handler, so that the messages can be printed safely.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// Exit status after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status after SIGTERM (128 + SIGTERM).
pub const EXIT_TERMINATED: u8 = 143;
/// Exit status after SIGUSR1 (128 + SIGUSR1).
pub const EXIT_USER_SIGNAL: u8 = 138;

/// The first signal received (0: none yet).
static FIRST_SIGNAL: AtomicI32 = AtomicI32::new(0);

fn status(signal: i32) -> u8 {
    match signal {
        SIGTERM => EXIT_TERMINATED,
        SIGUSR1 => EXIT_USER_SIGNAL,
        _ => EXIT_INTERRUPTED,
    }
}

/// The exit status for the signal that stopped the command: 130 (Ctrl-C), 143 (SIGTERM)
/// or 138 (SIGUSR1).
pub fn exit_code() -> u8 {
    status(FIRST_SIGNAL.load(Ordering::SeqCst))
}

/// Installs the handler; the returned flag turns true at the first Ctrl-C, SIGTERM or
/// SIGUSR1.
/// `what` says what happens next, e.g. "finishing the current step, then writing
/// last.ckpt".
pub fn install(what: &'static str) -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .context("cannot install the Ctrl-C, SIGTERM and SIGUSR1 handler")?;
    let f = Arc::clone(&flag);
    std::thread::Builder::new()
        .name("focal-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = match signal {
                    SIGTERM => "SIGTERM",
                    SIGUSR1 => "SIGUSR1",
                    _ => "Ctrl-C",
                };
                if f.swap(true, Ordering::SeqCst) {
                    eprintln!("\nsecond signal ({name}): exiting now");
                    std::process::exit(status(signal) as i32);
                }
                FIRST_SIGNAL.store(signal, Ordering::SeqCst);
                eprintln!("\n{name}: {what} (Ctrl-C again to quit now)");
            }
        })
        .context("cannot start the signal thread")?;
    Ok(flag)
}
