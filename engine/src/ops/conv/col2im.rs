//! col2im: adding a block of column-matrix gradients back onto the image, the adjoint of
//! im2col (`im2col.rs`), for the input gradients that do not run as a convolution
//! (`input_grad.rs`).
//!
//! Row `r = tap` of the block (for one input channel; the caller offsets to the
//! channel's rows) and column `q` hold `∂cols` for tap `(ky, kx)` and output pixel
//! `p0 + q`; col2im adds it onto the input pixel that pixel's window read there:
//!
//! ```text
//!   ∂x[c, iy, ix] += ∂cols[c·KH·KW + tap, q]     iy = oy·sh − ph + ky·dh, ix = ox·sw − pw + kx·dw
//! ```
//!
//! Where windows overlap (kernel larger than the stride) one input pixel receives
//! several terms, added in tap order, then pixel order: the same every time.

use super::geometry::Window;

/// Adds the gradient of output pixels `[p0, p0 + t)` of one sample and one input
/// channel onto its plane `x` (`H·W` floats): row `tap` of the block starts at
/// `dcols[tap·ld + col]`. With `table` ([`Window::gather_table`], for small planes whose
/// output rows are a few pixels long) each term's place is looked up instead.
#[allow(clippy::too_many_arguments)]
pub(crate) fn col2im(
    win: &Window,
    table: Option<&[i32]>,
    dcols: &[f32],
    ld: usize,
    col: usize,
    p0: usize,
    t: usize,
    x: &mut [f32],
) {
    if let Some(table) = table {
        let p = win.p();
        for tap in 0..win.taps() {
            let src = &dcols[tap * ld + col..tap * ld + col + t];
            for (v, &at) in src.iter().zip(&table[tap * p + p0..tap * p + p0 + t]) {
                if at >= 0 {
                    x[at as usize] += *v;
                }
            }
        }
        return;
    }
    for ky in 0..win.kh {
        for kx in 0..win.kw {
            let row = &dcols[(ky * win.kw + kx) * ld + col..];
            let (off, lo, hi) = win.columns(kx);
            let mut p = p0;
            while p < p0 + t {
                let (oy, ox0) = (p / win.ow, p % win.ow);
                let ox1 = win.ow.min(ox0 + (p0 + t - p));
                let (a, b) = (lo.clamp(ox0, ox1), hi.clamp(lo.clamp(ox0, ox1), ox1));
                if let (Some(iy), true) = (win.iy(oy, ky), b > a) {
                    let src = &row[p - p0 + (a - ox0)..p - p0 + (b - ox0)];
                    let ix0 = (a as isize * win.sw as isize + off) as usize;
                    scatter_add(&mut x[iy * win.w + ix0..(iy + 1) * win.w], src, win.sw);
                }
                p += ox1 - ox0;
            }
        }
    }
}

/// `dst[j·s] += src[j]` for every `j`: the adjoint of a strided gather (any `s ≥ 1`).
fn scatter_add(dst: &mut [f32], src: &[f32], s: usize) {
    let Some((last, body)) = src.split_last() else {
        return;
    };
    let n = body.len();
    match s {
        1 => {
            for (d, v) in dst[..n].iter_mut().zip(body) {
                *d += *v;
            }
        }
        2 => {
            for (pair, v) in dst[..2 * n].chunks_exact_mut(2).zip(body) {
                pair[0] += *v;
            }
        }
        _ => {
            for (chunk, v) in dst[..s * n].chunks_exact_mut(s).zip(body) {
                chunk[0] += *v;
            }
        }
    }
    dst[s * n] += *last;
}
