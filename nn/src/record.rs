//! Plain serialisable copies of tensors, for checkpoints and optimiser state.

use focal_engine::Tensor;
use serde::{Deserialize, Serialize};

/// A named tensor as stored in a file: its shape and its values in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorRecord {
    pub fn new(name: &str, t: &Tensor) -> TensorRecord {
        TensorRecord {
            name: name.to_string(),
            shape: t.shape().to_vec(),
            data: t.to_vec(),
        }
    }

    /// The tensor, or an error when the number of values does not fit the shape (a damaged
    /// file).
    pub fn to_tensor(&self) -> Result<Tensor, String> {
        match checked_numel(&self.shape) {
            Some(n) if n == self.data.len() => Ok(Tensor::from_vec(&self.shape, self.data.clone())),
            _ => Err(format!(
                "tensor {}: shape {:?} does not fit its {} values",
                self.name,
                self.shape,
                self.data.len()
            )),
        }
    }
}

/// The product of the dimensions, or `None` when it overflows (a damaged shape).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}
