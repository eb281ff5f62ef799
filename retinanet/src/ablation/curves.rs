//! The AP curves of a grid: every finished cell's AP at each evaluation during training,
//! read back from its run folder's `metrics.jsonl`, written as `OUT/curves.md` beside the
//! tables (and drawn as `OUT/curves.png` by `focal ablate`).
//!
//! A table compares the losses at one budget; the curves say whether that budget was long
//! enough. The question an experiment at a fixed budget has to answer is "has AP stopped
//! rising?", so each row ends with the AP gained over the last quarter of the steps:
//!
//! ```text
//! late gain = AP(last evaluation) − AP(last evaluation at or before ¾ of the steps)
//! ```
//!
//! A gain near zero (within the seeds' spread) says the curve has levelled off; a large one
//! says the table compares the losses before they have finished learning.

use std::path::{Path, PathBuf};

use super::record::CellRecord;
use super::setting::{Grid, Setting};
use crate::error::Error;
use crate::train::MetricRow;

/// The file name of the curves table in the output folder.
pub const CURVES_MD: &str = "curves.md";

/// One cell's AP (COCO AP, 0–1) at each evaluation, in step order.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub setting: Setting,
    /// (step, AP) per evaluation.
    pub points: Vec<(u64, f64)>,
}

impl Curve {
    /// The AP gained over the last quarter of the steps (see the module's comment);
    /// `None` with fewer than two evaluations, or none at or before ¾ of the last step.
    pub fn late_gain(&self) -> Option<f64> {
        let &(last_step, last_ap) = self.points.last()?;
        // The last evaluation at or before ¾ of the steps (integer arithmetic: 3·step ≤
        // 3/4·4·step keeps 2880 → 2160 exact).
        let (_, earlier) = self
            .points
            .iter()
            .rev()
            .find(|(step, _)| 4 * step <= 3 * last_step)?;
        Some(last_ap - earlier)
    }
}

/// The run folder's `metrics.jsonl` of a cell.
fn metrics_path(out: &Path, setting: &Setting) -> PathBuf {
    out.join(setting.file_stem()).join("metrics.jsonl")
}

/// The AP curve of one cell, from `OUT/CELL/metrics.jsonl`; `Ok(None)` when the file does
/// not exist or holds no evaluation. A line that is not a metrics row is an error naming
/// the file and the line.
pub fn read_curve(out: &Path, setting: &Setting) -> Result<Option<Curve>, Error> {
    let path = metrics_path(out, setting);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: MetricRow = serde_json::from_str(line).map_err(|e| Error::Json {
            what: format!(
                "{} line {} is not a row of metrics.jsonl",
                path.display(),
                i + 1
            ),
            source: e,
        })?;
        if let MetricRow::Eval(e) = row {
            points.push((e.step, e.stats.ap));
        }
    }
    if points.is_empty() {
        return Ok(None);
    }
    Ok(Some(Curve {
        setting: *setting,
        points,
    }))
}

/// The curves of the recorded cells, in grid order (cells without a record or without an
/// evaluation during training are left out).
pub fn read_curves(out: &Path, grid: &Grid, records: &[CellRecord]) -> Result<Vec<Curve>, Error> {
    let mut curves = Vec::new();
    for s in grid.settings() {
        if !records.iter().any(|r| r.setting() == s) {
            continue;
        }
        if let Some(c) = read_curve(out, &s)? {
            curves.push(c);
        }
    }
    Ok(curves)
}

/// The mean curve of each loss over its seeds, in the order the losses first appear: at
/// each step that every seed evaluated, the mean AP.
pub fn mean_by_loss(curves: &[Curve]) -> Vec<Curve> {
    let mut losses: Vec<Setting> = Vec::new();
    for c in curves {
        if !losses.contains(&c.setting.loss()) {
            losses.push(c.setting.loss());
        }
    }
    losses
        .into_iter()
        .map(|loss| {
            let seeds: Vec<&Curve> = curves.iter().filter(|c| c.setting.loss() == loss).collect();
            let points = seeds[0]
                .points
                .iter()
                .filter_map(|&(step, _)| {
                    let aps: Option<Vec<f64>> = seeds
                        .iter()
                        .map(|c| c.points.iter().find(|p| p.0 == step).map(|p| p.1))
                        .collect();
                    let aps = aps?;
                    Some((step, aps.iter().sum::<f64>() / aps.len() as f64))
                })
                .collect();
            Curve {
                setting: loss,
                points,
            }
        })
        .collect()
}

