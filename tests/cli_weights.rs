//! `focal weights inspect` and `focal weights export`, and `--weights FILE.safetensors` of
//! eval, on good files and bad ones: a tensor missing, a shape changed, a tensor the
//! architecture is read from missing, unrelated tensors, a file that is not safetensors at
//! all. Every bad file is a clear error naming the tensor (or the format) with exit code
//! 1, never a panic. An export evaluates exactly as the checkpoint it came from.

mod common;
#[path = "../retinanet/tests/common/formula.rs"]
mod formula;

use std::path::{Path, PathBuf};

use common::{fails_with, focal, last_json_line, scratch, succeeds, text};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// `source` rewritten with `drop` left out and `replace`'s tensors put in (F32).
fn rewrite(source: &Path, out: &Path, drop: &[&str], replace: &[(&str, Vec<usize>)]) {
    let bytes = std::fs::read(source).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let zeros: Vec<(String, Vec<usize>, Vec<u8>)> = replace
        .iter()
        .map(|(n, shape)| {
            let len: usize = shape.iter().product();
            (n.to_string(), shape.clone(), vec![0u8; 4 * len])
        })
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !drop.contains(&n.as_str()) && !replace.iter().any(|(r, _)| r == n))
        .collect();
    for (n, shape, data) in &zeros {
        views.push((
            n.clone(),
            TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
        ));
    }
    std::fs::write(out, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn inspect(file: &Path) -> std::process::Output {
    focal(&["weights", "inspect", file.to_str().unwrap()])
}

/// `focal eval --weights FILE` on a dataset that exists (so only the weights can fail).
fn eval(file: &Path, data: &Path) -> std::process::Output {
    focal(&[
        "eval",
        "--weights",
        file.to_str().unwrap(),
        "--ann",
        data.join("annotations/instances_val.json")
            .to_str()
            .unwrap(),
        "--images",
        data.join("val").to_str().unwrap(),
    ])
}

fn synth(dir: &Path) -> PathBuf {
    let data = dir.join("shapes");
    let out = focal(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--train",
        "1",
        "--val",
        "4",
        "--size",
        "64",
    ]);
    succeeds(&out);
    data
}

