//! Every kind of bad input is an error that names the file (and the entry), never a panic;
//! with `skip_bad_images`, unreadable images are counted and left out instead.

mod common;

use std::path::Path;
use std::sync::Arc;

use focal_data::image_io::write_png;
use focal_data::{
    check_dataset, CocoDataset, CocoOptions, Dataset, Loader, LoaderConfig, RgbImage,
};

/// A folder with `images/a.png` (8 x 6) and `images/b.png` (8 x 6), and an annotation file
/// written from `json` (with `A` and `B` standing for the two file names).
fn setup(tag: &str, json: &str) -> (common::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = common::TempDir::new(tag);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut img = RgbImage::new(8, 6);
    img.data
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as u8);
    write_png(&images.join("a.png"), &img).unwrap();
    write_png(&images.join("b.png"), &img).unwrap();
    let ann = dir.join("instances.json");
    std::fs::write(&ann, json).unwrap();
    (dir, ann, images)
}

const GOOD: &str = r#"{
  "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6},
             {"id": 2, "file_name": "b.png", "width": 8, "height": 6}],
  "annotations": [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 1, 3, 2], "iscrowd": 0},
                  {"id": 11, "image_id": 2, "category_id": 7, "bbox": [2, 2, 4, 3], "iscrowd": 0}],
  "categories": [{"id": 7, "name": "thing"}]
}"#;

fn open_err(tag: &str, json: &str) -> (String, std::path::PathBuf) {
    let (_dir, ann, images) = setup(tag, json);
    let e = CocoDataset::open(&ann, &images).expect_err("should fail");
    (e.chain(), ann)
}

fn names(msg: &str, path: &Path) -> bool {
    msg.contains(&path.display().to_string())
}

#[test]
fn the_good_file_opens() {
    let (_dir, ann, images) = setup("good", GOOD);
    let ds = CocoDataset::open(&ann, &images).unwrap();
    assert_eq!(ds.len(), 2);
    let s = ds.load(1).unwrap().unwrap();
    assert_eq!(s.boxes, vec![[2.0, 2.0, 6.0, 5.0]]);
    assert_eq!(s.labels, vec![0]);
}

#[test]
fn malformed_json() {
    let (msg, ann) = open_err("malformed", &GOOD[..GOOD.len() - 10]);
    assert!(names(&msg, &ann) && msg.contains("line"), "{msg}");
}

#[test]
fn unknown_image_id() {
    let (msg, ann) = open_err(
        "unknown-image",
        &GOOD.replace("\"image_id\": 2", "\"image_id\": 9"),
    );
    assert!(names(&msg, &ann), "{msg}");
    assert!(
        msg.contains("annotation id 11") && msg.contains("image id 9"),
        "{msg}"
    );
}

#[test]
fn unknown_category_id() {
    let json = GOOD.replacen("\"category_id\": 7", "\"category_id\": 8", 1);
    let (msg, ann) = open_err("unknown-category", &json);
    assert!(names(&msg, &ann), "{msg}");
    assert!(
        msg.contains("annotation id 10") && msg.contains("category id 8"),
        "{msg}"
    );
}

#[test]
fn wrong_field_type() {
    let json = GOOD.replacen("\"width\": 8", "\"width\": \"eight\"", 1);
    let (msg, ann) = open_err("wrong-type", &json);
    assert!(names(&msg, &ann), "{msg}");
    assert!(
        msg.contains("line 2"),
        "the position of the bad field: {msg}"
    );
    let json = GOOD.replacen("\"bbox\": [1, 1, 3, 2]", "\"bbox\": \"1 1 3 2\"", 1);
    let (msg, _) = open_err("wrong-type-2", &json);
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn file_name_escaping_the_folder() {
    for (bad, why) in [
        ("../a.png", ".."),
        ("x/../../a.png", ".."),
        ("/etc/passwd", "absolute"),
    ] {
        let json = GOOD.replacen("\"a.png\"", &format!("{bad:?}"), 1);
        let (msg, ann) = open_err("escape", &json);
        assert!(names(&msg, &ann), "{msg}");
        assert!(msg.contains("image id 1") && msg.contains(why), "{msg}");
    }
}

#[test]
fn missing_image_is_found_by_the_check_or_left_out() {
    let json = GOOD.replacen("\"a.png\"", "\"gone.png\"", 1);
    let (_dir, ann, images) = setup("missing", &json);
    let ds = CocoDataset::open(&ann, &images).unwrap();
    let msg = check_dataset(&ds, false, &|_, _| {}).unwrap_err().chain();
    assert!(
        msg.contains("gone.png") && msg.contains("no such file"),
        "{msg}"
    );
    assert!(
        msg.contains("1 of 2 images") && msg.contains("image id 1"),
        "{msg}"
    );
    let msg = ds.load(0).expect_err("should fail").chain();
    assert!(msg.contains("gone.png") && names(&msg, &ann), "{msg}");

    let report = check_dataset(&ds, true, &|_, _| {}).unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.left_out.len(), 1);
    assert_eq!(ds.skipped_images().len(), 1);
    assert_eq!(ds.skipped_images()[0].0, 0);
    assert!(ds.load(0).unwrap().is_none());
    assert!(ds.load(1).unwrap().is_some());
    assert!(ds.describe().contains("1 unusable images left out"));
    // The evaluator's ground truth leaves the skipped image out.
    let gt = ds.ground_truth();
    assert_eq!(gt.images.len(), 1);
    assert_eq!(gt.annotations.len(), 1);
    // The loader leaves it out of its batch.
    let loader = Loader::new(Arc::new(ds), LoaderConfig::eval(2, 32, 64)).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].targets.len(), 1);
    assert_eq!(batches[0].targets[0].image_id, 2);
}

