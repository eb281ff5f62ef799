//! Every choice of the detector in one place. The defaults are the paper's COCO model
//! (ResNet-50-FPN, §4 and §4.1) with the details the paper leaves open settled as
//! `docs/design-choices.md` explains; every alternative a user loading third-party weights
//! or reproducing another codebase needs is a field here.
//!
//! The structs are serde-serialisable (the trainer writes them to a TOML file next to
//! each checkpoint) and every field has a default, so a file that names only what it
//! changes is complete.
//!
//! | choice (docs/design-choices.md) | paper     | default                    | field                                   |
//! |---------------------------------|-----------|----------------------------|-----------------------------------------|
//! | Backbone                        | §4        | resnet50                   | [`ModelConfig::depth`]                  |
//! | Normalisation in the backbone   | —         | GroupNorm(32)              | [`ModelConfig::norm`]                   |
//! | Feature pyramid                 | §4        | F = 256                    | [`ModelConfig::fpn_channels`]           |
//! | P6 and P7                       | §4, fn. 2 | P6 from C5                 | [`ModelConfig::p6_input`]               |
//! | Class and box subnets           | §4        | 4 × 256, no norm           | [`ModelConfig::head_width`], [`ModelConfig::head_depth`], [`ModelConfig::head_norm`] |
//! | Prior initialisation            | §3.3      | π = 0.01                   | [`ModelConfig::prior_probability`]      |
//! | Anchors                         | §4        | 32–512, 3 scales, 3 ratios | [`AnchorConfig`]                        |
//! | Matching                        | §4        | 0.5 / 0.4, low-quality on  | [`MatcherConfig`]                       |
//! | Classification loss             | eq. (5)   | α = 0.25, γ = 2            | [`LossConfig::alpha`], [`LossConfig::gamma`] |
//! | Box loss                        | §4.1      | smooth L1, β = 0.11        | [`LossConfig::box_loss`]                |
//! | Inference                       | §4.1      | 0.05, 1000, NMS 0.5, 100   | [`InferenceConfig`]                     |

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// The whole detector: network, anchors, matching, loss and inference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetinaNetConfig {
    pub model: ModelConfig,
    pub anchors: AnchorConfig,
    pub matcher: MatcherConfig,
    pub loss: LossConfig,
    pub inference: InferenceConfig,
}

impl RetinaNetConfig {
    /// Checks the values that would otherwise fail deep inside a step; the message names
    /// the field.
    pub fn validate(&self) -> Result<(), Error> {
        self.model.validate()?;
        self.anchors.validate()?;
        self.matcher.validate()?;
        self.loss.validate()?;
        self.inference.validate()
    }
}

/// The backbone, by the name it is registered under in [`crate::backbone::BACKBONES`]:
/// `"resnet18"`, `"resnet34"`, `"resnet50"`, `"resnet18-half"`. Serialised as that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackboneName(&'static str);

impl BackboneName {
    pub const RESNET18: BackboneName = BackboneName("resnet18");
    pub const RESNET34: BackboneName = BackboneName("resnet34");
    pub const RESNET50: BackboneName = BackboneName("resnet50");

