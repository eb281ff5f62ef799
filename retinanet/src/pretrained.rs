//! Pretrained weights in safetensors files: what a file holds, the RetinaNet it
//! describes, loading it for `focal eval` and `focal detect`, and writing a trained model
//! back out under torchvision's names (`focal weights export`).
//!
//! Three kinds of file are told apart by their tensor names and metadata ([`WeightsKind`]):
//!
//! - **a focal export**, written by [`export_weights`]: torchvision's names, and focal's
//!   whole training configuration and class names in the file's metadata, so it rebuilds
//!   exactly the model that was exported;
//! - **a RetinaNet state dict under torchvision's names** (`backbone.body.*`,
//!   `backbone.fpn.*`, `head.*`), such as `torchvision.models.detection.
//!   retinanet_resnet50_fpn(weights="COCO_V1").state_dict()` saved with
//!   `safetensors.torch.save_file`. Its architecture is read off the tensors
//!   ([`architecture`]): the backbone (every registered backbone is compared name by name
//!   and shape by shape), its norm (running statistics: frozen BatchNorm; none: GroupNorm),
//!   the FPN width, whether P6 is computed from P5 or C5 (the input channels of
//!   `extra_blocks.p6`), the depth, width and GroupNorm of the head towers, the anchors per
//!   cell and the classes. What the tensors cannot tell is torchvision's default:
//!   torchvision's anchors ([`AnchorStyle::Torchvision`]), score threshold 0.05, 1000
//!   candidates per level, NMS 0.5, 300 detections, and ε of frozen BatchNorm 0 for
//!   torchvision's v1 layout (ResNet-50, P6 from P5, no GroupNorm in the head: the value
//!   torchvision's `retinanet_resnet50_fpn` sets for its COCO weights) and 1e-5 otherwise.
//!   torchvision's COCO head has 91 outputs per anchor (background and 11 unused ids
//!   included); focal keeps the 80 categories' rows ([`crate::import::remap_coco_rows`])
//!   and knows their names ([`COCO_NAMES`]);
//! - **an ImageNet ResNet** (`conv1.*`, `layer1.*` .. `layer4.*`, `fc.*`): a backbone
//!   only, to start training from (`focal train --init`, `crate::train::init`).
//!
//! Loading for inference is strict: every tensor must find its parameter with the right
//! shape and every parameter must be filled, or nothing is loaded and the error lists the
//! tensors that do not fit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use focal_engine::{Rng, Tensor};
use focal_nn::init::without_random_init;
use focal_nn::{
    for_each_named, import_safetensors, read_safetensors_info, ImportOptions, ImportReport, Module,
    Slot, TensorInfo,
};

use crate::backbone::{BackboneOptions, BACKBONES};
use crate::config::{AnchorStyle, BackboneName, BackboneNorm, P6Input, RetinaNetConfig};
use crate::error::{Error, Result};
use crate::import::{remap_coco_rows, COCO_IDS, TORCHVISION_COCO_CLASSES};
use crate::model::RetinaNet;
use crate::train::{ClassName, TrainConfig};

/// The 80 COCO category names, in ascending id order: focal's label k is `COCO_NAMES[k]`
/// with id [`COCO_IDS`]`[k]`.
pub const COCO_NAMES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// COCO's 80 categories with their ids and names, in label order.
pub fn coco_classes() -> Vec<ClassName> {
    COCO_IDS
        .iter()
        .zip(COCO_NAMES)
        .map(|(&id, name)| ClassName {
            id: id as i64,
            name: name.to_string(),
        })
        .collect()
}

/// Whether `classes` are COCO categories (each id one of COCO's, with COCO's name).
pub fn are_coco_categories(classes: &[ClassName]) -> bool {
    classes.iter().all(|c| {
        COCO_IDS
            .iter()
            .position(|&id| id as i64 == c.id)
            .is_some_and(|k| COCO_NAMES[k] == c.name)
    })
}

/// Metadata key of a focal export: the training configuration (TOML).
pub const META_CONFIG: &str = "focal.config";
/// Metadata key of a focal export: the class names in label order (JSON).
pub const META_CLASSES: &str = "focal.classes";

/// What a safetensors file of weights holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsKind {
    /// Written by `focal weights export` ([`export_weights`]).
    FocalExport,
    /// A RetinaNet state dict under torchvision's names.
    Detector,
    /// An ImageNet ResNet (a backbone only).
    Backbone,
}