/// Every kind of bad image at once, each with its reason; the good one passes.
#[test]
fn the_check_reports_every_bad_image_at_once() {
    let json = r#"{
      "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6},
                 {"id": 2, "file_name": "b.png", "width": 8, "height": 6},
                 {"id": 3, "file_name": "dir.png", "width": 8, "height": 6},
                 {"id": 4, "file_name": "link.png", "width": 8, "height": 6},
                 {"id": 5, "file_name": "inside.png", "width": 8, "height": 6},
                 {"id": 6, "file_name": "gone.png", "width": 8, "height": 6}],
      "annotations": [],
      "categories": [{"id": 7, "name": "thing"}]
    }"#;
    let (dir, ann, images) = setup("check-all", json);
    // b.png cut short, dir.png a folder, link.png a link to a file outside the folder,
    // inside.png a link to a.png (inside: fine), gone.png missing.
    let png = std::fs::read(images.join("b.png")).unwrap();
    std::fs::write(images.join("b.png"), &png[..png.len() - 20]).unwrap();
    std::fs::create_dir(images.join("dir.png")).unwrap();
    std::fs::copy(images.join("a.png"), dir.join("outside.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("outside.png"), images.join("link.png")).unwrap();
    std::os::unix::fs::symlink(images.join("a.png"), images.join("inside.png")).unwrap();
    let ds = CocoDataset::open(&ann, &images).unwrap();
    let e = check_dataset(&ds, false, &|_, _| {}).unwrap_err().chain();
    assert!(e.contains("4 of 6 images"), "{e}");
    for (id, why) in [
        (2, "cannot decode"),
        (3, "is a folder, not an image file"),
        (4, "symbolic link that leads outside the images folder"),
        (6, "no such file"),
    ] {
        let line = e
            .lines()
            .find(|l| l.contains(&format!("image id {id}:")))
            .unwrap_or_else(|| panic!("image {id} not reported: {e}"));
        assert!(line.contains(why), "{line}");
    }
    assert!(
        !e.contains("image id 1:") && !e.contains("image id 5:"),
        "{e}"
    );
    // The link that leaves the folder is refused at load time as well.
    let msg = ds.load(3).expect_err("outside").chain();
    assert!(msg.contains("leads outside"), "{msg}");
}

#[test]
fn corrupt_images_fail_at_load_or_are_skipped() {
    let (_dir, ann, images) = setup("corrupt", GOOD);
    // Not an image at all, and a PNG cut in half.
    std::fs::write(images.join("a.png"), b"this is not an image").unwrap();
    let png = std::fs::read(images.join("b.png")).unwrap();
    std::fs::write(images.join("b.png"), &png[..png.len() / 2]).unwrap();

    let ds = CocoDataset::open(&ann, &images).unwrap(); // the files exist
    for i in 0..2 {
        let msg = ds.load(i).expect_err("should fail").chain();
        let file = images.join(if i == 0 { "a.png" } else { "b.png" });
        assert!(names(&msg, &file) && names(&msg, &ann), "{msg}");
        assert!(msg.contains(&format!("image id {}", i + 1)), "{msg}");
    }
    // The loader ends the epoch with the error.
    let loader = Loader::new(Arc::new(ds), LoaderConfig::eval(1, 32, 64)).unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 1);
    assert!(results[0].as_ref().unwrap_err().chain().contains("a.png"));

    let skip = CocoOptions {
        skip_bad_images: true,
    };
    let ds = Arc::new(CocoDataset::open_with(&ann, &images, skip).unwrap());
    assert!(ds.skipped_images().is_empty());
    let loader = Loader::new(ds.clone(), LoaderConfig::eval(1, 32, 64)).unwrap();
    assert_eq!(loader.epoch(0).count(), 0, "every image skipped: no batch");
    let skipped = ds.skipped_images();
    assert_eq!(skipped.len(), 2);
    assert!(skipped[1].1.contains("b.png"));
    // Counted once, however often they are met.
    assert_eq!(loader.epoch(1).count(), 0);
    assert_eq!(ds.skipped_images().len(), 2);
}

#[test]
fn image_of_the_wrong_size() {
    let json = GOOD.replacen("\"width\": 8", "\"width\": 9", 1);
    let (_dir, ann, images) = setup("wrong-size", &json);
    let ds = CocoDataset::open(&ann, &images).unwrap();
    let msg = ds.load(0).expect_err("should fail").chain();
    assert!(
        msg.contains("a.png") && msg.contains("8x6") && msg.contains("9x6"),
        "{msg}"
    );
}

#[test]
fn tiny_and_crowd_boxes_are_left_out_of_training() {
    let json = GOOD
        .replacen("\"bbox\": [1, 1, 3, 2]", "\"bbox\": [7.5, 1, 3, 2]", 1) // 0.5 px wide once clipped
        .replacen("\"iscrowd\": 0}]", "\"iscrowd\": 1}]", 1);
    let (_dir, ann, images) = setup("dropped", &json);
    let ds = CocoDataset::open(&ann, &images).unwrap();
    assert_eq!(ds.num_dropped_boxes(), 1);
    assert_eq!(ds.num_crowd_regions(), 1);
    assert_eq!(ds.num_boxes(), 0);
    // Both images stay, without boxes.
    assert_eq!(ds.len(), 2);
    assert!(ds.load(0).unwrap().unwrap().boxes.is_empty());
    assert_eq!(ds.ground_truth().annotations.len(), 2);
}
