//! Ctrl-C for long commands: the first press sets a flag that the command checks between
//! steps (it then finishes the step, saves and exits with status 130); a second press
//! exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// Exit status after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Installs the handler; the returned flag turns true at the first Ctrl-C. `what` says
/// what happens next, e.g. "finishing the current step, then writing last.ckpt".
pub fn install(what: &'static str) -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let presses = AtomicUsize::new(0);
    let f = Arc::clone(&flag);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("\nsecond Ctrl-C: exiting now");
            std::process::exit(EXIT_INTERRUPTED as i32);
        }
        eprintln!("\nCtrl-C: {what} (Ctrl-C again to quit now)");
        f.store(true, Ordering::SeqCst);
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}
