//! Axis-aligned boxes as `[x1, y1, x2, y2]` in pixels (x2 = x1 + width, no "+1"), and
//! their intersection over union.

/// A box `[x1, y1, x2, y2]`, corners in pixels, x2 ≥ x1 and y2 ≥ y1 for a proper box.
pub type Box4 = [f32; 4];

/// Width·height, 0 for an empty or inverted box.
pub fn area(b: &Box4) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union, |a ∩ b| / |a ∪ b|, 0 when the boxes do not overlap (or when
/// both are empty).
pub fn iou(a: &Box4, b: &Box4) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    if inter <= 0.0 {
        return 0.0;
    }
    inter / (area(a) + area(b) - inter)
}

/// The box with its corners limited to the image `[0, width] × [0, height]`.
pub fn clip(b: &Box4, height: f32, width: f32) -> Box4 {
    [
        b[0].clamp(0.0, width),
        b[1].clamp(0.0, height),
        b[2].clamp(0.0, width),
        b[3].clamp(0.0, height),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_by_hand() {
        // Two 2×2 squares overlapping in a 1×2 strip: 2 / (4 + 4 − 2) = 1/3.
        assert!((iou(&[0., 0., 2., 2.], &[1., 0., 3., 2.]) - 1.0 / 3.0).abs() < 1e-7);
        assert_eq!(iou(&[0., 0., 2., 2.], &[0., 0., 2., 2.]), 1.0);
        // Touching edges: no overlap.
        assert_eq!(iou(&[0., 0., 2., 2.], &[2., 0., 4., 2.]), 0.0);
        assert_eq!(iou(&[0., 0., 0., 0.], &[0., 0., 0., 0.]), 0.0);
        // A box inside another: 1 / 16.
        assert!((iou(&[0., 0., 4., 4.], &[1., 1., 2., 2.]) - 1.0 / 16.0).abs() < 1e-7);
        assert_eq!(clip(&[-3., 5., 12., 40.], 30.0, 10.0), [0., 5., 10., 30.]);
    }
}
