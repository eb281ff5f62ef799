//! Shapes, row-major strides and NumPy broadcasting.

use std::fmt;

/// Number of elements of a shape (1 for a scalar of shape `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C order) strides in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Prints a shape as `[2, 3, 4]`.
pub struct ShapeFmt<'a>(pub &'a [usize]);

impl fmt::Display for ShapeFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// The broadcast shape of `a` and `b` under NumPy's rules: align from the right,
/// each pair of dimensions must be equal or one of them 1.
///
/// Panics with the op name and both shapes when they do not broadcast.
pub fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = if da == db {
            da
        } else if da == 1 {
            db
        } else if db == 1 {
            da
        } else {
            panic!(
                "{op}: shapes {} and {} do not broadcast (dimension {i} of the result: {da} vs {db})",
                ShapeFmt(a),
                ShapeFmt(b)
            );
        };
    }
    out
}

/// Strides of `shape` seen through `out_shape`: 0 on broadcast (size-1 or missing) axes.
pub fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let off = out_shape.len() - shape.len();
    (0..out_shape.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                own[i - off]
            }
        })
        .collect()
}

/// Normalises a possibly negative axis (`-1` = last) and checks it, naming the op.
pub fn axis_index(op: &str, axis: isize, rank: usize) -> usize {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    if a < 0 || a as usize >= rank {
        panic!("{op}: axis {axis} is out of range for a tensor of rank {rank}");
    }
    a as usize
}
