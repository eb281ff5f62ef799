//! Starting a run from pretrained weights (`focal train --init FILE.safetensors`).
//!
//! Two kinds of file are understood, told apart by their tensor names:
//!
//! - a RetinaNet state dict (names `backbone.body.*`, `backbone.fpn.*`, `head.*`), such as
//!   torchvision's `retinanet_resnet50_fpn` saved with `safetensors.torch.save_file`. When
//!   its class output has torchvision's 91 COCO ids and the model 80 classes, the rows are
//!   remapped to focal's contiguous labels ([`crate::import::remap_coco_rows`]);
//! - an ImageNet ResNet (names `conv1.weight`, `layer1.0.conv1.weight`, ..., `fc.*`), such
//!   as torchvision's `resnet50(weights=...)`: its tensors go to `backbone.body.*`, the
//!   classifier `fc` is left out.
//!
//! Whatever fits (same name and shape) is loaded; the rest keeps its fresh initialisation
//! and is listed in the report (e.g. a class output for another number of classes). A
//! file of which nothing fits is an error.

use std::path::Path;

use focal_engine::Tensor;
use focal_nn::{import_safetensors, read_safetensors, ImportOptions, ImportReport};

use crate::error::Error;
use crate::import::{remap_coco_rows, COCO_IDS, TORCHVISION_COCO_CLASSES};
use crate::model::RetinaNet;

/// Loads what fits of `path` into `model`; see the module documentation.
pub fn init_from_safetensors(model: &mut RetinaNet, path: &Path) -> Result<ImportReport, Error> {
    let names: Vec<String> = read_safetensors(path)?
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    let is_detector = names
        .iter()
        .any(|n| n.starts_with("backbone.") || n.starts_with("head."));
    let a = model.config.anchors.anchors_per_cell();
    let k = model.config.model.num_classes;
    let remap = move |name: &str, t: Tensor, _shape: &[usize]| -> focal_nn::Result<Tensor> {
        let is_cls = name == "head.classification_head.cls_logits.weight"
            || name == "head.classification_head.cls_logits.bias";
        if is_cls && k == COCO_IDS.len() && t.dim(0) == a * TORCHVISION_COCO_CLASSES {
            return Ok(remap_coco_rows(&t, a));
        }
        Ok(t)
    };
    let opts = if is_detector {
        ImportOptions::new().transform(remap)
    } else {
        ImportOptions::new()
            .rename(|n: &str| (!n.starts_with("fc.")).then(|| format!("backbone.body.{n}")))
    };
    let report = import_safetensors(model, path, &opts)?;
    if report.loaded.is_empty() {
        let why = format!(
            "no tensor fits the model ({})",
            report.problems().join("; ")
        );
        return Err(focal_nn::Error::in_weights(path, focal_nn::Error::Invalid(why)).into());
    }
    Ok(report)
}
