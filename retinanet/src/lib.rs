//! # focal-retinanet
//!
//! RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017) on focal's
//! engine, one concept per file in the paper's terms:
//!
//! - [`config`]: every choice, with the defaults of the specification;
//! - [`boxes`]: xyxy boxes and IoU;
//! - [`anchors`]: the anchors of P3..P7 and the feature-map sizes;
//! - [`box_coder`]: boxes as (dx, dy, dw, dh) relative to an anchor;
//! - [`matcher`]: which anchor learns which object (IoU thresholds, low-quality matches);
//! - [`targets`]: the per-anchor class and box targets of a batch;
//! - [`loss`]: the focal loss and the box loss, normalised by the positive anchors;
//! - [`nms`]: class-wise non-maximum suppression;
//! - [`postprocess`]: from head outputs to detections in original pixels;
//! - [`resnet`], [`fpn`], [`head`]: the network; [`model`]: the detector as a whole;
//! - [`import`]: torchvision's weights, with the 91 → 80 COCO class remap;
//! - [`train`]: a whole training run (configuration, loop, checkpoints, evaluation).

pub mod anchors;
pub mod box_coder;
pub mod boxes;
pub mod config;
pub mod fpn;
pub mod head;
pub mod import;
pub mod loss;
pub mod matcher;
pub mod model;
pub mod nms;
pub mod postprocess;
pub mod resnet;
pub mod targets;
pub mod train;

pub use anchors::Anchors;
pub use config::{
    AnchorConfig, BackboneNorm, BoxLoss, Depth, InferenceConfig, LossConfig, MatcherConfig,
    ModelConfig, P6Input, RetinaNetConfig,
};
pub use import::load_torchvision;
pub use loss::Losses;
pub use model::{HeadOutputs, RetinaNet};
pub use postprocess::{Detections, ImageSize};
pub use targets::{BatchTargets, GroundTruth};
