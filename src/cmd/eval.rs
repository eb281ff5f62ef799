//! `focal eval`: rebuilds a trained model from its checkpoint (which carries its
//! configuration and class names), runs it over a COCO dataset (or the run's own
//! validation set), prints the 12-number COCO summary and writes the detections as a COCO
//! results file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use focal_data::results::write_results;
use focal_data::{check_dataset, CocoDataset, CocoOptions, Dataset};
use focal_retinanet::train::config::{MAX_BATCH, MAX_IMAGE_SIDE};
use focal_retinanet::train::{class_names, evaluate, load_trained_model, open_datasets};

#[derive(clap::Args)]
#[command(after_help = "\
The model is rebuilt from the checkpoint alone (its configuration and class names are \
stored in it), so any last.ckpt or best.ckpt of `focal train` works. Images are resized \
as in training (the checkpoint's min/max size) unless --min-size/--max-size say otherwise. \
The dataset's categories must be the ones the model was trained on (same COCO ids).

Without --data or --ann/--images the run's own validation set is used (for a run on the \
synthetic shapes: the same held-out images as in training).")]
pub struct Args {
    /// A checkpoint written by `focal train` (last.ckpt or best.ckpt).
    #[arg(long, value_name = "CKPT")]
    weights: PathBuf,
    /// A COCO folder: evaluates DIR/annotations/instances_SPLIT.json with the images in
    /// DIR/SPLIT/.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["ann", "images"])]
    data: Option<PathBuf>,
    /// The split of --data.
    #[arg(
        long,
        value_name = "SPLIT",
        default_value = "val2017",
        requires = "data"
    )]
    split: String,
    /// Ground truth: a COCO annotation file (with --images).
    #[arg(long, value_name = "FILE", requires = "images")]
    ann: Option<PathBuf>,
    /// The folder of the images of --ann.
    #[arg(long, value_name = "DIR", requires = "ann")]
    images: Option<PathBuf>,
    /// Also write the detections here as a COCO results file (JSON).
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Images per batch, 1 to 1024 [default: the checkpoint's evaluation batch size].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH as u64))]
    batch_size: Option<u64>,
    /// Resize so the short side is this, 1 to 4096 [default: the checkpoint's].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u64).range(1..=MAX_IMAGE_SIDE as u64))]
    min_size: Option<u64>,
    /// ...unless the long side would exceed this, 1 to 4096 [default: the checkpoint's].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u64).range(1..=MAX_IMAGE_SIDE as u64))]
    max_size: Option<u64>,
    /// Leave out the images that cannot be used (missing, truncated, corrupt, of another
    /// size than annotated) instead of refusing to evaluate; their number is reported.
    #[arg(long)]
    skip_bad_images: bool,
    /// Also print the results as one JSON object on the last line (AP, AP50, ..., ARl and
    /// per_category).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut trained = load_trained_model(&args.weights)?;
    let options = CocoOptions {
        skip_bad_images: args.skip_bad_images,
    };
    let dataset: Arc<dyn Dataset> = match (&args.data, &args.ann, &args.images) {
        (Some(root), _, _) => {
            if !root.is_dir() {
                bail!("--data {}: no such folder", root.display());
            }
            Arc::new(CocoDataset::open_split(root, &args.split, options)?)
        }
        (None, Some(ann), Some(images)) => Arc::new(CocoDataset::open_with(ann, images, options)?),
        _ => {
            let mut config = trained.config.clone();
            config.data.skip_bad_images |= args.skip_bad_images;
            open_datasets(&config)?.1
        }
    };
    let names = class_names(&*dataset);
    if names.iter().map(|c| c.id).collect::<Vec<_>>()
        != trained
            .metadata
            .categories
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    {
        bail!(
            "{} was trained on {} categories (ids {:?}...) but {} has {} (ids {:?}...); \
             evaluate it on a dataset with the same categories",
            args.weights.display(),
            trained.metadata.categories.len(),
            trained
                .metadata
                .categories
                .iter()
                .take(5)
                .map(|c| c.id)
                .collect::<Vec<_>>(),
            dataset.describe(),
            names.len(),
            names.iter().take(5).map(|c| c.id).collect::<Vec<_>>()
        );
    }
    // Every image checked before any inference, all bad ones reported at once.
    let report = check_dataset(&*dataset, args.skip_bad_images, &|_, _| {})?;
    if !report.left_out.is_empty() {
        eprintln!(
            "left out {} of {} images that cannot be used:",
            report.left_out.len(),
            report.checked
        );
        for p in &report.left_out {
            eprintln!("  {p}");
        }
    }
    let d = &trained.config.data;
    let min_size = args.min_size.map_or(d.min_size, |v| v as usize);
    let max_size = args.max_size.map_or(d.max_size, |v| v as usize);
    let batch = args.batch_size.map_or(d.eval_batch_size, |v| v as usize);
    eprintln!(
        "model of {} (step {}), on {} at {min_size}/{max_size} px",
        args.weights.display(),
        trained.step,
        dataset.describe()
    );
    let ids: Vec<i64> = names.iter().map(|c| c.id).collect();
    let eval = evaluate(
        &mut trained.model,
        &dataset,
        &ids,
        min_size,
        max_size,
        batch,
        &mut |done, total| {
            if done == total || done % (batch * 10).max(1) == 0 {
                eprintln!("  {done}/{total} images");
            }
        },
    )?;
    if let Some(out) = &args.out {
        write_results(out, &eval.detections)?;
        eprintln!(
            "{} detections written to {}",
            eval.detections.len(),
            out.display()
        );
    }
    println!(
        "{} detections, {} images, {} ground-truth boxes ({:.1} s)",
        eval.result.num_detections,
        eval.result.num_images,
        eval.result.num_ground_truth,
        eval.seconds
    );
    print!("{}", eval.result.summary());
    if args.json {
        println!("{}", eval.result.to_json());
    }
    Ok(ExitCode::SUCCESS)
}
