//! Flattens every axis after the first: `(N, C, H, W)` → `(N, C·H·W)`.

use focal_engine::Tensor;

use super::Layer;
use crate::module::{Module, Visitor};

#[derive(Clone)]
pub struct Flatten;

impl Flatten {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let n = x.shape()[0];
        x.reshape(&[n, x.numel() / n.max(1)])
    }
}

impl Module for Flatten {
    fn visit(&mut self, _: &mut dyn Visitor) {}
}

impl Layer for Flatten {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        Flatten::forward(self, x)
    }
}
