//! What a run records: the rows of `metrics.jsonl` (one per step, one per evaluation) and
//! the metadata a checkpoint carries besides the model and optimiser.

use focal_data::EvalResult;
use serde::{Deserialize, Serialize};

/// One category of the training set: the model's label k is `categories[k]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassName {
    pub id: i64,
    pub name: String,
}

/// What a checkpoint carries besides the model and optimiser (as JSON in its metadata).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// The classes in label order, with their COCO category ids.
    pub categories: Vec<ClassName>,
    /// Batches of the current epoch already trained on.
    pub batch_in_epoch: u64,
    /// The best AP of the evaluations so far, and its step.
    pub best_ap: Option<f64>,
    pub best_step: Option<u64>,
}

/// One row of `metrics.jsonl` for a training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed (1 for the first step).
    pub step: u64,
    /// The epoch the batch belongs to (0-based).
    pub epoch: u64,
    /// cls_loss + box_loss.
    pub loss: f32,
    pub cls_loss: f32,
    pub box_loss: f32,
    /// The learning rate of this step.
    pub lr: f32,
    /// Positive anchors in the batch (the losses' normaliser).
    pub num_pos: usize,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f32,
    /// Images of this step per second of wall time (loading included).
    pub images_per_s: f64,
}

/// One row of `metrics.jsonl` for an evaluation: the 12 COCO numbers by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: u64,
    #[serde(rename = "AP")]
    pub ap: f64,
    #[serde(rename = "AP50")]
    pub ap50: f64,
    #[serde(rename = "AP75")]
    pub ap75: f64,
    #[serde(rename = "APs")]
    pub ap_s: f64,
    #[serde(rename = "APm")]
    pub ap_m: f64,
    #[serde(rename = "APl")]
    pub ap_l: f64,
    #[serde(rename = "AR1")]
    pub ar1: f64,
    #[serde(rename = "AR10")]
    pub ar10: f64,
    #[serde(rename = "AR100")]
    pub ar100: f64,
    #[serde(rename = "ARs")]
    pub ar_s: f64,
    #[serde(rename = "ARm")]
    pub ar_m: f64,
    #[serde(rename = "ARl")]
    pub ar_l: f64,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

impl EvalRecord {
    pub fn new(step: u64, epoch: u64, r: &EvalResult, seconds: f64) -> EvalRecord {
        let s = r.stats;
        EvalRecord {
            step,
            epoch,
            ap: s[0],
            ap50: s[1],
            ap75: s[2],
            ap_s: s[3],
            ap_m: s[4],
            ap_l: s[5],
            ar1: s[6],
            ar10: s[7],
            ar100: s[8],
            ar_s: s[9],
            ar_m: s[10],
            ar_l: s[11],
            seconds,
        }
    }

    /// The 12 numbers in pycocotools' order.
    pub fn stats(&self) -> [f64; 12] {
        [
            self.ap, self.ap50, self.ap75, self.ap_s, self.ap_m, self.ap_l, self.ar1, self.ar10,
            self.ar100, self.ar_s, self.ar_m, self.ar_l,
        ]
    }
}

/// A row of `metrics.jsonl`: `{"kind": "step", ...}` or `{"kind": "eval", ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricRow {
    Step(StepRecord),
    Eval(EvalRecord),
}

impl MetricRow {
    pub fn step(&self) -> u64 {
        match self {
            MetricRow::Step(r) => r.step,
            MetricRow::Eval(r) => r.step,
        }
    }
}
