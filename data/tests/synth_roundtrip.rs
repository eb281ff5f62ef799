//! The shapes dataset written to disk as COCO and read back through the COCO reader is the
//! in-memory dataset: same pixels, boxes, labels, ids and ground truth.

mod common;

use focal_data::{CocoDataset, CocoFile, CocoOptions, Dataset, ShapesConfig, ShapesDataset, Split};

#[test]
fn written_then_read_back_is_identical() {
    let dir = common::TempDir::new("roundtrip");
    for (split, size) in [(Split::Train, 256), (Split::Val, 96)] {
        let shapes = ShapesDataset::new(ShapesConfig {
            size,
            ..ShapesConfig::new(split, 24, 11)
        })
        .unwrap();
        let ann = dir.join(&format!("annotations/instances_{}.json", split.name()));
        shapes
            .write_coco(&dir.join(split.name()), &ann, &|_| {})
            .unwrap();
        let coco =
            CocoDataset::open_split(dir.path(), split.name(), CocoOptions::default()).unwrap();
        assert_eq!(coco.len(), shapes.len());
        assert_eq!(coco.categories(), shapes.categories());
        assert_eq!(coco.num_dropped_boxes(), 0);
        let mut boxes = 0;
        for i in 0..shapes.len() {
            let mem = shapes.load(i).unwrap().unwrap();
            let disk = coco.load(i).unwrap().unwrap();
            assert_eq!(mem.image.width, size);
            assert_eq!(mem, disk, "image {i} of {}", split.name());
            boxes += mem.boxes.len();
        }
        assert!(boxes > 24, "only {boxes} boxes");
        // The ground truth the evaluator gets is the same either way.
        assert_eq!(CocoFile::load(&ann).unwrap(), shapes.ground_truth());
        assert_eq!(coco.ground_truth(), shapes.ground_truth());
    }
}

#[test]
fn train_and_val_share_no_image() {
    let train = ShapesDataset::new(ShapesConfig::new(Split::Train, 50, 3)).unwrap();
    let val = ShapesDataset::new(ShapesConfig::new(Split::Val, 50, 3)).unwrap();
    let train_images: Vec<_> = (0..50).map(|i| train.sample(i).image.data).collect();
    for j in 0..50 {
        let v = val.sample(j).image.data;
        assert!(
            train_images.iter().all(|t| *t != v),
            "val image {j} is in train"
        );
    }
}

#[test]
fn coco_ground_truth_has_box_areas_and_no_crowd() {
    let shapes = ShapesDataset::new(ShapesConfig::new(Split::Val, 10, 5)).unwrap();
    let gt = shapes.to_coco();
    assert_eq!(gt.images.len(), 10);
    assert_eq!(gt.categories.len(), 5);
    for a in &gt.annotations {
        assert_eq!(a.iscrowd, 0);
        assert_eq!(a.area, Some(a.bbox[2] * a.bbox[3]));
        let (boxes, _) = shapes.annotations((a.image_id - 1) as usize);
        let [x, y, w, h] = a.bbox;
        assert!(boxes.contains(&[x as f32, y as f32, (x + w) as f32, (y + h) as f32]));
    }
    let total: usize = (0..10).map(|i| shapes.annotations(i).0.len()).sum();
    assert_eq!(gt.annotations.len(), total);
}
