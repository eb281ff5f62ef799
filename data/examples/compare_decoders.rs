//! How far focal's JPEG decoder (the `image` crate) lands from Pillow's, the decoder
//! torchvision users read images with: the per-image maximum and mean absolute
//! difference of the 8-bit RGB values, and over all images.
//!
//! ```text
//! python data/tests/fixtures/preprocess/pillow_decode.py ../shared/coco/tiny /tmp/pillow
//! cargo run --release -p focal-data --example compare_decoders -- ../shared/coco/tiny /tmp/pillow
//! ```
//!
//! The second folder holds Pillow's decodes as PNG files (`SPLIT/NAME.png` for
//! `SPLIT/NAME.jpg`), which focal reads back exactly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use focal_data::image_io::read_rgb;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [coco, pillow] = args.as_slice() else {
        eprintln!("usage: compare_decoders COCO_DIR PILLOW_PNG_DIR");
        return ExitCode::from(2);
    };
    match run(coco, pillow) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(coco: &Path, pillow: &Path) -> Result<(), String> {
    let (mut images, mut values, mut sum, mut worst) = (0usize, 0u64, 0u64, 0u8);
    let mut exact = 0usize;
    let mut histogram = [0u64; 4]; // |d| = 0, 1, 2, ≥ 3
    for split in ["train2017", "val2017"] {
        let dir = coco.join(split);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
            .collect();
        names.sort();
        for jpg in names {
            let png = pillow
                .join(split)
                .join(jpg.file_stem().unwrap())
                .with_extension("png");
            let ours = read_rgb(&jpg).map_err(|e| e.to_string())?;
            let theirs = read_rgb(&png).map_err(|e| e.to_string())?;
            if (ours.width, ours.height) != (theirs.width, theirs.height) {
                return Err(format!("{}: sizes differ", jpg.display()));
            }
            let (mut max, mut total) = (0u8, 0u64);
            for (&a, &b) in ours.data.iter().zip(&theirs.data) {
                let d = a.abs_diff(b);
                max = max.max(d);
                total += d as u64;
                histogram[(d as usize).min(3)] += 1;
            }
            let n = ours.data.len() as u64;
            println!(
                "{split}/{}: {}x{}, max |focal - Pillow| {max}, mean {:.4}",
                jpg.file_name().unwrap().to_string_lossy(),
                ours.width,
                ours.height,
                total as f64 / n as f64
            );
            images += 1;
            values += n;
            sum += total;
            worst = worst.max(max);
            exact += (max == 0) as usize;
        }
    }
    let share = |k: usize| 100.0 * histogram[k] as f64 / values.max(1) as f64;
    println!(
        "{images} images, {values} values: max |focal - Pillow| {worst}, mean {:.4}; \
         identical images {exact}; |d| = 0: {:.2}%, 1: {:.2}%, 2: {:.2}%, ≥ 3: {:.3}%",
        sum as f64 / values.max(1) as f64,
        share(0),
        share(1),
        share(2),
        share(3)
    );
    Ok(())
}
