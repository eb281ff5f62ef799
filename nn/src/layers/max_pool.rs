//! Max pooling (PyTorch's `nn.MaxPool2d`; ResNet's stem uses kernel 3, stride 2, padding 1).

use focal_engine::{max_pool2d, Tensor};

use super::Layer;
use crate::module::{Module, Visitor};

#[derive(Clone)]
pub struct MaxPool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl MaxPool2d {
    /// A square window of side `k`, stride `stride`, padding `padding` on every side.
    pub fn new(k: usize, stride: usize, padding: usize) -> MaxPool2d {
        MaxPool2d {
            kernel: (k, k),
            stride: (stride, stride),
            padding: (padding, padding),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        max_pool2d(x, self.kernel, self.stride, self.padding)
    }
}

impl Module for MaxPool2d {
    fn visit(&mut self, _: &mut dyn Visitor) {}
}

impl Layer for MaxPool2d {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        MaxPool2d::forward(self, x)
    }
}
