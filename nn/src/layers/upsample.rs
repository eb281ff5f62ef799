//! Nearest-neighbour upsampling (the FPN's top-down pathway).

use focal_engine::{upsample_nearest, upsample_nearest_to, Tensor};

use super::Layer;
use crate::module::{Module, Visitor};

/// Repeats every pixel `factor`×`factor` times.
#[derive(Clone)]
pub struct Upsample {
    pub factor: usize,
}

impl Upsample {
    pub fn new(factor: usize) -> Upsample {
        Upsample { factor }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        upsample_nearest(x, self.factor)
    }

    /// Nearest upsampling to an explicit size `(h, w)`, as PyTorch's
    /// `F.interpolate(x, size=(h, w), mode="nearest")` (for odd feature-map sizes).
    pub fn to_size(x: &Tensor, h: usize, w: usize) -> Tensor {
        upsample_nearest_to(x, h, w)
    }
}

impl Module for Upsample {
    fn visit(&mut self, _: &mut dyn Visitor) {}
}

impl Layer for Upsample {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        Upsample::forward(self, x)
    }
}