#[test]
fn inspect_reads_the_architecture_and_maps_every_tensor() {
    let dir = scratch("weights", "inspect-good");
    let file = dir.join("small.safetensors");
    formula::write_small_detector(&file);
    let out = inspect(&file);
    succeeds(&out);
    let stdout = text(&out.stdout);
    for said in [
        "a RetinaNet state dict under torchvision's names",
        "backbone resnet18-half with frozen BatchNorm",
        "FPN 64 channels, P6 from P5 (backbone.fpn.extra_blocks.p6.weight [64, 64, 3, 3])",
        "head towers 1 × 64 channels, no norm",
        "91 classes: torchvision's COCO ids",
        "ε of frozen BatchNorm 1e-5",
        "backbone.body.conv1.weight",
        "the rows of COCO's 80 categories",
        "missing from the file: none",
        "it fits",
    ] {
        assert!(stdout.contains(said), "{said:?} not in:\n{stdout}");
    }
    // One line per tensor, each mapped (no '!').
    let bytes = std::fs::read(&file).unwrap();
    let n = SafeTensors::deserialize(&bytes).unwrap().len();
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("  backbone.") || l.starts_with("  head."));
    assert_eq!(rows.count(), n);
    assert!(!stdout.lines().any(|l| l.starts_with('!')), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_weights_files_are_clear_errors_naming_the_tensors() {
    let dir = scratch("weights", "bad");
    let data = synth(&dir);
    let good = dir.join("good.safetensors");
    formula::write_small_detector(&good);

    // A tensor missing: inspect lists it, eval refuses the file naming it.
    let missing = dir.join("missing.safetensors");
    rewrite(
        &good,
        &missing,
        &["head.regression_head.bbox_reg.bias"],
        &[],
    );
    let out = inspect(&missing);
    let stderr = fails_with(&out, 1);
    assert!(
        stderr.contains("missing from the file: head.regression_head.bbox_reg.bias"),
        "{stderr}"
    );
    let stderr = fails_with(&eval(&missing, &data), 1);
    assert!(
        stderr.contains("missing.safetensors")
            && stderr.contains("missing from the file: head.regression_head.bbox_reg.bias"),
        "{stderr}"
    );

    // A shape changed: marked in the listing, named with both shapes.
    let shape = dir.join("shape.safetensors");
    let name = "backbone.fpn.layer_blocks.0.0.weight";
    rewrite(&good, &shape, &[], &[(name, vec![64, 64, 1, 1])]);
    let out = inspect(&shape);
    let stderr = fails_with(&out, 1);
    assert!(
        stderr.contains(&format!(
            "wrong shapes: {name} (file [64, 64, 1, 1], model [64, 64, 3, 3])"
        )),
        "{stderr}"
    );
    let marked = text(&out.stdout);
    assert!(
        marked
            .lines()
            .any(|l| l.starts_with('!') && l.contains(name)),
        "{marked}"
    );
    let stderr = fails_with(&eval(&shape, &data), 1);
    assert!(
        stderr.contains(&format!("shape mismatch: {name}")),
        "{stderr}"
    );

    // A tensor the architecture is read from: named, with the file's tensors around it.
    let no_p6 = dir.join("no-p6.safetensors");
    rewrite(&good, &no_p6, &["backbone.fpn.extra_blocks.p6.weight"], &[]);
    for out in [inspect(&no_p6), eval(&no_p6, &data)] {
        let stderr = fails_with(&out, 1);
        assert!(
            stderr.contains("no tensor backbone.fpn.extra_blocks.p6.weight")
                && stderr.contains("backbone.fpn.extra_blocks.p7.weight [64, 64, 3, 3]"),
            "{stderr}"
        );
    }

    // Tensors of something else entirely.
    let other = dir.join("other.safetensors");
    let values = [0u8; 8];
    let view = TensorView::new(Dtype::F32, vec![2], &values).unwrap();
    std::fs::write(
        &other,
        safetensors::serialize([("encoder.w", view)], None).unwrap(),
    )
    .unwrap();
    for out in [inspect(&other), eval(&other, &data)] {
        let stderr = fails_with(&out, 1);
        assert!(
            stderr.contains("neither a RetinaNet state dict") && stderr.contains("encoder.w [2]"),
            "{stderr}"
        );
    }

    // Not a safetensors file: by name, by contents, or truncated.
    let text_file = dir.join("notes.safetensors");
    std::fs::write(&text_file, "these are not weights").unwrap();
    for out in [inspect(&text_file), eval(&text_file, &data)] {
        let stderr = fails_with(&out, 1);
        assert!(stderr.contains("not a valid safetensors file"), "{stderr}");
    }
    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for out in [inspect(&truncated), eval(&truncated, &data)] {
        let stderr = fails_with(&out, 1);
        assert!(stderr.contains("truncated.safetensors"), "{stderr}");
    }
    let unknown = dir.join("model.bin");
    std::fs::write(&unknown, "neither").unwrap();
    let stderr = fails_with(&eval(&unknown, &data), 1);
    assert!(
        stderr.contains("not a focal checkpoint") && stderr.contains("nor a safetensors"),
        "{stderr}"
    );
    let stderr = fails_with(&inspect(&dir.join("absent.safetensors")), 1);
    assert!(stderr.contains("absent.safetensors"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_evaluates_as_its_checkpoint_and_refuses_what_is_not_one() {
    let dir = scratch("weights", "export");
    let run = dir.join("run");
    let out = focal(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--shapes-train",
        "8",
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
        "--fpn-channels",
        "32",
        "--head-width",
        "32",
        "--head-depth",
        "1",
        "--head-norm",
        "false",
        "--gamma",
        "2",
        "--alpha",
        "0.25",
        "--anchor-ratios",
        "0.5,1,2",
        "--iters",
        "6",
        "--warmup-iters",
        "2",
        "--lr",
        "0.002",
        "--no-progress",
    ]);
    succeeds(&out);
    let ckpt = run.join("last.ckpt");
    let export = dir.join("export.safetensors");
    let out = focal(&[
        "weights",
        "export",
        ckpt.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    succeeds(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("written to") && stdout.contains("num_classes=5"),
        "{stdout}"
    );
    let out = inspect(&export);
    succeeds(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("a focal export") && stdout.contains("it fits"),
        "{stdout}"
    );

    // The export evaluates exactly as the checkpoint: same detections, same numbers.
    let data = synth(&dir);
    let run_eval = |weights: &Path, dets: &Path| {
        let out = focal(&[
            "eval",
            "--weights",
            weights.to_str().unwrap(),
            "--ann",
            data.join("annotations/instances_val.json")
                .to_str()
                .unwrap(),
            "--images",
            data.join("val").to_str().unwrap(),
            "--out",
            dets.to_str().unwrap(),
            "--json",
        ]);
        succeeds(&out);
        last_json_line(&out)
    };
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    assert_eq!(run_eval(&ckpt, &a), run_eval(&export, &b));
    let dets = std::fs::read_to_string(&a).unwrap();
    assert!(dets.len() > 10, "some detections to compare: {dets}");
    assert_eq!(dets, std::fs::read_to_string(&b).unwrap());

    // What is not a checkpoint is refused with the reason.
    let stderr = fails_with(
        &focal(&[
            "weights",
            "export",
            export.to_str().unwrap(),
            "--out",
            "x.safetensors",
        ]),
        1,
    );
    assert!(stderr.contains("already a safetensors file"), "{stderr}");
    let stderr = fails_with(
        &focal(&[
            "weights",
            "export",
            dir.join("none.ckpt").to_str().unwrap(),
            "--out",
            "x.s",
        ]),
        1,
    );
    assert!(stderr.contains("none.ckpt"), "{stderr}");
    let nowhere = dir.join("no/such/folder/w.safetensors");
    let stderr = fails_with(
        &focal(&[
            "weights",
            "export",
            ckpt.to_str().unwrap(),
            "--out",
            nowhere.to_str().unwrap(),
        ]),
        1,
    );
    assert!(stderr.contains("w.safetensors"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
