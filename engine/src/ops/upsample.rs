//! Nearest-neighbour upsampling of NCHW images, as used by the FPN top-down path.
//!
//! Output pixel `(oy, ox)` copies input pixel `(⌊oy·H/OH⌋, ⌊ox·W/OW⌋)` — PyTorch's
//! `mode='nearest'`, computed here in exact integer arithmetic. For an integer factor
//! `f` that is `(⌊oy/f⌋, ⌊ox/f⌋)`: every input pixel becomes an `f × f` block.
//!
//! Backward is the adjoint: each input pixel receives the sum of the gradients of the
//! output pixels copied from it, added in output order (one task per plane).

use rayon::prelude::*;

use crate::gradcheck::{randn, Case};
use crate::op::Op;
use crate::rng::Rng;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;

/// Source index of every destination index along one axis: `⌊dst·input/output⌋`.
fn sources(input: usize, output: usize) -> Vec<usize> {
    (0..output).map(|d| d * input / output).collect()
}

/// Nearest-neighbour upsampling by an integer `factor` in both directions:
/// `(N, C, H, W) -> (N, C, H·factor, W·factor)`.
pub fn upsample_nearest(x: &Tensor, factor: usize) -> Tensor {
    assert!(
        x.rank() == 4 && factor >= 1,
        "upsample_nearest: input {} with factor {factor}: expected an (N, C, H, W) input and \
         a factor of at least 1",
        ShapeFmt(x.shape())
    );
    upsample_nearest_to(x, x.shape()[2] * factor, x.shape()[3] * factor)
}

/// Nearest-neighbour resize of `x: (N, C, H, W)` to `(N, C, h, w)` (PyTorch
/// `F.interpolate(x, size=(h, w), mode='nearest')`).
///
/// ```
/// use focal_engine::ops::upsample::upsample_nearest_to;
/// use focal_engine::Tensor;
/// let x = Tensor::from_vec(&[1, 1, 1, 2], vec![1.0, 2.0]);
/// // width 2 -> 3: sources ⌊0·2/3⌋, ⌊1·2/3⌋, ⌊2·2/3⌋ = 0, 0, 1
/// assert_eq!(upsample_nearest_to(&x, 1, 3).to_vec(), vec![1.0, 1.0, 2.0]);
/// ```
pub fn upsample_nearest_to(x: &Tensor, h: usize, w: usize) -> Tensor {
    let s = x.shape();
    assert!(
        s.len() == 4 && (h * w == 0 || s[2] * s[3] > 0),
        "upsample_nearest: cannot resize input {} to {h}x{w}; expected a non-empty \
         (N, C, H, W) input",
        ShapeFmt(s)
    );
    let (planes, ih, iw) = (s[0] * s[1], s[2], s[3]);
    let (rows, cols) = (sources(ih, h), sources(iw, w));
    let xd = x.data();
    let mut y = vec![0.0f32; planes * h * w];
    if h * w > 0 {
        y.par_chunks_mut(h * w).enumerate().for_each(|(pl, y)| {
            let plane = &xd[pl * ih * iw..(pl + 1) * ih * iw];
            for (oy, row) in y.chunks_mut(w).enumerate() {
                let src = &plane[rows[oy] * iw..(rows[oy] + 1) * iw];
                for (v, &sx) in row.iter_mut().zip(&cols) {
                    *v = src[sx];
                }
            }
        });
    }
    let out = Tensor::from_vec(&[s[0], s[1], h, w], y);
    let x_shape = s.to_vec();
    record(Op::UpsampleNearest, out, &[x], move |_| {
        Box::new(move |gy| {
            let mut gx = vec![0.0f32; planes * ih * iw];
            let gd = gy.data();
            if h * w > 0 {
                gx.par_chunks_mut(ih * iw).enumerate().for_each(|(pl, gx)| {
                    let g = &gd[pl * h * w..(pl + 1) * h * w];
                    for (oy, grow) in g.chunks(w).enumerate() {
                        let dst = &mut gx[rows[oy] * iw..(rows[oy] + 1) * iw];
                        for (&v, &sx) in grow.iter().zip(&cols) {
                            dst[sx] += v;
                        }
                    }
                });
            }
            vec![Some(Tensor::from_vec(&x_shape, gx))]
        })
    })
}

pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(24);
    vec![
        Case::new(
            Op::UpsampleNearest,
            "factor 2",
            vec![randn(&mut r, &[2, 2, 2, 3])],
            |x| upsample_nearest(&x[0], 2),
        ),
        Case::new(
            Op::UpsampleNearest,
            "factor 3",
            vec![randn(&mut r, &[1, 1, 2, 2])],
            |x| upsample_nearest(&x[0], 3),
        ),
        Case::new(
            Op::UpsampleNearest,
            "to exact size 3x5 -> 5x9 (FPN odd sizes)",
            vec![randn(&mut r, &[1, 2, 3, 5])],
            |x| upsample_nearest_to(&x[0], 5, 9),
        ),
        Case::new(
            Op::UpsampleNearest,
            "to exact size 4x4 -> 6x7",
            vec![randn(&mut r, &[1, 1, 4, 4])],
            |x| upsample_nearest_to(&x[0], 6, 7),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_two_by_hand() {
        let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let y = upsample_nearest(&x, 2);
        assert_eq!(
            y.to_vec(),
            vec![
                1.0, 1.0, 2.0, 2.0, //
                1.0, 1.0, 2.0, 2.0, //
                3.0, 3.0, 4.0, 4.0, //
                3.0, 3.0, 4.0, 4.0,
            ]
        );
    }

    #[test]
    fn odd_fpn_size_matches_pytorch_indices() {
        // F.interpolate(size=5) of a length-3 axis picks ⌊d·3/5⌋ = 0, 0, 1, 1, 2.
        assert_eq!(sources(3, 5), vec![0, 0, 1, 1, 2]);
        // 13 -> 25 (an 800 px image's P5 -> P4): ⌊d·13/25⌋
        let s = sources(13, 25);
        assert_eq!(&s[..6], &[0, 0, 1, 1, 2, 2]);
        assert_eq!(s[24], 12);
    }
}
