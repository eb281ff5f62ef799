//! A run never loses work, and bad or hostile input is refused before step 1: periodic
//! checkpoints, kill -9, SIGTERM and Ctrl-C (also during an evaluation), stale temporary
//! files, the run folder's lock, resuming into another folder, a folder left without a
//! checkpoint, a changed dataset, bad images found all at once, truncated JPEGs, empty
//! training sets, absurd thread counts, sizes and box counts. Each test runs the `focal`
//! binary on a tiny configuration.

mod common;
use common::{fails_with, focal, scratch, succeeds, text, train_args};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A `focal` process whose stderr is read line by line.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[String], cwd: Option<&Path>) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_focal"));
        cmd.args(args).stderr(Stdio::piped()).stdout(Stdio::null());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most two minutes) for a line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let hit = line.starts_with(prefix);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        panic!("no line starting with {prefix:?}; stderr: {:#?}", self.seen);
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for the exit (at most two minutes); returns the status code and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return (status.code(), self.seen);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("focal did not exit; stderr: {:#?}", self.seen);
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The (step, loss) text of a run's step rows, and its evaluation rows' steps.
fn rows(dir: &Path) -> (Vec<String>, Vec<u64>) {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let mut steps = Vec::new();
    let mut evals = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["kind"] == "step" {
            steps.push(format!("{} {}", v["step"], v["loss"]));
        } else {
            evals.push(v["step"].as_u64().unwrap());
        }
    }
    (steps, evals)
}

/// The temporary files of atomic writes left in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

fn checkpoint_step(path: &Path) -> u64 {
    focal_nn::Checkpoint::read(path).unwrap().step
}

