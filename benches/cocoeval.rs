//! Benchmark: COCO bbox evaluation of 5000 images × 100 detections.
//!
//! ```text
//! cargo bench --bench cocoeval                   # focal; writes the inputs
//! python benches/cocoeval_pycocotools.py         # pycocotools, same files
//! ```
//!
//! (`python`: a Python with pycocotools and NumPy, `pip install pycocotools numpy`; it is
//! never a dependency of focal.)
//!
//! A synthetic ground truth (5000 images of 640×480, 1 to 13 boxes each, 7 on average,
//! over 80 categories, `area` field 50–100 % of the box area, 1 % crowd regions) and 100
//! detections per image (jittered copies of the image's boxes, then false positives mostly
//! of the image's own categories, scores with three decimals so that ties occur) are made
//! from a fixed seed and written to target/cocoeval-bench/{gt,dt}.json. focal's evaluator
//! (evaluate + accumulate + summarize, all inside `focal_data::evaluate`) is timed on them,
//! on one thread and on all threads; file loading is timed separately. The 12 numbers go
//! to target/cocoeval-bench/focal_stats.json, which the Python script compares with
//! pycocotools' own.
//!
//! Measured on the 2-core development machine, shared with other jobs (load ≈ 4), run one
//! after the other on the same files: focal 0.43–0.55 s on 1 thread, 0.46 s on 2;
//! pycocotools 2.0.11 60–70 s (evaluate + accumulate + summarize; loading 4–5 s more,
//! focal's 0.4 s). The 12 numbers are bit-identical.

use std::path::PathBuf;
use std::time::Instant;

use focal_data::coco_format::{CocoAnnotation, CocoCategory, CocoFile, CocoImage};
use focal_data::results::{load_results_for, write_results};
use focal_data::{evaluate, Detection};
use focal_engine::threads::{num_threads, with_threads};
use focal_engine::Rng;

const IMAGES: usize = 5000;
const CATEGORIES: i64 = 80;
const DETS_PER_IMAGE: usize = 100;
const REPEATS: usize = 5;

fn synthesize() -> (CocoFile, Vec<Detection>) {
    let mut rng = Rng::new(2017);
    let (w_img, h_img) = (640.0, 480.0);
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    let mut dets = Vec::new();
    for i in 0..IMAGES {
        let image_id = 1 + 3 * i as i64; // sparse ids, like COCO's
        images.push(CocoImage {
            id: image_id,
            file_name: format!("{image_id:012}.jpg"),
            width: 640,
            height: 480,
        });
        let mut boxes = Vec::new();
        for _ in 0..1 + rng.below(13) {
            let w = 4.0 + rng.uniform_f64() * 300.0;
            let h = 4.0 + rng.uniform_f64() * 300.0;
            let bbox = [
                rng.uniform_f64() * (w_img - w),
                rng.uniform_f64() * (h_img - h),
                w,
                h,
            ];
            let category_id = 1 + rng.below(CATEGORIES as usize) as i64;
            annotations.push(CocoAnnotation {
                id: annotations.len() as i64 + 1,
                image_id,
                category_id,
                bbox,
                area: Some(w * h * (0.5 + 0.5 * rng.uniform_f64())),
                iscrowd: (rng.uniform_f64() < 0.01) as u8,
            });
            boxes.push((category_id, bbox));
        }
        let score = |rng: &mut Rng| (rng.uniform_f64() * 1000.0).round() / 1000.0;
        let mut image_dets = Vec::new();
        for &(category_id, [x, y, w, h]) in &boxes {
            for _ in 0..1 + rng.below(3) {
                let j = 0.15 * rng.uniform_f64();
                image_dets.push(Detection {
                    image_id,
                    category_id,
                    bbox: [
                        x + j * w * (rng.uniform_f64() - 0.5),
                        y + j * h * (rng.uniform_f64() - 0.5),
                        w * (1.0 + j * (rng.uniform_f64() - 0.5)),
                        h * (1.0 + j * (rng.uniform_f64() - 0.5)),
                    ],
                    score: score(&mut rng),
                });
            }
        }
        while image_dets.len() < DETS_PER_IMAGE {
            // Mostly the image's own categories, as a detector's top 100 are.
            let category_id = if rng.uniform_f64() < 0.7 {
                boxes[rng.below(boxes.len())].0
            } else {
                1 + rng.below(CATEGORIES as usize) as i64
            };
            let w = 4.0 + rng.uniform_f64() * 300.0;
            let h = 4.0 + rng.uniform_f64() * 300.0;
            image_dets.push(Detection {
                image_id,
                category_id,
                bbox: [
                    rng.uniform_f64() * (w_img - w),
                    rng.uniform_f64() * (h_img - h),
                    w,
                    h,
                ],
                score: score(&mut rng) * 0.5,
            });
        }
        image_dets.truncate(DETS_PER_IMAGE);
        dets.extend(image_dets);
    }
    let categories = (1..=CATEGORIES)
        .map(|id| CocoCategory {
            id,
            name: format!("category{id}"),
            supercategory: None,
        })
        .collect();
    (
        CocoFile {
            images,
            annotations,
            categories,
        },
        dets,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cocoeval-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let (gt_path, dt_path) = (dir.join("gt.json"), dir.join("dt.json"));

    let (gt, dets) = synthesize();
    std::fs::write(&gt_path, serde_json::to_string(&gt).unwrap()).unwrap();
    write_results(&dt_path, &dets).unwrap();
    println!(
        "cocoeval bench: {} images, {} ground-truth boxes, {} categories, {} detections",
        gt.images.len(),
        gt.annotations.len(),
        gt.categories.len(),
        dets.len()
    );
    println!("  files: {} and {}", gt_path.display(), dt_path.display());

    let t = Instant::now();
    let gt = CocoFile::load(&gt_path).unwrap();
    let dets = load_results_for(&dt_path, &gt).unwrap();
    println!(
        "  load both files (focal):            {:>8.3} s",
        t.elapsed().as_secs_f64()
    );

    let mut result = None;
    for threads in [1, num_threads()] {
        let times: Vec<f64> = (0..REPEATS)
            .map(|_| {
                with_threads(threads, || {
                    let t = Instant::now();
                    result = Some(evaluate(&gt, &dets).unwrap());
                    t.elapsed().as_secs_f64()
                })
            })
            .collect();
        println!(
            "  evaluate (focal, {threads} thread{}):        {:>8.3} s  (median of {REPEATS}; min {:.3})",
            if threads == 1 { " " } else { "s" },
            median(times.clone()),
            times.iter().cloned().fold(f64::INFINITY, f64::min)
        );
    }
    let result = result.unwrap();
    print!(
        "{}",
        result
            .summary()
            .lines()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!();
    std::fs::write(
        dir.join("focal_stats.json"),
        serde_json::to_string(&result.stats.to_array().to_vec()).unwrap(),
    )
    .unwrap();
}
