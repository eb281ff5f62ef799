//! The class and box subnets (§4 "Classification Subnet", "Box Regression Subnet"):
//! two small fully convolutional networks
//! applied, with the same weights, to every pyramid level.
//!
//! ```text
//!   class subnet: depth × (3×3 conv → [GroupNorm] → ReLU), then 3×3 conv → A·K channels
//!   box subnet:   depth × (3×3 conv → [GroupNorm] → ReLU), then 3×3 conv → A·4 channels
//! ```
//!
//! The first tower conv maps F → width, the others width → width. A class output is a
//! logit; σ(logit) is the probability of class k for anchor a at that position.
//!
//! **Initialisation** (the paper, section 4.1): every conv N(0, 0.01²), bias 0, except
//! the class output's bias, −ln((1 − π)/π) with π = 0.01, so that every anchor starts
//! out predicting "background" with confidence 0.99 and the many easy negatives do not
//! swamp the first iterations. With GroupNorm in the towers the tower convs have no bias.
//!
//! **Output layout.** Level l gives (N, A·K, H, W), channel a·K + k; it is viewed as
//! (N, A, K, H, W), permuted to (N, H, W, A, K) and flattened to (N, H·W·A, K), so row
//! (y·W + x)·A + a is anchor a of cell (x, y) — the anchor order of [`crate::anchors`].
//! The levels are concatenated P3..P7 into (N, A_total, K); the box subnet likewise into
//! (N, A_total, 4).
//!
//! Names as torchvision's `RetinaNetHead`: `classification_head.conv.{i}.0.weight`
//! (`.{i}.1.` for the GroupNorm), `classification_head.cls_logits`,
//! `regression_head.conv.{i}.0`, `regression_head.bbox_reg`.

use focal_engine::{Conv2dOptions, Rng, Tensor};
use focal_nn::init::{normal, prior_probability_bias};
use focal_nn::{Conv2d, GroupNorm, Module, Visitor};

fn conv(cin: usize, cout: usize, bias: bool, rng: &mut Rng) -> Conv2d {
    let w = normal(&[cout, cin, 3, 3], 0.0, 0.01, rng);
    let b = bias.then(|| Tensor::zeros(&[cout]));
    Conv2d::from_parts(w, b, Conv2dOptions::sp(1, 1))
}

/// One tower layer: conv, optional GroupNorm(32), ReLU (torchvision's
/// `Conv2dNormActivation`, hence the names `.0` and `.1`).
#[derive(Clone)]
pub struct TowerLayer {
    pub conv: Conv2d,
    pub norm: Option<GroupNorm>,
}

impl TowerLayer {
    fn forward(&self, x: &Tensor) -> Tensor {
        match &self.norm {
            // Each step and its ReLU as one op: the same bits, one tensor fewer.
            Some(n) => n.forward_relu(&self.conv.forward(x)),
            None => self.conv.forward_relu(x),
        }
    }
}

impl Module for TowerLayer {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("0", &mut self.conv);
        if let Some(n) = &mut self.norm {
            v.child("1", n);
        }
    }
}

/// A tower and its output conv; `outputs_per_anchor` is K (class) or 4 (box).
#[derive(Clone)]
pub struct Subnet {
    pub tower: Vec<TowerLayer>,
    pub output: Conv2d,
    pub outputs_per_anchor: usize,
    /// "cls_logits" or "bbox_reg".
    output_name: &'static str,
}

impl Subnet {
    #[allow(clippy::too_many_arguments)]
    fn new(
        f: usize,
        width: usize,
        depth: usize,
        group_norm: bool,
        anchors_per_cell: usize,
        outputs_per_anchor: usize,
        output_bias: f32,
        output_name: &'static str,
        rng: &mut Rng,
    ) -> Subnet {
        let tower = (0..depth)
            .map(|i| TowerLayer {
                conv: conv(if i == 0 { f } else { width }, width, !group_norm, rng),
                norm: group_norm.then(|| GroupNorm::new(32, width)),
            })
            .collect();
        let cin = if depth == 0 { f } else { width };
        let mut output = conv(cin, anchors_per_cell * outputs_per_anchor, true, rng);
        output.init_bias(Tensor::full(
            &[anchors_per_cell * outputs_per_anchor],
            output_bias,
        ));
        Subnet {
            tower,
            output,
            outputs_per_anchor,
            output_name,
        }
    }

    /// (N, H·W·A, outputs_per_anchor) for one level.
    fn forward_level(&self, x: &Tensor) -> Tensor {
        let mut y = x.clone();
        for layer in &self.tower {
            y = layer.forward(&y);
        }
        let y = self.output.forward(&y);
        let (n, c, h, w) = (y.dim(0), y.dim(1), y.dim(2), y.dim(3));
        let k = self.outputs_per_anchor;
        let a = c / k;
        y.reshape(&[n, a, k, h, w])
            .permute(&[0, 3, 4, 1, 2])
            .reshape(&[n, h * w * a, k])
    }

    /// All levels concatenated: (N, A_total, outputs_per_anchor).
    pub fn forward(&self, levels: &[Tensor]) -> Tensor {
        let outs: Vec<Tensor> = levels.iter().map(|x| self.forward_level(x)).collect();
        let refs: Vec<&Tensor> = outs.iter().collect();
        Tensor::concat(&refs, 1)
    }
}

impl Module for Subnet {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.scope("conv", |v| {
            for (i, layer) in self.tower.iter_mut().enumerate() {
                v.child(&i.to_string(), layer);
            }
        });
        v.child(self.output_name, &mut self.output);
    }
}

/// The two subnets.
#[derive(Clone)]
pub struct Head {
    pub classification: Subnet,
    pub regression: Subnet,
}

impl Head {
    /// `f`: pyramid channels; `width`, `depth`, `group_norm`: the towers; A anchors per
    /// cell, K classes, π the prior probability.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        f: usize,
        width: usize,
        depth: usize,
        group_norm: bool,
        anchors_per_cell: usize,
        num_classes: usize,
        prior_probability: f32,
        rng: &mut Rng,
    ) -> Head {
        let classification = Subnet::new(
            f,
            width,
            depth,
            group_norm,
            anchors_per_cell,
            num_classes,
            prior_probability_bias(prior_probability),
            "cls_logits",
            rng,
        );
        let regression = Subnet::new(
            f,
            width,
            depth,
            group_norm,
            anchors_per_cell,
            4,
            0.0,
            "bbox_reg",
            rng,
        );
        Head {
            classification,
            regression,
        }
    }

    /// (class logits (N, A_total, K), box deltas (N, A_total, 4)) of P3..P7.
    pub fn forward(&self, levels: &[Tensor]) -> (Tensor, Tensor) {
        (
            self.classification.forward(levels),
            self.regression.forward(levels),
        )
    }
}

impl Module for Head {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("classification_head", &mut self.classification);
        v.child("regression_head", &mut self.regression);
    }
}
