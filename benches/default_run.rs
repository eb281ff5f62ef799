//! The default run against its target: `focal train` with no dataset arguments must finish
//! (training and evaluation) within 5 minutes on 2 cores and reach AP50 ≥ 0.87 on the
//! held-out synthetic validation split (it reaches 0.952 in 720 steps since its training
//! images hold up to 30 objects; 0.822 in 800 steps before, with 0–6).
//!
//! `cargo bench --bench default_run` runs the built `focal train` once into a temporary
//! folder and reports the wall time (process start to exit), the final AP50 from the run's
//! metrics.json, and the load average before and after (the budget is meant for a quiet
//! machine: a load above the core count means the run shared the CPUs). Arguments after
//! `--` are passed to `focal train`, e.g. `cargo bench --bench default_run -- --threads 2`.

use std::process::Command;
use std::time::Instant;

const BUDGET_S: f64 = 300.0;
const TARGET_AP50: f64 = 0.87;

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    // cargo bench passes --bench; everything else goes to focal train.
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let out = std::env::temp_dir().join(format!("focal-default-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    println!("focal train (default configuration) into {}", out.display());
    println!("cores: {cores}; load average (1, 5, 15 min) before: {load_before}");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_focal"))
        .arg("train")
        .arg("--out")
        .arg(&out)
        .arg("--no-progress")
        .args(&extra)
        .status()
        .expect("running focal train");
    let wall = started.elapsed().as_secs_f64();
    let load_after = load_average();
    if !status.success() {
        eprintln!("focal train failed ({status})");
        std::process::exit(1);
    }
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json of the run"),
    )
    .expect("metrics.json is JSON");
    let ap50 = metrics["AP50"].as_f64().unwrap_or(f64::NAN);
    let ap = metrics["AP"].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("load average after: {load_after}");
    println!(
        "wall time {wall:.1} s (budget {BUDGET_S:.0} s: {}), AP50 {ap50:.3} (target {TARGET_AP50}: {}), AP {ap:.3}",
        if wall <= BUDGET_S { "met" } else { "MISSED" },
        if ap50 >= TARGET_AP50 { "met" } else { "MISSED" },
    );
    let _ = std::fs::remove_dir_all(&out);
}
