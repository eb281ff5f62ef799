//! The 12 summary numbers, AP per category, and their text and JSON forms: pycocotools'
//! `summarize`.
//!
//! Each number is the mean of the defined (> −1) entries of a slice of the precision or
//! recall array, −1 when none is defined:
//!
//! | stat | array | IoU | area | maxDets |
//! |---|---|---|---|---|
//! | AP | precision | all 10 | all | 100 |
//! | AP50, AP75 | precision | 0.50, 0.75 | all | 100 |
//! | APs, APm, APl | precision | all 10 | small, medium, large | 100 |
//! | AR1, AR10, AR100 | recall | all 10 | all | 1, 10, 100 |
//! | ARs, ARm, ARl | recall | all 10 | small, medium, large | 100 |
//!
//! AP is thus the mean over categories of the mean over 10 IoU thresholds × 101 recall
//! points. The mean is computed as NumPy computes it (pairwise summation over the
//! entries in row-major order, then one division), so the numbers are bit-identical to
//! pycocotools', not merely close.

use super::accumulate::Accumulation;
use super::params::{
    iou_thresholds, AREA_LABELS, MAX_DETS, NUM_IOU_THRESHOLDS, NUM_RECALL_THRESHOLDS,
};
use super::stats::CocoStats;

/// AP of one category: IoU 0.50:0.95, all areas, 100 detections per image.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryAp {
    pub id: i64,
    pub name: String,
    /// `None` when the category has no regular (non-crowd) ground truth, so AP is
    /// undefined (pycocotools' −1).
    pub ap: Option<f64>,
}

/// The outcome of COCO bbox evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl; −1 where
    /// pycocotools gives −1 (no ground truth in that slice).
    pub stats: CocoStats,
    /// One entry per category of the ground truth, in ascending id order.
    pub per_category: Vec<CategoryAp>,
    /// Images evaluated (every image of the ground truth).
    pub num_images: usize,
    /// Ground-truth annotations taken into account (crowd regions included).
    pub num_ground_truth: usize,
    /// Detections given (before the 100-per-image-and-category cut).
    pub num_detections: usize,
}

/// One summary row: which array, IoU threshold (None = all), area range, maxDets.
struct Row {
    ap: bool,
    iou: Option<f64>,
    area: usize,
    max_det: usize,
}

const ROWS: [Row; 12] = [
    Row {
        ap: true,
        iou: None,
        area: 0,
        max_det: 100,
    },
    Row {
        ap: true,
        iou: Some(0.5),
        area: 0,
        max_det: 100,
    },
    Row {
        ap: true,
        iou: Some(0.75),
        area: 0,
        max_det: 100,
    },
    Row {
        ap: true,
        iou: None,
        area: 1,
        max_det: 100,
    },
    Row {
        ap: true,
        iou: None,
        area: 2,
        max_det: 100,
    },
    Row {
        ap: true,
        iou: None,
        area: 3,
        max_det: 100,
    },
    Row {
        ap: false,
        iou: None,
        area: 0,
        max_det: 1,
    },
    Row {
        ap: false,
        iou: None,
        area: 0,
        max_det: 10,
    },
    Row {
        ap: false,
        iou: None,
        area: 0,
        max_det: 100,
    },
    Row {
        ap: false,
        iou: None,
        area: 1,
        max_det: 100,
    },
    Row {
        ap: false,
        iou: None,
        area: 2,
        max_det: 100,
    },
    Row {
        ap: false,
        iou: None,
        area: 3,
        max_det: 100,
    },
];

/// Computes the 12 numbers and per-category AP from the accumulated arrays.
pub fn summarize(acc: &Accumulation) -> ([f64; 12], Vec<Option<f64>>) {
    let thresholds = iou_thresholds();
    let k_total = acc.num_categories;
    let mut stats = [0.0; 12];
    for (stat, row) in stats.iter_mut().zip(ROWS.iter()) {
        // IoU indices: all, or those equal to the requested value (pycocotools compares
        // with `==`; 0.5 and 0.75 are both exactly in the linspace).
        let ts: Vec<usize> = (0..NUM_IOU_THRESHOLDS)
            .filter(|&t| row.iou.is_none() || row.iou == Some(thresholds[t]))
            .collect();
        let m = MAX_DETS.iter().position(|&d| d == row.max_det).unwrap();
        // Entries in row-major order of the sliced array: [t, r, k] or [t, k].
        let mut values = Vec::new();
        for &t in &ts {
            if row.ap {
                for r in 0..NUM_RECALL_THRESHOLDS {
                    for k in 0..k_total {
                        values.push(acc.precision(t, r, k, row.area, m));
                    }
                }
            } else {
                for k in 0..k_total {
                    values.push(acc.recall(t, k, row.area, m));
                }
            }
        }
        *stat = mean_of_defined(&values).unwrap_or(-1.0);
    }
    // Per category (as detectron2 reports it): mean of precision[:, :, k, all, 100] > −1.
    let per_category = (0..k_total)
        .map(|k| {
            let mut values = Vec::with_capacity(NUM_IOU_THRESHOLDS * NUM_RECALL_THRESHOLDS);
            for t in 0..NUM_IOU_THRESHOLDS {
                for r in 0..NUM_RECALL_THRESHOLDS {
                    values.push(acc.precision(t, r, k, 0, MAX_DETS.len() - 1));
                }
            }
            mean_of_defined(&values)
        })
        .collect();
    (stats, per_category)
}

/// `np.mean(s[s > -1])`, or None when nothing is > −1.
fn mean_of_defined(values: &[f64]) -> Option<f64> {
    let defined: Vec<f64> = values.iter().copied().filter(|&v| v > -1.0).collect();
    if defined.is_empty() {
        None
    } else {
        Some(numpy_sum(&defined) / defined.len() as f64)
    }
}

