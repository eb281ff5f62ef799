//! `focal synth`: writes the synthetic shapes dataset to disk as a COCO dataset,
//! `OUT/annotations/instances_{train,val}.json` with the images in `OUT/{train,val}/`.
//! Reading it back with the COCO reader gives exactly the in-memory dataset that
//! `focal train` uses by default with the same seed and size.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use focal_data::{ShapesConfig, ShapesDataset, Split};

#[derive(clap::Args)]
pub struct Args {
    /// Folder to write into. It must not exist or be empty, unless --force is given.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of training images (written to DIR/train/).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    train: usize,
    /// Number of validation images (written to DIR/val/). Drawn from a different random
    /// stream than the training images, so the two splits never share an image.
    #[arg(long, value_name = "N", default_value_t = 200)]
    val: usize,
    /// Width and height of every image in pixels (32 to 8192).
    #[arg(long, value_name = "S", default_value_t = 256)]
    size: u32,
    /// Seed: the same seed, size and counts always give the same files.
    #[arg(long, value_name = "K", default_value_t = 0)]
    seed: u64,
    /// At most this many objects per image (0 to 250; the count is uniform in 0..=N).
    #[arg(long, value_name = "N", default_value_t = 6)]
    max_objects: usize,
    /// The largest object side in pixels [default: 0.7 of the image side]. With
    /// --max-objects 2 --max-object-side 24 --size 128 this writes the images of `focal
    /// ablate --preset imbalance`.
    #[arg(long, value_name = "PX")]
    max_object_side: Option<u32>,
    /// Write into DIR even if it is not empty. Files of the same names are replaced;
    /// other files are left alone.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    check_out_dir(&args.out, args.force)?;
    let started = Instant::now();
    for (split, count) in [(Split::Train, args.train), (Split::Val, args.val)] {
        let dataset = ShapesDataset::new(ShapesConfig {
            size: args.size,
            max_objects: args.max_objects,
            max_object_side: args.max_object_side,
            ..ShapesConfig::new(split, count, args.seed)
        })?;
        let images_dir = args.out.join(split.name());
        let annotations = args
            .out
            .join("annotations")
            .join(format!("instances_{}.json", split.name()));
        let t = Instant::now();
        // A counter rewritten in place on a terminal; in a log, only the summary line.
        let tty = std::io::stderr().is_terminal();
        let progress = |done: usize| {
            if tty {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{}: {done}/{count} images", split.name());
                let _ = err.flush();
            }
        };
        progress(0);
        dataset.write_coco(&images_dir, &annotations, &progress)?;
        let coco = dataset.to_coco();
        eprintln!(
            "{}{}: {count} images, {} boxes in {:.1} s -> {} and {}",
            if tty { "\r" } else { "" },
            split.name(),
            coco.annotations.len(),
            t.elapsed().as_secs_f64(),
            images_dir.display(),
            annotations.display()
        );
    }
    eprintln!(
        "wrote {} in {:.1} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Refuses a non-empty output folder unless `force`, and anything that is not a folder.
fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("{}: exists and is not a folder", out.display());
    }
    let mut entries =
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?;
    if entries.next().is_some() && !force {
        bail!(
            "{}: the folder is not empty; choose another --out or add --force to write into it",
            out.display()
        );
    }
    Ok(())
}
