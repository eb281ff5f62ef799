//! `focal synth` writes a COCO folder that the COCO reader loads as the in-memory shapes
//! dataset, and refuses to write into a non-empty folder without --force.

use std::process::Command;

use focal_data::{CocoDataset, CocoOptions, Dataset, ShapesConfig, ShapesDataset, Split};

fn synth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_focal"))
        .arg("synth")
        .args(args)
        .output()
        .expect("running focal synth")
}

#[test]
fn synth_writes_coco_and_guards_the_folder() {
    let out = std::env::temp_dir().join(format!("focal-synth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = out.to_str().unwrap();
    let args = [
        "--out", dir, "--train", "5", "--val", "3", "--size", "64", "--seed", "9",
    ];
    let run = synth(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    for (split, n) in [(Split::Train, 5), (Split::Val, 3)] {
        let disk = CocoDataset::open_split(&out, split.name(), CocoOptions::default()).unwrap();
        let memory = ShapesDataset::new(ShapesConfig {
            size: 64,
            ..ShapesConfig::new(split, n, 9)
        })
        .unwrap();
        assert_eq!(disk.len(), n);
        for i in 0..n {
            assert_eq!(disk.load(i).unwrap(), memory.load(i).unwrap());
        }
    }

    // Not empty now: refused, naming the folder; --force writes again.
    let again = synth(&args);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains(dir) && err.contains("--force"), "{err}");
    let forced = synth(&[&args[..], &["--force"]].concat());
    assert!(forced.status.success());
    std::fs::remove_dir_all(&out).unwrap();
}
