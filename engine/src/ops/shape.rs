//! Shape ops: `reshape`, `permute` (and `transpose`), `concat`, `narrow` and zero `pad`.
//!
//! Their backward rules move gradients back to where the values came from:
//! reshape ↔ reshape, permute ↔ inverse permute, concat ↔ narrow into pieces,
//! narrow ↔ zero pad, pad ↔ narrow.

use crate::op::Op;
use crate::shape::{axis_index, numel, strides, ShapeFmt};
use crate::tape::record;
use crate::tensor::Tensor;
use crate::threads::map_indexed;

/// (outer, size along axis, inner) of a row-major shape around `axis`.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Copies `src` (outer, n_src, inner) into `dst` (outer, n_dst, inner) at offset `at`
/// along the middle axis: `dst[o, at + k, i] = src[o, k, i]`.
fn copy_block(
    src: &[f32],
    dst: &mut [f32],
    outer: usize,
    n_src: usize,
    n_dst: usize,
    at: usize,
    inner: usize,
) {
    for o in 0..outer {
        let s = &src[o * n_src * inner..(o + 1) * n_src * inner];
        let d0 = (o * n_dst + at) * inner;
        dst[d0..d0 + n_src * inner].copy_from_slice(s);
    }
}

/// Raw narrow: `src[.., start..start+len, ..]` along `axis`.
fn narrow_raw(x: &Tensor, axis: usize, start: usize, len: usize) -> Tensor {
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let d = x.data();
    let mut out = vec![0.0f32; outer * len * inner];
    for o in 0..outer {
        let s0 = (o * n + start) * inner;
        out[o * len * inner..(o + 1) * len * inner].copy_from_slice(&d[s0..s0 + len * inner]);
    }
    Tensor::from_vec(&shape, out)
}

/// Raw permute: `out[i_0, .., i_k] = x[i_{inv(0)}, ..]` so that out axis j is x axis axes[j].
fn permute_raw(x: &Tensor, axes: &[usize]) -> Tensor {
    let shape = x.shape();
    let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    match as_batched_transpose(shape, axes) {
        Some((b, r, c)) => Tensor::from_vec(&out_shape, transpose_tiles(x.data(), b, r, c)),
        None => permute_gather(x, axes, out_shape),
    }
}

/// Any permutation: each output row (of its last axis) gathered with the source's
/// strides.
fn permute_gather(x: &Tensor, axes: &[usize], out_shape: Vec<usize>) -> Tensor {
    let shape = x.shape();
    let xs = strides(shape);
    let src_strides: Vec<usize> = axes.iter().map(|&a| xs[a]).collect();
    let os = strides(&out_shape);
    let d = x.data();
    let rank = axes.len();
    // Walk the output row by row of its last axis.
    let last = out_shape.last().copied().unwrap_or(1);
    let last_stride = src_strides.last().copied().unwrap_or(1);
    let rows = numel(&out_shape) / last.max(1);
    let mut out = vec![0.0f32; numel(&out_shape)];
    if last == 0 {
        return Tensor::from_vec(&out_shape, out);
    }
    let fill_row = |r: usize, row: &mut [f32]| {
        let flat = r * last;
        let mut off = 0;
        for k in 0..rank.saturating_sub(1) {
            off += (flat / os[k]) % out_shape[k] * src_strides[k];
        }
        for (j, v) in row.iter_mut().enumerate() {
            *v = d[off + j * last_stride];
        }
    };
    if out.len() >= crate::threads::PAR_THRESHOLD {
        use rayon::prelude::*;
        out.par_chunks_mut(last)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    } else {
        for (r, row) in out.chunks_mut(last).enumerate() {
            fill_row(r, row);
        }
    }
    debug_assert_eq!(rows * last, out.len());
    Tensor::from_vec(&out_shape, out)
}

