//! Helpers shared by the CLI tests: run the `focal` binary, read its output, check how it
//! failed. (Each test binary uses a subset, hence the `dead_code` allowance.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The keys of the 12 COCO summary numbers, in pycocotools' order.
pub const STAT_KEYS: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// An empty scratch folder for one test of one test binary (`suite`), unique to this
/// process, removed again when the returned guard is dropped at the end of the test. A test
/// that fails keeps its folder for a look (the panic message names it); the next run of the
/// same suite sweeps it away. Without this, every run of the suite left about 2 GB of
/// checkpoints in the temp folder, and a machine that ran it often filled its disk.
pub fn scratch(suite: &str, test: &str) -> Scratch {
    Scratch(scratch_kept(suite, test))
}

/// Like [`scratch`], but the folder outlives the test: for the runs one `OnceLock` shares
/// between tests, which no guard can see the end of. The next run of the suite removes it.
pub fn scratch_kept(suite: &str, test: &str) -> PathBuf {
    sweep_earlier_runs(suite);
    let dir = std::env::temp_dir().join(format!("focal-{suite}-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A test's scratch folder; derefs to its path and removes the folder on drop, unless the
/// test is failing (then it stays, and the next run's sweep removes it).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failing test's folder {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes the scratch folders `focal-{suite}-{pid}-*` that earlier runs of this suite left
/// behind: those of a process that is no longer running (`/proc/{pid}` is gone). Once per
/// process; on systems without `/proc` it does nothing.
fn sweep_earlier_runs(suite: &str) {
    static SWEPT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
    if swept.iter().any(|s| s == suite) {
        return;
    }
    swept.push(suite.to_string());
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!("focal-{suite}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((pid, _test)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The model and optimisation flags of a tiny run: ResNet-18 with a 32-wide FPN and
/// one-layer heads without GroupNorm, 64-px inputs, batches of 4, the paper's loss
/// (γ = 2, α = 0.25) and anchor ratios. (With GroupNorm in the heads, or the synthetic
/// default's γ = 0.5, α = 0.5, six steps leave every score under the 0.05 threshold: the
/// eval and detect tests would have no detection to compare.)
pub const TINY_MODEL: &[&str] = &[
    "--min-size",
    "64",
    "--max-size",
    "64",
    "--batch-size",
    "4",
    "--eval-batch-size",
    "4",
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
    "--no-progress",
];

/// The synthetic dataset of a tiny run: 8 training and 4 validation images of 64 px.
pub const TINY_SHAPES: &[&str] = &[
    "--shapes-train",
    "8",
    "--shapes-val",
    "4",
    "--shapes-size",
    "64",
];

/// `focal train --out OUT`, the tiny run's flags, then `extra`.
pub fn train_args(out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "--out".into(), out.display().to_string()];
    args.extend(TINY_SHAPES.iter().map(|s| s.to_string()));
    args.extend(TINY_MODEL.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs the `focal` binary built for these tests.
pub fn focal(args: &[&str]) -> Output {
    focal_env(args, &[])
}

/// Runs the `focal` binary with extra environment variables.
pub fn focal_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("focal runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks a command failed cleanly (no panic) with exit `code`; returns its stderr.
pub fn fails_with(out: &Output, code: i32) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stdout: {} stderr: {stderr}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Checks a command succeeded, showing its output when it did not.
pub fn succeeds(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}; stdout: {} stderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The last line of stdout, parsed as JSON.
pub fn last_json_line(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"))
}
