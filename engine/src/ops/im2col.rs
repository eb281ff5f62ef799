//! im2col and col2im: the reshuffles that turn a convolution into a matrix product.
//!
//! For one sample and one group, output pixel `p = oy·OW + ox` reads, at kernel tap
//! `(ky, kx)` of input channel `c`, the input pixel
//!
//! ```text
//! iy = oy·sh − ph + ky·dh,    ix = ox·sw − pw + kx·dw     (zero outside the image)
//! ```
//!
//! **im2col** writes these values into a column buffer with one row per
//! `(c, ky, kx)` — row `r = (c·KH + ky)·KW + kx`, matching the weight's row-major
//! `(O, C/G, KH, KW)` layout — and one column per output pixel of a tile
//! `[p0, p0 + t)`:
//!
//! ```text
//! cols[r, j] = x[c, iy(p0 + j), ix(p0 + j)]         (C/G·KH·KW, t)
//! ```
//!
//! **col2im** is its adjoint: it adds `cols[r, j]` onto `x[c, iy, ix]`. Where windows
//! overlap (kernel larger than the stride) one input pixel receives several terms; they
//! are added in row order, then pixel order, the same every time.
//!
//! Both walk the buffer in runs ([`Segment`]) that share one buffer row and one output
//! row, so the inner loops are a contiguous copy (stride 1) or a strided gather, with
//! the padding handled by two fills instead of a test per pixel.

use super::conv2d::Geom;

/// Visits the pieces of a column buffer for a tile of output pixels `[p0, p0 + t)` and
/// the input channels `0..channels` of one plane stack.
///
/// Row `r = (c·KH + ky)·KW + kx` of the buffer holds, for each pixel of the tile, the
/// input value under tap `(ky, kx)` of channel `c`. A tile spans one or more output
/// rows; for each (buffer row, output row) the callback gets a [`Segment`].
pub(crate) fn for_each_segment(
    g: &Geom,
    channels: usize,
    p0: usize,
    t: usize,
    mut f: impl FnMut(Segment),
) {
    for c in 0..channels {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                // Input column of output column ox: ix = ox·sw + off.
                let off = (kx * g.dw) as isize - g.pw as isize;
                let mut p = p0;
                while p < p0 + t {
                    let (oy, ox0) = (p / g.ow, p % g.ow);
                    let ox1 = g.ow.min(ox0 + (p0 + t - p));
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    let iy = (iy >= 0 && (iy as usize) < g.h).then_some(iy as usize);
                    // Output columns whose input column is inside the image: 0 ≤ ox·sw + off < W.
                    let lo = if off >= 0 {
                        ox0
                    } else {
                        ox0.max(((-off) as usize).div_ceil(g.sw)).min(ox1)
                    };
                    let lim = g.w as isize - off; // ox·sw < lim
                    let hi = if lim <= 0 {
                        lo
                    } else {
                        ox1.min((lim as usize).div_ceil(g.sw)).max(lo)
                    };
                    f(Segment {
                        c,
                        at: row * t + (p - p0),
                        ox0,
                        ox1,
                        iy,
                        lo,
                        hi,
                        off,
                    });
                    p += ox1 - ox0;
                }
            }
        }
    }
}

/// One run of a column-buffer row that maps to one output row.
pub(crate) struct Segment {
    /// Input channel (within the stack passed in).
    c: usize,
    /// Buffer index of output column `ox0`.
    at: usize,
    /// Output columns `[ox0, ox1)`.
    ox0: usize,
    ox1: usize,
    /// Input row, or `None` when the tap lands in the vertical padding.
    iy: Option<usize>,
    /// Output columns `[lo, hi)` read inside the image; the rest is horizontal padding.
    lo: usize,
    hi: usize,
    /// `ix = ox·sw + off`.
    off: isize,
}

/// Fills `cols` (`channels·KH·KW` rows of `t` pixels) from the planes `x`
/// (`channels` planes of `H·W`) for the output pixels `[p0, p0 + t)`. Every entry is
/// written (zeros in the padding), so `cols` may arrive holding anything.
pub(crate) fn im2col(g: &Geom, x: &[f32], channels: usize, p0: usize, t: usize, cols: &mut [f32]) {
    let (hw, w, sw) = (g.hw(), g.w, g.sw);
    for_each_segment(g, channels, p0, t, |s| {
        let dst = &mut cols[s.at..s.at + (s.ox1 - s.ox0)];
        let Some(iy) = s.iy else {
            dst.fill(0.0);
            return;
        };
        let src = &x[s.c * hw + iy * w..s.c * hw + (iy + 1) * w];
        let (a, b) = (s.lo - s.ox0, s.hi - s.ox0);
        dst[..a].fill(0.0);
        dst[b..].fill(0.0);
        let ix0 = (s.lo * sw) as isize + s.off;
        if s.hi > s.lo {
            let ix0 = ix0 as usize;
            if sw == 1 {
                dst[a..b].copy_from_slice(&src[ix0..ix0 + (b - a)]);
            } else {
                gather(&mut dst[a..b], &src[ix0..], sw);
            }
        }
    });
}

/// Adds `cols` (as laid out by [`im2col`]) back onto the planes `x`: the adjoint of
/// im2col.
pub(crate) fn col2im(g: &Geom, cols: &[f32], channels: usize, p0: usize, t: usize, x: &mut [f32]) {
    let (hw, w, sw) = (g.hw(), g.w, g.sw);
    for_each_segment(g, channels, p0, t, |s| {
        let Some(iy) = s.iy else { return };
        if s.hi <= s.lo {
            return;
        }
        let src = &cols[s.at + (s.lo - s.ox0)..s.at + (s.hi - s.ox0)];
        let dst = &mut x[s.c * hw + iy * w..s.c * hw + (iy + 1) * w];
        let ix0 = ((s.lo * sw) as isize + s.off) as usize;
        scatter_add(&mut dst[ix0..], src, sw);
    });
}

/// `dst[j] = src[j·s]` for every `j` (`s ≥ 2`). Written over `s`-sized chunks so the
/// loop has no index checks; the constant-stride-2 case (every strided conv in ResNet)
/// compiles to vector shuffles.
fn gather(dst: &mut [f32], src: &[f32], s: usize) {
    let Some((last, body)) = dst.split_last_mut() else {
        return;
    };
    let n = body.len();
    if s == 2 {
        for (d, pair) in body.iter_mut().zip(src[..2 * n].chunks_exact(2)) {
            *d = pair[0];
        }
    } else {
        for (d, chunk) in body.iter_mut().zip(src[..s * n].chunks_exact(s)) {
            *d = chunk[0];
        }
    }
    *last = src[s * n];
}

/// `dst[j·s] += src[j]` for every `j`: the adjoint of [`gather`] (any `s ≥ 1`).
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
