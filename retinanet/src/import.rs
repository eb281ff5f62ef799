//! Loading torchvision's RetinaNet weights.
//!
//! focal's parameter names are torchvision's, so a file written by
//! `safetensors.torch.save_file(model.state_dict(), path)` from
//! `torchvision.models.detection.retinanet_resnet50_fpn` loads one to one into a model
//! built with [`crate::RetinaNetConfig::torchvision_resnet50_fpn`] (ResNet-50, frozen
//! BatchNorm, P6 from P5).
//!
//! **Class remap.** torchvision's COCO head has 91 outputs per anchor, indexed by the COCO
//! category id (0 is background, and 11 ids are unused). focal numbers the 80 categories
//! 0..79 in ascending id order. When the file's class output has A·91 rows and the model
//! A·80, row a·80 + k of focal's `cls_logits` (weight and bias) is taken from row
//! a·91 + id_k of the file, id_k being the k-th COCO category id.

use std::path::Path;

use focal_engine::Tensor;
use focal_nn::{import_safetensors, ImportOptions, ImportReport};

use crate::config::{AnchorStyle, BackboneName, BackboneNorm, P6Input, RetinaNetConfig};
use crate::model::RetinaNet;

/// The 80 COCO category ids in ascending order: focal's label k is `COCO_IDS[k]`.
pub const COCO_IDS: [usize; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

/// torchvision's class-output width for COCO (background + 90 ids).
pub const TORCHVISION_COCO_CLASSES: usize = 91;

impl RetinaNetConfig {
    /// The architecture of torchvision's `retinanet_resnet50_fpn` (v1): ResNet-50 with
    /// frozen BatchNorm (ε = 0, as torchvision sets it for its COCO weights), P6 from P5,
    /// torchvision's anchors ([`AnchorStyle::Torchvision`]), 80 classes; the rest as
    /// focal's defaults, which are torchvision's (score 0.05, 1000 candidates per level,
    /// NMS 0.5, 100 detections).
    pub fn torchvision_resnet50_fpn() -> RetinaNetConfig {
        let mut c = RetinaNetConfig::default();
        c.model.depth = BackboneName::RESNET50;
        c.model.norm = BackboneNorm::FrozenBatchNorm;
        c.model.p6_input = P6Input::P5;
        c.model.frozen_bn_eps = 0.0;
        c.anchors.style = AnchorStyle::Torchvision;
        c
    }
}

/// Rows `a·91 + COCO_IDS[k]` of a (A·91, ...) tensor, in the order `a·80 + k`.
pub fn remap_coco_rows(t: &Tensor, anchors_per_cell: usize) -> Tensor {
    let mut rows = Vec::with_capacity(anchors_per_cell * COCO_IDS.len());
    for a in 0..anchors_per_cell {
        for &id in &COCO_IDS {
            rows.push(a * TORCHVISION_COCO_CLASSES + id);
        }
    }
    t.detach().index_select(0, &rows)
}

/// Loads a safetensors state dict of torchvision's RetinaNet into `model`, strictly
/// (every tensor must find its place and every parameter must be filled, or nothing is
/// loaded and the error lists the differences), remapping 91 COCO classes to 80.
pub fn load_torchvision(
    model: &mut RetinaNet,
    path: &Path,
) -> Result<ImportReport, focal_nn::Error> {
    let a = model.config.anchors.anchors_per_cell();
    let k = model.config.model.num_classes;
    let opts = ImportOptions::new()
        .transform(crate::pretrained::coco_remap_transform(a, k))
        .strict(true);
    import_safetensors(model, path, &opts)
}