/// Case 1 and 3: last.ckpt is written by wall time by default (10 minutes, stated in
/// --help); after `kill -9` it exists and resumes, and the temporary files of killed
/// writes (planted here with another pid, as a kill during a write leaves them) are
/// removed by the next run, nothing else.
#[test]
fn kill_9_loses_at_most_the_time_interval_and_temp_files_are_cleaned() {
    let help = text(&focal(&["train", "--help"]).stdout);
    let line = help
        .lines()
        .skip_while(|l| !l.contains("--checkpoint-every-min"))
        .take(4)
        .collect::<String>();
    assert!(line.contains("[default: 10]"), "{line}");
    let config = text(&focal(&["train", "--print-config"]).stdout);
    assert!(config.contains("checkpoint_every_min = 10.0"), "{config}");

    let scratch_dir = scratch("cli-reliability", "kill9");
    let dir = scratch_dir.join("run");
    let args = train_args(
        &dir,
        &["--iters", "400", "--checkpoint-every-min", "0.0005"],
    );
    let mut run = Running::start(&args, None);
    run.wait_for("step 20/400");
    run.signal("KILL");
    let (code, _) = run.finish();
    assert_eq!(code, None, "killed by the signal");
    let last = dir.join("last.ckpt");
    assert!(last.is_file(), "no last.ckpt after kill -9");
    let saved = checkpoint_step(&last);
    assert!(saved >= 1, "{saved}");

    // What an earlier kill during a write leaves, and files that are not focal's.
    let stale = dir.join(".last.ckpt.tmp-4194999-3");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let foreign = [dir.join(".notes.tmp"), dir.join("mine.tmp-1-2")];
    for f in &foreign {
        std::fs::write(f, b"not focal's").unwrap();
    }
    let out = focal(&[
        "train",
        "--resume",
        last.to_str().unwrap(),
        "--stop-after",
        "2",
        "--no-progress",
    ]);
    succeeds(&out);
    // (2 when the kill itself landed during a write.)
    let e = text(&out.stderr);
    assert!(
        e.contains("removed 1 temporary file") || e.contains("removed 2 temporary file"),
        "{e}"
    );
    assert!(!stale.exists());
    assert!(
        temp_files(&dir).iter().all(|n| n == "mine.tmp-1-2"),
        "{:?}",
        temp_files(&dir)
    );
    assert!(
        foreign.iter().all(|f| f.is_file()),
        "only focal's pattern is removed"
    );
    assert_eq!(checkpoint_step(&last), saved + 2);
    assert!(
        !dir.join("focal.lock").exists(),
        "the lock file is removed at exit"
    );

    // Case 5: resuming into another folder: refused when it holds anything, allowed into
    // an empty one, which receives the run's history.
    let other = dir.with_file_name("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"someone's files").unwrap();
    let out = focal(&[
        "train",
        "--resume",
        last.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
        "--stop-after",
        "1",
    ]);
    let e = fails_with(&out, 1);
    assert!(
        e.contains("holds other files") && e.contains("never over another run"),
        "{e}"
    );
    assert!(!other.join("last.ckpt").exists() && !other.join("metrics.jsonl").exists());
    let fork = dir.with_file_name("fork");
    let out = focal(&[
        "train",
        "--resume",
        last.to_str().unwrap(),
        "--out",
        fork.to_str().unwrap(),
        "--stop-after",
        "1",
        "--no-progress",
    ]);
    succeeds(&out);
    let (original, _) = rows(&dir);
    let (forked, _) = rows(&fork);
    assert_eq!(forked.len(), original.len() + 1);
    assert_eq!(
        forked[..original.len()],
        original[..],
        "the history came along"
    );
}

/// Cases 2 and 4: SIGTERM is handled as Ctrl-C (the step finishes, last.ckpt is written,
/// exit 143, no temporary file), and while a run holds its folder a second run there is
/// refused, naming the holder's pid.
#[test]
fn sigterm_saves_and_exits_143_and_a_second_run_is_refused() {
    let scratch_dir = scratch("cli-reliability", "sigterm");
    let dir = scratch_dir.join("run");
    let args = train_args(&dir, &["--iters", "400", "--checkpoint-every-min", "0"]);
    let mut run = Running::start(&args, None);
    run.wait_for("step 1/400");
    let pid = run.child.id();

    let second = focal(&strs(&train_args(&dir, &["--iters", "2"])));
    let e = fails_with(&second, 1);
    assert!(
        e.contains("in use by another run") && e.contains(&format!("pid {pid}")),
        "{e}"
    );

    run.signal("TERM");
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(143), "{stderr:#?}");
    assert!(stderr.iter().any(|l| l.contains("SIGTERM")), "{stderr:#?}");
    assert!(
        dir.join("last.ckpt").is_file(),
        "no last.ckpt after SIGTERM"
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    assert!(!dir.join("focal.lock").exists());
    let done = rows(&dir).0.len() as u64;
    assert_eq!(checkpoint_step(&dir.join("last.ckpt")), done);

    // A lock file left by a process that is gone (the lock itself died with it) does not
    // stand in the way.
    std::fs::write(dir.join("focal.lock"), "focal run: pid 1 on host gone\n").unwrap();
    let out = focal(&[
        "train",
        "--resume",
        dir.join("last.ckpt").to_str().unwrap(),
        "--stop-after",
        "1",
        "--no-progress",
    ]);
    succeeds(&out);
    assert_eq!(rows(&dir).0.len() as u64, done + 1);
}

/// Case 2: Ctrl-C during an evaluation abandons it after the current batch (no
/// evaluation row is written for that step), saves, exits 130; the resumed run does the
/// abandoned evaluation first.
#[test]
fn ctrl_c_during_an_evaluation_stops_it_and_resume_repeats_it() {
    let scratch_dir = scratch("cli-reliability", "eval-stop");
    let dir = scratch_dir.join("run");
    let mut args = train_args(&dir, &["--iters", "40", "--eval-every", "3"]);
    // A validation set long enough that the signal lands well inside it.
    let i = args.iter().position(|a| a == "--shapes-val").unwrap();
    args[i + 1] = "400".into();
    let mut run = Running::start(&args, None);
    run.wait_for("evaluating at step 3");
    run.signal("INT");
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(130), "{stderr:#?}");
    let (steps, evals) = rows(&dir);
    assert_eq!(steps.len(), 3, "{stderr:#?}");
    assert!(evals.is_empty(), "the evaluation ran to the end: {evals:?}");
    assert_eq!(checkpoint_step(&dir.join("last.ckpt")), 3);

    let out = focal(&[
        "train",
        "--resume",
        dir.join("last.ckpt").to_str().unwrap(),
        "--stop-after",
        "1",
        "--no-progress",
    ]);
    succeeds(&out);
    let (steps, evals) = rows(&dir);
    assert_eq!((steps.len(), evals), (4, vec![3]));
}

