//! The box coder: how a box is written relative to an anchor (the R-CNN
//! parameterisation the paper uses, §4 "Box Regression Subnet").
//!
//! With widths w = x2 − x1, heights h = y2 − y1 and centres cx = x1 + w/2, cy = y1 + h/2
//! of the anchor (a) and of the box (g):
//!
//! ```text
//!     dx = (g_cx − a_cx) / a_w      dw = ln(g_w / a_w)
//!     dy = (g_cy − a_cy) / a_h      dh = ln(g_h / a_h)
//! ```
//!
//! (weights 1, 1, 1, 1). Decoding inverts this, with dw and dh first clamped from above
//! at ln(1000/16) ≈ 4.135 so that a wild prediction cannot overflow exp (no lower clamp:
//! a tiny box is harmless).

use crate::boxes::Box4;

/// The largest dw, dh decoding accepts: ln(1000 / 16).
pub fn decode_clamp() -> f32 {
    (1000.0f32 / 16.0).ln()
}

fn centre_size(b: &Box4) -> (f32, f32, f32, f32) {
    let w = b[2] - b[0];
    let h = b[3] - b[1];
    (b[0] + 0.5 * w, b[1] + 0.5 * h, w, h)
}

/// The regression target (dx, dy, dw, dh) of box `gt` relative to `anchor`. Both must
/// have positive width and height.
pub fn encode(anchor: &Box4, gt: &Box4) -> [f32; 4] {
    let (acx, acy, aw, ah) = centre_size(anchor);
    let (gcx, gcy, gw, gh) = centre_size(gt);
    [
        (gcx - acx) / aw,
        (gcy - acy) / ah,
        (gw / aw).ln(),
        (gh / ah).ln(),
    ]
}

/// The box that `deltas` (dx, dy, dw, dh) describe relative to `anchor`.
pub fn decode(anchor: &Box4, deltas: &[f32; 4]) -> Box4 {
    let (acx, acy, aw, ah) = centre_size(anchor);
    let clamp = decode_clamp();
    let cx = deltas[0] * aw + acx;
    let cy = deltas[1] * ah + acy;
    let w = deltas[2].min(clamp).exp() * aw;
    let h = deltas[3].min(clamp).exp() * ah;
    [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_engine::Rng;

    #[test]
    fn encode_by_hand() {
        // Anchor centre (10, 20), 20×40; box centre (15, 10), 40×10:
        // dx = 5/20 = 0.25, dy = −10/40 = −0.25, dw = ln 2, dh = ln 0.25.
        let d = encode(&[0., 0., 20., 40.], &[-5., 5., 35., 15.]);
        let e = [0.25, -0.25, 2f32.ln(), 0.25f32.ln()];
        for k in 0..4 {
            assert!((d[k] - e[k]).abs() < 1e-6, "{d:?}");
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let a = {
                let (x, y) = (rng.uniform_range(-50., 500.), rng.uniform_range(-50., 500.));
                // At least 16 px, so g_w/a_w ≤ 600/16 = 37.5 stays below the clamp's 62.5.
                [
                    x,
                    y,
                    x + rng.uniform_range(16., 800.),
                    y + rng.uniform_range(16., 800.),
                ]
            };
            let g = {
                let (x, y) = (rng.uniform_range(0., 500.), rng.uniform_range(0., 500.));
                [
                    x,
                    y,
                    x + rng.uniform_range(1., 600.),
                    y + rng.uniform_range(1., 600.),
                ]
            };
            let back = decode(&a, &encode(&a, &g));
            for k in 0..4 {
                // f32 arithmetic on coordinates up to ~1300 px: a few ulps of 1e3.
                assert!((back[k] - g[k]).abs() < 1e-3, "{g:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn decode_clamps_dw_dh_from_above_only() {
        let anchor = [0., 0., 16., 16.];
        // dw = 10 would give a 16·e^10 ≈ 352 000 px box; the clamp gives 16·1000/16 = 1000.
        let b = decode(&anchor, &[0., 0., 10., 10.]);
        assert!((b[2] - b[0] - 1000.0).abs() < 1e-2, "{b:?}");
        assert!((b[3] - b[1] - 1000.0).abs() < 1e-2, "{b:?}");
        // Centred on the anchor's centre (8, 8).
        assert!((b[0] + b[2] - 16.0).abs() < 1e-3);
        // Exactly at the clamp nothing changes; just below it is not clamped.
        let at = decode(&anchor, &[0., 0., decode_clamp(), 0.]);
        let below = decode(&anchor, &[0., 0., decode_clamp() - 0.1, 0.]);
        assert!((at[2] - at[0] - 1000.0).abs() < 1e-2);
        assert!((below[2] - below[0] - 1000.0 * (-0.1f32).exp()).abs() < 1e-2);
        // No lower clamp: dw = −10 shrinks the box to 16·e^−10.
        let small = decode(&anchor, &[0., 0., -10., 0.]);
        assert!((small[2] - small[0] - 16.0 * (-10f32).exp()).abs() < 1e-6);
        // A huge delta does not overflow.
        let b = decode(&anchor, &[0., 0., 1e30, 1e30]);
        assert!(b.iter().all(|v| v.is_finite()));
    }
}
