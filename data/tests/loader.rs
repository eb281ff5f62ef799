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
