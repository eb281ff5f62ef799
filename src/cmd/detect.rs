//! `focal detect`: runs a model (a checkpoint or safetensors weights, `super::model_file`)
//! on image files and writes, for each, a PNG copy with the detections drawn (box, class
//! name, score), plus all detections as one COCO results file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use focal_data::batch::collate;
use focal_data::image_io::{decode, read_header, read_image_file};
use focal_data::results::write_results;
use focal_data::transforms::transform;
use focal_data::{Detection, Sample};
use focal_retinanet::train::config::MAX_IMAGE_SIDE;
use focal_retinanet::train::{detect_batch, to_coco_results};
use focal_retinanet::Detections;

use super::model_file::ModelFlags;
use crate::draw::{self, PALETTE};
use crate::files::write_png;

#[derive(clap::Args)]
#[command(after_help = "\
For every IMAGE (JPEG or PNG) the detections scoring at least --score are drawn on a copy \
written as OUT/<name>.png, and listed in OUT/detections.json (COCO results: image_id is \
the image's position on the command line, from 1; category_id the COCO id the model was \
trained with). The class names come from the checkpoint, from a focal export's metadata, or \
are COCO's for torchvision's 91-class COCO weights. Images are preprocessed as \
torchvision's GeneralizedRCNNTransform does (800/1333 for torchvision weights).")]
pub struct Args {
    #[command(flatten)]
    model: ModelFlags,
    /// Images to run on.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
    /// Folder for the drawn copies and detections.json. Copies of images under 256 px are
    /// enlarged (nearest neighbour, by a whole factor) so that the labels stay readable;
    /// detections.json keeps the original coordinates.
    #[arg(long, value_name = "DIR", default_value = "detections")]
    out: PathBuf,
    /// Keep detections scoring at least this (0 to 1).
    #[arg(long, value_name = "T", default_value_t = 0.5, value_parser = parse_score)]
    score: f32,
    /// Resize so the short side is this, 1 to 4096 [default: the checkpoint's; 800 for a
    /// torchvision file].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u64).range(1..=MAX_IMAGE_SIDE as u64))]
    min_size: Option<u64>,
    /// ...unless the long side would exceed this, 1 to 4096 [default: the checkpoint's;
    /// 1333 for a torchvision file].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u64).range(1..=MAX_IMAGE_SIDE as u64))]
    max_size: Option<u64>,
}

fn parse_score(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a score between 0 and 1, got {s:?}")),
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut loaded = args.model.load()?;
    let names: Vec<String> = loaded.classes.iter().map(|c| c.name.clone()).collect();
    let ids: Vec<i64> = loaded.classes.iter().map(|c| c.id).collect();
    let min_size = args.min_size.map_or(loaded.min_size, |v| v as usize);
    let max_size = args.max_size.map_or(loaded.max_size, |v| v as usize);
    eprintln!("{}", loaded.about);
    for note in &loaded.notes {
        eprintln!("  {note}");
    }
    // Every image's header first (format, size, the memory limit), so a missing or
    // unreadable file fails before any work; the pixels are then decoded one image at a
    // time, so memory holds one image whatever the number of files.
    for path in &args.images {
        let bytes = read_image_file(path)?;
        read_header(&bytes, path)?.check_limit(path)?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the folder {}", args.out.display()))?;
    let mut used_names = std::collections::HashSet::new();
    let mut all = Vec::new();
    for (i, path) in args.images.iter().enumerate() {
        let image = decode(&read_image_file(path)?, path)?;
        let image_id = i as i64 + 1;
        let sample = Sample {
            image: image.clone(),
            boxes: Vec::new(),
            labels: Vec::new(),
            image_id,
        };
        let batch = collate(vec![(i, transform(sample, min_size, max_size, false))]);
        let dets = detect_batch(&mut loaded.model, &batch).remove(0);
        let kept = keep_above(&dets, args.score);
        let mut results: Vec<Detection> = to_coco_results(image_id, &kept, &ids);
        let out = output_name(&args.out, path, &mut used_names);
        let drawn = draw_detections(image, &kept, &names);
        write_png(&out, &drawn)?;
        println!(
            "{}: {} detections ≥ {} → {}",
            path.display(),
            kept.len(),
            args.score,
            out.display()
        );
        for k in 0..kept.len() {
            let [x1, y1, x2, y2] = kept.boxes[k];
            println!(
                "  {:<12} {:.3}  [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]",
                names[kept.labels[k]], kept.scores[k]
            );
        }
        all.append(&mut results);
    }
    let json = args.out.join("detections.json");
    write_results(&json, &all)?;
    println!("{} detections written to {}", all.len(), json.display());
    Ok(ExitCode::SUCCESS)
}

/// The detections scoring at least `t` (they are sorted best first).
fn keep_above(d: &Detections, t: f32) -> Detections {
    let keep: Vec<usize> = (0..d.len()).filter(|&i| d.scores[i] >= t).collect();
    Detections {
        boxes: keep.iter().map(|&i| d.boxes[i]).collect(),
        scores: keep.iter().map(|&i| d.scores[i]).collect(),
        labels: keep.iter().map(|&i| d.labels[i]).collect(),
    }
}

/// OUT/<file stem>.png, with a number appended when two inputs share a stem.
fn output_name(out: &Path, input: &Path, used: &mut std::collections::HashSet<String>) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut name = stem.clone();
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    out.join(format!("{name}.png"))
}

/// Short side under which a drawn copy is enlarged: an 8-px label on a 64-px image
/// would cover most of it.
const MIN_DRAWN_SIDE: u32 = 256;

/// Long side a drawn copy is never enlarged beyond (a 2×3000 strip stays as it is).
const MAX_DRAWN_SIDE: u32 = 4096;

/// The whole factor that brings the short side of a `w × h` image to at least
/// [`MIN_DRAWN_SIDE`], without taking the long side over [`MAX_DRAWN_SIDE`] (1 for
/// images that large already).
fn enlargement(w: u32, h: u32) -> u32 {
    let wanted = MIN_DRAWN_SIDE.div_ceil(w.min(h).max(1));
    let allowed = MAX_DRAWN_SIDE / w.max(h).max(1);
    wanted.min(allowed).max(1)
}

/// The image with each detection's box and a "name 0.93" label on a coloured tab,
/// enlarged by [`enlargement`] first.
fn draw_detections(
    image: focal_data::RgbImage,
    dets: &Detections,
    names: &[String],
) -> image::RgbImage {
    let f = enlargement(image.width, image.height);
    let img = image::RgbImage::from_raw(image.width, image.height, image.data)
        .expect("an RgbImage holds w·h·3 bytes");
    let mut img = if f > 1 {
        image::imageops::resize(
            &img,
            img.width() * f,
            img.height() * f,
            image::imageops::FilterType::Nearest,
        )
    } else {
        img
    };
    let (w, h) = img.dimensions();
    let thickness = ((w.min(h) as f64 / 300.0).round() as u32).clamp(1, 4);
    let scale = if w.min(h) >= 600 { 2 } else { 1 };
    // Worst first, so the best detections end up on top.
    for k in (0..dets.len()).rev() {
        let [x1, y1, x2, y2] = dets.boxes[k].map(|v| v * f as f32);
        let color = PALETTE[dets.labels[k] % PALETTE.len()];
        draw::rect(
            &mut img, x1 as f64, y1 as f64, x2 as f64, y2 as f64, thickness, color,
        );
        let label = format!("{} {:.2}", names[dets.labels[k]], dets.scores[k]);
        let tw = draw::text_width(&label, scale) + 4;
        let th = 8 * scale as i64 + 4;
        let tx = (x1.floor() as i64).clamp(0, (w as i64 - tw).max(0));
        let ty = if y1 as i64 >= th {
            y1 as i64 - th
        } else {
            y1 as i64
        };
        draw::fill_rect(&mut img, tx, ty, tw, th, color);
        draw::text(&mut img, tx + 2, ty + 2, &label, scale, [0, 0, 0]);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_detections_at_or_above_the_threshold() {
        let d = Detections {
            boxes: vec![[0.0; 4], [1.0; 4], [2.0; 4]],
            scores: vec![0.9, 0.5, 0.2],
            labels: vec![0, 1, 2],
        };
        let k = keep_above(&d, 0.5);
        assert_eq!(k.scores, vec![0.9, 0.5]);
        assert_eq!(k.labels, vec![0, 1]);
    }

    #[test]
    fn small_images_are_enlarged_by_a_whole_factor() {
        assert_eq!(enlargement(64, 64), 4);
        assert_eq!(enlargement(100, 300), 3);
        assert_eq!(enlargement(256, 200), 2);
        assert_eq!(enlargement(640, 480), 1);
        // A thin strip is enlarged only as far as the long side allows.
        assert_eq!(enlargement(2, 1000), 4);
        assert_eq!(enlargement(1, 5000), 1);
        let image = focal_data::RgbImage {
            width: 64,
            height: 32,
            data: vec![0; 64 * 32 * 3],
        };
        let d = Detections {
            boxes: vec![[8.0, 8.0, 24.0, 24.0]],
            scores: vec![0.9],
            labels: vec![0],
        };
        let drawn = draw_detections(image, &d, &["circle".to_string()]);
        assert_eq!(drawn.dimensions(), (64 * 8, 32 * 8));
        // The box's left edge, scaled by 8, is drawn in the class colour; the image
        // was black.
        assert_eq!(drawn.get_pixel(64, 150).0, PALETTE[0]);
        assert_eq!(drawn.get_pixel(20, 150).0, [0, 0, 0]);
    }

    #[test]
    fn output_names_are_unique() {
        let mut used = std::collections::HashSet::new();
        let a = output_name(Path::new("o"), Path::new("x/a.jpg"), &mut used);
        let b = output_name(Path::new("o"), Path::new("y/a.png"), &mut used);
        assert_eq!(a, Path::new("o/a.png"));
        assert_eq!(b, Path::new("o/a-2.png"));
    }
}
