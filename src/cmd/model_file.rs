//! The `--weights FILE` of `focal eval` and `focal detect`: a checkpoint written by `focal
//! train`, or a safetensors file of pretrained weights (torchvision's RetinaNet state dict
//! or a `focal weights export`), told apart by the file's first bytes. Both become a model
//! in evaluation mode with its class names and the image sizes to run it at.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use focal_retinanet::pretrained::{load_weights, ArchitectureOptions, Classes};
use focal_retinanet::train::{load_trained_model, ClassName};
use focal_retinanet::RetinaNet;

/// The flags that choose the model and how it infers, shared by eval and detect.
#[derive(clap::Args)]
pub struct ModelFlags {
    /// The model: a checkpoint written by `focal train` (last.ckpt, best.ckpt), or a
    /// safetensors file of weights: torchvision's RetinaNet state dict (architecture read
    /// from the tensors; 91 COCO classes become COCO's 80, names built in) or a `focal
    /// weights export`. `focal weights inspect FILE` shows what a file holds.
    #[arg(long, value_name = "CKPT|FILE.safetensors")]
    pub weights: PathBuf,
    /// ε of frozen BatchNorm for a torchvision state dict, which the file does not record
    /// [default: 0 for torchvision's retinanet_resnet50_fpn layout, as torchvision sets it
    /// for its COCO weights; 1e-5 otherwise].
    #[arg(long, value_name = "EPS", value_parser = parse_eps)]
    pub frozen_bn_eps: Option<f32>,
    /// Candidates need a score above this [default: the checkpoint's; 0.05 for
    /// safetensors weights, torchvision's].
    #[arg(long, value_name = "S", value_parser = parse_unit)]
    pub score_threshold: Option<f32>,
    /// Candidates kept per pyramid level before NMS [default: the checkpoint's; 1000 for a
    /// torchvision file].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub candidates_per_level: Option<u64>,
    /// NMS suppresses boxes with IoU above this [default: the checkpoint's; 0.5 for a
    /// torchvision file].
    #[arg(long, value_name = "IOU", value_parser = parse_unit)]
    pub nms_iou: Option<f32>,
    /// Detections kept per image [default: the checkpoint's; 300 for a torchvision file,
    /// torchvision's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub detections_per_image: Option<u64>,
}

fn parse_unit(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number between 0 and 1, got {s:?}")),
    }
}

pub fn parse_eps(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a number ≥ 0, got {s:?}")),
    }
}

/// A model ready to run, wherever it came from.
pub struct LoadedModel {
    pub model: RetinaNet,
    /// The classes of the model's labels.
    pub classes: Vec<ClassName>,
    /// The classes have no names of their own (a torchvision file with other than 91
    /// outputs): match them to a dataset's categories by position.
    pub unnamed_classes: bool,
    /// Image sizes and evaluation batch size the model was made for.
    pub min_size: usize,
    pub max_size: usize,
    pub batch_size: usize,
    /// "model of runs/a/best.ckpt (step 800)", "torchvision RetinaNet weights X".
    pub about: String,
    /// How the architecture was chosen, for the user (empty for a checkpoint).
    pub notes: Vec<String>,
}

/// Whether `path` is to be read as a safetensors weights file (rather than a checkpoint):
/// it starts like one, or it is named `*.safetensors` (then its parser says what is
/// wrong). A file that is neither is an error naming both formats.
fn is_weights_file(path: &Path) -> Result<bool> {
    if focal_nn::looks_like_safetensors(path) {
        return Ok(true);
    }
    let mut head = [0u8; 8];
    let starts_as_checkpoint = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == focal_nn::checkpoint::MAGIC;
    let named_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if !starts_as_checkpoint && !named_safetensors && path.is_file() {
        bail!(
            "{}: not a focal checkpoint (written by focal train), nor a safetensors weights \
             file",
            path.display()
        );
    }
    Ok(!starts_as_checkpoint && named_safetensors)
}

/// torchvision's sizes and its evaluation batch of one image (its detection reference
/// scripts evaluate one image at a time, so each image is padded only to its own size).
const TORCHVISION_MIN_SIZE: usize = 800;
const TORCHVISION_MAX_SIZE: usize = 1333;

impl ModelFlags {
    /// Loads the model and applies the inference flags.
    pub fn load(&self) -> Result<LoadedModel> {
        let path = &self.weights;
        let mut loaded = if is_weights_file(path)? {
            let opts = ArchitectureOptions {
                frozen_bn_eps: self.frozen_bn_eps,
            };
            let w = load_weights(path, &opts)?;
            let (min_size, max_size, batch_size) = match &w.architecture.train_config {
                Some(c) => (c.data.min_size, c.data.max_size, c.data.eval_batch_size),
                None => (TORCHVISION_MIN_SIZE, TORCHVISION_MAX_SIZE, 1),
            };
            LoadedModel {
                unnamed_classes: matches!(w.architecture.classes, Classes::Unnamed(_)),
                model: w.model,
                classes: w.classes,
                min_size,
                max_size,
                batch_size,
                about: format!("{} ({})", path.display(), w.kind.describe()),
                notes: w.architecture.notes,
            }
        } else {
            if self.frozen_bn_eps.is_some() {
                bail!(
                    "--frozen-bn-eps applies to safetensors weights; a checkpoint carries its own"
                );
            }
            let t = load_trained_model(path)?;
            LoadedModel {
                model: t.model,
                classes: t.metadata.categories,
                unnamed_classes: false,
                min_size: t.config.data.min_size,
                max_size: t.config.data.max_size,
                batch_size: t.config.data.eval_batch_size,
                about: format!("model of {} (step {})", path.display(), t.step),
                notes: Vec::new(),
            }
        };
        let i = &mut loaded.model.config.inference;
        if let Some(v) = self.score_threshold {
            i.score_threshold = v;
        }
        if let Some(v) = self.candidates_per_level {
            i.candidates_per_level = v as usize;
        }
        if let Some(v) = self.nms_iou {
            i.nms_iou = v;
        }
        if let Some(v) = self.detections_per_image {
            i.detections_per_image = v as usize;
        }
        Ok(loaded)
    }
}
