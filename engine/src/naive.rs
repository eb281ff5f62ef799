//! Naive reference kernels, written straight from the definitions with plain nested
//! loops and f64 accumulation. They are slow on purpose: the fast kernels (GEMM with
//! strides, im2col + GEMM convolution, col2im, pooling, upsampling) are tested against
//! them over a table of shapes in `engine/tests/kernels.rs`.
//!
//! Each function here shares no code with the fast path it checks. In particular the
//! convolution input gradient is a *gather* over the output positions each input pixel
//! fed (the fast path scatters columns back with col2im), and the weight gradient is the
//! textbook sum over batch and output pixels.

use crate::ops::conv::Conv2dOptions;
use crate::tensor::Tensor;

/// `A·B` for row-major `A: (m, k)` and `B: (k, n)`.
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for l in 0..k {
                acc += a[i * k + l] as f64 * b[l * n + j] as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
    c
}

/// Element `(i, j)` of a matrix stored with general strides.
fn at(d: &[f32], i: usize, j: usize, rs: usize, cs: usize) -> f64 {
    d[i * rs + j * cs] as f64
}

/// `α·A·B + β·C` for matrices with general (non-negative) strides, element by element.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for l in 0..k {
                acc += at(a, i, l, rsa, csa) * at(b, l, j, rsb, csb);
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * at(c, i, j, rsc, csc)
            };
            c[i * rsc + j * csc] = (alpha as f64 * acc + old) as f32;
        }
    }
}

/// The convolution's sizes, unpacked once.
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    cg: usize,
    og: usize,
}

fn dims(x_shape: &[usize], w_shape: &[usize], opts: Conv2dOptions) -> Dims {
    let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (o, cg, kh, kw) = (w_shape[0], w_shape[1], w_shape[2], w_shape[3]);
    assert_eq!(
        cg * opts.groups,
        c,
        "naive conv: channels do not match groups"
    );
    let out = |len: usize, k: usize, s: usize, p: usize, d: usize| {
        (len + 2 * p - d * (k - 1) - 1) / s + 1
    };
    Dims {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        oh: out(h, kh, opts.stride.0, opts.padding.0, opts.dilation.0),
        ow: out(w, kw, opts.stride.1, opts.padding.1, opts.dilation.1),
        cg,
        og: o / opts.groups,
    }
}

/// The input coordinate read by output coordinate `o` at kernel tap `k`, if not padding.
fn input_coord(o: usize, k: usize, s: usize, p: usize, d: usize, len: usize) -> Option<usize> {
    let i = (o * s + k * d) as isize - p as isize;
    (i >= 0 && (i as usize) < len).then_some(i as usize)
}

/// `y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, g·C/G + c, oy·s − p + ky·d, ox·s − p + kx·d]`
/// with `g = o / (O/G)` and zero outside the image.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, opts: Conv2dOptions) -> Tensor {
    let d = dims(x.shape(), w.shape(), opts);
    let (xd, wd) = (x.data(), w.data());
    let (sh, sw) = opts.stride;
    let (ph, pw) = opts.padding;
    let (dh, dw) = opts.dilation;
    let mut y = vec![0.0f32; d.n * d.o * d.oh * d.ow];
    for n in 0..d.n {
        for o in 0..d.o {
            let g = o / d.og;
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let mut acc = bias.map_or(0.0, |b| b.data()[o] as f64);
                    for c in 0..d.cg {
                        let ci = g * d.cg + c;
                        for ky in 0..d.kh {
                            let Some(iy) = input_coord(oy, ky, sh, ph, dh, d.h) else {
                                continue;
                            };
                            for kx in 0..d.kw {
                                let Some(ix) = input_coord(ox, kx, sw, pw, dw, d.w) else {
                                    continue;
                                };
                                let xv = xd[((n * d.c + ci) * d.h + iy) * d.w + ix];
                                let wv = wd[((o * d.cg + c) * d.kh + ky) * d.kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((n * d.o + o) * d.oh + oy) * d.ow + ox] = acc as f32;
                }
            }
        }
    }
    Tensor::from_vec(&[d.n, d.o, d.oh, d.ow], y)
}