/// Whether permuting `shape` by `axes` is a batch of 2-D transposes: the leading axes
/// kept, then two runs of consecutive axes swapped (`axes = [0..p) ++ [q..rank) ++
/// [p..q)`, as RetinaNet's head output `(N, A, K, H, W) → (N, H, W, A, K)`). Returns
/// `(B, R, C)`: the input read as `B` matrices of `R × C`, the output their transposes.
fn as_batched_transpose(shape: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let rank = axes.len();
    let p = axes
        .iter()
        .enumerate()
        .take_while(|&(i, &a)| i == a)
        .count();
    if p + 2 > rank {
        return None;
    }
    let q = axes[p];
    let expected = (0..p).chain(q..rank).chain(p..q);
    if q <= p || !axes.iter().copied().eq(expected) {
        return None;
    }
    Some((numel(&shape[..p]), numel(&shape[p..q]), numel(&shape[q..])))
}

/// `out[b][j][i] = x[b][i][j]` for `B` matrices of `R × C`, in tiles of 32 × 32 so that
/// both the rows read and the rows written stay in L1 (a plain strided gather reads a
/// new cache line for every element when `C` is large). One task per band of 32 output
/// rows of one matrix. Only copies: the values are unchanged.
fn transpose_tiles(x: &[f32], b: usize, r: usize, c: usize) -> Vec<f32> {
    const T: usize = 32;
    let mut out = vec![0.0f32; b * r * c];
    if out.is_empty() {
        return out;
    }
    // Output rows j0 .. j0 + band.len()/r of matrix `m`.
    let band = |m: usize, j0: usize, band: &mut [f32]| {
        let src = &x[m * r * c..(m + 1) * r * c];
        let rows = band.len() / r;
        for i0 in (0..r).step_by(T) {
            let i1 = (i0 + T).min(r);
            for jj in 0..rows {
                let dst = &mut band[jj * r + i0..jj * r + i1];
                for (d, i) in dst.iter_mut().zip(i0..i1) {
                    *d = src[i * c + j0 + jj];
                }
            }
        }
    };
    let per_matrix = r * c;
    if out.len() >= crate::threads::PAR_THRESHOLD {
        use rayon::prelude::*;
        out.par_chunks_mut(per_matrix)
            .enumerate()
            .for_each(|(m, mat)| {
                mat.par_chunks_mut(T * r)
                    .enumerate()
                    .for_each(|(t, rows)| band(m, t * T, rows));
            });
    } else {
        for (m, mat) in out.chunks_mut(per_matrix).enumerate() {
            for (t, rows) in mat.chunks_mut(T * r).enumerate() {
                band(m, t * T, rows);
            }
        }
    }
    out
}

/// Raw zero padding: `pads[d] = (before, after)` for each axis.
fn pad_raw(x: &Tensor, pads: &[(usize, usize)]) -> Tensor {
    let shape = x.shape();
    let out_shape: Vec<usize> = shape
        .iter()
        .zip(pads)
        .map(|(&n, &(b, a))| n + b + a)
        .collect();
    let os = strides(&out_shape);
    let xs = strides(shape);
    let d = x.data();
    Tensor::from_vec(
        &out_shape,
        map_indexed(numel(&out_shape), |i| {
            let mut off = 0;
            for k in 0..shape.len() {
                let c = (i / os[k]) % out_shape[k];
                let (b, _) = pads[k];
                if c < b || c >= b + shape[k] {
                    return 0.0;
                }
                off += (c - b) * xs[k];
            }
            d[off]
        }),
    )
}