impl WeightsKind {
    pub fn describe(self) -> &'static str {
        match self {
            WeightsKind::FocalExport => "a focal export (torchvision names, focal's configuration)",
            WeightsKind::Detector => "a RetinaNet state dict under torchvision's names",
            WeightsKind::Backbone => "an ImageNet ResNet (a backbone only)",
        }
    }
}

/// A safetensors file's table of contents and kind.
#[derive(Clone, Debug)]
pub struct WeightsFile {
    pub path: PathBuf,
    /// Every tensor, in name order.
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
    pub kind: WeightsKind,
    shapes: BTreeMap<String, Vec<usize>>,
}

/// An error about the weights file `path`: "weights PATH: " and the sentence.
pub fn weights_error(path: &Path, message: impl Into<String>) -> Error {
    focal_nn::Error::in_weights(path, focal_nn::Error::Invalid(message.into())).into()
}

impl WeightsFile {
    /// Reads the table of contents of `path` (the whole file is checked) and tells its
    /// kind; a file that is none of the three is an error listing some of its tensors.
    pub fn read(path: &Path) -> Result<WeightsFile> {
        let (tensors, metadata) = read_safetensors_info(path)?;
        let shapes: BTreeMap<String, Vec<usize>> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        let has = |p: &str| tensors.iter().any(|t| t.name.starts_with(p));
        let kind = if metadata.contains_key(META_CONFIG) {
            WeightsKind::FocalExport
        } else if has("backbone.") || has("head.") {
            WeightsKind::Detector
        } else if shapes.contains_key("conv1.weight") && has("layer1.") {
            WeightsKind::Backbone
        } else {
            return Err(weights_error(
                path,
                format!(
                    "no tensor fits a RetinaNet: the file is neither a RetinaNet state dict \
                     (tensors backbone.body.*, backbone.fpn.*, head.*) nor an ImageNet ResNet \
                     (conv1.weight, layer1.*, ...); it holds {}",
                    list_tensors(&tensors, "", 8)
                ),
            ));
        };
        Ok(WeightsFile {
            path: path.to_path_buf(),
            tensors,
            metadata,
            kind,
            shapes,
        })
    }

    /// The shape of tensor `name`, if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// The shape of `name`, or an error naming what was looked for and listing the
    /// tensors of the file under `context` (a name prefix).
    fn need(&self, name: &str, why: &str, context: &str) -> Result<&[usize]> {
        self.shape(name).ok_or_else(|| {
            weights_error(
                &self.path,
                format!(
                    "no tensor {name} ({why}); the file's {} are {}",
                    if context.is_empty() {
                        "tensors".to_string()
                    } else {
                        format!("{context}* tensors")
                    },
                    list_tensors(&self.tensors, context, 12)
                ),
            )
        })
    }

    /// The focal export's classes and configuration, from the metadata.
    fn export_metadata(&self) -> Result<(TrainConfig, Vec<ClassName>)> {
        let text = &self.metadata[META_CONFIG];
        let config = TrainConfig::from_toml(text).map_err(|e| {
            Error::context(
                format!(
                    "weights {}: its {META_CONFIG} metadata is not a focal training configuration",
                    self.path.display()
                ),
                e,
            )
        })?;
        let classes: Vec<ClassName> = match self.metadata.get(META_CLASSES) {
            Some(json) => serde_json::from_str(json).map_err(|e| Error::Json {
                what: format!(
                    "weights {}: its {META_CLASSES} metadata is not a list of classes",
                    self.path.display()
                ),
                source: e,
            })?,
            None => {
                return Err(weights_error(
                    &self.path,
                    format!("it has {META_CONFIG} but no {META_CLASSES} metadata"),
                ))
            }
        };
        if classes.len() != config.model.num_classes {
            return Err(weights_error(
                &self.path,
                format!(
                    "its metadata names {} classes but its configuration has {}",
                    classes.len(),
                    config.model.num_classes
                ),
            ));
        }
        Ok((config, classes))
    }
}

/// "a [1, 2], b [3] and 5 more" for the tensors whose names start with `prefix`.
fn list_tensors(tensors: &[TensorInfo], prefix: &str, at_most: usize) -> String {
    let matching: Vec<&TensorInfo> = tensors
        .iter()
        .filter(|t| t.name.starts_with(prefix))
        .collect();
    if matching.is_empty() {
        return "none".into();
    }
    let mut parts: Vec<String> = matching
        .iter()
        .take(at_most)
        .map(|t| format!("{} {:?}", t.name, t.shape))
        .collect();
    if matching.len() > at_most {
        parts.push(format!("and {} more", matching.len() - at_most));
    }
    parts.join(", ")
}

