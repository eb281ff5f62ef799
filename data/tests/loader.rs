//! The loader is deterministic (same seed and epoch → bitwise the same batches, whatever
//! the thread count), shuffles and flips per epoch, and pads to multiples of 32.

use std::sync::Arc;

use focal_data::transforms::flip_boxes;
use focal_data::{Batch, Dataset, Loader, LoaderConfig, ShapesConfig, ShapesDataset, Split};
use focal_engine::threads::with_threads;

fn shapes(n: usize, size: u32) -> Arc<ShapesDataset> {
    Arc::new(
        ShapesDataset::new(ShapesConfig {
            size,
            ..ShapesConfig::new(Split::Train, n, 21)
        })
        .unwrap(),
    )
}

fn all(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.targets == y.targets
                && x.images.shape() == y.images.shape()
                && x.images.data().iter().map(|v| v.to_bits()).eq(y
                    .images
                    .data()
                    .iter()
                    .map(|v| v.to_bits()))
        })
}

#[test]
fn one_and_two_threads_give_identical_batches() {
    let ds = shapes(14, 96);
    let loader = Loader::new(ds, LoaderConfig::train(4, 80, 133, 5)).unwrap();
    let one = with_threads(1, || all(&loader, 3));
    let two = with_threads(2, || all(&loader, 3));
    assert_eq!(one.len(), 4); // 14 images in batches of 4: 4, 4, 4, 2
    assert_eq!(one[3].len(), 2);
    assert!(same(&one, &two));
    // And a second run with the same seed.
    assert!(same(&one, &with_threads(2, || all(&loader, 3))));
}

#[test]
fn epochs_shuffle_and_flip_differently() {
    let ds = shapes(40, 64);
    let loader = Loader::new(ds.clone(), LoaderConfig::train(8, 64, 64, 9)).unwrap();
    let (o0, o1) = (loader.order(0), loader.order(1));
    assert_ne!(o0, o1);
    let mut sorted = o0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());
    // The batches follow the order.
    let ids: Vec<i64> = all(&loader, 1)
        .iter()
        .flat_map(|b| b.targets.iter().map(|t| t.image_id))
        .collect();
    assert_eq!(ids, o1.iter().map(|&i| ds.image_id(i)).collect::<Vec<_>>());
    // About half of the images are flipped, and not the same ones every epoch.
    let f0: Vec<bool> = (0..40).map(|i| loader.flips(0, i)).collect();
    let f1: Vec<bool> = (0..40).map(|i| loader.flips(1, i)).collect();
    let n0 = f0.iter().filter(|&&f| f).count();
    assert!((8..=32).contains(&n0), "{n0} of 40 flipped");
    assert_ne!(f0, f1);
    // Another seed, another order.
    let other = Loader::new(ds.clone(), LoaderConfig::train(8, 64, 64, 10)).unwrap();
    assert_ne!(other.order(0), o0);
    // Evaluation: dataset order, no flips.
    let eval = Loader::new(ds, LoaderConfig::eval(8, 64, 64)).unwrap();
    assert_eq!(eval.order(7), (0..40).collect::<Vec<_>>());
    assert!((0..40).all(|i| !eval.flips(0, i)));
}

#[test]
fn flipped_targets_are_the_mirrored_boxes() {
    // At 64 px the images are not resized, so a flipped image's boxes are W - x of the
    // dataset's, and flipping them again gives the dataset's boxes exactly (integers).
    let ds = shapes(30, 64);
    let loader = Loader::new(ds.clone(), LoaderConfig::train(30, 64, 64, 1)).unwrap();
    let batch = &all(&loader, 0)[0];
    let mut flipped = 0;
    for t in &batch.targets {
        let sample = ds.sample(t.index);
        let mut boxes = t.boxes.clone();
        if t.flipped {
            flipped += 1;
            if !boxes.is_empty() {
                assert_ne!(boxes, sample.boxes);
            }
            flip_boxes(&mut boxes, 64.0);
        }
        assert_eq!(boxes, sample.boxes);
        assert_eq!(t.flipped, loader.flips(0, t.index));
    }
    assert!(flipped > 0 && flipped < 30);
}

#[test]
fn batches_are_padded_to_multiples_of_32() {
    let ds = shapes(6, 100);
    // 100 x 100 at min 70: 70 x 70 -> padded 96 x 96.
    let loader = Loader::new(ds, LoaderConfig::eval(3, 70, 1000)).unwrap();
    let batches = all(&loader, 0);
    assert_eq!(batches.len(), 2);
    for b in batches {
        assert_eq!(b.images.shape(), &[3, 3, 96, 96]);
        for (n, t) in b.targets.iter().enumerate() {
            assert_eq!((t.input_width, t.input_height), (70, 70));
            assert_eq!(t.scale, [0.7, 0.7]);
            // Every channel: the image in the top-left 70 x 70 (not all zero), zeros in
            // the padding on the right and at the bottom.
            for c in 0..3 {
                let plane = &b.images.data()[(n * 3 + c) * 96 * 96..][..96 * 96];
                for (y, row) in plane.chunks_exact(96).enumerate() {
                    if y < 70 {
                        assert!(row[..70].iter().any(|&v| v != 0.0));
                        assert!(row[70..].iter().all(|&v| v == 0.0));
                    } else {
                        assert!(row.iter().all(|&v| v == 0.0));
                    }
                }
            }
        }
    }
    // Sizes that are already multiples of 32 are not padded.
    let loader = Loader::new(shapes(2, 64), LoaderConfig::eval(2, 64, 64)).unwrap();
    assert_eq!(all(&loader, 0)[0].images.shape(), &[2, 3, 64, 64]);
}