    /// A registered name (case-insensitive); "18", "34" and "50" stand for the ResNets.
    pub fn parse(text: &str) -> Result<BackboneName, Error> {
        let lower = text.trim().to_ascii_lowercase();
        let name = match lower.as_str() {
            "18" | "34" | "50" => format!("resnet{lower}"),
            _ => lower,
        };
        match crate::backbone::find(&name) {
            Some(spec) => Ok(BackboneName(spec.name)),
            None => Err(Error::config(format!(
                "unknown backbone {text:?}: expected {}",
                crate::backbone::names()
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// Its entry in the registry.
    pub fn spec(self) -> &'static crate::backbone::BackboneSpec {
        crate::backbone::find(self.0).expect("a BackboneName is always registered")
    }
}

impl Serialize for BackboneName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for BackboneName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BackboneName, D::Error> {
        let text = String::deserialize(d)?;
        BackboneName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Normalisation in the backbone (docs/design-choices.md, "Normalisation in the
/// backbone"; the paper uses ImageNet-pretrained ResNets with frozen BatchNorm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackboneNorm {
    /// GroupNorm with 32 groups: the default when training from scratch, because batch
    /// statistics of 2–4 CPU images are too noisy for BatchNorm.
    #[serde(rename = "gn")]
    GroupNorm,
    /// Trainable BatchNorm (batch statistics in training, running statistics in inference).
    #[serde(rename = "bn")]
    BatchNorm,
    /// BatchNorm with fixed statistics and affine parameters (for pretrained weights);
    /// the stem and layer1 are frozen too unless `trainable_layers` says otherwise.
    #[serde(rename = "frozen-bn")]
    FrozenBatchNorm,
}

impl BackboneNorm {
    pub fn parse(text: &str) -> Result<BackboneNorm, Error> {
        match text.trim() {
            "gn" => Ok(BackboneNorm::GroupNorm),
            "bn" => Ok(BackboneNorm::BatchNorm),
            "frozen-bn" => Ok(BackboneNorm::FrozenBatchNorm),
            _ => Err(Error::config(format!(
                "unknown backbone norm {text:?}: expected gn, bn or frozen-bn"
            ))),
        }
    }
}

/// Which map P6 is computed from: the paper's C5 (§4, footnote 2), or P5 for
/// torchvision's v1 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum P6Input {
    /// The paper: P6 = 3×3 stride-2 conv on C5.
    #[serde(rename = "c5")]
    C5,
    /// torchvision's `retinanet_resnet50_fpn` (v1 weights): P6 from P5.
    #[serde(rename = "p5")]
    P5,
}

impl P6Input {
    /// Parses "c5" or "p5" (the `--p6` flag).
    pub fn parse(text: &str) -> Result<P6Input, Error> {
        match text.trim() {
            "c5" => Ok(P6Input::C5),
            "p5" => Ok(P6Input::P5),
            _ => Err(Error::config(format!("expected c5 or p5, got {text:?}"))),
        }
    }
}

/// The network: backbone, FPN and the two subnets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The backbone. (The key is `depth`, its name when only ResNet depths existed, so
    /// that earlier configuration files, checkpoints and ablation records stay valid.)
    pub depth: BackboneName,
    pub norm: BackboneNorm,
    /// F, the channels of every pyramid level.
    pub fpn_channels: usize,
    pub p6_input: P6Input,
    /// Channels of the 3×3 convs in the class and box towers (the paper: F = 256).
    pub head_width: usize,
    /// Number of 3×3 conv + ReLU layers in each tower (the paper: 4).
    pub head_depth: usize,
    /// GroupNorm(32) after each tower conv (torchvision v2); off in the paper.
    pub head_norm: bool,
    /// K, the number of object classes (no background class).
    pub num_classes: usize,
    /// π of the classification bias −ln((1−π)/π).
    pub prior_probability: f32,
    /// ε of frozen BatchNorm: 1e-5 (torchvision's default); torchvision's COCO-trained
    /// RetinaNet weights expect 0.
    pub frozen_bn_eps: f32,
    /// How many of the backbone's five stages train, counted from the top (layer4,
    /// layer3, layer2, layer1, the stem), as torchvision's `trainable_backbone_layers`
    /// (0 to 5); the stages below are frozen. `None`: 3 with frozen BatchNorm (the
    /// fine-tuning default of torchvision's detection models), 5 otherwise. Written to a
    /// configuration file only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainable_layers: Option<usize>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            depth: BackboneName::RESNET50,
            norm: BackboneNorm::GroupNorm,
            fpn_channels: 256,
            p6_input: P6Input::C5,
            head_width: 256,
            head_depth: 4,
            head_norm: false,
            num_classes: 80,
            prior_probability: 0.01,
            frozen_bn_eps: 1e-5,
            trainable_layers: None,
        }
    }
}

impl ModelConfig {
    /// The backbone stages that train: [`ModelConfig::trainable_layers`] or its default.
    pub fn trainable_stages(&self) -> usize {
        self.trainable_layers.unwrap_or(match self.norm {
            BackboneNorm::FrozenBatchNorm => 3,
            _ => 5,
        })
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.trainable_layers.is_some_and(|n| n > 5) {
            return Err(Error::config(format!(
                "model: trainable_layers counts the backbone's five stages, so it lies in 0..=5, \
                 got {}",
                self.trainable_layers.unwrap_or(0)
            )));
        }
        if !(self.frozen_bn_eps >= 0.0 && self.frozen_bn_eps.is_finite()) {
            return Err(Error::config(format!(
                "model: frozen_bn_eps must be ≥ 0, got {}",
                self.frozen_bn_eps
            )));
        }
        if self.fpn_channels == 0 || self.head_width == 0 || self.num_classes == 0 {
            return Err(Error::config(
                "model: fpn_channels, head_width and num_classes must be positive",
            ));
        }
        if self.head_norm && !self.head_width.is_multiple_of(32) {
            return Err(Error::config(format!(
                "model: head_norm uses GroupNorm(32), so head_width ({}) must be a multiple of 32",
                self.head_width
            )));
        }
        if !(self.prior_probability > 0.0 && self.prior_probability < 1.0) {
            return Err(Error::config(format!(
                "model: prior_probability must lie in (0, 1), got {}",
                self.prior_probability
            )));
        }
        Ok(())
    }
}

/// Anchors (§4 "Anchors"): three octave scales × three aspect ratios of a base size per
/// level, A = 9 per location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnchorConfig {
    /// Base size of the anchors of P3..P7, in input pixels.
    pub sizes: Vec<f32>,
    /// Stride of P3..P7 (fixed, as in the network's architecture).
    pub strides: Vec<usize>,
    /// Octave scales multiplying each base size.
    pub scales: Vec<f32>,
    /// Aspect ratios h/w.
    pub ratios: Vec<f32>,
    /// How the corners are computed: exactly (focal's default) or with torchvision's
    /// roundings, which weights trained by torchvision expect (see [`AnchorStyle`]).
    /// Written to a configuration file only when it is not the default, so files of
    /// earlier versions read and hash the same.
    #[serde(skip_serializing_if = "AnchorStyle::is_exact")]
    pub style: AnchorStyle,
}

