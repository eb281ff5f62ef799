//! What a run records: the rows of `metrics.jsonl` (one per step, one per evaluation) and
//! the metadata a checkpoint carries besides the model and optimiser.

use focal_data::{CocoStats, EvalResult, Fingerprint};
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
    /// An evaluation due at this step was abandoned (the run was stopped during it); a
    /// resumed run does it first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eval_pending: bool,
    /// The training and validation sets' fingerprints, which a resumed run compares
    /// (absent in checkpoints of earlier versions, which are then not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_data: Option<Fingerprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_data: Option<Fingerprint>,
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

/// One row of `metrics.jsonl` for an evaluation: the 12 COCO numbers by name, between
/// the step and the seconds (`{"kind": "eval", "step": 800, "epoch": 3, "AP": 0.5, ...,
/// "ARl": 0.7, "seconds": 12.3}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: u64,
    #[serde(flatten)]
    pub stats: CocoStats,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

impl EvalRecord {
    pub fn new(step: u64, epoch: u64, r: &EvalResult, seconds: f64) -> EvalRecord {
        EvalRecord {
            step,
            epoch,
            stats: r.stats,
            seconds,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as focal train wrote them before the COCO numbers had a type of their own
    /// (copied from a run folder's metrics.jsonl): they read, and are written back the
    /// same, byte for byte.
    #[test]
    fn metrics_rows_of_earlier_runs_read_and_are_written_identically() {
        let old = [
            r#"{"kind":"step","step":1,"epoch":0,"loss":2.940013,"cls_loss":2.3991082,"box_loss":0.54090476,"lr":0.000002,"num_pos":30,"grad_norm":9.0924,"images_per_s":3.4918911295459956}"#,
            r#"{"kind":"eval","step":1,"epoch":0,"AP":0.0,"AP50":0.0,"AP75":0.0,"APs":0.0,"APm":0.0,"APl":-1.0,"AR1":0.0,"AR10":0.0,"AR100":0.0,"ARs":0.0,"ARm":0.0,"ARl":-1.0,"seconds":0.175440358}"#,
            r#"{"kind":"eval","step":800,"epoch":3,"AP":0.5123,"AP50":0.839,"AP75":0.55,"APs":0.31,"APm":0.6,"APl":0.7,"AR1":0.4,"AR10":0.62,"AR100":0.63,"ARs":0.45,"ARm":0.7,"ARl":0.8,"seconds":12.5}"#,
        ];
        for line in old {
            let row: MetricRow = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&row).unwrap(), line);
        }
        let MetricRow::Eval(e) = serde_json::from_str(old[2]).unwrap() else {
            panic!("not an eval row");
        };
        assert_eq!((e.step, e.epoch, e.seconds), (800, 3, 12.5));
        assert_eq!(e.stats.ap, 0.5123);
        assert_eq!(e.stats.ap50, 0.839);
        assert_eq!(e.stats.ar_large, 0.8);
    }
}
