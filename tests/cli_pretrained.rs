//! The whole path of pretrained weights through the command line: a RetinaNet state dict
//! under torchvision's names (torchvision's `retinanet_resnet50_fpn` layout, 91 COCO
//! classes, every value from the formula of `retinanet/tests/common/formula.rs` and a
//! class output that gives hundreds of detections per image) written to a safetensors
//! file, then `focal eval --weights` on tiny-COCO photographs and `focal detect
//! --weights`, against the same model built in this process on the same preprocessed
//! inputs. (That this model agrees with torchvision's own RetinaNet is
//! `retinanet/tests/torchvision_agreement.rs`.)
//!
//! Needs the tiny COCO subset (../shared/coco/tiny or $FOCAL_COCO_TINY) and says SKIPPED
//! when it is absent. To stay fast it uses the first 6 val2017 images at 160/267 px.

mod common;
#[path = "../retinanet/tests/common/formula.rs"]
mod formula;

use std::path::Path;
use std::sync::Arc;

use common::{focal, scratch, succeeds, text};
use focal_data::results::load_results;
use focal_data::{CocoDataset, Dataset, Detection};
use focal_retinanet::pretrained::{load_weights, ArchitectureOptions};
use focal_retinanet::train::evaluate;

const IMAGES: usize = 6;

/// The first `n` images of an annotation file with their annotations and every category.
fn subset(ann: &Path, n: usize, out: &Path) {
    let mut coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ann).unwrap()).unwrap();
    let images: Vec<serde_json::Value> = coco["images"].as_array().unwrap()[..n].to_vec();
    let ids: Vec<i64> = images.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    let anns: Vec<serde_json::Value> = coco["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| ids.contains(&a["image_id"].as_i64().unwrap()))
        .cloned()
        .collect();
    coco["images"] = serde_json::Value::Array(images);
    coco["annotations"] = serde_json::Value::Array(anns);
    std::fs::write(out, serde_json::to_string(&coco).unwrap()).unwrap();
}

