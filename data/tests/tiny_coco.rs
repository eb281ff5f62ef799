//! The tiny COCO subset (../shared/coco/tiny: 50 train2017 + 50 val2017 images with their
//! original annotations) loads with the expected counts and boxes.
//!
//! Counts checked against the files with Python's json module: train2017 has 50 images,
//! 470 annotations of which 5 are crowd, 1 image with no non-crowd box; val2017 has 50
//! images, 382 annotations, 5 crowd, 2 images with no non-crowd box. No annotation is
//! under 1 px or sticks out of its image, so none is dropped.

mod common;

use std::sync::Arc;

use focal_data::{CocoDataset, CocoOptions, Dataset, Loader, LoaderConfig};

#[test]
fn tiny_coco_counts() {
    let Some(root) = common::tiny_coco_or_skip("tiny_coco_counts") else {
        return;
    };
    for (split, boxes, empty) in [("train2017", 470, 1), ("val2017", 382, 2)] {
        let ds = CocoDataset::open_split(&root, split, CocoOptions::default()).unwrap();
        assert_eq!(ds.len(), 50, "{split}");
        assert_eq!(ds.coco().annotations.len(), boxes, "{split}");
        assert_eq!(ds.num_crowd_regions(), 5, "{split}");
        assert_eq!(ds.num_dropped_boxes(), 0, "{split}");
        assert_eq!(ds.num_boxes(), boxes - 5, "{split}");
        assert_eq!(ds.num_classes(), 80);
        // Labels are contiguous in ascending id order: COCO ids 1..90 with gaps.
        assert_eq!(ds.category_id(0), 1);
        assert_eq!(ds.category_id(11), 13); // id 12 is unused in COCO
        assert_eq!(ds.category_id(79), 90);
        // Crowd regions stay in the ground truth.
        let gt = ds.ground_truth();
        assert_eq!(gt.annotations.iter().filter(|a| a.iscrowd == 1).count(), 5);
        // Images left without a box stay in (pure negatives), and every image decodes at
        // the size the annotation file gives.
        let mut without_boxes = 0;
        for i in 0..ds.len() {
            let s = ds.load(i).unwrap().unwrap();
            assert_eq!((s.image.width, s.image.height), ds.image_size(i));
            assert_eq!(s.boxes.len(), s.labels.len());
            without_boxes += s.boxes.is_empty() as usize;
        }
        assert_eq!(without_boxes, empty, "{split}");
    }
}

#[test]
fn known_box_after_resizing_to_512() {
    let Some(root) = common::tiny_coco_or_skip("known_box_after_resizing_to_512") else {
        return;
    };
    let ds = Arc::new(CocoDataset::open_split(&root, "train2017", CocoOptions::default()).unwrap());
    // The first image of instances_train2017.json is id 391895, 640 x 360; its first
    // annotation (id 151091, category 4 "motorcycle") has bbox [359.17, 146.17, 112.45, 213.57].
    assert_eq!(ds.image_id(0), 391895);
    assert_eq!(ds.image_size(0), (640, 360));
    // Resize with min 512, max 853 (800/1333 scaled to 512):
    //   scale = min(512/360, 853/640) = min(1.42222, 1.3328125) = 1.3328125
    //   width = floor(640 * 1.3328125) = 853 (torchvision's rounding: truncation)
    //   height = floor(360 * 1.3328125) = floor(479.8125) = 479
    //   sx = 853/640 = 1.3328125, sy = 479/360 = 1.330556
    // Box xyxy = [359.17, 146.17, 359.17 + 112.45, 146.17 + 213.57] = [359.17, 146.17, 471.62, 359.74]
    //   x1 = 359.17 * 1.3328125 = 359.17 + 119.536265 = 478.706265
    //   y1 = 146.17 * 479/360 = 194.487306
    //   x2 = 471.62 * 1.3328125 = 471.62 + 156.961031 = 628.581031
    //   y2 = 359.74 * 479/360 = 478.654056
    let loader = Loader::new(ds.clone(), LoaderConfig::eval(1, 512, 853)).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let t = &batch.targets[0];
    assert_eq!((t.input_width, t.input_height), (853, 479));
    assert_eq!(batch.images.shape(), &[1, 3, 480, 864]); // 853 -> 864 = 27 * 32
    assert_eq!(t.labels[0], 3); // category 4 is the 4th id
    let want: [f32; 4] = [478.7063, 194.4873, 628.581, 478.6541];
    for (g, w) in t.boxes[0].iter().zip(want) {
        assert!((g - w).abs() < 1e-3, "{:?} vs {want:?}", t.boxes[0]);
    }
    // And back to the original image.
    let back = t.to_original(t.boxes[0]);
    for (g, w) in back.iter().zip([359.17, 146.17, 471.62, 359.74]) {
        assert!((g - w).abs() < 1e-3, "{back:?}");
    }
}

#[test]
fn real_jpegs_load_identically_on_one_and_two_threads() {
    let Some(root) =
        common::tiny_coco_or_skip("real_jpegs_load_identically_on_one_and_two_threads")
    else {
        return;
    };
    let ds = Arc::new(CocoDataset::open_split(&root, "val2017", CocoOptions::default()).unwrap());
    let loader = Loader::new(ds, LoaderConfig::train(3, 320, 533, 4)).unwrap();
    let run = || -> Vec<_> { loader.epoch(2).take(3).map(|b| b.unwrap()).collect() };
    let one = focal_engine::threads::with_threads(1, run);
    let two = focal_engine::threads::with_threads(2, run);
    assert_eq!(one.len(), 3);
    assert!(one.iter().any(|b| b.targets.iter().any(|t| t.flipped)));
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a.targets, b.targets);
        assert_eq!(a.images.shape(), b.images.shape());
        let (h, w) = a.padded_size();
        assert!(h % 32 == 0 && w % 32 == 0);
        assert!(a
            .images
            .data()
            .iter()
            .zip(b.images.data())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
