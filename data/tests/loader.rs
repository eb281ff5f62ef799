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
/// records the indices it was asked to load and skips those in `skipped` (as a COCO
/// dataset skips the images its check left out).
struct Sizes {
    loaded: std::sync::Mutex<Vec<usize>>,
    skipped: std::collections::BTreeSet<usize>,
    categories: Vec<focal_data::Category>,
}

impl Sizes {
    fn new(skipped: &[usize]) -> Sizes {
        Sizes {
            loaded: std::sync::Mutex::new(Vec::new()),
            skipped: skipped.iter().copied().collect(),
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
        if self.skipped.contains(&index) {
            return Ok(None);
        }
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
/// of a batch is empty still gets that batch, empty. Also with multi-scale training (the
/// padding follows each batch's size), and with images left out before the run: the
/// parts are then cut from the batch without them, as one process's batch is, and a
/// batch of left-out images only is yielded to no process.
#[test]
fn batch_parts_are_slices_of_the_whole_batch() {
    // 7 images in batches of 3: 3, 3, 1; then without the first and the last image of
    // epoch 1's order: 2, 3 and nothing.
    let order = Loader::new(Arc::new(Sizes::new(&[])), LoaderConfig::train(3, 40, 90, 4))
        .unwrap()
        .order(1);
    let left = vec![order[0], order[6]];
    for (skipped, multi_scale, batches) in [
        (vec![], false, 3),
        (vec![], true, 3),
        (left.clone(), false, 2),
        (left, true, 2),
    ] {
        let ds = Arc::new(Sizes::new(&skipped));
        let mut config = LoaderConfig::train(3, 40, 90, 4);
        if multi_scale {
            config.min_sizes = vec![32, 40, 56, 64];
        }
        let whole = all(&Loader::new(ds.clone(), config.clone()).unwrap(), 1);
        assert_eq!(whole.len(), batches);
        let loader = Loader::new(ds.clone(), config).unwrap();
        let left_out = Arc::new(skipped.iter().copied().collect());
        // Three processes: the first takes the first image of each batch, the second the
        // rest but for batches of one image, the third nothing.
        let ranges: [focal_data::PartRange; 3] = [
            Arc::new(|_, _| 0..1),
            Arc::new(|_, n| 1.min(n)..n),
            Arc::new(|_, n| n..n),
        ];
        let mut seen = Vec::new();
        let mut got: Vec<Vec<Batch>> = Vec::new();
        for range in ranges {
            ds.loaded.lock().unwrap().clear();
            let part = focal_data::BatchPart {
                range,
                left_out: Arc::clone(&left_out),
            };
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
                assert_eq!(p.len(), whole.len());
                let part = &p[b];
                assert_eq!(part.padded_size(), (h, wd), "batch {b}");
                assert_eq!(part.whole_len, w.len(), "batch {b}");
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
        // Each process loaded only its own images (never a left-out one): together, each
        // image once.
        assert!(seen[2].is_empty());
        let mut every: Vec<usize> = seen.concat();
        every.sort_unstable();
        let kept: Vec<usize> = (0..7).filter(|i| !skipped.contains(i)).collect();
        assert_eq!(every, kept);
        assert_eq!(seen[0].len(), batches);
    }
}

/// Multi-scale training: each batch is resized to one of `min_sizes`, drawn from (seed,
/// epoch, batch index) alone: the same on 1 or 2 threads and on a second run, different
/// for another seed or epoch, and every image of a batch at the same size.
#[test]
fn multi_scale_picks_one_size_per_batch_deterministically_by_seed() {
    let ds = shapes(24, 64);
    let sizes = vec![64, 80, 96, 112, 128];
    let make = |seed| {
        let mut c = LoaderConfig::train(2, 64, 1000, seed);
        c.min_sizes = sizes.clone();
        Loader::new(ds.clone(), c).unwrap()
    };
    let loader = make(3);
    let picks = |l: &Loader, epoch| {
        (0..12)
            .map(|b| l.batch_min_size(epoch, b))
            .collect::<Vec<_>>()
    };
    let p0 = picks(&loader, 0);
    assert!(p0.iter().all(|s| sizes.contains(s)));
    let distinct: std::collections::BTreeSet<_> = p0.iter().collect();
    assert!(
        distinct.len() >= 3,
        "12 batches should use several sizes: {p0:?}"
    );
    assert_eq!(p0, picks(&make(3), 0), "same seed, same picks");
    assert_ne!(p0, picks(&make(4), 0), "another seed, other picks");
    assert_ne!(p0, picks(&loader, 1), "another epoch, other picks");
    // The batches are resized to the picks (square 64-px images: the short side is it).
    let one = with_threads(1, || all(&loader, 0));
    for (b, batch) in one.iter().enumerate() {
        for t in &batch.targets {
            assert_eq!((t.input_width, t.input_height), (p0[b], p0[b]), "batch {b}");
        }
    }
    assert!(same(&one, &with_threads(2, || all(&loader, 0))));
    // Without a list, min_size as before.
    let plain = Loader::new(ds, LoaderConfig::train(2, 72, 1000, 3)).unwrap();
    assert!((0..5).all(|b| plain.batch_min_size(0, b) == 72));
}
