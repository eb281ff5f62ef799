//! The whole detector: backbone → FPN → subnets, plus the training loss and inference
//! built from [`crate::targets`], [`crate::loss`] and [`crate::postprocess`].
//!
//! Parameter names follow torchvision's `RetinaNet.state_dict()`:
//! `backbone.body.*` (the backbone), `backbone.fpn.*` (the FPN), `head.*` (the subnets).
//!
//! ```text
//!   images (N, 3, H, W)          normalised, padded to a multiple of 32
//!     → C3, C4, C5               the backbone (a ResNet: layer2..layer4)
//!     → P3 .. P7                 FPN (F channels)
//!     → class logits (N, A_total, K), box deltas (N, A_total, 4)
//! ```

use focal_engine::{no_grad, Rng, Tensor};
use focal_nn::{Module, Visitor};

use crate::anchors::Anchors;
use crate::backbone::{Backbone, BackboneOptions};
use crate::config::RetinaNetConfig;
use crate::error::Error;
use crate::fpn::Fpn;
use crate::head::Head;
use crate::loss::{retinanet_loss, Losses};
use crate::postprocess::{postprocess, Detections, ImageSize};
use crate::targets::{assign_targets, BatchTargets, GroundTruth};

/// The raw outputs of one forward pass.
#[derive(Clone, Debug)]
pub struct HeadOutputs {
    /// (N, A_total, K), logits.
    pub cls_logits: Tensor,
    /// (N, A_total, 4), (dx, dy, dw, dh) per anchor.
    pub box_deltas: Tensor,
    /// (H, W) of P3..P7.
    pub level_sizes: Vec<(usize, usize)>,
}

#[derive(Clone)]
pub struct RetinaNet {
    pub config: RetinaNetConfig,
    /// `backbone.body`: any registered backbone (`crate::backbone`).
    pub body: Box<dyn Backbone>,
    /// `backbone.fpn`.
    pub fpn: Fpn,
    /// `head`.
    pub head: Head,
    training: bool,
}

/// A wrapper that names the backbone's two parts as torchvision does.
struct BackboneWithFpn<'a> {
    body: &'a mut dyn Backbone,
    fpn: &'a mut Fpn,
}

impl Module for BackboneWithFpn<'_> {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("body", self.body);
        v.child("fpn", self.fpn);
    }
}

impl Module for RetinaNet {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child(
            "backbone",
            &mut BackboneWithFpn {
                body: self.body.as_mut(),
                fpn: &mut self.fpn,
            },
        );
        v.child("head", &mut self.head);
    }
}

impl RetinaNet {
    /// A freshly initialised detector (in training mode). Every random value is drawn
    /// from `rng`, backbone first, so one seed fixes the whole model.
    pub fn new(config: &RetinaNetConfig, rng: &mut Rng) -> Result<RetinaNet, Error> {
        config.validate()?;
        let m = &config.model;
        let options = BackboneOptions {
            norm: m.norm,
            frozen_bn_eps: m.frozen_bn_eps,
        };
        let mut body = (m.depth.spec().build)(&options, rng);
        body.set_trainable_layers(m.trainable_stages());
        let fpn = Fpn::new(body.out_channels(), m.fpn_channels, m.p6_input, rng);
        let head = Head::new(
            m.fpn_channels,
            m.head_width,
            m.head_depth,
            m.head_norm,
            config.anchors.anchors_per_cell(),
            m.num_classes,
            m.prior_probability,
            rng,
        );
        Ok(RetinaNet {
            config: config.clone(),
            body,
            fpn,
            head,
            training: true,
        })
    }

    /// Training (batch statistics in BatchNorm) or evaluation behaviour.
    pub fn set_train(&mut self, training: bool) {
        self.training = training;
        focal_nn::set_train(self, training);
    }

    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The anchors of a padded input of `height × width`.
    pub fn anchors(&self, height: usize, width: usize) -> Anchors {
        Anchors::generate(&self.config.anchors, height, width)
    }

    /// The network on a batch `(N, 3, H, W)`. Records on the tape unless called under
    /// [`focal_engine::no_grad`].
    pub fn forward(&mut self, images: &Tensor) -> HeadOutputs {
        assert!(
            images.rank() == 4 && images.dim(1) == 3,
            "RetinaNet::forward: images must be (N, 3, H, W), got {:?}",
            images.shape()
        );
        let c = self.body.forward(images);
        let p = self.fpn.forward(&c);
        drop(c);
        let level_sizes = p.iter().map(|t| (t.dim(2), t.dim(3))).collect();
        let (cls_logits, box_deltas) = self.head.forward(&p);
        HeadOutputs {
            cls_logits,
            box_deltas,
            level_sizes,
        }
    }

    /// The class and box targets of every anchor of a batch `(N, 3, H, W)`: the anchors
    /// of an H × W input matched to each image's ground truth (`crate::targets`).
    pub fn targets(
        &self,
        images: &Tensor,
        ground_truth: &[GroundTruth],
    ) -> Result<BatchTargets, Error> {
        if ground_truth.len() != images.dim(0) {
            return Err(Error::invalid(format!(
                "{} images but ground truth for {}",
                images.dim(0),
                ground_truth.len()
            )));
        }
        let anchors = self.anchors(images.dim(2), images.dim(3));
        assign_targets(
            &self.config.matcher,
            &anchors,
            ground_truth,
            self.config.model.num_classes,
        )
    }

    /// Forward pass and loss of a training batch. `ground_truth` holds one entry per
    /// image, boxes in the coordinates of `images`. Call `backward(&losses.total())`.
    pub fn training_loss(
        &mut self,
        images: &Tensor,
        ground_truth: &[GroundTruth],
    ) -> Result<Losses, Error> {
        let targets = self.targets(images, ground_truth)?;
        let out = self.forward(images);
        Ok(retinanet_loss(
            &self.config.loss,
            &out.cls_logits,
            &out.box_deltas,
            &targets,
        ))
    }

    /// Detections for a batch, in each image's original pixels. Runs without recording
    /// anything and in evaluation mode (restoring the previous mode afterwards).
    pub fn detect(&mut self, images: &Tensor, sizes: &[ImageSize]) -> Vec<Detections> {
        let was_training = self.training;
        if was_training {
            self.set_train(false);
        }
        let out = no_grad(|| self.forward(images));
        if was_training {
            self.set_train(true);
        }
        let anchors = self.anchors(images.dim(2), images.dim(3));
        postprocess(
            &self.config.inference,
            &anchors,
            &out.cls_logits,
            &out.box_deltas,
            sizes,
        )
    }
}
