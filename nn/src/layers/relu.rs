//! The rectifier max(0, x), as a layer.

use focal_engine::Tensor;

use super::Layer;
use crate::module::{Module, Visitor};

#[derive(Clone)]
pub struct ReLU;

impl ReLU {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.relu()
    }
}

impl Module for ReLU {
    fn visit(&mut self, _: &mut dyn Visitor) {}
}

impl Layer for ReLU {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        x.relu()
    }
}
