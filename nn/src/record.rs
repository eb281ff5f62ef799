//! Named tensors as stored in files (checkpoints, optimiser state).

use std::fmt;

use focal_engine::Tensor;
use serde::de::Error as _;
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A named tensor. Capturing one shares the tensor's storage (no copy); it is encoded as
/// `(name, shape, values)` and decoding checks that the values fit the shape.
#[derive(Clone)]
pub struct TensorRecord {
    pub name: String,
    pub value: Tensor,
}

impl TensorRecord {
    pub fn new(name: &str, t: &Tensor) -> TensorRecord {
        TensorRecord {
            name: name.to_string(),
            value: t.detach(),
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The tensor (sharing storage).
    pub fn to_tensor(&self) -> Tensor {
        self.value.clone()
    }
}

/// Equal names, shapes and bit patterns.
impl PartialEq for TensorRecord {
    fn eq(&self, other: &TensorRecord) -> bool {
        self.name == other.name
            && self.shape() == other.shape()
            && self
                .value
                .data()
                .iter()
                .zip(other.value.data())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl fmt::Debug for TensorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TensorRecord({} {:?})", self.name, self.shape())
    }
}

impl Serialize for TensorRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.name)?;
        t.serialize_element(self.value.shape())?;
        t.serialize_element(self.value.data())?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for TensorRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TensorRecord, D::Error> {
        let (name, shape, data): (String, Vec<usize>, Vec<f32>) = Deserialize::deserialize(d)?;
        match checked_numel(&shape) {
            Some(n) if n == data.len() => Ok(TensorRecord {
                name,
                value: Tensor::from_vec(&shape, data),
            }),
            _ => Err(D::Error::custom(format!(
                "tensor {name}: shape {shape:?} does not fit its {} values",
                data.len()
            ))),
        }
    }
}

/// The product of the dimensions, or `None` when it overflows (a damaged shape).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}
