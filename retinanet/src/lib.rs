//! # focal-retinanet
//!
//! RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017) on focal's
//! engine, one concept per file in the paper's terms:
//!
//! - [`config`]: every choice, with the paper's defaults (docs/design-choices.md);
//! - [`boxes`]: xyxy boxes and IoU;
//! - [`anchors`]: the anchors of P3..P7 and the feature-map sizes;
//! - [`box_coder`]: boxes as (dx, dy, dw, dh) relative to an anchor;
//! - [`matcher`]: which anchor learns which object (IoU thresholds, low-quality matches);
//! - [`targets`]: the per-anchor class and box targets of a batch;
//! - [`loss`]: the focal loss and the box loss, normalised by the positive anchors;
//! - [`loss_cdf`]: how the focal loss spreads over easy and hard entries (Figure 4);
//! - [`ablation`]: the α/γ grid of Table 1a/1b, its records and tables;
//! - [`nms`]: class-wise non-maximum suppression;
//! - [`postprocess`]: from head outputs to detections in original pixels;
//! - [`backbone`] (the seam, and the ResNets), [`fpn`], [`head`]: the network; [`model`]:
//!   the detector as a whole;
//! - [`import`]: torchvision's weights, with the 91 → 80 COCO class remap;
//! - [`pretrained`]: safetensors weights files: what they hold, the detector they
//!   describe, loading them for inference, exporting a trained model;
//! - [`train`]: a whole training run (configuration, loop, checkpoints, evaluation).
//!
//! ```
//! use focal_engine::{backward, Rng, Tensor};
//! use focal_nn::{Optimizer, Sgd};
//! use focal_retinanet::{BackboneName, GroundTruth, ImageSize, RetinaNet, RetinaNetConfig};
//!
//! let mut config = RetinaNetConfig::default(); // ResNet-50, GroupNorm, P6 from C5, K = 80
//! config.model.depth = BackboneName::RESNET18;
//! let mut model = RetinaNet::new(&config, &mut Rng::new(0)).unwrap();
//!
//! // A training step on a batch padded to 64×64 (normalised pixels, NCHW).
//! let images = Tensor::zeros(&[1, 3, 64, 64]);
//! let gt = vec![GroundTruth { boxes: vec![[8.0, 8.0, 40.0, 48.0]], labels: vec![3] }];
//! let losses = model.training_loss(&images, &gt).unwrap();
//! let grads = backward(&losses.total());
//! Sgd::new(0.9, 1e-4).step(&mut model, &grads, 0.01);
//!
//! // Detection: boxes in the original image's pixels (here 128×128 resized to 64×64).
//! let size = ImageSize { resized_height: 64, resized_width: 64, original_height: 128, original_width: 128 };
//! let detections = model.detect(&images, &[size]);
//! assert_eq!(detections.len(), 1);
//! ```

pub mod ablation;
pub mod anchors;
pub mod backbone;
pub mod box_coder;
pub mod boxes;
pub mod config;
pub mod error;
pub mod fpn;
pub mod head;
pub mod imbalance;
pub mod import;
pub mod loss;
pub mod loss_cdf;
pub mod matcher;
pub mod model;
pub mod nms;
pub mod postprocess;
pub mod pretrained;
pub mod targets;
pub mod train;

pub use anchors::Anchors;
pub use config::{
    AnchorConfig, AnchorStyle, BackboneName, BackboneNorm, BoxLoss, BoxLossKind, InferenceConfig,
    LossConfig, MatcherConfig, ModelConfig, P6Input, RetinaNetConfig,
};
pub use error::{Error, Result};
pub use import::load_torchvision;
pub use loss::Losses;
pub use model::{HeadOutputs, RetinaNet};
pub use postprocess::{Detections, ImageSize};
pub use targets::{BatchTargets, GroundTruth};
