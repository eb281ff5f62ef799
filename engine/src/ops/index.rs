//! Gathering and scattering along an axis by an index list.
//!
//! `index_select(axis, idx)` builds `out[.., j, ..] = x[.., idx[j], ..]` (an index may
//! repeat). Its adjoint is `scatter_add(axis, idx, n)`, which builds a tensor with `n`
//! entries along `axis` and adds `x[.., j, ..]` into position `idx[j]`. Each is the
//! other's backward, which is how RetinaNet's positive anchors are picked out of the
//! dense box predictions and how their gradients find their way back.

use crate::op::Op;
use crate::shape::{axis_index, ShapeFmt};
use crate::tape::record;
use crate::tensor::Tensor;

use super::shape::split_at_axis;

fn gather_raw(x: &Tensor, axis: usize, idx: &[usize]) -> Tensor {
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let mut shape = x.shape().to_vec();
    shape[axis] = idx.len();
    let d = x.data();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &k in idx {
            let s = (o * n + k) * inner;
            out.extend_from_slice(&d[s..s + inner]);
        }
    }
    Tensor::from_vec(&shape, out)
}

fn scatter_raw(x: &Tensor, axis: usize, idx: &[usize], size: usize) -> Tensor {
    let (outer, m, inner) = split_at_axis(x.shape(), axis);
    let mut shape = x.shape().to_vec();
    shape[axis] = size;
    let d = x.data();
    let mut out = vec![0.0f32; outer * size * inner];
    // Fixed order: j ascending, so repeated indices are summed the same way every time.
    for o in 0..outer {
        for (j, &k) in idx.iter().enumerate() {
            let s = (o * m + j) * inner;
            let t = (o * size + k) * inner;
            for (dst, src) in out[t..t + inner].iter_mut().zip(&d[s..s + inner]) {
                *dst += *src;
            }
        }
    }
    Tensor::from_vec(&shape, out)
}

fn check_indices(op: &str, idx: &[usize], bound: usize, shape: &[usize], axis: usize) {
    if let Some(bad) = idx.iter().find(|&&k| k >= bound) {
        panic!(
            "{op}: index {bad} is out of range for size {bound} of axis {axis} of {}",
            ShapeFmt(shape)
        );
    }
}

impl Tensor {
    /// `out[.., j, ..] = self[.., indices[j], ..]` along `axis`.
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Tensor {
        let a = axis_index("index_select", axis, self.rank());
        let n = self.shape[a];
        check_indices("index_select", indices, n, self.shape(), a);
        let out = gather_raw(self, a, indices);
        let idx = indices.to_vec();
        record(Op::IndexSelect, out, &[self], move |_| {
            Box::new(move |g| vec![Some(scatter_raw(&g, a, &idx, n))])
        })
    }

    /// A tensor with `size` entries along `axis`, where `self[.., j, ..]` is added into
    /// entry `indices[j]` (the adjoint of [`Tensor::index_select`]).
    pub fn scatter_add(&self, axis: isize, indices: &[usize], size: usize) -> Tensor {
        let a = axis_index("scatter_add", axis, self.rank());
        assert_eq!(
            indices.len(),
            self.shape[a],
            "scatter_add: {} indices for size {} of axis {a} of {}",
            indices.len(),
            self.shape[a],
            ShapeFmt(self.shape())
        );
        check_indices("scatter_add", indices, size, self.shape(), a);
        let out = scatter_raw(self, a, indices, size);
        let idx = indices.to_vec();
        record(Op::ScatterAdd, out, &[self], move |_| {
            Box::new(move |g| vec![Some(gather_raw(&g, a, &idx))])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_and_scatter_are_adjoint() {
        let x = Tensor::from_vec(&[3, 2], vec![1., 2., 3., 4., 5., 6.]);
        let g = x.index_select(0, &[2, 0, 2]);
        assert_eq!(g.to_vec(), vec![5., 6., 1., 2., 5., 6.]);
        let s = g.scatter_add(0, &[2, 0, 2], 3);
        assert_eq!(s.to_vec(), vec![1., 2., 0., 0., 10., 12.]);
        // <gather(x), y> == <x, scatter(y)>
        let y = Tensor::from_vec(&[3, 2], vec![0.5, -1., 2., 3., -2., 1.]);
        let lhs: f32 = g.data().iter().zip(y.data()).map(|(a, b)| a * b).sum();
        let sy = y.scatter_add(0, &[2, 0, 2], 3);
        let rhs: f32 = x.data().iter().zip(sy.data()).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-5);
    }
}
