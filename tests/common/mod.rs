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
/// process.
pub fn scratch(suite: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focal-{suite}-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
