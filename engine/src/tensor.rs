//! The tensor: an f32, row-major, contiguous array with a shape, plus (when it was
//! computed from parameters while recording) the tape node that produced it.
//!
//! Values are immutable and shared: cloning a tensor clones an `Arc`, never the floats.
//! That is what lets an op save its inputs for backward at no cost. Writing goes through
//! [`Tensor::data_mut`], which copies first when the buffer is shared (copy-on-write).

use std::fmt;
use std::sync::Arc;

use crate::shape::{numel, ShapeFmt};
use crate::storage::Storage;
use crate::tape::NodeRef;

#[derive(Clone)]
pub struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Arc<Storage>,
    pub(crate) node: Option<NodeRef>,
}

impl Tensor {
    /// A tensor of the given shape holding `data` in row-major order.
    ///
    /// Panics when `data.len()` is not the product of the shape.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Tensor {
        assert_eq!(
            numel(shape),
            data.len(),
            "Tensor::from_vec: shape {} needs {} values, got {}",
            ShapeFmt(shape),
            numel(shape),
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data: Arc::new(Storage::new(data)),
            node: None,
        }
    }

    /// Same as [`Tensor::from_vec`] but returns an error instead of panicking.
    pub fn try_from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor, String> {
        if numel(shape) != data.len() {
            return Err(format!(
                "shape {} needs {} values, got {}",
                ShapeFmt(shape),
                numel(shape),
                data.len()
            ));
        }
        Ok(Tensor::from_vec(shape, data))
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::from_vec(shape, vec![value; numel(shape)])
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_vec(&[], vec![value])
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> usize {
        self.shape[crate::shape::axis_index("dim", axis, self.rank())]
    }

    /// The values in row-major order.
    pub fn data(&self) -> &[f32] {
        self.data.as_slice()
    }

    pub fn to_vec(&self) -> Vec<f32> {
        self.data().to_vec()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> f32 {
        assert_eq!(
            self.numel(),
            1,
            "item: the tensor has shape {}, not a single value",
            ShapeFmt(&self.shape)
        );
        self.data()[0]
    }

    /// The same values, cut off from the tape: gradients do not flow through the result.
    pub fn detach(&self) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.clone(),
            node: None,
        }
    }

    /// Whether this tensor was recorded on the tape (it depends on a tracked leaf).
    pub fn is_tracked(&self) -> bool {
        self.node.is_some()
    }

    /// Mutable access to the values (copy-on-write when the buffer is shared).
    ///
    /// Only for untracked tensors: changing a recorded value behind the tape's back would
    /// make its gradients wrong, so that panics.
    pub fn data_mut(&mut self) -> &mut [f32] {
        assert!(
            self.node.is_none(),
            "data_mut: cannot modify a tensor recorded on the tape; detach() it first"
        );
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// A tensor with the same shape and the given values (untracked).
    pub(crate) fn with_data(&self, data: Vec<f32>) -> Tensor {
        Tensor::from_vec(&self.shape, data)
    }

    /// Adds `other` into `self` in place (same shape). Used to accumulate gradients.
    pub fn add_assign(&mut self, other: &Tensor) {
        assert_eq!(
            self.shape,
            other.shape,
            "add_assign: shapes {} and {} differ",
            ShapeFmt(&self.shape),
            ShapeFmt(&other.shape)
        );
        let src = other.data();
        crate::threads::for_each_chunk_mut(self.data_mut(), |start, out| {
            let n = out.len();
            for (o, s) in out.iter_mut().zip(&src[start..start + n]) {
                *o += *s;
            }
        });
    }

    /// Largest absolute difference to `other` (same shape), for tests.
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape, other.shape, "max_abs_diff: shapes differ");
        self.data()
            .iter()
            .zip(other.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{}", ShapeFmt(&self.shape))?;
        if self.node.is_some() {
            write!(f, " (tracked)")?;
        }
        let d = self.data();
        let shown = d.len().min(8);
        write!(f, " {:?}", &d[..shown])?;
        if d.len() > shown {
            write!(f, " ...")?;
        }
        Ok(())
    }
}
