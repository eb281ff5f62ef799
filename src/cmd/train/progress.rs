//! The progress of `focal train` on stderr: a bar with the losses, rate and ETA on a
//! terminal, or one plain line every 5% of the run otherwise; Ctrl-C is relayed to the
//! trainer through [`Observer::should_stop`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use focal_data::EvalResult;
use focal_retinanet::train::{EvalRecord, Observer, StepRecord, Trainer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plots::write_plots;

/// The progress bar (or plain lines when stderr is not a terminal or --no-progress).
pub struct Progress {
    bar: Option<ProgressBar>,
    interrupted: Arc<AtomicBool>,
    total: u64,
    epochs: u64,
    line_every: u64,
}

impl Progress {
    pub fn new(no_progress: bool, interrupted: Arc<AtomicBool>) -> Progress {
        let tty = std::io::stderr().is_terminal() && !no_progress;
        Progress {
            bar: tty.then(|| ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())),
            interrupted,
            total: 0,
            epochs: 0,
            line_every: 1,
        }
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

fn step_message(r: &StepRecord, epochs: u64) -> String {
    format!(
        "epoch {}/{epochs} · loss {:.3} (cls {:.3}, box {:.3}) · lr {:.2e} · {:.1} img/s",
        r.epoch + 1,
        r.loss,
        r.cls_loss,
        r.box_loss,
        r.lr,
        r.images_per_s
    )
}

impl Observer for Progress {
    fn on_start(&mut self, t: &Trainer) {
        self.total = t.total_steps();
        self.epochs = self.total.div_ceil(t.batches_per_epoch().max(1) as u64);
        self.line_every = (self.total / 20).max(1);
        if let Some(b) = &self.bar {
            b.set_length(self.total);
            b.set_position(t.step());
            b.reset_eta();
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:28.cyan/blue} {pos}/{len} steps · {msg} · ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
    }

    fn on_step(&mut self, r: &StepRecord, _t: &Trainer) {
        let msg = step_message(r, self.epochs);
        match &self.bar {
            Some(b) => {
                b.set_message(msg);
                b.set_position(r.step);
            }
            None => {
                if r.step.is_multiple_of(self.line_every) || r.step == 1 || r.step == self.total {
                    eprintln!("step {}/{} · {msg}", r.step, self.total);
                }
            }
        }
    }

    fn on_eval_start(&mut self, step: u64, images: usize) {
        match &self.bar {
            Some(b) => b.set_message(format!("evaluating at step {step} on {images} images")),
            None => eprintln!("evaluating at step {step} on {images} images"),
        }
    }

    fn on_eval_progress(&mut self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("evaluating: {done}/{total} images"));
        }
    }

    fn on_eval(&mut self, r: &EvalRecord, result: &EvalResult, t: &Trainer) {
        self.println(&format!(
            "step {}: AP {:.3} · AP50 {:.3} · AP75 {:.3} · AR100 {:.3} ({:.1} s)",
            r.step, r.stats.ap, r.stats.ap50, r.stats.ap75, r.stats.ar100, r.seconds
        ));
        let _ = result;
        if let Err(e) = write_plots(t) {
            self.println(&format!("warning: {e:#}"));
        }
    }

    fn should_stop(&mut self) -> bool {
        self.interrupted()
    }
}

/// The progress of the image check before step 1: a bar on a terminal, and one line per
/// dataset when it is done ("checking the training images: 50 in 0.1 s").
pub struct CheckProgress {
    bar: Option<ProgressBar>,
    started: Mutex<HashMap<String, Instant>>,
}

impl CheckProgress {
    pub fn new(no_progress: bool) -> CheckProgress {
        let tty = std::io::stderr().is_terminal() && !no_progress;
        CheckProgress {
            bar: tty.then(|| {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} {bar:28.cyan/blue} {pos}/{len} · ETA {eta}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar
            }),
            started: Mutex::new(HashMap::new()),
        }
    }

    /// `done` of `total` images of `what` checked (called from several threads).
    pub fn report(&self, what: &str, done: usize, total: usize) {
        let started = {
            let mut map = self.started.lock().unwrap_or_else(|p| p.into_inner());
            *map.entry(what.to_string()).or_insert_with(|| {
                if let Some(b) = &self.bar {
                    b.reset();
                    b.set_length(total as u64);
                    b.set_message(what.to_string());
                }
                Instant::now()
            })
        };
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
        if done == total {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
            eprintln!(
                "{what}: {total} checked in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}
