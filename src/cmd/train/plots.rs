//! The run folder's plots, drawn from the trainer's history: `loss.png` and `ap.png`.

use anyhow::Result;
use focal_retinanet::train::{EvalRecord, MetricRow, StepRecord, Trainer};

use crate::plot::{Chart, Series};

/// loss.png (the three losses, averaged over a window that keeps ~200 points) and ap.png
/// (AP, AP50, AP75 per evaluation) from the run's history.
pub fn write_plots(t: &Trainer) -> Result<()> {
    let steps: Vec<&StepRecord> = t
        .history()
        .iter()
        .filter_map(|r| match r {
            MetricRow::Step(s) => Some(s),
            MetricRow::Eval(_) => None,
        })
        .collect();
    let evals: Vec<&EvalRecord> = t
        .history()
        .iter()
        .filter_map(|r| match r {
            MetricRow::Eval(e) => Some(e),
            MetricRow::Step(_) => None,
        })
        .collect();
    if !steps.is_empty() {
        let window = (steps.len() / 200).max(1);
        let mean = |f: &dyn Fn(&StepRecord) -> f32| -> Vec<(f64, f64)> {
            steps
                .chunks(window)
                .map(|c| {
                    let x = c.last().unwrap().step as f64;
                    let y = c.iter().map(|r| f(r) as f64).sum::<f64>() / c.len() as f64;
                    (x, y)
                })
                .collect()
        };
        let title = if window > 1 {
            format!("training loss (mean of {window} steps)")
        } else {
            "training loss".to_string()
        };
        let mut chart = Chart::new(&title, "step", "loss");
        chart.log_y = true;
        chart.series = vec![
            Series::new("total", mean(&|r| r.loss), 0),
            Series::new("classification (focal)", mean(&|r| r.cls_loss), 1),
            Series::new("box (smooth L1)", mean(&|r| r.box_loss), 2),
        ];
        chart.save_png(&t.run_dir().join("loss.png"))?;
    }
    if !evals.is_empty() {
        let pts = |f: &dyn Fn(&EvalRecord) -> f64| -> Vec<(f64, f64)> {
            evals.iter().map(|e| (e.step as f64, f(e))).collect()
        };
        let mut chart = Chart::new("COCO AP on the validation set", "step", "AP");
        chart.y_range = Some((0.0, 1.0));
        chart.series = vec![
            Series::new("AP", pts(&|e| e.stats.ap), 0),
            Series::new("AP50", pts(&|e| e.stats.ap50), 1),
            Series::new("AP75", pts(&|e| e.stats.ap75), 2),
        ];
        chart.save_png(&t.run_dir().join("ap.png"))?;
    }
    Ok(())
}