/// `OUT/curves.md`: a row per cell (AP × 100 at every evaluation step, then the late
/// gain), then a row per loss for the mean over its seeds.
pub fn markdown(curves: &[Curve]) -> String {
    let mut steps: Vec<u64> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .collect();
    steps.sort_unstable();
    steps.dedup();
    let mut s = String::from("# AP during training (focal ablate)\n\n");
    s.push_str(
        "COCO AP × 100 on the validation split at each evaluation of every finished cell, \
         from its run folder's metrics.jsonl. Last ¼: the AP gained over the last quarter of \
         the steps (the last evaluation minus the last one at or before ¾ of the steps); \
         near 0, within the seeds' spread, the curve has levelled off.\n\n",
    );
    let header = |first: &str| {
        let mut h = format!("| {first} |");
        for st in &steps {
            h.push_str(&format!(" {st} |"));
        }
        h.push_str(" last ¼ |\n|---|");
        for _ in 0..=steps.len() {
            h.push_str("---:|");
        }
        h.push('\n');
        h
    };
    let row = |name: String, c: &Curve| {
        let mut r = format!("| {name} |");
        for st in &steps {
            match c.points.iter().find(|p| p.0 == *st) {
                Some(p) => r.push_str(&format!(" {:.1} |", 100.0 * p.1)),
                None => r.push_str(" – |"),
            }
        }
        match c.late_gain() {
            Some(g) => r.push_str(&format!(" {:+.1} |\n", 100.0 * g)),
            None => r.push_str(" – |\n"),
        }
        r
    };
    if curves.is_empty() {
        s.push_str("No finished cell evaluated during training.\n");
        return s;
    }
    s.push_str(&header("cell"));
    for c in curves {
        s.push_str(&row(c.setting.to_string(), c));
    }
    if curves.iter().any(|c| c.setting.seed.is_some()) {
        s.push_str("\nMean over the seeds of each loss (at the steps every seed evaluated):\n\n");
        s.push_str(&header("loss"));
        for c in mean_by_loss(curves) {
            s.push_str(&row(c.setting.to_string(), &c));
        }
    }
    s
}