/// Case 6: a folder whose run crashed before its first checkpoint (metrics.jsonl, no
/// last.ckpt) can be started afresh; one with last.ckpt is refused with a --resume path
/// that exists.
#[test]
fn a_folder_without_checkpoint_restarts_and_one_with_a_checkpoint_is_refused() {
    let scratch_dir = scratch("cli-reliability", "stuck");
    let dir = scratch_dir.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("metrics.jsonl"),
        "{\"kind\":\"step\",\"step\":1,\"epoch\":0,\"loss\":9.0,\"cls_loss\":8.0,\
         \"box_loss\":1.0,\"lr\":0.1,\"num_pos\":3,\"grad_norm\":1.0,\"images_per_s\":1.0}\n",
    )
    .unwrap();
    std::fs::write(dir.join("config.toml"), "seed = 5\n").unwrap();
    let out = focal(&strs(&train_args(&dir, &["--iters", "2"])));
    succeeds(&out);
    let e = text(&out.stderr);
    assert!(
        e.contains("never saved a checkpoint") && e.contains("metrics.jsonl"),
        "{e}"
    );
    let (steps, _) = rows(&dir);
    assert_eq!(steps.len(), 2);
    assert!(
        !steps[0].ends_with(" 9.0"),
        "the old row was replaced: {steps:?}"
    );

    let e = fails_with(&focal(&strs(&train_args(&dir, &["--iters", "2"]))), 1);
    let hint = format!("--resume {}", dir.join("last.ckpt").display());
    assert!(e.contains(&hint), "{e}");
    assert!(dir.join("last.ckpt").is_file());
}

/// A COCO dataset written by `focal synth`: (root, the four dataset flags).
fn synth_coco(dir: &Path, train: usize, val: usize) -> (PathBuf, Vec<String>) {
    let root = dir.join("coco");
    let out = focal(&[
        "synth",
        "--out",
        root.to_str().unwrap(),
        "--train",
        &train.to_string(),
        "--val",
        &val.to_string(),
        "--size",
        "64",
    ]);
    succeeds(&out);
    let flags = [
        ("--train-ann", "annotations/instances_train.json"),
        ("--train-images", "train"),
        ("--val-ann", "annotations/instances_val.json"),
        ("--val-images", "val"),
    ]
    .iter()
    .flat_map(|(f, p)| [f.to_string(), format!("coco/{p}")])
    .collect();
    (root, flags)
}