/// `np.sum` of a contiguous f64 array, bit for bit: `0.0 + pairwise(values)`, where
/// NumPy's pairwise summation adds blocks of at most 128 values with eight interleaved
/// accumulators and splits longer runs in two (at a multiple of 8) recursively.
pub fn numpy_sum(values: &[f64]) -> f64 {
    0.0 + pairwise_sum(values)
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

impl EvalResult {
    /// The 12 lines exactly as pycocotools' `summarize()` prints them, then a table of AP
    /// per category.
    pub fn summary(&self) -> String {
        let thresholds = iou_thresholds();
        let mut s = String::new();
        for (row, value) in ROWS.iter().zip(self.stats.to_array()) {
            let (title, kind) = if row.ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            let iou = match row.iou {
                None => format!(
                    "{:.2}:{:.2}",
                    thresholds[0],
                    thresholds[NUM_IOU_THRESHOLDS - 1]
                ),
                Some(v) => format!("{v:.2}"),
            };
            s.push_str(&format!(
                " {title:<18} {kind} @[ IoU={iou:<9} | area={:>6} | maxDets={:>3} ] = {value:.3}\n",
                AREA_LABELS[row.area], row.max_det
            ));
        }
        s.push_str(&self.per_category_table());
        s
    }

    /// AP per category (IoU 0.50:0.95, area all, maxDets 100), one line each.
    pub fn per_category_table(&self) -> String {
        let width = self
            .per_category
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut s = String::from("AP per category (IoU=0.50:0.95 | area=all | maxDets=100):\n");
        s.push_str(&format!(
            "  {:>6}  {:<width$}  {:>6}\n",
            "id", "category", "AP"
        ));
        for c in &self.per_category {
            let ap = match c.ap {
                Some(v) => format!("{v:>6.3}"),
                None => "     -  (no ground truth)".to_string(),
            };
            s.push_str(&format!("  {:>6}  {:<width$}  {ap}\n", c.id, c.name));
        }
        s
    }

    /// One line of JSON: the 12 numbers under their names, then `per_category`, an
    /// object from category name to AP (null where undefined). A name shared by several
    /// categories gets ` (id N)` appended so no key is lost.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        for (name, value) in self.stats.named() {
            s.push_str(&format!("\"{name}\":{},", json_number(value)));
        }
        s.push_str("\"per_category\":{");
        for (i, c) in self.per_category.iter().enumerate() {
            let shared = self
                .per_category
                .iter()
                .filter(|o| o.name == c.name)
                .count()
                > 1;
            let key = if shared {
                format!("{} (id {})", c.name, c.id)
            } else {
                c.name.clone()
            };
            let value = c.ap.map_or("null".to_string(), json_number);
            let key = serde_json::to_string(&key).expect("strings serialise");
            s.push_str(&format!("{}{key}:{value}", if i == 0 { "" } else { "," }));
        }
        s.push_str("}}");
        s
    }
}

/// A finite f64 in JSON (shortest form that reads back to the same value).
fn json_number(v: f64) -> String {
    serde_json::to_string(&v).expect("f64 serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_sum_is_pairwise_from_zero() {
        // With 0.1 repeated, the summation order shows in the last bits (a plain loop gives
        // 0.7999999999999999, 0.8999999999999999, 12.99999999999997 and
        // 100.99999999999854 for n = 8, 9, 130, 1010). Expected values
        // printed by a Python with NumPy 2.4.6 (pip install numpy):
        //   import numpy as np
        //   for n in (7, 8, 9, 130, 1010): print(n, repr(float(np.sum(np.full(n, 0.1)))))
        let cases = [
            (7, 0.7),
            (8, 0.8),
            (9, 0.9),
            (130, 12.999999999999998),
            (1010, 101.00000000000001),
        ];
        for (n, want) in cases {
            assert_eq!(numpy_sum(&vec![0.1; n]), want, "n = {n}");
        }
    }

    #[test]
    fn stats_by_name_and_json_keys() {
        let r = EvalResult {
            stats: CocoStats::from_array(std::array::from_fn(|i| i as f64 / 100.0)),
            per_category: vec![
                CategoryAp {
                    id: 3,
                    name: "cat".into(),
                    ap: Some(0.5),
                },
                CategoryAp {
                    id: 7,
                    name: "dog".into(),
                    ap: None,
                },
                CategoryAp {
                    id: 9,
                    name: "dog".into(),
                    ap: Some(0.25),
                },
            ],
            num_images: 1,
            num_ground_truth: 1,
            num_detections: 1,
        };
        assert_eq!(r.stats.get("AP"), Some(0.0));
        assert_eq!(r.stats.get("AR100"), Some(0.08));
        assert_eq!(r.stats.get("ARl"), Some(0.11));
        assert_eq!(r.stats.get("mAP"), None);
        assert_eq!(r.stats.named()[4], ("APm", 0.04));
        assert_eq!(
            r.to_json(),
            "{\"AP\":0.0,\"AP50\":0.01,\"AP75\":0.02,\"APs\":0.03,\"APm\":0.04,\"APl\":0.05,\
             \"AR1\":0.06,\"AR10\":0.07,\"AR100\":0.08,\"ARs\":0.09,\"ARm\":0.1,\"ARl\":0.11,\
             \"per_category\":{\"cat\":0.5,\"dog (id 7)\":null,\"dog (id 9)\":0.25}}"
        );
        let table = r.per_category_table();
        assert!(
            table.contains("     7  dog            -  (no ground truth)"),
            "{table}"
        );
    }
}