/// Rewrites `OUT/curves.md` from the recorded cells' run folders.
pub fn write_curves(out: &Path, grid: &Grid, records: &[CellRecord]) -> Result<(), Error> {
    let curves = read_curves(out, grid, records)?;
    let path = out.join(CURVES_MD);
    focal_engine::write_atomic(&path, markdown(&curves).as_bytes())
        .map_err(|e| Error::io("write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(gamma: f32, alpha: f32, seed: Option<u64>, points: &[(u64, f64)]) -> Curve {
        Curve {
            setting: Setting {
                seed,
                ..Setting::new(gamma, alpha)
            },
            points: points.to_vec(),
        }
    }

    /// The late gain by hand: 12 evaluations every 240 steps to 2880; ¾ of 2880 is 2160,
    /// an evaluation step, so the gain is AP(2880) − AP(2160) = 0.80 − 0.60.
    #[test]
    fn the_late_gain_is_the_last_quarters_rise() {
        let pts: Vec<(u64, f64)> = (1..=12).map(|i| (240 * i, 0.1 * i as f64 / 1.5)).collect();
        let c = curve(2.0, 0.25, Some(0), &pts);
        let g = c.late_gain().unwrap();
        assert!((g - (0.8 - 0.6)).abs() < 1e-12, "{g}");
        // ¾ of 700 is 525: the last evaluation at or before it is 500.
        let c = curve(
            0.0,
            0.75,
            None,
            &[(100, 0.1), (500, 0.3), (600, 0.5), (700, 0.55)],
        );
        assert!((c.late_gain().unwrap() - 0.25).abs() < 1e-12);
        // One evaluation: no gain to speak of.
        assert_eq!(curve(0.0, 0.75, None, &[(700, 0.5)]).late_gain(), None);
    }

    #[test]
    fn the_mean_over_seeds_uses_the_steps_every_seed_evaluated() {
        let a = curve(2.0, 0.25, Some(0), &[(10, 0.2), (20, 0.4)]);
        let b = curve(2.0, 0.25, Some(1), &[(10, 0.4)]);
        let ce = curve(0.0, 0.75, Some(0), &[(10, 0.0), (20, 0.1)]);
        let m = mean_by_loss(&[a, ce, b]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].setting, Setting::new(2.0, 0.25));
        assert_eq!(m[0].points.len(), 1);
        assert_eq!(m[0].points[0].0, 10);
        assert!((m[0].points[0].1 - 0.3).abs() < 1e-12);
        assert_eq!(m[1].points, vec![(10, 0.0), (20, 0.1)]);
    }

    #[test]
    fn the_table_has_a_column_per_step_and_the_late_gain() {
        let a = curve(2.0, 0.25, Some(0), &[(100, 0.1), (300, 0.5), (400, 0.55)]);
        let b = curve(2.0, 0.25, Some(1), &[(100, 0.2), (300, 0.4), (400, 0.45)]);
        let md = markdown(&[a, b]);
        assert!(md.contains("| cell | 100 | 300 | 400 | last ¼ |"), "{md}");
        assert!(
            md.contains("| FL γ = 2, α = 0.25, seed 0 | 10.0 | 50.0 | 55.0 | +5.0 |"),
            "{md}"
        );
        // The mean of the two seeds: 15, 45, 50; ¾ of 400 is 300: gain 50 − 45.
        assert!(
            md.contains("| FL γ = 2, α = 0.25 | 15.0 | 45.0 | 50.0 | +5.0 |"),
            "{md}"
        );
        assert!(markdown(&[]).contains("No finished cell"));
    }

    #[test]
    fn curves_are_read_from_the_run_folders_and_a_bad_line_is_named() {
        let dir = std::env::temp_dir().join(format!("focal-curves-{}", std::process::id()));
        let s = Setting {
            seed: Some(0),
            ..Setting::new(2.0, 0.25)
        };
        let cell = dir.join(s.file_stem());
        std::fs::create_dir_all(&cell).unwrap();
        // Rows as focal train writes them.
        let rows = [
            r#"{"kind":"step","step":1,"epoch":0,"loss":2.9,"cls_loss":2.3,"box_loss":0.5,"lr":0.000002,"num_pos":30,"grad_norm":9.0,"images_per_s":3.4}"#,
            r#"{"kind":"eval","step":1,"epoch":0,"AP":0.125,"AP50":0.0,"AP75":0.0,"APs":0.0,"APm":0.0,"APl":-1.0,"AR1":0.0,"AR10":0.0,"AR100":0.0,"ARs":0.0,"ARm":0.0,"ARl":-1.0,"seconds":0.1}"#,
            r#"{"kind":"eval","step":4,"epoch":0,"AP":0.5,"AP50":0.0,"AP75":0.0,"APs":0.0,"APm":0.0,"APl":-1.0,"AR1":0.0,"AR10":0.0,"AR100":0.0,"ARs":0.0,"ARm":0.0,"ARl":-1.0,"seconds":0.1}"#,
        ];
        std::fs::write(cell.join("metrics.jsonl"), rows.join("\n") + "\n").unwrap();
        let c = read_curve(&dir, &s).unwrap().unwrap();
        assert_eq!(c.points, vec![(1, 0.125), (4, 0.5)]);
        assert_eq!(c.late_gain(), Some(0.375));
        let other = Setting::new(0.0, 0.5);
        assert_eq!(read_curve(&dir, &other).unwrap(), None);

        std::fs::write(cell.join("metrics.jsonl"), format!("{}\n{{oops\n", rows[0])).unwrap();
        let e = read_curve(&dir, &s).unwrap_err().chain();
        assert!(e.contains("metrics.jsonl line 2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
