//! `focal train` as several MPI processes (`mpirun -np N`), end to end on a tiny
//! synthetic run: the metrics, checkpoint and final COCO numbers of 1, 2 and 4 processes
//! are those of one process with the same shards, byte for byte, and the same on a
//! repeat; a run resumes on another number of processes; SIGUSR1 to mpirun stops every
//! process after the same step, with rank 0's checkpoint; a process that fails stops every
//! process with its error; a Slurm task count that is not the world size is refused.
//!
//! These tests need a focal built with `--features mpi` and Open MPI's `mpirun`:
//!
//! ```sh
//! cargo test --release --features mpi --test mpi
//! ```
//!
//! In a default build they are listed as ignored (with that reason), never passed; only
//! the checks that a build without MPI refuses to be one of N processes run there.

mod common;
use common::{scratch, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tiny run of the CLI tests on ResNet-18 at half width, with 10 training images in batches of 4 cut into 4
/// shards (the last batch of 2 leaves half the shards empty), evaluated image by image on
/// 4 images after steps 2 and 4, keeping detections of any score (so that after so few
/// steps every process has detections to send to the others).
const TINY: &[&str] = &[
    "--shapes-train",
    "10",
    "--shapes-val",
    "4",
    "--shapes-size",
    "64",
    "--min-size",
    "64",
    "--max-size",
    "64",
    "--batch-size",
    "4",
    "--shards",
    "4",
    "--eval-batch-size",
    "1",
    "--eval-every",
    "2",
    "--backbone",
    "resnet18-half",
    "--fpn-channels",
    "32",
    "--head-width",
    "32",
    "--head-depth",
    "1",
    "--head-norm",
    "false",
    "--warmup-iters",
    "2",
    "--lr",
    "0.002",
    "--gamma",
    "2",
    "--alpha",
    "0.25",
    "--anchor-ratios",
    "0.5,1,2",
    "--score-threshold",
    "0",
    "--iters",
    "4",
    "--no-progress",
];

/// No MPI command of these tests may take longer than this: a hang is a failure.
const DEADLINE: Duration = Duration::from_secs(240);

const FOCAL: &str = env!("CARGO_BIN_EXE_focal");

/// `mpirun` for `np` processes on this machine: as root if need be, more processes than
/// cores allowed, no binding (each rank's threads may use every core).
fn mpirun(np: usize) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("mpirun").is_file()));
    assert!(
        found,
        "mpirun is not on PATH: the MPI tests need Open MPI (Debian: apt-get install \
         openmpi-bin libopenmpi-dev)"
    );
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args([
            "--oversubscribe",
            "--bind-to",
            "none",
            "-np",
            &np.to_string(),
        ]);
    c
}