/// The output coordinate whose tap `k` reads input coordinate `i`, if there is one:
/// `o·s − p + k·d = i`, i.e. `o = (i + p − k·d) / s` when that divides exactly.
fn output_coord(i: usize, k: usize, s: usize, p: usize, d: usize, len: usize) -> Option<usize> {
    let t = (i + p) as isize - (k * d) as isize;
    if t < 0 || t.rem_euclid(s as isize) != 0 {
        return None;
    }
    let o = t as usize / s;
    (o < len).then_some(o)
}

/// `∂L/∂x[n,ci,iy,ix] = Σ_{o in ci's group, ky, kx} gy[n,o,oy,ox] · w[o,c,ky,kx]` over
/// the output pixels `(oy, ox)` whose window put tap `(ky, kx)` on `(iy, ix)`.
pub fn conv2d_input_grad(
    x_shape: &[usize],
    w: &Tensor,
    gy: &Tensor,
    opts: Conv2dOptions,
) -> Tensor {
    let d = dims(x_shape, w.shape(), opts);
    let (wd, gd) = (w.data(), gy.data());
    let (sh, sw) = opts.stride;
    let (ph, pw) = opts.padding;
    let (dh, dw) = opts.dilation;
    let mut gx = vec![0.0f32; d.n * d.c * d.h * d.w];
    for n in 0..d.n {
        for ci in 0..d.c {
            let (g, c) = (ci / d.cg, ci % d.cg);
            for iy in 0..d.h {
                for ix in 0..d.w {
                    let mut acc = 0.0f64;
                    for o in g * d.og..(g + 1) * d.og {
                        for ky in 0..d.kh {
                            let Some(oy) = output_coord(iy, ky, sh, ph, dh, d.oh) else {
                                continue;
                            };
                            for kx in 0..d.kw {
                                let Some(ox) = output_coord(ix, kx, sw, pw, dw, d.ow) else {
                                    continue;
                                };
                                let gv = gd[((n * d.o + o) * d.oh + oy) * d.ow + ox];
                                let wv = wd[((o * d.cg + c) * d.kh + ky) * d.kw + kx];
                                acc += gv as f64 * wv as f64;
                            }
                        }
                    }
                    gx[((n * d.c + ci) * d.h + iy) * d.w + ix] = acc as f32;
                }
            }
        }
    }
    Tensor::from_vec(x_shape, gx)
}

/// `∂L/∂w[o,c,ky,kx] = Σ_{n,oy,ox} gy[n,o,oy,ox] · x[n, g·C/G + c, oy·s − p + ky·d, ox·s − p + kx·d]`.
pub fn conv2d_weight_grad(
    x: &Tensor,
    w_shape: &[usize],
    gy: &Tensor,
    opts: Conv2dOptions,
) -> Tensor {
    let d = dims(x.shape(), w_shape, opts);
    let (xd, gd) = (x.data(), gy.data());
    let (sh, sw) = opts.stride;
    let (ph, pw) = opts.padding;
    let (dh, dw) = opts.dilation;
    let mut gw = vec![0.0f32; d.o * d.cg * d.kh * d.kw];
    for o in 0..d.o {
        let g = o / d.og;
        for c in 0..d.cg {
            let ci = g * d.cg + c;
            for ky in 0..d.kh {
                for kx in 0..d.kw {
                    let mut acc = 0.0f64;
                    for n in 0..d.n {
                        for oy in 0..d.oh {
                            let Some(iy) = input_coord(oy, ky, sh, ph, dh, d.h) else {
                                continue;
                            };
                            for ox in 0..d.ow {
                                let Some(ix) = input_coord(ox, kx, sw, pw, dw, d.w) else {
                                    continue;
                                };
                                let gv = gd[((n * d.o + o) * d.oh + oy) * d.ow + ox];
                                let xv = xd[((n * d.c + ci) * d.h + iy) * d.w + ix];
                                acc += gv as f64 * xv as f64;
                            }
                        }
                    }
                    gw[((o * d.cg + c) * d.kh + ky) * d.kw + kx] = acc as f32;
                }
            }
        }
    }
    Tensor::from_vec(w_shape, gw)
}

/// `∂L/∂b[o] = Σ_{n,oy,ox} gy[n,o,oy,ox]`.
pub fn conv2d_bias_grad(gy: &Tensor) -> Tensor {
    let s = gy.shape();
    let (n, o, hw) = (s[0], s[1], s[2] * s[3]);
    let g = gy.data();
    let v = (0..o)
        .map(|oc| {
            let mut acc = 0.0f64;
            for b in 0..n {
                for p in 0..hw {
                    acc += g[(b * o + oc) * hw + p] as f64;
                }
            }
            acc as f32
        })
        .collect();
    Tensor::from_vec(&[o], v)
}