/// The classes of a model's labels, as a weights file gives them.
#[derive(Clone, Debug, PartialEq)]
pub enum Classes {
    /// torchvision's 91 COCO outputs per anchor, read as COCO's 80 categories.
    CocoFrom91,
    /// Named classes in label order (a focal export).
    Named(Vec<ClassName>),
    /// This many outputs per anchor without names: label k is "class k".
    Unnamed(usize),
}

impl Classes {
    /// The classes in label order: COCO's, the named ones, or "class 0", "class 1", ...
    /// with ids 1, 2, ... (to be matched to a dataset by position).
    pub fn names(&self) -> Vec<ClassName> {
        match self {
            Classes::CocoFrom91 => coco_classes(),
            Classes::Named(c) => c.clone(),
            Classes::Unnamed(k) => (0..*k)
                .map(|i| ClassName {
                    id: i as i64 + 1,
                    name: format!("class {i}"),
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Classes::CocoFrom91 => COCO_IDS.len(),
            Classes::Named(c) => c.len(),
            Classes::Unnamed(k) => *k,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Choices the tensors of a file cannot make.
#[derive(Clone, Debug, Default)]
pub struct ArchitectureOptions {
    /// ε of frozen BatchNorm, instead of the rule in the module documentation.
    pub frozen_bn_eps: Option<f32>,
}

/// The detector a weights file describes.
#[derive(Clone, Debug)]
pub struct Architecture {
    pub config: RetinaNetConfig,
    pub classes: Classes,
    /// How each choice was made, one line each ("backbone resnet50 (backbone.body.*)").
    pub notes: Vec<String>,
    /// A focal export's training configuration (its image sizes, ...).
    pub train_config: Option<TrainConfig>,
}

/// The (name, shape) list of a registered backbone built with `norm`, relative to the
/// backbone (`conv1.weight`, ...), counters left out.
fn backbone_entries(
    spec: &crate::backbone::BackboneSpec,
    norm: BackboneNorm,
) -> (Vec<(String, Vec<usize>)>, [usize; 3]) {
    let options = BackboneOptions {
        norm,
        frozen_bn_eps: 1e-5,
    };
    // Only the names and shapes are read: no random values are drawn.
    let mut b = without_random_init(|| (spec.build)(&options, &mut Rng::new(0)));
    let mut out = Vec::new();
    for_each_named(b.as_mut(), |name, slot| match slot {
        Slot::Param(p) => out.push((name.to_string(), p.value.shape().to_vec())),
        Slot::Buffer(t) => out.push((name.to_string(), t.shape().to_vec())),
        Slot::Counter(_) => {}
    });
    out.sort();
    (out, b.out_channels())
}

/// The registered backbone whose tensors the file holds under `prefix` (integer
/// counters aside), with its norm and C3-C5 channels.
pub fn infer_backbone(
    file: &WeightsFile,
    prefix: &str,
) -> Result<(BackboneName, BackboneNorm, [usize; 3])> {
    let stem = file.need(
        &format!("{prefix}conv1.weight"),
        "the stem convolution of a ResNet",
        prefix,
    )?;
    let norm = if file.has(&format!("{prefix}bn1.running_mean")) {
        BackboneNorm::FrozenBatchNorm
    } else if file.has(&format!("{prefix}bn1.weight")) {
        BackboneNorm::GroupNorm
    } else {
        return Err(weights_error(
            &file.path,
            format!("no {prefix}bn1.weight: the stem's norm layer is missing"),
        ));
    };
    let mut in_file: Vec<(String, Vec<usize>)> = file
        .tensors
        .iter()
        .filter(|t| t.name.starts_with(prefix) && !t.name.ends_with("num_batches_tracked"))
        .filter(|t| !(prefix.is_empty() && t.name.starts_with("fc.")))
        .map(|t| (t.name[prefix.len()..].to_string(), t.shape.clone()))
        .collect();
    in_file.sort();
    for spec in BACKBONES {
        let (entries, channels) = backbone_entries(spec, norm);
        if entries == in_file {
            return Ok((BackboneName::parse(spec.name)?, norm, channels));
        }
    }
    let blocks: Vec<usize> = (1..=4)
        .map(|l| {
            (0..)
                .take_while(|b| file.has(&format!("{prefix}layer{l}.{b}.conv1.weight")))
                .count()
        })
        .collect();
    let bottleneck = file.has(&format!("{prefix}layer1.0.conv3.weight"));
    Err(weights_error(
        &file.path,
        format!(
            "its backbone ({prefix}*: stem {:?}, {} blocks {:?}, {} tensors) matches none of \
             focal's backbones ({}) with {}",
            stem,
            if bottleneck { "bottleneck" } else { "basic" },
            blocks,
            in_file.len(),
            crate::backbone::names(),
            match norm {
                BackboneNorm::GroupNorm => "GroupNorm",
                _ => "BatchNorm",
            }
        ),
    ))
}

/// The detector the tensors of `file` describe (see the module documentation for what
/// is read from the tensors and what is a default).
pub fn architecture(file: &WeightsFile, opts: &ArchitectureOptions) -> Result<Architecture> {
    match file.kind {
        WeightsKind::FocalExport => {
            let (train_config, classes) = file.export_metadata()?;
            let mut config = train_config.retinanet();
            let mut notes = vec![format!(
                "everything from the file's focal configuration: backbone {}, {} classes",
                config.model.depth.name(),
                classes.len()
            )];
            if let Some(eps) = opts.frozen_bn_eps {
                config.model.frozen_bn_eps = eps;
                notes.push(format!("ε of frozen BatchNorm {eps} (--frozen-bn-eps)"));
            }
            Ok(Architecture {
                config,
                classes: Classes::Named(classes),
                notes,
                train_config: Some(train_config),
            })
        }
        WeightsKind::Detector => detector_architecture(file, opts),
        WeightsKind::Backbone => Err(weights_error(
            &file.path,
            "it holds an ImageNet backbone, not a detector: start a training run from it \
             (focal train --init FILE --data DIR), then evaluate the run's checkpoint",
        )),
    }
}

fn detector_architecture(file: &WeightsFile, opts: &ArchitectureOptions) -> Result<Architecture> {
    let mut notes = Vec::new();
    let (depth, norm, c) = infer_backbone(file, "backbone.body.")?;
    notes.push(format!(
        "backbone {} with {} (backbone.body.*)",
        depth.name(),
        match norm {
            BackboneNorm::GroupNorm => "GroupNorm",
            _ => "frozen BatchNorm (the file has running statistics)",
        }
    ));
    let fpn = "backbone.fpn.";
    let lateral = file.need(
        "backbone.fpn.inner_blocks.0.0.weight",
        "the FPN's first lateral convolution",
        fpn,
    )?;
    let f = lateral[0];
    let p6 = file.need(
        "backbone.fpn.extra_blocks.p6.weight",
        "the P6 convolution of RetinaNet's FPN",
        fpn,
    )?;
    // torchvision's LastLevelP6P7 computes P6 from P5 when its input and output widths
    // agree, from C5 otherwise.
    let p6_input = if p6.len() == 4 && p6[1] == f {
        P6Input::P5
    } else if p6.len() == 4 && p6[1] == c[2] {
        P6Input::C5
    } else {
        return Err(weights_error(
            &file.path,
            format!(
                "backbone.fpn.extra_blocks.p6.weight has shape {p6:?}: its input must be \
                 P5 ({f} channels) or C5 ({} channels)",
                c[2]
            ),
        ));
    };
    notes.push(format!(
        "FPN {f} channels, P6 from {} (backbone.fpn.extra_blocks.p6.weight {p6:?})",
        match p6_input {
            P6Input::P5 => "P5",
            P6Input::C5 => "C5",
        }
    ));
    let head = "head.";
    let depth_of = |subnet: &str| {
        (0..)
            .take_while(|i| file.has(&format!("head.{subnet}.conv.{i}.0.weight")))
            .count()
    };
    let head_depth = depth_of("classification_head");
    if depth_of("regression_head") != head_depth {
        return Err(weights_error(
            &file.path,
            format!(
                "the class tower has {head_depth} layers but the box tower {}: {}",
                depth_of("regression_head"),
                list_tensors(&file.tensors, "head.regression_head.conv.", 12)
            ),
        ));
    }
    let head_width = match head_depth {
        0 => f,
        _ => file.need(
            "head.classification_head.conv.0.0.weight",
            "the first conv of the class tower",
            head,
        )?[0],
    };
    let head_norm = file.has("head.classification_head.conv.0.1.weight");
    notes.push(format!(
        "head towers {head_depth} × {head_width} channels, {} (head.*.conv.*)",
        if head_norm {
            "GroupNorm(32)"
        } else {
            "no norm"
        }
    ));
    let reg = file.need(
        "head.regression_head.bbox_reg.weight",
        "the box output of the head",
        head,
    )?;
    let cls = file.need(
        "head.classification_head.cls_logits.weight",
        "the class output of the head",
        head,
    )?;
    let mut config = RetinaNetConfig::default();
    let a = config.anchors.anchors_per_cell();
    if reg[0] != 4 * a {
        return Err(weights_error(
            &file.path,
            format!(
                "head.regression_head.bbox_reg.weight has {} output rows = {} anchors per \
                 cell × 4, but torchvision's RetinaNet has {a} (3 sizes × 3 aspect ratios), \
                 the only layout focal reads from a torchvision file",
                reg[0],
                reg[0] as f64 / 4.0
            ),
        ));
    }
    if cls[0] == 0 || cls[0] % a != 0 {
        return Err(weights_error(
            &file.path,
            format!(
                "head.classification_head.cls_logits.weight has {} output rows, not a \
                 multiple of the {a} anchors per cell",
                cls[0]
            ),
        ));
    }
    let k_file = cls[0] / a;
    let classes = if k_file == TORCHVISION_COCO_CLASSES {
        notes.push(format!(
            "{k_file} classes: torchvision's COCO ids, read as COCO's 80 categories (names \
             built in; the background and the 11 unused ids are dropped)"
        ));
        Classes::CocoFrom91
    } else {
        notes.push(format!(
            "{k_file} classes without names (label k is \"class k\"; matched to a \
             dataset's categories by position)"
        ));
        Classes::Unnamed(k_file)
    };
    let m = &mut config.model;
    m.depth = depth;
    m.norm = norm;
    m.fpn_channels = f;
    m.p6_input = p6_input;
    m.head_width = head_width;
    m.head_depth = head_depth;
    m.head_norm = head_norm;
    m.num_classes = classes.len();
    let v1_layout = depth == BackboneName::RESNET50
        && norm == BackboneNorm::FrozenBatchNorm
        && p6_input == P6Input::P5
        && !head_norm;
    if norm == BackboneNorm::FrozenBatchNorm {
        m.frozen_bn_eps = match opts.frozen_bn_eps {
            Some(eps) => {
                notes.push(format!("ε of frozen BatchNorm {eps} (--frozen-bn-eps)"));
                eps
            }
            None if v1_layout => {
                notes.push(
                    "ε of frozen BatchNorm 0, as torchvision's retinanet_resnet50_fpn sets it \
                     for its COCO weights (--frozen-bn-eps to change)"
                        .into(),
                );
                0.0
            }
            None => {
                notes.push(
                    "ε of frozen BatchNorm 1e-5, torchvision's default (--frozen-bn-eps to \
                     change)"
                        .into(),
                );
                1e-5
            }
        };
    }
    config.anchors.style = AnchorStyle::Torchvision;
    config.inference.detections_per_image = TORCHVISION_DETECTIONS_PER_IMAGE;
    notes.push(format!(
        "torchvision's defaults for the rest: its anchors (32-512, 3 scales, ratios 0.5, 1, \
         2, rounded as torchvision rounds them), score 0.05, 1000 candidates per level, NMS \
         0.5, {TORCHVISION_DETECTIONS_PER_IMAGE} detections per image"
    ));
    config.validate()?;
    Ok(Architecture {
        config,
        classes,
        notes,
        train_config: None,
    })
}

/// torchvision's RetinaNet keeps 300 detections per image (COCO's AP reads the best 100
/// of them, so the AP is the same as with 100).
pub const TORCHVISION_DETECTIONS_PER_IMAGE: usize = 300;

/// The class rows transform: a file output with 91 rows per anchor loads into an 80-class
/// model through [`remap_coco_rows`]; anything else is left to the shape check.
pub(crate) fn coco_remap_transform(
    a: usize,
    k: usize,
) -> impl Fn(&str, Tensor, &[usize]) -> focal_nn::Result<Tensor> {
    move |name: &str, t: Tensor, _shape: &[usize]| {
        let is_cls = name == "head.classification_head.cls_logits.weight"
            || name == "head.classification_head.cls_logits.bias";
        if is_cls && k == COCO_IDS.len() && t.dim(0) == a * TORCHVISION_COCO_CLASSES {
            return Ok(remap_coco_rows(&t, a));
        }
        Ok(t)
    }
}

/// A model built from a weights file, ready for inference.
pub struct LoadedWeights {
    /// In evaluation mode.
    pub model: RetinaNet,
    /// The model's classes in label order.
    pub classes: Vec<ClassName>,
    pub architecture: Architecture,
    pub kind: WeightsKind,
    pub report: ImportReport,
}

/// Builds the detector `path` describes and loads it strictly (see the module
/// documentation).
pub fn load_weights(path: &Path, opts: &ArchitectureOptions) -> Result<LoadedWeights> {
    let file = WeightsFile::read(path)?;
    let architecture = architecture(&file, opts)?;
    // The strict load below fills every value, so none is drawn first.
    let mut model = without_random_init(|| RetinaNet::new(&architecture.config, &mut Rng::new(0)))?;
    let a = architecture.config.anchors.anchors_per_cell();
    let k = architecture.config.model.num_classes;
    let import = ImportOptions::new()
        .transform(coco_remap_transform(a, k))
        .strict(true);
    let report = import_safetensors(&mut model, path, &import)?;
    model.set_train(false);
    Ok(LoadedWeights {
        model,
        classes: architecture.classes.names(),
        kind: file.kind,
        architecture,
        report,
    })
}

/// How [`export_weights`] laid out the class output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportedClasses {
    /// COCO's 80 categories widened to torchvision's 91 rows per anchor (label = COCO id).
    Coco91,
    /// One row per class and anchor, as focal holds them.
    AsTrained,
}

/// What [`export_weights`] wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub tensors: usize,
    pub values: usize,
    pub classes: ExportedClasses,
}

/// Writes `model` (trained with `config`, labels `classes`) to `path` as a safetensors
/// state dict under torchvision's names, atomically, with the configuration and the class
/// names in the metadata ([`META_CONFIG`], [`META_CLASSES`]) so that focal rebuilds it
/// exactly.
///
/// When the classes are COCO's 80 categories (ids [`COCO_IDS`]), the class output is
/// widened to torchvision's 91 rows per anchor (row a·91 + id), so the file loads with
/// `load_state_dict(strict=True)` into torchvision's default COCO RetinaNet
/// (`num_classes=91`) and its labels are COCO ids; the 11 rows of unused ids and the
/// background row get weight 0 and the prior bias −ln((1 − π)/π), a constant score π
/// (0.01) below any useful threshold. Otherwise the K rows are written as they are (build
/// torchvision's model with `num_classes=K`).
pub fn export_weights(
    model: &RetinaNet,
    classes: &[ClassName],
    config: &TrainConfig,
    path: &Path,
) -> Result<ExportSummary> {
    if classes.len() != model.config.model.num_classes {
        return Err(Error::invalid(format!(
            "{} class names for a model of {} classes",
            classes.len(),
            model.config.model.num_classes
        )));
    }
    let mut out = model.clone();
    let a = model.config.anchors.anchors_per_cell();
    let coco = classes.len() == COCO_IDS.len()
        && classes
            .iter()
            .zip(COCO_IDS)
            .all(|(c, id)| c.id == id as i64);
    if coco {
        let output = &mut out.head.classification.output;
        let prior = focal_nn::init::prior_probability_bias(model.config.model.prior_probability);
        output.weight.value = widen_to_91(&output.weight.value, a, 0.0);
        if let Some(bias) = &mut output.bias {
            bias.value = widen_to_91(&bias.value, a, prior);
        }
    }
    let mut metadata = HashMap::new();
    metadata.insert(META_CONFIG.to_string(), config.to_toml());
    metadata.insert(
        META_CLASSES.to_string(),
        serde_json::to_string(classes).expect("class names serialise"),
    );
    let mut tensors = 0;
    let mut values = 0;
    for_each_named(&mut out, |_, slot| {
        tensors += 1;
        values += match slot {
            Slot::Param(p) => p.value.numel(),
            Slot::Buffer(t) => t.numel(),
            Slot::Counter(_) => 1,
        };
    });
    focal_nn::export_safetensors(&mut out as &mut dyn Module, path, Some(metadata))?;
    Ok(ExportSummary {
        tensors,
        values,
        classes: if coco {
            ExportedClasses::Coco91
        } else {
            ExportedClasses::AsTrained
        },
    })
}

/// (A·80, ...) rows in focal's order to (A·91, ...) in torchvision's: row a·91 + id from
/// row a·80 + k where id = COCO_IDS[k]; the other rows are `fill`.
fn widen_to_91(t: &Tensor, a: usize, fill: f32) -> Tensor {
    let row: usize = t.shape()[1..].iter().product();
    let src = t.data();
    let mut v = vec![fill; a * TORCHVISION_COCO_CLASSES * row];
    for anchor in 0..a {
        for (k, &id) in COCO_IDS.iter().enumerate() {
            let from = (anchor * COCO_IDS.len() + k) * row;
            let to = (anchor * TORCHVISION_COCO_CLASSES + id) * row;
            v[to..to + row].copy_from_slice(&src[from..from + row]);
        }
    }
    let mut shape = t.shape().to_vec();
    shape[0] = a * TORCHVISION_COCO_CLASSES;
    Tensor::from_vec(&shape, v)
}

/// One tensor of a file and what focal does with it.
#[derive(Clone, Debug)]
pub struct InspectRow {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// The focal parameter or buffer it loads into (with a note), or why not.
    pub target: String,
    /// Whether it fits (loads as it is, or is deliberately skipped).
    pub fits: bool,
}

/// What `focal weights inspect` shows.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub kind: WeightsKind,
    /// The architecture read off the tensors, or why it could not be.
    pub architecture: std::result::Result<Architecture, String>,
    pub rows: Vec<InspectRow>,
    /// focal parameters the file does not fill.
    pub missing: Vec<String>,
    /// One sentence per problem (empty: the file loads as it is).
    pub problems: Vec<String>,
    /// What the file is good for, in a sentence.
    pub verdict: String,
}

/// Reads `path` and tells, tensor by tensor, where it goes in the model it describes (an
/// ImageNet backbone: in the fine-tuning preset's detector, `crate::train::TrainConfig::
/// coco_finetune`), and what is missing or unexpected. An unreadable file is an error;
/// one that does not fit is an [`Inspection`] with problems.
pub fn inspect(path: &Path, opts: &ArchitectureOptions) -> Result<Inspection> {
    let file = WeightsFile::read(path)?;
    let arch = match file.kind {
        WeightsKind::Backbone => backbone_detector(&file, opts),
        _ => architecture(&file, opts),
    };
    let arch = arch.map_err(|e| e.chain());
    let mut rows: Vec<InspectRow> = Vec::new();
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    match &arch {
        Err(why) => {
            problems.push(why.clone());
            rows = file
                .tensors
                .iter()
                .map(|t| InspectRow {
                    name: t.name.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                    target: "?".into(),
                    fits: false,
                })
                .collect();
        }
        Ok(arch) => {
            let mut model = without_random_init(|| RetinaNet::new(&arch.config, &mut Rng::new(0)))?;
            let mut kinds: HashMap<String, &'static str> = HashMap::new();
            for_each_named(&mut model, |name, slot| {
                let kind = match slot {
                    Slot::Param(p) if p.frozen => "frozen",
                    Slot::Param(_) => "trains",
                    Slot::Buffer(_) => "buffer",
                    Slot::Counter(_) => "counter",
                };
                kinds.insert(name.to_string(), kind);
            });
            let a = arch.config.anchors.anchors_per_cell();
            let k = arch.config.model.num_classes;
            let backbone_only = file.kind == WeightsKind::Backbone;
            let rename = move |n: &str| -> Option<String> {
                if !backbone_only {
                    Some(n.to_string())
                } else if n.starts_with("fc.") {
                    None
                } else {
                    Some(format!("backbone.body.{n}"))
                }
            };
            let import = ImportOptions::new()
                .rename(rename)
                .transform(coco_remap_transform(a, k));
            let report = import_safetensors(&mut model, path, &import)?;
            for t in &file.tensors {
                let (target, fits) = if let Some((_, why)) =
                    report.skipped.iter().find(|(n, _)| n == &t.name)
                {
                    (format!("not loaded: {why}"), true)
                } else if report.unexpected.contains(&t.name) {
                    (
                        "no focal parameter of this name (unexpected)".to_string(),
                        false,
                    )
                } else {
                    let model_name = rename(&t.name).unwrap_or_default();
                    if let Some(m) = report
                        .shape_mismatches
                        .iter()
                        .find(|m| m.name == model_name)
                    {
                        (
                            format!(
                                "{model_name}: wrong shape, the model's is {:?}",
                                m.model_shape
                            ),
                            false,
                        )
                    } else {
                        let mut note = kinds.get(&model_name).copied().unwrap_or("").to_string();
                        if model_name.starts_with("head.classification_head.cls_logits")
                            && t.shape[0] == a * TORCHVISION_COCO_CLASSES
                            && k == COCO_IDS.len()
                        {
                            note.push_str(", the rows of COCO's 80 categories");
                        }
                        (format!("{model_name} ({note})"), true)
                    }
                };
                rows.push(InspectRow {
                    name: t.name.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                    target,
                    fits,
                });
            }
            missing = report.missing.clone();
            if backbone_only {
                // The FPN and the head are not in a backbone file: they start fresh.
                missing.retain(|n| n.starts_with("backbone.body."));
            }
            let mismatched: Vec<String> = report
                .shape_mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{} (file {:?}, model {:?})",
                        m.name, m.file_shape, m.model_shape
                    )
                })
                .collect();
            if !mismatched.is_empty() {
                problems.push(format!("wrong shapes: {}", mismatched.join(", ")));
            }
            if !missing.is_empty() {
                problems.push(format!("missing from the file: {}", missing.join(", ")));
            }
            if !report.unexpected.is_empty() {
                problems.push(format!(
                    "not in the model (unexpected): {}",
                    report.unexpected.join(", ")
                ));
            }
        }
    }
    let verdict = match (file.kind, problems.is_empty()) {
        (_, false) => "it does not fit: focal eval/detect would refuse it".to_string(),
        (WeightsKind::Backbone, true) => {
            "a complete backbone: start a fine-tuning run from it with focal train --init FILE \
             --data DIR (the FPN and head start fresh)"
                .to_string()
        }
        (_, true) => "it fits: focal eval/detect --weights FILE load it as it is, and focal \
                      train --init FILE starts from it"
            .to_string(),
    };
    Ok(Inspection {
        kind: file.kind,
        architecture: arch,
        rows,
        missing,
        problems,
        verdict,
    })
}