impl Default for AnchorConfig {
    fn default() -> Self {
        AnchorConfig {
            sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            strides: vec![8, 16, 32, 64, 128],
            scales: vec![1.0, 2f32.powf(1.0 / 3.0), 2f32.powf(2.0 / 3.0)],
            ratios: vec![0.5, 1.0, 2.0],
            style: AnchorStyle::Exact,
        }
    }
}

/// How anchor corners are computed (`crate::anchors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnchorStyle {
    /// Sizes `base · scale` and corners as exact as f32 holds them, cells `stride` apart.
    #[default]
    #[serde(rename = "exact")]
    Exact,
    /// torchvision's `AnchorGenerator`: sizes truncated to integers (`int(32 · 2^(1/3))` =
    /// 40), zero-centred corners rounded to integers, and the cells of each level
    /// `padded input size // feature-map size` apart, which on P6 and P7 is not 64 and
    /// 128 unless the input is a multiple of 128 (800 rows: 61 and 114). Weights trained
    /// by torchvision predict relative to these anchors.
    #[serde(rename = "torchvision")]
    Torchvision,
}

impl AnchorStyle {
    pub fn is_exact(&self) -> bool {
        *self == AnchorStyle::Exact
    }
}

impl AnchorConfig {
    /// A, the anchors per feature-map cell.
    pub fn anchors_per_cell(&self) -> usize {
        self.scales.len() * self.ratios.len()
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.sizes.len() != 5 || self.strides.len() != 5 {
            return Err(Error::config(format!(
                "anchors: sizes and strides need one entry per level P3..P7 (5), got {} and {}",
                self.sizes.len(),
                self.strides.len()
            )));
        }
        if self.scales.is_empty() || self.ratios.is_empty() {
            return Err(Error::config(
                "anchors: scales and ratios must not be empty",
            ));
        }
        let positive = |v: &[f32]| v.iter().all(|x| x.is_finite() && *x > 0.0);
        if !positive(&self.sizes) || !positive(&self.scales) || !positive(&self.ratios) {
            return Err(Error::config(
                "anchors: sizes, scales and ratios must be positive",
            ));
        }
        if self.strides != [8, 16, 32, 64, 128] {
            return Err(Error::config(format!(
                "anchors: strides are fixed by the network at [8, 16, 32, 64, 128], got {:?}",
                self.strides
            )));
        }
        Ok(())
    }
}

