//! Loader throughput: images per second decoded, and decoded + transformed (flip, resize to
//! 512 / 853, normalise, collate), on the tiny COCO subset, with 1 and 2 threads; and the
//! synthetic shapes generator at 256 px.
//!
//! `cargo bench --bench loader` (add `-- --rounds N` for more rounds). The 1- and 2-thread
//! runs alternate round by round, so both see the same machine load; the median round is
//! reported.

use std::sync::Arc;
use std::time::Instant;

use focal_data::{
    CocoDataset, CocoOptions, Dataset, Loader, LoaderConfig, ShapesConfig, ShapesDataset, Split,
};
use focal_engine::threads::with_threads;
use rayon::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `work` (which processes `n` images) on 1 and 2 threads alternately for `rounds`
/// rounds and prints the median images per second of each.
fn measure(name: &str, n: usize, rounds: usize, work: &(dyn Fn() + Sync)) {
    let mut rates = [Vec::new(), Vec::new()];
    with_threads(1, work); // warm the file cache
    for _ in 0..rounds {
        for (slot, threads) in [1, 2].into_iter().enumerate() {
            let t = Instant::now();
            with_threads(threads, work);
            rates[slot].push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    let (one, two) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "{name:<44} 1 thread {one:>7.1} img/s   2 threads {two:>7.1} img/s   ratio {:.2}",
        two / one
    );
}

fn main() {
    let rounds = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);

    match focal_data::tiny_coco_dir() {
        None => println!("SKIPPED tiny COCO figures: ../shared/coco/tiny not found"),
        Some(root) => {
            let ds = Arc::new(
                CocoDataset::open_split(&root, "train2017", CocoOptions::default()).unwrap(),
            );
            let n = ds.len();
            let pixels: usize = (0..n)
                .map(|i| {
                    let (w, h) = ds.image_size(i);
                    (w * h) as usize
                })
                .sum();
            println!(
                "tiny COCO train2017: {n} JPEGs, {:.0} kpixels on average",
                pixels as f64 / n as f64 / 1e3
            );
            let decode = {
                let ds = ds.clone();
                move || {
                    (0..n).into_par_iter().for_each(|i| {
                        ds.load(i).unwrap().unwrap();
                    })
                }
            };
            measure("decode (JPEG -> RGB u8)", n, rounds, &decode);
            let loader = Loader::new(ds.clone(), LoaderConfig::train(4, 512, 853, 0)).unwrap();
            let epoch = move || {
                for b in loader.epoch(0) {
                    b.unwrap();
                }
            };
            measure(
                "decode + flip/resize 512/normalise + batch 4",
                n,
                rounds,
                &epoch,
            );
        }
    }

    let shapes = ShapesDataset::new(ShapesConfig::new(Split::Train, 400, 0)).unwrap();
    let generate = move || {
        (0..400).into_par_iter().for_each(|i| {
            shapes.sample(i);
        })
    };
    measure("shapes: generate 256x256", 400, rounds, &generate);
}
