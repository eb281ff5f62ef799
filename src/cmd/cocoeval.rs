//! `focal cocoeval`: COCO bounding-box evaluation of a results file against a ground-truth
//! file, printing the same 12 numbers as pycocotools (bit-identical), then AP per category.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use focal_data::coco_format::CocoFile;
use focal_data::results::load_results_for;

#[derive(clap::Args)]
#[command(
    after_help = "Evaluates detections against COCO ground truth exactly as pycocotools' \
                  COCOeval (bbox) does: IoU 0.50:0.95, areas small/medium/large from each \
                  annotation's `area` field, at most 100 detections per image and category, \
                  crowd regions ignored.\n\n\
                  Prints the 12-line pycocotools summary (AP, AP50, AP75, APs, APm, APl, AR1, \
                  AR10, AR100, ARs, ARm, ARl; -1 where a range has no ground truth), then AP per \
                  category. An empty results list is evaluated (AP 0 wherever there is ground \
                  truth) and reported as having no detections. Exits non-zero, naming the file, \
                  on a missing or malformed file or a detection whose image is not in the \
                  ground truth."
)]
pub struct Args {
    /// Ground truth: a COCO instances JSON file (`images`, `annotations` with `bbox`,
    /// `area` and `iscrowd`, `categories`), e.g. annotations/instances_val2017.json.
    #[arg(long, value_name = "GT.json")]
    gt: PathBuf,
    /// Detections: a COCO results JSON file, a list of
    /// {"image_id", "category_id", "bbox": [x, y, w, h], "score"}.
    #[arg(long, value_name = "DT.json")]
    dt: PathBuf,
    /// Also print the results as one JSON object on the last line of standard output, with
    /// the keys AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (numbers)
    /// and per_category (category name -> AP, null for a category without ground truth).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let gt = CocoFile::load(&args.gt)?;
    let dets = load_results_for(&args.dt, &gt)?;

    if dets.is_empty() {
        println!(
            "no detections in {}: every category with ground truth gets AP 0 and AR 0 \
             (pycocotools itself cannot load an empty results list)",
            args.dt.display()
        );
    }
    let known: std::collections::HashSet<i64> = gt.categories.iter().map(|c| c.id).collect();
    let unknown: Vec<i64> = dets
        .iter()
        .map(|d| d.category_id)
        .filter(|c| !known.contains(c))
        .collect();
    if let Some(first) = unknown.first() {
        eprintln!(
            "note: {} detections in {} name category ids absent from the ground truth \
             (first: {first}); they are left out, as pycocotools leaves them out",
            unknown.len(),
            args.dt.display()
        );
    }

    let result = focal_data::evaluate(&gt, &dets).with_context(|| {
        format!(
            "evaluating {} against {}",
            args.dt.display(),
            args.gt.display()
        )
    })?;
    println!(
        "{} detections, {} images, {} categories, {} ground-truth boxes",
        result.num_detections,
        result.num_images,
        result.per_category.len(),
        result.num_ground_truth
    );
    print!("{}", result.summary());
    if args.json {
        println!("{}", result.to_json());
    }
    Ok(ExitCode::SUCCESS)
}