/// Anchor matching (§4 "Anchors"): IoU ≥ 0.5 positive, < 0.4 background, ignored in
/// between, plus each box's best anchors (low-quality matches).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatcherConfig {
    /// An anchor whose best IoU is at least this is positive.
    pub foreground_iou: f32,
    /// An anchor whose best IoU is below this is background; in between it is ignored.
    pub background_iou: f32,
    /// Each ground-truth box's best anchors (ties included) become positive.
    pub low_quality_matches: bool,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            foreground_iou: 0.5,
            background_iou: 0.4,
            low_quality_matches: true,
        }
    }
}

impl MatcherConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.background_iou)
            || !(0.0..=1.0).contains(&self.foreground_iou)
            || self.background_iou > self.foreground_iou
        {
            return Err(Error::config(format!(
                "matcher: need 0 ≤ background_iou ({}) ≤ foreground_iou ({}) ≤ 1",
                self.background_iou, self.foreground_iou
            )));
        }
        Ok(())
    }
}

/// The box regression loss: smooth L1 (§4.1 "Optimization"; β = 0.11 from the authors'
/// Detectron code), or L1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BoxLoss {
    /// |x|, summed over the 4 deltas.
    L1,
    /// 0.5·x²/β where |x| < β, else |x| − 0.5·β (β = 0 is L1).
    SmoothL1 { beta: f32 },
}

/// β of the smooth-L1 box loss when none is given: 0.11, the value of the authors'
/// Detectron code (the paper does not state it).
pub const DEFAULT_SMOOTH_L1_BETA: f32 = 0.11;

/// Which box loss, without its parameter: what `--box-loss` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxLossKind {
    L1,
    SmoothL1,
}

impl BoxLossKind {
    /// Parses "smooth-l1" or "l1" (the `--box-loss` flag).
    pub fn parse(text: &str) -> Result<BoxLossKind, Error> {
        match text.trim() {
            "l1" => Ok(BoxLossKind::L1),
            "smooth-l1" => Ok(BoxLossKind::SmoothL1),
            _ => Err(Error::config(format!(
                "expected smooth-l1 or l1, got {text:?}"
            ))),
        }
    }
}

impl BoxLoss {
    /// β of smooth L1, `None` for L1.
    pub fn beta(self) -> Option<f32> {
        match self {
            BoxLoss::SmoothL1 { beta } => Some(beta),
            BoxLoss::L1 => None,
        }
    }
}

/// The losses: the α-balanced focal loss, eq. (5), and the box loss, both normalised by
/// the batch's positive anchors (§4.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// α weighs positives, 1 − α negatives; `None` weighs both by 1.
    pub alpha: Option<f32>,
    /// γ of the modulating factor (1 − p_t)^γ; 0 gives α-balanced cross-entropy.
    pub gamma: f32,
    pub box_loss: BoxLoss,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            alpha: Some(0.25),
            gamma: 2.0,
            box_loss: BoxLoss::SmoothL1 {
                beta: DEFAULT_SMOOTH_L1_BETA,
            },
        }
    }
}

impl LossConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(a) = self.alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(Error::config(format!(
                    "loss: alpha must lie in [0, 1], got {a}"
                )));
            }
        }
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return Err(Error::config(format!(
                "loss: gamma must be ≥ 0, got {}",
                self.gamma
            )));
        }
        if let BoxLoss::SmoothL1 { beta } = self.box_loss {
            if !(beta >= 0.0 && beta.is_finite()) {
                return Err(Error::config(format!(
                    "loss: smooth-l1 beta must be ≥ 0, got {beta}"
                )));
            }
        }
        Ok(())
    }
}