#[test]
fn drop_last_and_early_stop() {
    let ds = shapes(10, 64);
    let mut config = LoaderConfig::train(4, 64, 64, 0);
    config.drop_last = true;
    config.prefetch = 1;
    let loader = Loader::new(ds, config).unwrap();
    assert_eq!(loader.batches_per_epoch(), 2);
    assert_eq!(all(&loader, 0).len(), 2);
    // Taking one batch and dropping the epoch stops the background thread cleanly.
    let mut e = loader.epoch(1);
    assert_eq!(e.next().unwrap().unwrap().len(), 4);
    drop(e);
}

#[test]
fn bad_configs_are_refused() {
    let ds = shapes(2, 64);
    assert!(Loader::new(ds.clone(), LoaderConfig::train(0, 64, 64, 0)).is_err());
    assert!(Loader::new(ds, LoaderConfig::train(1, 0, 64, 0)).is_err());
}

/// Images of different sizes (so that a batch's padding depends on all of them), which
/// records the indices it was asked to load.
struct Sizes {
    loaded: std::sync::Mutex<Vec<usize>>,
    categories: Vec<focal_data::Category>,
}

impl Sizes {
    fn new() -> Sizes {
        Sizes {
            loaded: std::sync::Mutex::new(Vec::new()),
            categories: vec![focal_data::Category {
                id: 1,
                name: "thing".into(),
            }],
        }
    }
}

impl Dataset for Sizes {
    fn len(&self) -> usize {
        7
    }
    fn load(&self, index: usize) -> focal_data::Result<Option<focal_data::Sample>> {
        self.loaded.lock().unwrap().push(index);
        let (w, h) = self.image_size(index);
        let mut image = focal_data::RgbImage::new(w, h);
        for (k, v) in image.data.iter_mut().enumerate() {
            *v = ((k * 31 + index * 7) % 251) as u8;
        }
        Ok(Some(focal_data::Sample {
            image,
            boxes: vec![[1.0, 2.0, 9.0 + index as f32, 12.0]],
            labels: vec![0],
            image_id: index as i64 + 1,
        }))
    }
    fn categories(&self) -> &[focal_data::Category] {
        &self.categories
    }
    fn image_id(&self, index: usize) -> i64 {
        index as i64 + 1
    }
    fn image_size(&self, index: usize) -> (u32, u32) {
        (30 + 17 * index as u32, 50 - 5 * index as u32)
    }
    fn ground_truth(&self) -> focal_data::CocoFile {
        focal_data::CocoFile::default() // the loader never asks
    }
    fn describe(&self) -> String {
        "images of seven sizes".into()
    }
}

/// The parts of a batch that the processes of a distributed run load (`epoch_part`) are,
/// image for image and bit for bit, the slices of the batch one process loads, padded to
/// the whole batch's size; each part loads only its own images, and a process whose part
/// of a batch is empty still gets that batch, empty.
#[test]
fn batch_parts_are_slices_of_the_whole_batch() {
    let ds = Arc::new(Sizes::new());
    let config = LoaderConfig::train(3, 40, 90, 4);
    let whole = all(&Loader::new(ds.clone(), config.clone()).unwrap(), 1);
    assert_eq!(whole.len(), 3); // 7 images in batches of 3: 3, 3, 1
    let loader = Loader::new(ds.clone(), config).unwrap();
    // Three processes: the first takes the first image of each batch, the second the rest
    // but for batches of one image, the third nothing.
    let parts: [focal_data::BatchPart; 3] = [
        Arc::new(|_, _| 0..1),
        Arc::new(|_, n| 1.min(n)..n),
        Arc::new(|_, n| n..n),
    ];
    let mut seen = Vec::new();
    let mut got: Vec<Vec<Batch>> = Vec::new();
    for part in parts {
        ds.loaded.lock().unwrap().clear();
        got.push(
            loader
                .epoch_part(1, part)
                .map(|b| b.unwrap())
                .collect::<Vec<_>>(),
        );
        let mut loaded = ds.loaded.lock().unwrap().clone();
        loaded.sort_unstable();
        seen.push(loaded);
    }
    for (b, w) in whole.iter().enumerate() {
        let (h, wd) = w.padded_size();
        let mut row = 0;
        for p in &got {
            let part = &p[b];
            assert_eq!(part.padded_size(), (h, wd), "batch {b}");
            let n = part.len();
            assert_eq!(part.images.shape()[0], n);
            assert_eq!(part.targets[..], w.targets[row..row + n]);
            let slice = w.images.narrow(0, row, n);
            assert!(
                part.images
                    .data()
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(slice.data().iter().map(|v| v.to_bits())),
                "batch {b}, rows {row}..{}",
                row + n
            );
            row += n;
        }
        assert_eq!(row, w.len());
    }
    // The sizes differ, so the padding of some part is set by an image it did not load.
    assert!(whole
        .iter()
        .any(|w| w.padded_size() != whole[0].padded_size()));
    // Each process loaded only its own images: together, each image once.
    assert!(seen[2].is_empty());
    let mut every: Vec<usize> = seen.concat();
    every.sort_unstable();
    assert_eq!(every, (0..7).collect::<Vec<_>>());
    assert_eq!(seen[0].len(), 3);
}
