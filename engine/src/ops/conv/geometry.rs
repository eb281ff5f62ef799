//! The sizes of a convolution, checked once, and the sliding window that im2col walks.
//!
//! Notation (used in every file of the folder): input `x: (N, C, H, W)`, weight
//! `w: (O, C/G, KH, KW)`, output `y: (N, O, OH, OW)` with
//! `OH = ⌊(H + 2·ph − dh·(KH−1) − 1) / sh⌋ + 1` (same for W), `K = C/G·KH·KW` the
//! length of one receptive field, `P = OH·OW` the output pixels of a plane.
//!
//! Output pixel `p = oy·OW + ox` reads, at tap `(ky, kx)` of an input channel, the
//! input pixel
//!
//! ```text
//! iy = oy·sh − ph + ky·dh,    ix = ox·sw − pw + kx·dw     (zero outside the plane)
//! ```

use crate::shape::ShapeFmt;

/// Stride, padding and dilation as (vertical, horizontal), and the number of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dOptions {
    /// Stride 1, no padding, no dilation, one group.
    fn default() -> Self {
        Conv2dOptions {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dOptions {
    /// The same stride in both directions.
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }

    /// The same zero padding on all four sides.
    pub fn with_padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }

    /// The same dilation in both directions.
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }

    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// Stride `s` and padding `p`, the common case (`3x3, s, p=1`; `7x7, 2, 3`).
    pub fn sp(s: usize, p: usize) -> Self {
        Conv2dOptions::default().with_stride(s).with_padding(p)
    }
}

/// Output planes with fewer pixels than this run as one product for the whole batch
/// (`forward.rs`, `input_grad.rs`). At 256 pixels (a 16x16 map) the per-sample
/// products are already wide enough (`focal bench conv --preset small`, heads and FPN
/// at 16²).
pub(crate) const SMALL_PLANE: usize = 256;

/// Output length along one axis (PyTorch's formula), or `None` when the dilated kernel
/// does not fit in the padded input (or a size is 0).
pub fn conv_output_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let span = d * (k - 1) + 1;
    (len + 2 * p >= span).then(|| (len + 2 * p - span) / s + 1)
}

/// Every size of one convolution, checked once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// Checks the shapes and options (panics naming both shapes and the problem).
    pub(crate) fn new(x: &[usize], w: &[usize], opts: Conv2dOptions) -> Geom {
        let fail = |why: String| -> ! {
            panic!(
                "conv2d: input {} and weight {} with {opts:?}: {why}",
                ShapeFmt(x),
                ShapeFmt(w)
            )
        };
        if x.len() != 4 {
            fail("the input must be (N, C, H, W)".into());
        }
        if w.len() != 4 {
            fail("the weight must be (O, C/groups, KH, KW)".into());
        }
        let Conv2dOptions {
            stride: (sh, sw),
            padding: (ph, pw),
            dilation: (dh, dw),
            groups,
        } = opts;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || groups == 0 {
            fail("stride, dilation and groups must be at least 1".into());
        }
        let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
        if kh == 0 || kw == 0 {
            fail("the kernel must be at least 1x1".into());
        }
        if c % groups != 0 || o % groups != 0 {
            fail(format!(
                "input channels {c} and output channels {o} must both be divisible by groups"
            ));
        }
        if cg != c / groups {
            fail(format!(
                "the weight expects {cg} channels per group, the input has {c}/{groups} = {}",
                c / groups
            ));
        }
        let (Some(oh), Some(ow)) = (
            conv_output_len(h, kh, sh, ph, dh),
            conv_output_len(wd, kw, sw, pw, dw),
        ) else {
            fail("the dilated kernel is larger than the padded input".into());
        };
        Geom {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            groups,
            oh,
            ow,
        }
    }

    /// Channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Kernel taps `KH·KW`.
    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }
    /// Receptive field length `K = C/G·KH·KW` (a row of the weight matrix).
    pub fn k(&self) -> usize {
        self.cg() * self.taps()
    }
    /// Output pixels per plane.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Input pixels per plane.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    /// 1x1, stride 1, no padding: the input planes are the column matrix itself.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }

    /// The forward pass's window: over the input planes, giving the output planes.
    pub fn window(&self) -> Window {
        Window {
            h: self.h,
            w: self.w,
            kh: self.kh,
            kw: self.kw,
            sh: self.sh,
            sw: self.sw,
            ph: self.ph,
            pw: self.pw,
            dh: self.dh,
            dw: self.dw,
            oh: self.oh,
            ow: self.ow,
        }
    }

    /// The input gradient as a convolution of `∂y` (see `input_grad.rs`): for stride 1,
    /// `∂x = conv(∂y, W')` with the flipped, transposed kernel `W'`, the same dilation and
    /// padding `d·(K−1) − p` on each axis. `None` when that padding would be negative or
    /// a stride is above 1 (those take the col2im path).
    pub fn transposed_window(&self) -> Option<Window> {
        let pad = |d: usize, k: usize, p: usize| (d * (k - 1)).checked_sub(p);
        if self.sh != 1 || self.sw != 1 {
            return None;
        }
        Some(Window {
            h: self.oh,
            w: self.ow,
            kh: self.kh,
            kw: self.kw,
            sh: 1,
            sw: 1,
            ph: pad(self.dh, self.kh, self.ph)?,
            pw: pad(self.dw, self.kw, self.pw)?,
            dh: self.dh,
            dw: self.dw,
            oh: self.h,
            ow: self.w,
        })
    }
}

