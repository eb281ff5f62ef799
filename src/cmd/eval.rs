//! `focal eval`: rebuilds a model from a checkpoint (which carries its configuration and
//! class names) or from a safetensors weights file (`super::model_file`), runs it over a
//! COCO dataset (or a run's own validation set), prints the 12-number COCO summary and
//! writes the detections as a COCO results file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use focal_data::results::write_results;
use focal_data::{check_dataset, CocoDataset, CocoOptions, Dataset};
use focal_retinanet::train::config::{MAX_BATCH, MAX_IMAGE_SIDE};
use focal_retinanet::train::{class_names, evaluate, load_trained_model, open_datasets};

use super::model_file::ModelFlags;

#[derive(clap::Args)]
#[command(after_help = "\
The model is rebuilt from the checkpoint alone (its configuration and class names are \
stored in it), so any last.ckpt or best.ckpt of `focal train` works; or from a safetensors \
file: torchvision's RetinaNet state dict (e.g. retinanet_resnet50_fpn's COCO weights, see \
docs/pretrained.md), whose architecture is read from its tensors, or a `focal weights \
export`. Images are resized as in training (the checkpoint's min/max size; torchvision's \
800/1333 and one image per batch for a torchvision file) unless --min-size/--max-size say \
otherwise, exactly as torchvision's GeneralizedRCNNTransform resizes them. The dataset's \
categories must be the ones the model was trained on (same COCO ids).

Without --data or --ann/--images a checkpoint's own validation set is used (for a run on \
the synthetic shapes: the same held-out images as in training).")]
pub struct Args {
    #[command(flatten)]
    model: ModelFlags,
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
    /// Images per batch, 1 to 1024 [default: the checkpoint's evaluation batch size; 1 for
    /// a torchvision file, as torchvision's reference evaluation].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH as u64))]
    batch_size: Option<u64>,
    /// Resize so the short side is this, 1 to 4096 [default: the checkpoint's; 800 for a
    /// torchvision file].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u64).range(1..=MAX_IMAGE_SIDE as u64))]
    min_size: Option<u64>,
    /// ...unless the long side would exceed this, 1 to 4096 [default: the checkpoint's;
    /// 1333 for a torchvision file].
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
    let mut loaded = args.model.load()?;
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
        _ if focal_nn::looks_like_safetensors(&args.model.weights) => bail!(
            "{} is a weights file, which names no dataset: give --data DIR or --ann FILE \
             --images DIR",
            args.model.weights.display()
        ),
        _ => {
            let mut config = load_trained_model(&args.model.weights)?.config;
            config.data.skip_bad_images |= args.skip_bad_images;
            open_datasets(&config)?.1
        }
    };
    let names = class_names(&*dataset);
    let ids_of =
        |c: &[focal_retinanet::train::ClassName]| c.iter().map(|c| c.id).collect::<Vec<_>>();
    if loaded.unnamed_classes && loaded.classes.len() == names.len() {
        eprintln!(
            "the model's {} unnamed classes are taken as the dataset's categories, in order",
            names.len()
        );
        loaded.classes = names.clone();
    }
    if ids_of(&names) != ids_of(&loaded.classes) {
        bail!(
            "{} was trained on {} categories (ids {:?}...) but {} has {} (ids {:?}...); \
             evaluate it on a dataset with the same categories",
            args.model.weights.display(),
            loaded.classes.len(),
            ids_of(&loaded.classes)
                .into_iter()
                .take(5)
                .collect::<Vec<_>>(),
            dataset.describe(),
            names.len(),
            ids_of(&names).into_iter().take(5).collect::<Vec<_>>()
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
    let min_size = args.min_size.map_or(loaded.min_size, |v| v as usize);
    let max_size = args.max_size.map_or(loaded.max_size, |v| v as usize);
    let batch = args.batch_size.map_or(loaded.batch_size, |v| v as usize);
    eprintln!("{}", loaded.about);
    for note in &loaded.notes {
        eprintln!("  {note}");
    }
    eprintln!(
        "on {} at {min_size}/{max_size} px, {} per batch",
        dataset.describe(),
        super::count(batch as u64, "image")
    );
    let ids: Vec<i64> = names.iter().map(|c| c.id).collect();
    let eval = evaluate(
        &mut loaded.model,
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