#[test]
fn eval_and_detect_with_torchvision_weights_give_the_in_process_models_detections() {
    let Some(tiny) = focal_data::tiny_coco_dir() else {
        println!(
            "SKIPPED eval_and_detect_with_torchvision_weights: tiny COCO not found \
             (../shared/coco/tiny or $FOCAL_COCO_TINY)"
        );
        return;
    };
    let dir = scratch("pretrained", "eval-detect");
    let weights = dir.join("retinanet_resnet50_fpn_formula.safetensors");
    formula::write_detection_weights(&weights);
    let ann = dir.join("val6.json");
    subset(
        &tiny.join("annotations/instances_val2017.json"),
        IMAGES,
        &ann,
    );
    let images = tiny.join("val2017");
    let dets = dir.join("dets.json");
    let w = weights.to_str().unwrap();
    let out = focal(&[
        "eval",
        "--weights",
        w,
        "--ann",
        ann.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--min-size",
        "160",
        "--max-size",
        "267",
        "--out",
        dets.to_str().unwrap(),
        "--json",
    ]);
    succeeds(&out);
    let stderr = text(&out.stderr);
    for said in [
        "a RetinaNet state dict under torchvision's names",
        "backbone resnet50 with frozen BatchNorm",
        "P6 from P5",
        "91 classes: torchvision's COCO ids",
        "ε of frozen BatchNorm 0",
        "1 image per batch",
    ] {
        assert!(stderr.contains(said), "{said:?} not in: {stderr}");
    }
    let from_cli = load_results(&dets).unwrap();

    // The same weights loaded here, run over the same images with the same preprocessing
    // (one image per batch, as the CLI's default for torchvision weights).
    let mut loaded = load_weights(&weights, &ArchitectureOptions::default()).unwrap();
    let dataset: Arc<dyn Dataset> = Arc::new(CocoDataset::open(&ann, &images).unwrap());
    let ids: Vec<i64> = loaded.classes.iter().map(|c| c.id).collect();
    let here = evaluate(
        &mut loaded.model,
        &dataset,
        &ids,
        160,
        267,
        1,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(
        here.detections.len() >= IMAGES * 250,
        "the class output should give hundreds of detections per image, got {}",
        here.detections.len()
    );
    assert_eq!(from_cli, here.detections, "focal eval's detections");
    // The summary printed as JSON is that of these detections.
    let json = common::last_json_line(&out);
    assert_eq!(
        json["AP"].as_f64().unwrap(),
        here.result.stats.ap,
        "the printed AP"
    );

    // focal detect on two of the images draws them and lists the same detections.
    let coco = dataset.ground_truth();
    let first_two: Vec<(i64, String)> = coco.images[..2]
        .iter()
        .map(|i| (i.id, i.file_name.clone()))
        .collect();
    let drawn = dir.join("drawn");
    let paths: Vec<String> = first_two
        .iter()
        .map(|(_, f)| images.join(f).to_str().unwrap().to_string())
        .collect();
    let mut args = vec![
        "detect",
        "--weights",
        w,
        "--min-size",
        "160",
        "--max-size",
        "267",
    ];
    args.extend(["--score", "0.6", "--out", drawn.to_str().unwrap()]);
    args.extend(paths.iter().map(String::as_str));
    let out = focal(&args);
    succeeds(&out);
    let listed = load_results(&drawn.join("detections.json")).unwrap();
    let mut want: Vec<Detection> = Vec::new();
    for (k, (id, _)) in first_two.iter().enumerate() {
        want.extend(
            here.detections
                .iter()
                .filter(|d| d.image_id == *id && d.score >= 0.6)
                .map(|d| Detection {
                    image_id: k as i64 + 1,
                    ..*d
                }),
        );
    }
    assert!(!want.is_empty(), "some detections score 0.6 or more");
    assert_eq!(listed, want, "focal detect's detections.json");
    // Each image is drawn: the photo (enlarged by a whole factor when under 256 px, as
    // detect does) with the boxes' colours on it.
    for (_, file) in &first_two {
        let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
        let png = image::open(drawn.join(format!("{stem}.png")))
            .unwrap()
            .to_rgb8();
        let photo = image::open(images.join(file)).unwrap().to_rgb8();
        let f = png.width() / photo.width();
        assert_eq!(png.dimensions(), (f * photo.width(), f * photo.height()));
        let changed = png
            .enumerate_pixels()
            .filter(|(x, y, p)| *p != photo.get_pixel(x / f, y / f))
            .count();
        assert!(changed > 1000, "{file}: only {changed} pixels drawn");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `focal train --init FILE` with a COCO dataset selects the fine-tuning preset around the
/// architecture of FILE (here a small torchvision-named detector with COCO's 91 classes),
/// `--min-size` with several sizes trains multi-scale, and a dataset whose classes are not
/// COCO's gets its class head re-initialised with the prior, which the run reports. Runs
/// on a synthetic COCO folder written by `focal synth` (no tiny COCO needed).
#[test]
fn init_on_a_coco_dataset_fine_tunes_with_the_preset_and_reports_the_class_head() {
    let dir = scratch("pretrained", "finetune");
    let data = dir.join("shapes");
    succeeds(&focal(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--train",
        "4",
        "--val",
        "2",
        "--size",
        "64",
    ]));
    let init = dir.join("small.safetensors");
    formula::write_small_detector(&init);
    let coco = [
        "--train-ann",
        data.join("annotations/instances_train.json")
            .to_str()
            .unwrap(),
        "--train-images",
        data.join("train").to_str().unwrap(),
        "--val-ann",
        data.join("annotations/instances_val.json")
            .to_str()
            .unwrap(),
        "--val-images",
        data.join("val").to_str().unwrap(),
    ]
    .map(String::from);
    let mut args: Vec<String> = ["train", "--init", init.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    args.extend(coco.iter().cloned());
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend_from_slice(extra);
        focal(&a)
    };
    // The preset, as --print-config shows it.
    let out = run(&["--print-config"]);
    succeeds(&out);
    let config = text(&out.stdout);
    for line in [
        "depth = \"resnet18-half\"",
        "norm = \"frozen-bn\"",
        "fpn_channels = 64",
        "head_depth = 1",
        "trainable_layers = 3",
        "train_min_sizes = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]",
        "min_size = 800",
        "max_size = 1333",
        "style = \"torchvision\"",
        "kind = \"sgd\"",
        "lr = 0.00125",
    ] {
        assert!(config.contains(line), "{line:?} not in:\n{config}");
    }
    // Flags over the preset: sizes as a list, trainable layers.
    let out = run(&[
        "--print-config",
        "--min-size",
        "64,96",
        "--trainable-layers",
        "5",
    ]);
    succeeds(&out);
    let config = text(&out.stdout);
    for line in [
        "train_min_sizes = [64, 96]",
        "min_size = 96",
        "trainable_layers = 5",
    ] {
        assert!(config.contains(line), "{line:?} not in:\n{config}");
    }
    let out = run(&["--print-config", "--trainable-layers", "6"]);
    let stderr = common::fails_with(&out, 2);
    assert!(stderr.contains("--trainable-layers"), "{stderr}");

    // Two steps of fine-tuning: the synthetic shapes are not COCO categories.
    let run_dir = dir.join("run");
    let out = run(&[
        "--out",
        run_dir.to_str().unwrap(),
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--min-size",
        "64,80,96",
        "--max-size",
        "128",
        "--no-progress",
    ]);
    succeeds(&out);
    let stderr = text(&out.stderr);
    for said in [
        "a RetinaNet state dict under torchvision's names",
        "class head re-initialised with the prior π = 0.01",
        "the file's classes are COCO's 80 categories",
    ] {
        assert!(stderr.contains(said), "{said:?} not in:\n{stderr}");
    }
    assert!(run_dir.join("last.ckpt").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