/// Output size of a max pool (PyTorch, `ceil_mode = False`).
fn pool_out(len: usize, k: usize, s: usize, p: usize) -> usize {
    (len + 2 * p - k) / s + 1
}

/// For each output of a max pool, the flat index (within its (n, c) plane) of the
/// first maximum of its window, padding counting as −∞.
fn pool_argmax(
    x: &Tensor,
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
) -> (Vec<usize>, [usize; 4]) {
    let s = x.shape();
    let (nc, h, w) = (s[0] * s[1], s[2], s[3]);
    let (oh, ow) = (pool_out(h, kh, sh, ph), pool_out(w, kw, sw, pw));
    let xd = x.data();
    let mut arg = Vec::with_capacity(nc * oh * ow);
    for plane in 0..nc {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(f32, usize)> = None;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let (Some(iy), Some(ix)) = (
                            input_coord(oy, ky, sh, ph, 1, h),
                            input_coord(ox, kx, sw, pw, 1, w),
                        ) else {
                            continue;
                        };
                        let v = xd[plane * h * w + iy * w + ix];
                        if best.is_none_or(|(b, _)| v > b) {
                            best = Some((v, iy * w + ix));
                        }
                    }
                }
                arg.push(plane * h * w + best.expect("window entirely in the padding").1);
            }
        }
    }
    (arg, [s[0], s[1], oh, ow])
}

/// `y[n,c,oy,ox] = max` over the window (padding is −∞).
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Tensor {
    let (arg, shape) = pool_argmax(x, kernel, stride, padding);
    let xd = x.data();
    Tensor::from_vec(&shape, arg.iter().map(|&i| xd[i]).collect())
}

/// Each output gradient goes to the first maximum of its window.
pub fn max_pool2d_backward(
    x: &Tensor,
    gy: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Tensor {
    let (arg, _) = pool_argmax(x, kernel, stride, padding);
    let mut gx = vec![0.0f64; x.numel()];
    for (&i, &g) in arg.iter().zip(gy.data()) {
        gx[i] += g as f64;
    }
    Tensor::from_vec(x.shape(), gx.iter().map(|&v| v as f32).collect())
}

/// Nearest source index: `floor(dst · in / out)` as PyTorch computes it, with the
/// scale `in / out` rounded to f32 (it differs from exact arithmetic for some sizes;
/// see `ops/upsample.rs`).
fn nearest(dst: usize, input: usize, output: usize) -> usize {
    let scale = input as f32 / output as f32;
    ((dst as f32 * scale).floor() as usize).min(input - 1)
}

/// Nearest-neighbour resize of an NCHW tensor to `(h, w)`.
pub fn upsample_nearest_to(x: &Tensor, h: usize, w: usize) -> Tensor {
    let s = x.shape();
    let (nc, ih, iw) = (s[0] * s[1], s[2], s[3]);
    let xd = x.data();
    let mut y = Vec::with_capacity(nc * h * w);
    for plane in 0..nc {
        for oy in 0..h {
            for ox in 0..w {
                y.push(xd[plane * ih * iw + nearest(oy, ih, h) * iw + nearest(ox, iw, w)]);
            }
        }
    }
    Tensor::from_vec(&[s[0], s[1], h, w], y)
}

/// Adjoint of [`upsample_nearest_to`]: each input pixel receives the sum of the output
/// gradients of the pixels copied from it.
pub fn upsample_nearest_backward(gy: &Tensor, in_h: usize, in_w: usize) -> Tensor {
    let s = gy.shape();
    let (nc, h, w) = (s[0] * s[1], s[2], s[3]);
    let gd = gy.data();
    let mut gx = vec![0.0f64; nc * in_h * in_w];
    for plane in 0..nc {
        for oy in 0..h {
            for ox in 0..w {
                let i = plane * in_h * in_w + nearest(oy, in_h, h) * in_w + nearest(ox, in_w, w);
                gx[i] += gd[(plane * h + oy) * w + ox] as f64;
            }
        }
    }
    Tensor::from_vec(
        &[s[0], s[1], in_h, in_w],
        gx.iter().map(|&v| v as f32).collect(),
    )
}