/// A `focal train` command line on a COCO dataset (relative paths, run from `cwd`).
fn coco_train(out: &str, data: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "--out".into(), out.into()];
    args.extend(data.iter().cloned());
    args.extend(common::TINY_MODEL.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_in(cwd: &Path, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Case 7: the dataset's absolute paths and fingerprint are saved; a resume from another
/// working directory works, a changed annotation file is refused, and accepted with
/// --accept-data-change.
#[test]
fn resume_checks_the_dataset_and_works_from_another_folder() {
    let dir = scratch("cli-reliability", "fingerprint");
    let (root, data) = synth_coco(&dir, 4, 2);
    let out = run_in(
        &dir,
        &coco_train("run", &data, &["--iters", "6", "--stop-after", "2"]),
    );
    succeeds(&out);
    let config = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    assert!(
        config.contains(&root.join("train").display().to_string()),
        "{config}"
    );
    let last = dir.join("run/last.ckpt");
    let resume = |extra: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            "--resume".into(),
            last.display().to_string(),
            "--stop-after".into(),
            "1".into(),
            "--no-progress".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_in(Path::new("/"), &args)
    };
    succeeds(&resume(&[]));

    // The training annotation file loses an image.
    let ann = root.join("annotations/instances_train.json");
    let mut coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ann).unwrap()).unwrap();
    let gone = coco["images"].as_array_mut().unwrap().pop().unwrap()["id"].clone();
    coco["annotations"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["image_id"] != gone);
    std::fs::write(&ann, coco.to_string()).unwrap();
    let e = fails_with(&resume(&[]), 1);
    assert!(
        e.contains("the training set is not the one this run was trained on")
            && e.contains("3 images instead of 4")
            && e.contains("--accept-data-change"),
        "{e}"
    );
    let out = resume(&["--accept-data-change"]);
    succeeds(&out);
    assert!(
        text(&out.stderr).contains("(accepted)"),
        "{}",
        text(&out.stderr)
    );
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// Cases 8, 9 and 10: every bad image is found before step 1 and reported at once (a
/// missing file, a folder, a symbolic link leading outside the folder, a truncated JPEG,
/// an image of another size than annotated); --skip-bad-images leaves them out and says
/// how many. A truncated JPEG is an error in eval and detect too.
#[test]
fn bad_images_are_all_reported_before_step_1() {
    let dir = scratch("cli-reliability", "bad-images");
    let (root, data) = synth_coco(&dir, 7, 2);
    let images = root.join("train");
    let name = |i: usize| images.join(format!("{i:06}.png"));
    std::fs::remove_file(name(1)).unwrap();
    std::fs::remove_file(name(2)).unwrap();
    std::fs::create_dir(name(2)).unwrap();
    let outside = dir.join("outside.png");
    std::fs::copy(name(3), &outside).unwrap();
    std::fs::remove_file(name(3)).unwrap();
    std::os::unix::fs::symlink(&outside, name(3)).unwrap();
    let jpeg = jpeg_bytes(64, 64);
    std::fs::write(name(4), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(name(5), jpeg_bytes(32, 64)).unwrap();

    let out = run_in(&dir, &coco_train("run", &data, &["--iters", "2"]));
    let e = fails_with(&out, 1);
    assert!(e.contains("5 of 7 images"), "{e}");
    for (i, why) in [
        (1, "no such file"),
        (2, "is a folder"),
        (3, "leads outside the images folder"),
        (4, "decode"),
        (5, "the image is 32x64 but the annotation file gives 64x64"),
    ] {
        let line = e
            .lines()
            .find(|l| l.contains(&format!("{i:06}.png")))
            .unwrap_or_else(|| panic!("image {i} not reported: {e}"));
        assert!(line.contains(why), "image {i}: {line}");
    }
    assert!(
        !dir.join("run").exists(),
        "nothing is written before the check passes"
    );

    let out = run_in(
        &dir,
        &coco_train("run", &data, &["--iters", "2", "--skip-bad-images"]),
    );
    succeeds(&out);
    let e = text(&out.stderr);
    assert!(e.contains("left out 5 of the 7 training images"), "{e}");

    // The truncated JPEG in eval and detect.
    let ckpt = dir.join("run/last.ckpt");
    let ann = root.join("annotations/instances_train.json");
    let e = fails_with(
        &focal(&[
            "eval",
            "--weights",
            ckpt.to_str().unwrap(),
            "--ann",
            ann.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("000004.png") && e.contains("decode"), "{e}");
    let e = fails_with(
        &focal(&[
            "detect",
            "--weights",
            ckpt.to_str().unwrap(),
            name(4).to_str().unwrap(),
            "--out",
            dir.join("dets").to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        e.contains("000004.png") && e.contains("cannot decode"),
        "{e}"
    );
    let e = fails_with(
        &focal(&[
            "detect",
            "--weights",
            ckpt.to_str().unwrap(),
            name(2).to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("is a folder"), "{e}");
}

/// Case 14: size flags are bounded; a run whose memory estimate exceeds the machine's
/// memory is refused with the estimate. (The image memory limit's message is tested with
/// the decoder, in focal-data.)
#[test]
fn sizes_are_bounded_and_the_memory_estimate_refuses_what_cannot_fit() {
    let dir = scratch("cli-reliability", "sizes");
    for cmd in [
        vec![
            "detect",
            "--weights",
            "x.ckpt",
            "a.png",
            "--min-size",
            "60000",
        ],
        vec!["eval", "--weights", "x.ckpt", "--min-size", "60000"],
        vec!["eval", "--weights", "x.ckpt", "--max-size", "5000"],
    ] {
        let e = fails_with(&focal(&cmd), 2);
        assert!(e.contains("60000") || e.contains("5000"), "{e}");
    }
    let o = dir.join("run");
    let e = fails_with(
        &focal(&[
            "train",
            "--fpn-channels",
            "100000",
            "--out",
            o.to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        e.contains("fpn_channels is 100000") && e.contains("2048"),
        "{e}"
    );
    let e = fails_with(
        &focal(&[
            "train",
            "--min-size",
            "4096",
            "--max-size",
            "4096",
            "--batch-size",
            "64",
            "--out",
            o.to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        e.contains("would need about") && e.contains("GB of memory"),
        "{e}"
    );
    assert!(!o.exists(), "a refused run writes nothing");
}

/// Case 11: an empty training set is refused at once (it used to loop forever with
/// --iters); case 13: an image with more boxes than the cap is refused naming it.
#[test]
fn empty_training_sets_and_too_many_boxes_are_refused() {
    let dir = scratch("cli-reliability", "empty");
    let (root, data) = synth_coco(&dir, 2, 2);
    let ann = root.join("annotations/instances_train.json");
    let mut coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ann).unwrap()).unwrap();
    let original = coco.clone();
    coco["images"] = serde_json::json!([]);
    coco["annotations"] = serde_json::json!([]);
    std::fs::write(&ann, coco.to_string()).unwrap();
    let run = Running::start(&coco_train("run", &data, &["--iters", "2"]), Some(&dir));
    let (code, stderr) = run.finish();
    assert_eq!(code, Some(1), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("the training set has no images")),
        "{stderr:#?}"
    );

    // 40 000 boxes on one image: matching them to the anchors of a 512-px image once
    // needed a 7.9 GB matrix.
    let mut coco = original;
    let image_id = coco["images"][0]["id"].clone();
    let category = coco["categories"][0]["id"].clone();
    let boxes: Vec<serde_json::Value> = (0..40_000)
        .map(|i| {
            serde_json::json!({"id": 100_000 + i, "image_id": image_id, "category_id": category,
                "bbox": [(i % 60) as f64, (i / 700) as f64 % 60.0, 3.0, 3.0], "iscrowd": 0})
        })
        .collect();
    coco["annotations"] = serde_json::Value::Array(boxes);
    std::fs::write(&ann, coco.to_string()).unwrap();
    let out = run_in(&dir, &coco_train("run", &data, &["--iters", "2"]));
    let e = fails_with(&out, 1);
    assert!(
        e.contains("has 40000 boxes") && e.contains("1000 per image"),
        "{e}"
    );
}

/// Case 12: an absurd thread count is refused with the range, never a panic.
#[test]
fn thread_counts_are_validated() {
    let e = fails_with(
        &focal(&["--threads", "100000", "train", "--print-config"]),
        2,
    );
    assert!(e.contains("--threads 100000 is out of range"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["train", "--print-config"])
        .env("FOCAL_THREADS", "100000")
        .output()
        .unwrap();
    let e = fails_with(&out, 2);
    assert!(e.contains("out of range"), "{e}");
    succeeds(&focal(&["--threads", "2", "train", "--print-config"]));
}

/// Case 15: decoded images share one budget across all threads. Eight copies of an
/// 8000 x 8000 PNG (192 MB of RGB each, a 200 kB file), trained on with 4 threads
/// under `ulimit -v` 1.1 GB: with a 300 MB budget the images are decoded one at a time
/// and the run finishes; with the budget lifted (as before: every thread decoding at
/// once) the same run cannot allocate.
#[test]
fn huge_images_are_decoded_within_one_budget_whatever_the_threads() {
    let dir = scratch("cli-reliability", "budget");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let side = 8000u32;
    let img = image::RgbImage::from_pixel(side, side, image::Rgb([40, 90, 200]));
    img.save(images.join("big.png")).unwrap();
    let entries: Vec<serde_json::Value> = (1..=8)
        .map(
            |i| serde_json::json!({"id": i, "file_name": "big.png", "width": side, "height": side}),
        )
        .collect();
    let anns: Vec<serde_json::Value> = (1..=8)
        .map(|i| {
            serde_json::json!({"id": i, "image_id": i, "category_id": 1,
                "bbox": [100, 100, 2000, 3000], "area": 6.0e6, "iscrowd": 0})
        })
        .collect();
    let ann = dir.join("ann.json");
    let coco = serde_json::json!({"images": entries, "annotations": anns,
        "categories": [{"id": 1, "name": "x"}]});
    std::fs::write(&ann, coco.to_string()).unwrap();
    let run = |budget_mb: &str| {
        let out = dir.join(format!("run-{budget_mb}"));
        let mut args = vec![
            "--threads".to_string(),
            "4".into(),
            "train".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        for (flag, value) in [
            ("--train-ann", &ann),
            ("--train-images", &images),
            ("--val-ann", &ann),
            ("--val-images", &images),
        ] {
            args.push(flag.into());
            args.push(value.display().to_string());
        }
        args.extend(
            [
                "--iters",
                "1",
                "--batch-size",
                "4",
                "--eval-batch-size",
                "4",
                "--min-size",
                "64",
                "--max-size",
                "64",
                "--fpn-channels",
                "32",
                "--head-width",
                "32",
                "--head-depth",
                "1",
                "--anchor-ratios",
                "1",
                "--no-progress",
            ]
            .map(String::from),
        );
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 1100000; exec '{}' {}",
                env!("CARGO_BIN_EXE_focal"),
                quoted.join(" ")
            ))
            .env("FOCAL_DECODE_BUDGET_MB", budget_mb)
            .output()
            .unwrap()
    };
    let bounded = run("300");
    succeeds(&bounded);
    let unbounded = run("100000");
    assert!(
        !unbounded.status.success(),
        "4 threads decoding at once fit in 1.1 GB after all: {}",
        text(&unbounded.stderr)
    );
}

/// An image whose end is intact but whose data is corrupt passes the check and fails
/// when decoded: the run writes last.ckpt before stopping with the error, and continues
/// with --resume --skip-bad-images, leaving the image out.
#[test]
fn an_image_failing_mid_run_saves_last_ckpt_first() {
    let dir = scratch("cli-reliability", "mid-run");
    let (root, data) = synth_coco(&dir, 4, 2);
    let mut bad = jpeg_bytes(64, 64);
    let n = bad.len();
    for b in &mut bad[n / 2..n / 2 + 40] {
        *b = 0xFF;
    }
    std::fs::write(root.join("train/000003.png"), &bad).unwrap();
    let mut args = coco_train("run", &data, &["--iters", "4"]);
    let i = args.iter().position(|a| a == "--batch-size").unwrap();
    args[i + 1] = "1".into();
    let out = run_in(&dir, &args);
    let e = fails_with(&out, 1);
    assert!(
        e.contains("training stopped at step") && e.contains("000003.png"),
        "{e}"
    );
    let last = dir.join("run/last.ckpt");
    assert!(last.is_file(), "{e}");
    let out = run_in(
        &dir,
        &[
            "train".to_string(),
            "--resume".into(),
            last.display().to_string(),
            "--skip-bad-images".into(),
            "--no-progress".into(),
        ],
    );
    succeeds(&out);
    assert!(
        text(&out.stderr).contains("skipping an image"),
        "{}",
        text(&out.stderr)
    );
}
