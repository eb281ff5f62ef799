//! Intersection over union of two `[x, y, w, h]` boxes, with COCO's crowd rule.
//!
//! For a crowd region the union is replaced by the detection's own area, so the value is
//! the fraction of the detection that lies inside the region: a detection covering one
//! person of a crowd still "matches" it (and, the crowd being ignored, is then neither a
//! true nor a false positive).
//!
//! The operations are those of pycocotools' C routine, in the same order, so the value is
//! bit-identical: `w = min(dx+dw, gx+gw) − max(dx, gx)`, likewise `h`; 0 when either is
//! ≤ 0; else `i = w·h` over `u = da + ga − i` (or `da` for a crowd region), where
//! `da = dw·dh` and `ga = gw·gh` are the *box* areas (not the annotation's `area` field).

/// IoU of detection box `d` with ground-truth box `g`; `crowd` uses the detection's area
/// as the denominator.
pub fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let det_area = d[2] * d[3];
    let union = if crowd {
        det_area
    } else {
        det_area + g[2] * g[3] - inter
    };
    inter / union
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples() {
        // Two 10×10 boxes overlapping in a 5×10 strip: 50 / (100 + 100 − 50) = 1/3.
        assert_eq!(
            iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0], false),
            50.0 / 150.0
        );
        // Touching edges and disjoint boxes give 0.
        assert_eq!(
            iou(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 5.0, 5.0], false),
            0.0
        );
        assert_eq!(
            iou(&[0.0, 0.0, 1.0, 1.0], &[3.0, 3.0, 1.0, 1.0], false),
            0.0
        );
        // A 10×10 detection inside a 100×100 crowd region: 100 / 100 = 1 (the union would
        // give 100 / 10000 = 0.01).
        let d = [20.0, 20.0, 10.0, 10.0];
        let crowd = [0.0, 0.0, 100.0, 100.0];
        assert_eq!(iou(&d, &crowd, true), 1.0);
        assert_eq!(iou(&d, &crowd, false), 0.01);
        // Half of a 10×10 detection inside a crowd region: 50 / 100.
        assert_eq!(iou(&[95.0, 0.0, 10.0, 10.0], &crowd, true), 0.5);
        // The det/gt roles are not symmetric for crowds: the denominator is the det's area.
        assert_eq!(iou(&crowd, &d, true), 100.0 / 10000.0);
    }
}
