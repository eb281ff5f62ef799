//! Fully connected layer (PyTorch's `nn.Linear`).

use focal_engine::{Rng, Tensor};

use super::Layer;
use crate::init;
use crate::module::{Module, Visitor};
use crate::param::Param;

/// `y = x·Wᵀ + b` with `W` of shape `(out, in)` as in PyTorch, applied to the last axis of
/// `x` (`(..., in)` → `(..., out)`).
#[derive(Clone)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// Initialised as PyTorch does by default (see [`init::pytorch_default`]).
    pub fn new(in_features: usize, out_features: usize, rng: &mut Rng) -> Linear {
        let (w, b) = init::pytorch_default(&[out_features, in_features], out_features, rng);
        Linear {
            weight: Param::new(w),
            bias: Some(Param::no_decay(b)),
        }
    }

    pub fn no_bias(mut self) -> Linear {
        self.bias = None;
        self
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (out_f, in_f) = (self.weight.shape()[0], self.weight.shape()[1]);
        assert_eq!(
            x.shape().last(),
            Some(&in_f),
            "Linear: input {:?} does not end in {in_f} features",
            x.shape()
        );
        let rows = x.numel() / in_f;
        let y = x
            .reshape(&[rows, in_f])
            .matmul(&self.weight.var().transpose(0, 1));
        let y = match &self.bias {
            Some(b) => y.add(&b.var()),
            None => y,
        };
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = out_f;
        y.reshape(&shape)
    }
}

impl Module for Linear {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.param("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            v.param("bias", b);
        }
    }
}

impl Layer for Linear {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        Linear::forward(self, x)
    }
}