/// A sliding window over planes of `h × w`: kernel, stride, padding, dilation, and the
/// `oh × ow` positions it takes. Output pixel `p` reads, at tap `(ky, kx)`, input pixel
/// `(oy·sh − ph + ky·dh, ox·sw − pw + kx·dw)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }
    /// Window positions (output pixels) per plane.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Pixels per input plane.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Input row of output row `oy` at kernel row `ky`, or `None` in the padding.
    pub fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.sh + ky * self.dh)
            .checked_sub(self.ph)
            .filter(|&iy| iy < self.h)
    }

    /// For kernel column `kx`: `off` with `ix = ox·sw + off`, and the output columns
    /// `[lo, hi)` whose input column lies inside the plane (the rest is padding).
    pub fn columns(&self, kx: usize) -> (isize, usize, usize) {
        let off = (kx * self.dw) as isize - self.pw as isize;
        let sw = self.sw as isize;
        // ox·sw + off ≥ 0  ⇔  ox ≥ ⌈−off / sw⌉;   ox·sw + off < w  ⇔  ox < ⌈(w − off) / sw⌉
        let lo = if off >= 0 { 0 } else { ((-off) + sw - 1) / sw };
        let lim = self.w as isize - off;
        let hi = if lim <= 0 { 0 } else { (lim + sw - 1) / sw };
        let (lo, hi) = (lo as usize, hi as usize);
        (off, lo.min(self.ow), hi.clamp(lo.min(self.ow), self.ow))
    }

    /// For each tap and output pixel, the offset `iy·w + ix` of the input pixel read, or
    /// −1 in the padding: a `(KH·KW, P)` table. On small planes (output rows of a few
    /// pixels) looking offsets up is cheaper than walking runs of rows.
    pub fn gather_table(&self) -> Vec<i32> {
        let mut table = Vec::with_capacity(self.taps() * self.p());
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let (off, lo, hi) = self.columns(kx);
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        table.push(match self.iy(oy, ky) {
                            Some(iy) if (lo..hi).contains(&ox) => {
                                (iy * self.w) as i32 + (ox * self.sw) as i32 + off as i32
                            }
                            _ => -1,
                        });
                    }
                }
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_follows_pytorch() {
        // ResNet stem on 512 px: (512 + 6 − 6 − 1)/2 + 1 = 256.
        assert_eq!(conv_output_len(512, 7, 2, 3, 1), Some(256));
        // 3x3 s2 p1 on an odd size: (7 + 2 − 2 − 1)/2 + 1 = 4.
        assert_eq!(conv_output_len(7, 3, 2, 1, 1), Some(4));
        // dilation 2: span 5, (6 + 0 − 5)/1 + 1 = 2
        assert_eq!(conv_output_len(6, 3, 1, 0, 2), Some(2));
        assert_eq!(conv_output_len(2, 5, 1, 1, 1), None);
        assert_eq!(conv_output_len(5, 0, 1, 0, 1), None);
        assert_eq!(conv_output_len(5, 3, 0, 0, 1), None);
    }

    /// `columns` and `iy` agree with the formula, pixel by pixel, for strides,
    /// dilations and paddings on both sides of the kernel.
    #[test]
    fn window_ranges_match_the_formula() {
        for (w, k, s, p, d) in [
            (7, 3, 1, 1, 1),
            (9, 3, 2, 1, 1),
            (5, 7, 2, 3, 1),
            (8, 3, 3, 2, 2),
            (4, 1, 2, 0, 1),
        ] {
            let Some(o) = conv_output_len(w, k, s, p, d) else {
                continue;
            };
            let win = Window {
                h: w,
                w,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                ph: p,
                pw: p,
                dh: d,
                dw: d,
                oh: o,
                ow: o,
            };
            for kx in 0..k {
                let (off, lo, hi) = win.columns(kx);
                for ox in 0..o {
                    let ix = (ox * s + kx * d) as isize - p as isize;
                    assert_eq!(ix, ox as isize * s as isize + off);
                    let inside = ix >= 0 && ix < w as isize;
                    assert_eq!(
                        (lo..hi).contains(&ox),
                        inside,
                        "w{w} k{k} s{s} p{p} d{d} kx{kx} ox{ox}"
                    );
                    assert_eq!(win.iy(ox, kx).is_some(), inside);
                }
            }
        }
    }
}
