//! Reductions: `sum` and `mean` over all or some axes (with `keepdim`), and `max` over
//! one axis with its argmax.
//!
//! Backward of a sum broadcasts the output gradient back over the reduced axes (every
//! input contributed with weight 1); mean also divides by the count; max sends the
//! gradient to the position of the maximum only (the first one on ties).
//!
//! Each output element is accumulated in f64 over its inputs in increasing index order,
//! whatever the thread count.

use crate::op::Op;
use crate::shape::{axis_index, numel, strides, ShapeFmt};
use crate::tape::record;
use crate::tensor::Tensor;
use crate::threads::{map_indexed, sum_chunks};

/// Normalised, sorted, de-duplicated axes; an empty list means "all axes".
fn normalise_axes(op: &str, axes: &[isize], rank: usize) -> Vec<usize> {
    if axes.is_empty() {
        return (0..rank).collect();
    }
    let mut a: Vec<usize> = axes.iter().map(|&x| axis_index(op, x, rank)).collect();
    a.sort_unstable();
    let before = a.len();
    a.dedup();
    assert_eq!(before, a.len(), "{op}: axis listed twice in {axes:?}");
    a
}

/// Output shape with the reduced axes removed (or kept as 1).
fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    let mut out = Vec::new();
    for (d, &n) in shape.iter().enumerate() {
        if axes.contains(&d) {
            if keepdim {
                out.push(1);
            }
        } else {
            out.push(n);
        }
    }
    out
}

/// Sum over `axes` of a raw buffer, in f64, one output element per task.
fn sum_kernel(x: &Tensor, axes: &[usize]) -> Vec<f32> {
    let shape = x.shape();
    let st = strides(shape);
    let d = x.data();
    if axes.len() == shape.len() {
        return vec![sum_chunks(d.len(), |r| d[r].iter().map(|&v| v as f64).sum()) as f32];
    }
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&a| shape[a]).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let red_strides: Vec<usize> = axes.iter().map(|&a| st[a]).collect();
    let kept_strides: Vec<usize> = kept.iter().map(|&a| st[a]).collect();
    let n_red = numel(&red_shape);
    let kept_st = strides(&kept_shape);
    let red_st = strides(&red_shape);
    map_indexed(numel(&kept_shape), |o| {
        let mut base = 0;
        for (k, (&ks, &xs)) in kept_st.iter().zip(&kept_strides).enumerate() {
            base += (o / ks) % kept_shape[k] * xs;
        }
        let mut acc = 0.0f64;
        for r in 0..n_red {
            let mut off = base;
            for (k, (&rs, &xs)) in red_st.iter().zip(&red_strides).enumerate() {
                off += (r / rs) % red_shape[k] * xs;
            }
            acc += d[off] as f64;
        }
        acc as f32
    })
}

/// Broadcasts `g` (reduced shape, keepdim or not) back to `shape`, times `scale`.
fn expand_back(g: &Tensor, shape: &[usize], axes: &[usize], scale: f32) -> Tensor {
    let kept_shape = reduced_shape(shape, axes, true);
    let ks = strides(&kept_shape);
    // stride 0 along reduced axes
    let gs: Vec<usize> = (0..shape.len())
        .map(|d| if axes.contains(&d) { 0 } else { ks[d] })
        .collect();
    let st = strides(shape);
    let gd = g.data();
    Tensor::from_vec(
        shape,
        map_indexed(numel(shape), |i| {
            let mut off = 0;
            for d in 0..shape.len() {
                off += (i / st[d]) % shape[d] * gs[d];
            }
            gd[off] * scale
        }),
    )
}

