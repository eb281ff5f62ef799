//! `focal loss-cdf`: the paper's Figure 4 for a trained checkpoint — the cumulative
//! distribution of the normalised focal loss over the positive and the negative (anchor,
//! class) entries, for γ ∈ {0, 0.5, 1, 2}, as a two-panel PNG, and the share of the loss
//! carried by the hardest entries. The computation is
//! `focal_retinanet::loss_cdf`; this file picks the images, prints and plots.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use focal_data::{CocoDataset, Dataset, Loader, LoaderConfig};
use focal_engine::Rng;
use focal_retinanet::loss_cdf::{collect_batch, EntrySample, LossDistribution, FIGURE_GAMMAS};
use focal_retinanet::train::{class_names, load_trained_model, open_datasets};

use crate::plot::{side_by_side, Chart, Series};

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// A checkpoint written by `focal train` or `focal ablate` (best.ckpt or last.ckpt).
    #[arg(long, value_name = "CKPT")]
    pub weights: PathBuf,
    /// Number of validation images, drawn at random (with --seed) from the validation
    /// split the checkpoint was trained with, or from --data.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub images: u64,
    /// A COCO folder to take the images from instead: DIR/annotations/instances_val2017.json
    /// and DIR/val2017/. Its categories must be the checkpoint's.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The figure (PNG): positives on the left, negatives on the right.
    #[arg(long, value_name = "PNG", default_value = "loss-cdf.png")]
    pub out: PathBuf,
    /// Keep at most this many entries of each kind (positive, negative); beyond that a
    /// uniform random sample of this size (the paper samples ~10^7 negatives).
    #[arg(long, value_name = "N", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_entries: u64,
    /// Seed of the choice of images and of the sample of entries.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

const AFTER_HELP: &str = "\
Every anchor of the chosen images is matched to the ground truth as in training; ignored \
anchors are left out. Each (anchor, class) entry is a positive (its anchor's object has \
that class) or a negative. For each γ in {0, 0.5, 1, 2} (whatever γ the model was trained \
with) the focal loss of every entry is computed with α = 1, as in the paper's figure (α \
would only rescale a whole set), each set is normalised to sum to 1 and sorted from the \
easiest entry to the hardest, and the cumulative sum is plotted against the fraction of \
entries. The printed shares are exact for the entries kept.";

/// The hardest fractions whose share of the loss is printed.
const POSITIVE_TOP: f64 = 0.20;
const NEGATIVE_TOPS: [f64; 2] = [0.01, 0.10];

/// Points per curve in the figure.
const CURVE_POINTS: usize = 1000;

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    if !args.weights.is_file() {
        bail!("--weights {}: no such file", args.weights.display());
    }
    let mut trained = load_trained_model(&args.weights)?;
    let config = &trained.config;
    let dataset: Arc<dyn Dataset> = match &args.data {
        Some(root) => {
            if !root.is_dir() {
                bail!("--data {}: no such folder", root.display());
            }
            let ann = root.join("annotations").join("instances_val2017.json");
            let images = root.join("val2017");
            let d = CocoDataset::open(&ann, &images)?;
            if class_names(&d) != trained.metadata.categories {
                bail!(
                    "{} has other categories than the checkpoint {} was trained on",
                    ann.display(),
                    args.weights.display()
                );
            }
            Arc::new(d)
        }
        None => open_datasets(config)?.1,
    };
    // A random choice of images, visited in dataset order.
    let n = (args.images as usize).min(dataset.len());
    let mut indices: Vec<usize> = (0..dataset.len()).collect();
    Rng::derive(args.seed, &[0x494d_4147_4553]).shuffle(&mut indices); // "IMAGES"
    indices.truncate(n);
    indices.sort_unstable();

    let d = &config.data;
    let loader = Loader::new(
        Arc::clone(&dataset),
        LoaderConfig::eval(d.eval_batch_size, d.min_size, d.max_size),
    )?;
    let cap = args.max_entries as usize;
    let mut positives = EntrySample::new(cap, Rng::derive(args.seed, &[1]).next_u64());
    let mut negatives = EntrySample::new(cap, Rng::derive(args.seed, &[2]).next_u64());
    for chunk in indices.chunks(d.eval_batch_size.max(1)) {
        if let Some(batch) = loader.load_batch(0, chunk)? {
            collect_batch(&mut trained.model, &batch, &mut positives, &mut negatives)?;
        }
    }
    if positives.seen() == 0 {
        bail!(
            "the {n} images chosen from {} have no positive anchor (no objects?): nothing to \
             plot; try more --images",
            dataset.describe()
        );
    }

    let trained_with = match config.loss.alpha {
        Some(a) => format!("γ = {}, α = {a}", config.loss.gamma),
        None => format!("γ = {}, no α", config.loss.gamma),
    };
    println!(
        "{} (step {}, trained with {trained_with}), on {n} images drawn from {}",
        args.weights.display(),
        trained.step,
        dataset.describe()
    );
    for (name, s) in [("positive", &positives), ("negative", &negatives)] {
        let kept = if s.is_complete() {
            "all kept".to_string()
        } else {
            format!("a uniform sample of {} kept", s.values().len())
        };
        println!("  {} {name} entries ({kept})", s.seen());
    }
    println!(
        "focal loss with α = 1 (as in the paper's Figure 4), each set normalised to sum to 1:"
    );
    println!(
        "{:>5}  {:>24}  {:>23}  {:>24}",
        "γ", "hardest 20% of positives", "hardest 1% of negatives", "hardest 10% of negatives"
    );
    let mut positive_chart = Chart::new(
        "positive entries, FL with α = 1",
        "fraction of positive entries (easiest to hardest)",
        "cumulative normalised loss",
    );
    let mut negative_chart = Chart::new(
        "negative entries, FL with α = 1",
        "fraction of negative entries (easiest to hardest)",
        "cumulative normalised loss",
    );
    for chart in [&mut positive_chart, &mut negative_chart] {
        chart.width = 640;
        chart.height = 480;
        chart.y_range = Some((0.0, 1.0));
        chart.legend_left = true;
    }
    let share = |v: Option<f64>| v.map_or("n/a".to_string(), |s| format!("{:.1}%", 100.0 * s));
    for (i, &gamma) in FIGURE_GAMMAS.iter().enumerate() {
        let name = format!("γ = {gamma}");
        // One set at a time, so only one set of losses is in memory.
        let pos = LossDistribution::new(positives.values(), gamma);
        let pos_share = pos.hardest_share(POSITIVE_TOP);
        positive_chart
            .series
            .push(Series::new(name.clone(), pos.cumulative(CURVE_POINTS), i));
        drop(pos);
        let neg = LossDistribution::new(negatives.values(), gamma);
        let neg_shares = NEGATIVE_TOPS.map(|f| neg.hardest_share(f));
        negative_chart
            .series
            .push(Series::new(name, neg.cumulative(CURVE_POINTS), i));
        drop(neg);
        println!(
            "{:>5}  {:>24}  {:>23}  {:>24}",
            gamma,
            share(pos_share),
            share(neg_shares[0]),
            share(neg_shares[1])
        );
    }
    let img = side_by_side(&[positive_chart, negative_chart]);
    crate::files::write_png(&args.out, &img)?;
    println!(
        "wrote {} ({:.1} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
