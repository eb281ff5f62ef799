//! `focal weights`: what a safetensors weights file holds and where each tensor goes
//! (`inspect`), and a trained checkpoint written out under torchvision's names (`export`).
//! The work is `focal_retinanet::pretrained`; this prints it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use focal_retinanet::pretrained::{export_weights, inspect, ArchitectureOptions, ExportedClasses};
use focal_retinanet::train::load_trained_model;
use focal_retinanet::{BackboneNorm, P6Input};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every tensor of a safetensors file with its type, shape and the focal parameter it
    /// loads into, the architecture read from them, and what is missing or unexpected.
    /// Exits with 1 when the file does not fit (what eval/detect would refuse).
    Inspect(InspectArgs),
    /// Write a checkpoint of `focal train` as a safetensors state dict under torchvision's
    /// names, loadable with load_state_dict(strict=True) into the matching torchvision
    /// RetinaNet, and by focal eval/detect/train --init.
    Export(ExportArgs),
}

#[derive(clap::Args)]
struct InspectArgs {
    /// A safetensors file: torchvision's RetinaNet state dict, an ImageNet ResNet, or a
    /// `focal weights export`.
    #[arg(value_name = "FILE.safetensors")]
    file: PathBuf,
    /// ε of frozen BatchNorm to assume (as for focal eval).
    #[arg(long, value_name = "EPS", value_parser = super::model_file::parse_eps)]
    frozen_bn_eps: Option<f32>,
}

#[derive(clap::Args)]
#[command(after_help = "\
The file holds every parameter and buffer under torchvision's names (backbone.body.*, \
backbone.fpn.*, head.*) as float32, and focal's configuration and class names in its \
metadata, so focal rebuilds the model exactly (focal eval --weights FILE). When the classes \
are COCO's 80 categories the class output is written with torchvision's 91 rows per anchor \
(label = COCO id; the unused rows score 0.01), so it loads into torchvision's default COCO \
RetinaNet. The command prints the torchvision constructor the file fits; see \
docs/pretrained.md.")]
struct ExportArgs {
    /// A checkpoint written by `focal train` (last.ckpt or best.ckpt).
    #[arg(value_name = "CKPT")]
    checkpoint: PathBuf,
    /// The safetensors file to write (atomically).
    #[arg(long, value_name = "FILE.safetensors")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Inspect(a) => run_inspect(a),
        Command::Export(a) => run_export(a),
    }
}

fn run_inspect(args: InspectArgs) -> Result<ExitCode> {
    let opts = ArchitectureOptions {
        frozen_bn_eps: args.frozen_bn_eps,
    };
    let report = inspect(&args.file, &opts)?;
    println!("{}: {}", args.file.display(), report.kind.describe());
    match &report.architecture {
        Ok(arch) => {
            println!("architecture:");
            for note in &arch.notes {
                println!("  {note}");
            }
        }
        Err(why) => println!("architecture: cannot be read from the tensors: {why}"),
    }
    let width = report
        .rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let shape_width = report
        .rows
        .iter()
        .map(|r| format!("{:?}", r.shape).len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "\n  {:<width$}  {:<5}  {:<shape_width$}  focal parameter (! does not fit)",
        "tensor", "type", "shape"
    );
    for r in &report.rows {
        println!(
            "{} {:<width$}  {:<5}  {:<shape_width$}  {}",
            if r.fits { " " } else { "!" },
            r.name,
            r.dtype,
            format!("{:?}", r.shape),
            r.target
        );
    }
    let values: usize = report
        .rows
        .iter()
        .map(|r| r.shape.iter().product::<usize>())
        .sum();
    println!(
        "\n{} tensors, {:.1} M values; missing from the file: {}; unexpected or misfit: {}",
        report.rows.len(),
        values as f64 / 1e6,
        if report.missing.is_empty() {
            "none".to_string()
        } else {
            report.missing.len().to_string()
        },
        report.rows.iter().filter(|r| !r.fits).count()
    );
    println!("{}", report.verdict);
    if report.problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for p in &report.problems {
        eprintln!("error: {}: {p}", args.file.display());
    }
    Ok(ExitCode::FAILURE)
}

fn run_export(args: ExportArgs) -> Result<ExitCode> {
    if focal_nn::looks_like_safetensors(&args.checkpoint) {
        bail!(
            "{} is already a safetensors file; export takes a checkpoint of focal train",
            args.checkpoint.display()
        );
    }
    let trained = load_trained_model(&args.checkpoint)?;
    let summary = export_weights(
        &trained.model,
        &trained.metadata.categories,
        &trained.config,
        &args.out,
    )?;
    let m = &trained.config.model;
    println!(
        "{} tensors ({:.1} M values) of {} (step {}) written to {}",
        summary.tensors,
        summary.values as f64 / 1e6,
        args.checkpoint.display(),
        trained.step,
        args.out.display()
    );
    let classes = match summary.classes {
        ExportedClasses::Coco91 => {
            "91 (COCO's 80 categories at their ids, torchvision's layout)".to_string()
        }
        ExportedClasses::AsTrained => trained.metadata.categories.len().to_string(),
    };
    println!("in torchvision it fits RetinaNet with:");
    println!(
        "  backbone  {} with {} ({})",
        m.depth.name(),
        match m.norm {
            BackboneNorm::GroupNorm => "norm_layer=lambda c: nn.GroupNorm(32, c)",
            BackboneNorm::BatchNorm => "norm_layer=nn.BatchNorm2d",
            BackboneNorm::FrozenBatchNorm => "norm_layer=FrozenBatchNorm2d",
        },
        match (m.p6_input, m.fpn_channels) {
            (P6Input::P5, f) => format!("FPN {f}, extra_blocks=LastLevelP6P7({f}, {f})"),
            (P6Input::C5, f) => format!("FPN {f}, extra_blocks=LastLevelP6P7(C5 channels, {f})"),
        }
    );
    let norm = if m.head_norm {
        ", norm_layer=partial(nn.GroupNorm, 32)"
    } else {
        ""
    };
    let a = trained.config.anchors.anchors_per_cell();
    if m.head_depth == 4 && m.head_width == m.fpn_channels {
        println!(
            "  head      RetinaNetHead({}, {a}, num_classes={classes}{norm})",
            m.fpn_channels
        );
    } else {
        println!(
            "  head      towers of {} layers × {} channels{} (torchvision's RetinaNetHead has \
             4 × {}: replace its .conv Sequentials; the names follow its layout), \
             {a} anchors, num_classes={classes}",
            m.head_depth,
            m.head_width,
            if m.head_norm {
                " with GroupNorm(32)"
            } else {
                ""
            },
            m.fpn_channels
        );
    }
    println!(
        "  load with model.load_state_dict(safetensors.torch.load_file(\"{}\"), strict=True)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
