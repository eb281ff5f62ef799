//! The fixed parameters of COCO bbox evaluation, built bit for bit as pycocotools builds
//! them.
//!
//! pycocotools makes its thresholds with `np.linspace(start, stop, num)`, which computes
//! `step = (stop - start) / (num - 1)` and then `t·step + start` for each index `t`, and
//! finally writes `stop` itself into the last slot. Rebuilding them as `0.5 + 0.05·t` is
//! *not* the same: that gives 0.8500000000000001 at t = 7 where linspace gives 0.85, so a
//! detection with IoU exactly 0.85 would stop matching at that threshold.

/// Number of IoU thresholds T (0.50, 0.55, ..., 0.95).
pub const NUM_IOU_THRESHOLDS: usize = 10;
/// Number of recall thresholds R (0.00, 0.01, ..., 1.00).
pub const NUM_RECALL_THRESHOLDS: usize = 101;

/// Detections kept per image *and category*, and the three budgets the summary reports.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];

/// Object-size ranges on the annotation's `area` field, both bounds inclusive:
/// all = [0, 1e10], small = [0, 32²], medium = [32², 96²], large = [96², 1e10].
pub const AREA_RANGES: [(f64, f64); 4] =
    [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];
/// Labels of [`AREA_RANGES`], as the summary prints them.
pub const AREA_LABELS: [&str; 4] = ["all", "small", "medium", "large"];
/// Number of area ranges A.
pub const NUM_AREAS: usize = 4;

/// `np.linspace(start, stop, num)` in f64, step by step as NumPy computes it.
pub fn numpy_linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    let mut out = [0.0; N];
    for (t, v) in out.iter_mut().enumerate() {
        *v = t as f64 * step + start;
    }
    out[N - 1] = stop;
    out
}

/// The IoU thresholds `np.linspace(.5, 0.95, 10)`:
/// [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.8999999999999999, 0.95].
pub fn iou_thresholds() -> [f64; NUM_IOU_THRESHOLDS] {
    numpy_linspace(0.5, 0.95)
}

/// The recall thresholds `np.linspace(.0, 1.00, 101)`, i.e. `r·0.01` (r = 35 gives
/// 0.35000000000000003).
pub fn recall_thresholds() -> [f64; NUM_RECALL_THRESHOLDS] {
    numpy_linspace(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_numpy_bit_for_bit() {
        // Printed by a Python with NumPy (pip install numpy):
        //   python -c "import numpy as np;
        //   print([repr(float(x)) for x in np.linspace(.5, 0.95, 10)])"
        let numpy = [
            0.5,
            0.55,
            0.6,
            0.65,
            0.7,
            0.75,
            0.8,
            0.85,
            0.8999999999999999,
            0.95,
        ];
        assert_eq!(iou_thresholds(), numpy);
        // The naive construction 0.5 + 0.05·t differs from NumPy's linspace at t = 7.
        assert_eq!(0.5 + 0.05 * 7.0, 0.8500000000000001);
        let rec = recall_thresholds();
        // np.linspace(0, 1, 101)[r] == r * 0.01 for every r (checked in NumPy 2.4.6).
        for (r, v) in rec.iter().enumerate() {
            assert_eq!(*v, r as f64 * 0.01, "r = {r}");
        }
        assert_eq!(rec[35], 0.35000000000000003);
        assert_eq!(rec[70], 0.7000000000000001);
        assert_eq!(rec[100], 1.0);
    }
}