/// For an ImageNet backbone file: the fine-tuning preset's detector around that backbone
/// (torchvision's RetinaNet layout: frozen BatchNorm, F = 256, P6 from P5, 4-deep towers),
/// with the number of classes left at COCO's 80.
pub fn backbone_detector(file: &WeightsFile, opts: &ArchitectureOptions) -> Result<Architecture> {
    let (depth, norm, _) = infer_backbone(file, "")?;
    let mut config = RetinaNetConfig::default();
    config.model.depth = depth;
    config.model.norm = norm;
    config.model.p6_input = P6Input::P5;
    config.anchors.style = AnchorStyle::Torchvision;
    config.inference.detections_per_image = TORCHVISION_DETECTIONS_PER_IMAGE;
    if let Some(eps) = opts.frozen_bn_eps {
        config.model.frozen_bn_eps = eps;
    }
    Ok(Architecture {
        notes: vec![
            format!(
                "backbone {} with {} (conv1.*, layer1-4.*; fc.* is ImageNet's classifier, \
                 not used)",
                depth.name(),
                match norm {
                    BackboneNorm::GroupNorm => "GroupNorm",
                    _ => "frozen BatchNorm",
                }
            ),
            "FPN, P6 from P5 and the heads as torchvision's RetinaNet, freshly initialised".into(),
        ],
        config,
        classes: Classes::CocoFrom91,
        train_config: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_names_and_ids_line_up() {
        let c = coco_classes();
        assert_eq!(c.len(), 80);
        assert_eq!((c[0].id, c[0].name.as_str()), (1, "person"));
        assert_eq!((c[11].id, c[11].name.as_str()), (13, "stop sign"));
        assert_eq!((c[79].id, c[79].name.as_str()), (90, "toothbrush"));
        assert!(are_coco_categories(&c[3..9]));
        let mut wrong = c[..2].to_vec();
        wrong[1].name = "bike".into();
        assert!(!are_coco_categories(&wrong));
    }

    #[test]
    fn widening_to_91_rows_puts_each_class_at_its_id() {
        // Two anchors, one value per row: row a·80 + k holds 1000·a + k.
        let v: Vec<f32> = (0..2)
            .flat_map(|a| (0..80).map(move |k| (1000 * a + k) as f32))
            .collect();
        let t = Tensor::from_vec(&[160], v);
        let w = widen_to_91(&t, 2, -7.0);
        assert_eq!(w.shape(), &[182]);
        let d = w.data();
        assert_eq!(d[0], -7.0); // background
        assert_eq!(d[1], 0.0); // person, anchor 0
        assert_eq!(d[12], -7.0); // id 12 is unused
        assert_eq!(d[13], 11.0); // stop sign
        assert_eq!(d[91 + 90], 1079.0); // toothbrush, anchor 1
                                        // And back: the remap of the import undoes it.
        assert_eq!(remap_coco_rows(&w, 2).data(), t.data());
    }
}