/// Runs `c` to its end, failing the test if it runs past [`DEADLINE`] (killing it).
fn run(mut c: Command) -> Output {
    let started = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {DEADLINE:?} (a hang): {:?}\nstdout: {}\nstderr: {}",
                c,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn succeeds(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `focal train --out DIR` with the tiny flags and `extra`, as `np` MPI processes (0: one
/// process without mpirun).
fn train(np: usize, dir: &Path, extra: &[&str]) -> Output {
    let mut c = if np == 0 {
        Command::new(FOCAL)
    } else {
        let mut c = mpirun(np);
        c.arg(FOCAL);
        c
    };
    c.args(["train", "--out", dir.to_str().unwrap()]);
    c.args(TINY).args(extra);
    run(c)
}

/// What must be equal between two runs: every row of metrics.jsonl with its wall-clock
/// figures blanked, metrics.json, and the bytes of last.ckpt (model, optimiser, RNG).
#[derive(Debug, PartialEq)]
struct RunFiles {
    metrics: Vec<serde_json::Value>,
    final_metrics: String,
    last_ckpt: Vec<u8>,
}

fn run_files(dir: &Path) -> RunFiles {
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for timing in ["images_per_s", "seconds"] {
                if let Some(t) = v.get_mut(timing) {
                    *t = serde_json::Value::Null;
                }
            }
            v
        })
        .collect();
    RunFiles {
        metrics,
        final_metrics: std::fs::read_to_string(dir.join("metrics.json")).unwrap(),
        last_ckpt: std::fs::read(dir.join("last.ckpt")).unwrap(),
    }
}

/// The tiny run in one process, without MPI: the reference.
fn one_process() -> &'static RunFiles {
    static RUN: OnceLock<RunFiles> = OnceLock::new();
    RUN.get_or_init(|| {
        let scratch_dir = scratch("mpi", "one");
        let dir = scratch_dir.join("run");
        succeeds(&train(0, &dir, &[]));
        let files = run_files(&dir);
        assert_eq!(files.metrics.len(), 4 + 2, "4 steps and 2 evaluations");
        let recall = files.metrics[5]["AR100"].as_f64().unwrap();
        assert!(recall > 0.0, "no detection matched: AR100 {recall}");
        files
    })
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs focal built with --features mpi and Open MPI: cargo test --release --features mpi --test mpi"
)]
fn mpi_processes_write_the_bits_of_one_process_with_the_same_shards() {
    let reference = one_process();
    let root = scratch("mpi", "ranks");
    for (np, repeat) in [(2, 1), (2, 2), (4, 1), (1, 1)] {
        let dir = root.join(format!("np{np}-{repeat}"));
        let out = train(np, &dir, &[]);
        succeeds(&out);
        if np > 1 {
            // Rank 0 alone reports.
            let stderr = text(&out.stderr);
            assert_eq!(stderr.matches("training on").count(), 1, "{stderr}");
            assert!(stderr.contains(&format!("{np} processes (")), "{stderr}");
        }
        let files = run_files(&dir);
        assert_eq!(
            files.metrics, reference.metrics,
            "mpirun -np {np} (run {repeat}) wrote other metrics than one process"
        );
        assert_eq!(
            files.final_metrics, reference.final_metrics,
            "mpirun -np {np}: other final COCO numbers"
        );
        assert!(
            files.last_ckpt == reference.last_ckpt,
            "mpirun -np {np} (run {repeat}) saved another last.ckpt than one process"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs focal built with --features mpi and Open MPI: cargo test --release --features mpi --test mpi"
)]
fn an_mpi_run_resumes_on_another_number_of_processes() {
    let reference = one_process();
    let scratch_dir = scratch("mpi", "resume");
    let dir = scratch_dir.join("run");
    // Steps 1-2 on 2 processes, 3 in one process without MPI, 4 on 4 processes.
    succeeds(&train(2, &dir, &["--stop-after", "2"]));
    let ckpt = dir.join("last.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let out = run({
        let mut c = Command::new(FOCAL);
        c.args([
            "train",
            "--resume",
            ckpt,
            "--stop-after",
            "1",
            "--no-progress",
        ]);
        c
    });
    succeeds(&out);
    let out = run({
        let mut c = mpirun(4);
        c.args([FOCAL, "train", "--resume", ckpt, "--no-progress"]);
        c
    });
    succeeds(&out);
    assert!(
        text(&out.stderr).contains("resuming"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(&run_files(&dir), reference);
    // 3 processes cannot share 4 shards: refused, naming the counts that can.
    let out = run({
        let mut c = mpirun(3);
        c.args([FOCAL, "train", "--resume", ckpt, "--no-progress"]);
        c
    });
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("run it on 1, 2, 4 processes"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs focal built with --features mpi and Open MPI: cargo test --release --features mpi --test mpi"
)]
fn a_failing_process_stops_every_process_with_its_error() {
    let scratch_dir = scratch("mpi", "fails");
    let dir = scratch_dir.join("run");
    let missing = dir.with_file_name("no-such-config.toml");
    // Two programs in one MPI run: rank 0 trains, rank 1 is given a configuration file
    // that does not exist. Rank 0 waits for rank 1 in the start-up check until rank 1's
    // error stops them both.
    let mut c = mpirun(1);
    c.args([FOCAL, "train", "--out", dir.to_str().unwrap()])
        .args(TINY)
        .args([
            ":",
            "-np",
            "1",
            FOCAL,
            "train",
            "--out",
            dir.to_str().unwrap(),
        ])
        .args(TINY)
        .args(["--config", missing.to_str().unwrap()]);
    let out = run(c);
    assert!(!out.status.success(), "the run succeeded");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error on rank 1 of 2"), "{stderr}");
    assert!(stderr.contains("no-such-config.toml"), "{stderr}");
    assert!(stderr.contains("stopping every process"), "{stderr}");
    assert!(!dir.join("last.ckpt").exists());
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs focal built with --features mpi and Open MPI: cargo test --release --features mpi --test mpi"
)]
fn a_slurm_task_count_other_than_the_world_size_is_refused() {
    let scratch_dir = scratch("mpi", "slurm");
    let dir = scratch_dir.join("run");
    let mut c = mpirun(2);
    c.args(["-x", "SLURM_NTASKS=3", FOCAL, "train", "--out"])
        .arg(&dir)
        .args(TINY);
    let out = run(c);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Slurm gives this job 3 tasks") && stderr.contains("MPI sees 2"),
        "{stderr}"
    );
    assert!(!dir.exists());
}