impl Tensor {
    /// The same values with another shape of the same size (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert_eq!(
            numel(shape),
            self.numel(),
            "reshape: cannot view {} ({} values) as {} ({} values)",
            ShapeFmt(self.shape()),
            self.numel(),
            ShapeFmt(shape),
            numel(shape)
        );
        let out = Tensor {
            shape: shape.to_vec(),
            data: self.data.clone(),
            node: None,
        };
        let in_shape = self.shape.clone();
        record(Op::Reshape, out, &[self], move |_| {
            Box::new(move |g| vec![Some(g.reshape(&in_shape))])
        })
    }

    /// Reorders the axes: axis `j` of the result is axis `axes[j]` of `self`.
    pub fn permute(&self, axes: &[usize]) -> Tensor {
        let mut seen = vec![false; self.rank()];
        assert_eq!(
            axes.len(),
            self.rank(),
            "permute: {axes:?} is not a permutation of the {} axes of {}",
            self.rank(),
            ShapeFmt(self.shape())
        );
        for &a in axes {
            assert!(
                a < self.rank() && !seen[a],
                "permute: {axes:?} is not a permutation of the axes of {}",
                ShapeFmt(self.shape())
            );
            seen[a] = true;
        }
        let out = permute_raw(self, axes);
        let mut inverse = vec![0; axes.len()];
        for (j, &a) in axes.iter().enumerate() {
            inverse[a] = j;
        }
        record(Op::Permute, out, &[self], move |_| {
            Box::new(move |g| vec![Some(permute_raw(&g, &inverse))])
        })
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: isize, b: isize) -> Tensor {
        let (a, b) = (
            axis_index("transpose", a, self.rank()),
            axis_index("transpose", b, self.rank()),
        );
        let mut axes: Vec<usize> = (0..self.rank()).collect();
        axes.swap(a, b);
        self.permute(&axes)
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Tensor {
        assert!(!tensors.is_empty(), "concat: no tensors given");
        let first = tensors[0];
        let a = axis_index("concat", axis, first.rank());
        for t in tensors {
            let same = t.rank() == first.rank()
                && (0..first.rank()).all(|d| d == a || t.shape[d] == first.shape[d]);
            assert!(
                same,
                "concat: shapes {} and {} differ outside axis {a}",
                ShapeFmt(first.shape()),
                ShapeFmt(t.shape())
            );
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape[a]).collect();
        let total: usize = sizes.iter().sum();
        let mut shape = first.shape.clone();
        shape[a] = total;
        let (outer, _, inner) = split_at_axis(&shape, a);
        let mut out = vec![0.0f32; numel(&shape)];
        let mut at = 0;
        for (t, &n) in tensors.iter().zip(&sizes) {
            copy_block(t.data(), &mut out, outer, n, total, at, inner);
            at += n;
        }
        let out = Tensor::from_vec(&shape, out);
        record(Op::Concat, out, tensors, move |needs| {
            let needs = needs.to_vec();
            Box::new(move |g| {
                let mut start = 0;
                sizes
                    .iter()
                    .zip(needs)
                    .map(|(&n, need)| {
                        let piece = need.then(|| narrow_raw(&g, a, start, n));
                        start += n;
                        piece
                    })
                    .collect()
            })
        })
    }

    /// Elements `start..start + len` along `axis` (a copy).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Tensor {
        let a = axis_index("narrow", axis, self.rank());
        assert!(
            start + len <= self.shape[a],
            "narrow: range {start}..{} exceeds size {} of axis {a} of {}",
            start + len,
            self.shape[a],
            ShapeFmt(self.shape())
        );
        let out = narrow_raw(self, a, start, len);
        let n = self.shape[a];
        record(Op::Narrow, out, &[self], move |_| {
            Box::new(move |g| {
                let mut pads = vec![(0, 0); g.rank()];
                pads[a] = (start, n - start - len);
                vec![Some(pad_raw(&g, &pads))]
            })
        })
    }

    /// Zero padding: `pads[d] = (before, after)` for every axis `d`.
    pub fn pad(&self, pads: &[(usize, usize)]) -> Tensor {
        assert_eq!(
            pads.len(),
            self.rank(),
            "pad: {} (before, after) pairs given for a tensor of rank {}",
            pads.len(),
            self.rank()
        );
        let out = pad_raw(self, pads);
        let pads = pads.to_vec();
        let in_shape = self.shape.clone();
        record(Op::Pad, out, &[self], move |_| {
            Box::new(move |g| {
                let mut t = g.detach();
                for (d, &(b, _)) in pads.iter().enumerate() {
                    t = narrow_raw(&t, d, b, in_shape[d]);
                }
                vec![Some(t)]
            })
        })
    }

    /// Zero padding of the last two axes of an NCHW tensor.
    pub fn pad2d(&self, top: usize, bottom: usize, left: usize, right: usize) -> Tensor {
        let r = self.rank();
        assert!(
            r >= 2,
            "pad2d: needs at least 2 axes, got {}",
            ShapeFmt(self.shape())
        );
        let mut pads = vec![(0, 0); r];
        pads[r - 2] = (top, bottom);
        pads[r - 1] = (left, right);
        self.pad(&pads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_transposes_are_recognised_and_match_the_gather() {
        assert_eq!(
            as_batched_transpose(&[2, 9, 5, 7, 6], &[0, 3, 4, 1, 2]),
            Some((2, 45, 42))
        );
        assert_eq!(as_batched_transpose(&[3, 4], &[1, 0]), Some((1, 3, 4)));
        assert_eq!(
            as_batched_transpose(&[2, 3, 4], &[0, 2, 1]),
            Some((2, 3, 4))
        );
        assert_eq!(as_batched_transpose(&[2, 3, 4], &[1, 0, 2]), None);
        assert_eq!(as_batched_transpose(&[2, 3, 4], &[2, 1, 0]), None);
        assert_eq!(as_batched_transpose(&[2, 3, 4], &[0, 1, 2]), None);
        // RetinaNet's head output at two sizes (the second above the parallel
        // threshold, with bands and tiles cut by odd sizes), a plain matrix, empty axes.
        for (shape, axes) in [
            (vec![2, 9, 5, 7, 6], vec![0, 3, 4, 1, 2]),
            (vec![2, 9, 91, 33, 37], vec![0, 3, 4, 1, 2]),
            (vec![67, 45], vec![1, 0]),
            (vec![3, 0, 4], vec![0, 2, 1]),
        ] {
            let n = numel(&shape);
            let x = Tensor::from_vec(&shape, (0..n).map(|v| v as f32).collect());
            let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
            let fast = permute_raw(&x, &axes);
            let slow = permute_gather(&x, &axes, out_shape.clone());
            assert_eq!(fast.shape(), &out_shape[..]);
            assert!(fast.data() == slow.data(), "{shape:?} by {axes:?}");
        }
    }

    #[test]
    fn permute_concat_narrow_pad_values() {
        let x = Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(x.transpose(0, 1).to_vec(), vec![1., 4., 2., 5., 3., 6.]);
        let y = Tensor::from_vec(&[2, 1], vec![7., 8.]);
        let c = Tensor::concat(&[&x, &y], 1);
        assert_eq!(c.shape(), &[2, 4]);
        assert_eq!(c.to_vec(), vec![1., 2., 3., 7., 4., 5., 6., 8.]);
        assert_eq!(c.narrow(1, 2, 2).to_vec(), vec![3., 7., 6., 8.]);
        let p = y.pad(&[(1, 0), (0, 2)]);
        assert_eq!(p.shape(), &[3, 3]);
        assert_eq!(p.to_vec(), vec![0., 0., 0., 7., 0., 0., 8., 0., 0.]);
        let t = Tensor::from_vec(&[2, 3, 4], (0..24).map(|v| v as f32).collect());
        let q = t.permute(&[2, 0, 1]);
        assert_eq!(q.shape(), &[4, 2, 3]);
        // q[k][i][j] = t[i][j][k] = 12i + 4j + k
        assert_eq!(q.data()[5], 12.0 * 1.0 + 4.0 * 2.0);
        assert_eq!(q.data()[6 + 4], 12.0 + 4.0 + 1.0);
    }
}
