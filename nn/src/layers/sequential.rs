//! A chain of layers, named `0`, `1`, `2`, ... as in PyTorch's `nn.Sequential` (a layer
//! without parameters still takes its number, so names line up with torchvision's).

use focal_engine::Tensor;

use super::Layer;
use crate::module::{Module, Visitor};

#[derive(Default)]
pub struct Sequential {
    pub layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a layer: `Sequential::new().push(conv).push(ReLU)`.
    pub fn push(mut self, layer: impl Layer + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn visit(&mut self, v: &mut dyn Visitor) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            v.scope(&i.to_string(), |v| layer.visit(v));
        }
    }
}

impl Layer for Sequential {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let mut x = x.clone();
        for layer in &mut self.layers {
            x = layer.forward(&x);
        }
        x
    }
}
