//! `focal imbalance`: the class imbalance of a training configuration — anchors per
//! image, positive, ignored and negative anchors per image, negatives per positive —
//! counted with the anchors and matcher of training (`focal_retinanet::imbalance`).
//! Measures an ablation preset, a `--config`, or the paper's configuration on a COCO
//! folder (`--coco`), whose figure `docs/focal-loss.md` quotes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use focal_retinanet::ablation::Preset;
use focal_retinanet::imbalance::{measure, PAPER_ANCHORS_PER_IMAGE};
use focal_retinanet::train::builders::open_datasets;
use focal_retinanet::train::{CocoData, TrainConfig};

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The configuration of a `focal ablate` preset: table1 or imbalance.
    #[arg(long, value_name = "NAME", default_value = "imbalance", value_parser = parse_preset)]
    pub preset: Preset,
    /// Measure the paper's COCO configuration instead (9 anchors per location, base sizes
    /// 32-512 on P3-P7, IoU ≥ 0.5 positive and < 0.4 negative with low-quality matches,
    /// short side 800 px, long side ≤ 1333) on this COCO folder:
    /// DIR/annotations/instances_{train,val}2017.json and DIR/{train,val}2017/.
    #[arg(long, value_name = "DIR")]
    pub coco: Option<PathBuf>,
    /// A TOML training configuration read over the preset (or the COCO configuration).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Count the validation split instead of the training split.
    #[arg(long)]
    pub val: bool,
    /// Count at most this many images, evenly spaced [default: all].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_images: Option<u64>,
    /// Print the sums and per-image figures as JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Each image is resized as training resizes it (short side min_size, long side at most \
max_size, no flip), padded to a multiple of 32 on its own, and its anchors are matched to \
its boxes by the matcher of training. The figures are averages over the images counted; \
the ratio is all negatives over all positives. An image's annotations are read without \
decoding its pixels.";

fn parse_preset(s: &str) -> Result<Preset, String> {
    Preset::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
        format!("unknown preset {s:?}: expected {}", names.join(" or "))
    })
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut config = match &args.coco {
        Some(dir) => TrainConfig::coco(CocoData::from_root(dir)),
        None => args.preset.base(),
    };
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        config = TrainConfig::from_toml_over(&config, &text)
            .with_context(|| path.display().to_string())?;
    }
    config.validate()?;
    let (train, val) = open_datasets(&config)?;
    let set = if args.val { val } else { train };
    let stats = measure(&config, set.as_ref(), args.max_images.map(|n| n as usize))?;
    if args.json {
        print!("{}", stats.to_json());
        return Ok(ExitCode::SUCCESS);
    }
    let a = &config.anchors;
    println!(
        "{}\n{} anchors per location (sizes {:?} px on P3-P7), images at {}/{} px, IoU ≥ {} \
         positive, < {} negative{}\n{}\n(the paper's COCO at 800 px: about {:.0} anchors \
         per image)",
        set.describe(),
        a.anchors_per_cell(),
        a.sizes,
        config.data.min_size,
        config.data.max_size,
        config.matcher.foreground_iou,
        config.matcher.background_iou,
        if config.matcher.low_quality_matches {
            ", low-quality matches"
        } else {
            ""
        },
        stats.summary().replace(
            "training images",
            if args.val {
                "validation images"
            } else {
                "training images"
            }
        ),
        PAPER_ANCHORS_PER_IMAGE
    );
    Ok(ExitCode::SUCCESS)
}