/// Inference (§4.1 "Inference"): per level the best 1000 candidates above 0.05, then
/// class-wise NMS at 0.5 and the best 100 per image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// Candidates need a score strictly above this.
    pub score_threshold: f32,
    /// At most this many candidates per pyramid level, the highest scores.
    pub candidates_per_level: usize,
    /// Class-wise NMS suppresses a box whose IoU with a kept one is strictly above this.
    pub nms_iou: f32,
    /// The best this many detections are kept per image.
    pub detections_per_image: usize,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            score_threshold: 0.05,
            candidates_per_level: 1000,
            nms_iou: 0.5,
            detections_per_image: 100,
        }
    }
}

impl InferenceConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.score_threshold) || !(0.0..=1.0).contains(&self.nms_iou) {
            return Err(Error::config(format!(
                "inference: score_threshold ({}) and nms_iou ({}) must lie in [0, 1]",
                self.score_threshold, self.nms_iou
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_values() {
        let c = RetinaNetConfig::default();
        c.validate().unwrap();
        assert_eq!(c.model.norm, BackboneNorm::GroupNorm);
        assert_eq!(c.model.p6_input, P6Input::C5);
        assert_eq!(c.anchors.anchors_per_cell(), 9);
        assert!((c.anchors.scales[1] - 1.259_921).abs() < 1e-6);
        assert!((c.anchors.scales[2] - 1.587_401).abs() < 1e-6);
        assert_eq!(c.loss.box_loss, BoxLoss::SmoothL1 { beta: 0.11 });
        assert_eq!(c.inference.detections_per_image, 100);
    }

    #[test]
    fn serialises_and_reads_back_and_partial_files_take_defaults() {
        let mut c = RetinaNetConfig::default();
        c.model.norm = BackboneNorm::FrozenBatchNorm;
        c.model.depth = BackboneName::RESNET18;
        c.loss.box_loss = BoxLoss::L1;
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"frozen-bn\"") && text.contains("\"resnet18\""));
        let back: RetinaNetConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: RetinaNetConfig = serde_json::from_str(r#"{"loss": {"gamma": 0.0}}"#).unwrap();
        assert_eq!(partial.loss.gamma, 0.0);
        assert_eq!(partial.loss.alpha, Some(0.25));
        assert_eq!(partial.model, ModelConfig::default());
        let err = serde_json::from_str::<RetinaNetConfig>(r#"{"loss": {"gama": 0.0}}"#);
        assert!(err.is_err(), "a misspelt field must be refused");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = RetinaNetConfig::default();
        c.matcher.background_iou = 0.6;
        assert!(c.validate().unwrap_err().chain().contains("background_iou"));
        let mut c = RetinaNetConfig::default();
        c.anchors.strides[0] = 4;
        assert!(c.validate().unwrap_err().chain().contains("strides"));
        assert_eq!(
            BackboneName::parse("resnet34").ok(),
            Some(BackboneName::RESNET34)
        );
        assert_eq!(BackboneName::parse("50").ok(), Some(BackboneName::RESNET50));
        assert_eq!(
            BackboneName::parse("ResNet18-Half")
                .map(BackboneName::name)
                .ok(),
            Some("resnet18-half")
        );
        let e = BackboneName::parse("resnet101").unwrap_err().to_string();
        assert!(
            e.contains("resnet101") && e.contains("resnet18-half"),
            "{e}"
        );
        assert_eq!(P6Input::parse("p5").ok(), Some(P6Input::P5));
        assert!(P6Input::parse("p4")
            .unwrap_err()
            .chain()
            .contains("c5 or p5"));
        assert_eq!(BoxLossKind::parse("l1").ok(), Some(BoxLossKind::L1));
        assert_eq!(
            BoxLossKind::parse("smooth-l1").ok(),
            Some(BoxLossKind::SmoothL1)
        );
        assert!(BoxLossKind::parse("l2").is_err());
    }
}