impl Tensor {
    /// Sum over `axes` (all axes if empty). With `keepdim` the reduced axes stay as size 1.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let ax = normalise_axes("sum", axes, self.rank());
        let shape = reduced_shape(self.shape(), &ax, keepdim);
        let out = Tensor::from_vec(&shape, sum_kernel(self, &ax));
        let in_shape = self.shape.clone();
        record(Op::Sum, out, &[self], move |_| {
            Box::new(move |g| vec![Some(expand_back(&g, &in_shape, &ax, 1.0))])
        })
    }

    /// Sum of every element, as a scalar (shape `[]`).
    pub fn sum_all(&self) -> Tensor {
        self.sum(&[], false)
    }

    /// Mean over `axes` (all axes if empty).
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let ax = normalise_axes("mean", axes, self.rank());
        let count: usize = ax.iter().map(|&a| self.shape[a]).product();
        assert!(
            count > 0,
            "mean: reducing an empty axis of {}",
            ShapeFmt(self.shape())
        );
        let inv = 1.0 / count as f32;
        let shape = reduced_shape(self.shape(), &ax, keepdim);
        let data: Vec<f32> = sum_kernel(self, &ax).iter().map(|v| v * inv).collect();
        let out = Tensor::from_vec(&shape, data);
        let in_shape = self.shape.clone();
        record(Op::Mean, out, &[self], move |_| {
            Box::new(move |g| vec![Some(expand_back(&g, &in_shape, &ax, inv))])
        })
    }

    /// Mean of every element, as a scalar.
    pub fn mean_all(&self) -> Tensor {
        self.mean(&[], false)
    }

    /// Maximum over one axis, and the index of the maximum along that axis for every
    /// output element (the first one on ties).
    pub fn max(&self, axis: isize, keepdim: bool) -> (Tensor, Vec<usize>) {
        let a = axis_index("max", axis, self.rank());
        let n = self.shape[a];
        assert!(
            n > 0,
            "max: axis {axis} of {} is empty",
            ShapeFmt(self.shape())
        );
        let outer: usize = self.shape[..a].iter().product();
        let inner: usize = self.shape[a + 1..].iter().product();
        let d = self.data();
        let mut values = vec![0.0f32; outer * inner];
        let mut argmax = vec![0usize; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut best = d[o * n * inner + i];
                let mut arg = 0;
                for k in 1..n {
                    let v = d[(o * n + k) * inner + i];
                    if v > best || (best.is_nan() && !v.is_nan()) {
                        best = v;
                        arg = k;
                    }
                }
                values[o * inner + i] = best;
                argmax[o * inner + i] = arg;
            }
        }
        let shape = reduced_shape(self.shape(), &[a], keepdim);
        let out = Tensor::from_vec(&shape, values);
        let in_shape = self.shape.clone();
        let arg_saved = argmax.clone();
        let out = record(Op::Max, out, &[self], move |_| {
            Box::new(move |g| {
                let mut gx = vec![0.0f32; numel(&in_shape)];
                let gd = g.data();
                for o in 0..outer {
                    for i in 0..inner {
                        let k = arg_saved[o * inner + i];
                        gx[(o * n + k) * inner + i] = gd[o * inner + i];
                    }
                }
                vec![Some(Tensor::from_vec(&in_shape, gx))]
            })
        });
        (out, argmax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_means_and_max() {
        let x = Tensor::from_vec(&[2, 3], vec![1., 5., 3., 4., 2., 6.]);
        assert_eq!(x.sum(&[0], false).to_vec(), vec![5., 7., 9.]);
        assert_eq!(x.sum(&[1], true).shape(), &[2, 1]);
        assert_eq!(x.sum(&[-1], true).to_vec(), vec![9., 12.]);
        assert_eq!(x.sum_all().shape(), &[] as &[usize]);
        assert_eq!(x.sum_all().item(), 21.0);
        assert_eq!(x.mean(&[0, 1], false).item(), 3.5);
        let (m, arg) = x.max(1, false);
        assert_eq!(m.to_vec(), vec![5., 6.]);
        assert_eq!(arg, vec![1, 2]);
        let (m0, arg0) = x.max(0, true);
        assert_eq!(m0.shape(), &[1, 3]);
        assert_eq!(m0.to_vec(), vec![4., 5., 6.]);
        assert_eq!(arg0, vec![1, 0, 1]);
    }

    #[test]
    fn sum_of_middle_axes() {
        let x = Tensor::from_vec(&[2, 2, 2, 2], (0..16).map(|v| v as f32).collect());
        let s = x.sum(&[1, 3], false);
        assert_eq!(s.shape(), &[2, 2]);
        // x[a][b][c][d] = 8a + 4b + 2c + d, summed directly
        let mut direct = vec![0.0; 4];
        for a in 0..2 {
            for b in 0..2 {
                for c in 0..2 {
                    for d in 0..2 {
                        direct[a * 2 + c] += (8 * a + 4 * b + 2 * c + d) as f32;
                    }
                }
            }
        }
        assert_eq!(s.to_vec(), direct);
    }
}