/// The tiny flags with `--iters` and `--eval-every` set to `iters` and `eval_every`.
fn tiny_with(iters: &str, eval_every: &str) -> Vec<String> {
    let mut args: Vec<String> = TINY.iter().map(|a| a.to_string()).collect();
    for (flag, value) in [("--iters", iters), ("--eval-every", eval_every)] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_string();
    }
    args
}

/// SIGUSR1 to mpirun, which passes it on to every process (SIGTERM and Ctrl-C make
/// Open MPI kill them before they can save): every process finishes the same step, rank
/// 0 writes last.ckpt and metrics.jsonl, and each exits with 138 (128 + SIGUSR1); what
/// they wrote is what one process stopped after that step (`--stop-after`) writes.
#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "needs focal built with --features mpi and Open MPI: cargo test --release --features mpi --test mpi"
)]
fn sigusr1_to_mpirun_stops_every_process_after_the_same_step() {
    let root = scratch("mpi", "signal");
    let dir = root.join("run");
    // Long enough never to end by itself; no evaluation before the end.
    let args = tiny_with("2000", "2000");
    let mut c = mpirun(2);
    c.args([FOCAL, "train", "--out", dir.to_str().unwrap()])
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = c.spawn().expect("mpirun starts");
    // metrics.jsonl is first written after step 20: the processes are training (and
    // their signal handlers are in place).
    while !dir.join("metrics.jsonl").exists() {
        assert!(
            started.elapsed() < DEADLINE && child.try_wait().unwrap().is_none(),
            "the run ended or never wrote metrics.jsonl"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("mpirun still running {DEADLINE:?} after SIGUSR1");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(138), "{stderr}");
    assert_eq!(stderr.matches("SIGUSR1: finishing").count(), 2, "{stderr}");
    let step: String = stderr
        .split("stopped after step ")
        .nth(1)
        .unwrap_or_else(|| panic!("no stop reported: {stderr}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let step_count: u64 = step.parse().unwrap();
    assert!((20..2000).contains(&step_count), "{step}");

    let one = root.join("one");
    let mut c = Command::new(FOCAL);
    c.args(["train", "--out", one.to_str().unwrap()])
        .args(&args)
        .args(["--stop-after", &step]);
    succeeds(&run(c));
    for file in ["metrics.jsonl", "last.ckpt"] {
        let (a, b) = (dir.join(file), one.join(file));
        let same = match file {
            "metrics.jsonl" => {
                let rows = |p: &Path| -> Vec<serde_json::Value> {
                    std::fs::read_to_string(p)
                        .unwrap()
                        .lines()
                        .map(|l| {
                            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                            v["images_per_s"] = serde_json::Value::Null;
                            v
                        })
                        .collect()
                };
                rows(&a) == rows(&b)
            }
            _ => std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        };
        assert!(
            same,
            "{file}: not what one process stopped after step {step} wrote"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Without mpirun, a Slurm job of several tasks (srun without working MPI support starts
/// N copies that each see one process) is refused, in any build.
#[test]
fn a_lone_process_in_a_slurm_job_of_several_tasks_is_refused() {
    let scratch_dir = scratch("mpi", "lone");
    let dir = scratch_dir.join("run");
    let out = run({
        let mut c = Command::new(FOCAL);
        c.env("SLURM_NTASKS", "4")
            .args(["train", "--out", dir.to_str().unwrap()])
            .args(TINY);
        c
    });
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("SLURM_NTASKS=4") && stderr.contains("srun --mpi=pmix"),
        "{stderr}"
    );
    assert!(!dir.exists());
}

/// A focal built without MPI, started by a launcher as one of several processes, refuses
/// rather than training a model of its own in each.
#[test]
#[cfg_attr(feature = "mpi", ignore = "checks a build without the mpi feature")]
fn a_build_without_mpi_refuses_to_be_one_of_several_processes() {
    let scratch_dir = scratch("mpi", "no-mpi");
    let dir: PathBuf = scratch_dir.join("run");
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
        let out = run({
            let mut c = Command::new(FOCAL);
            c.env(var, "2")
                .args(["train", "--out", dir.to_str().unwrap()])
                .args(TINY);
            c
        });
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("built without MPI") && stderr.contains("--features mpi"),
            "{stderr}"
        );
        assert!(!dir.exists());
    }
}
