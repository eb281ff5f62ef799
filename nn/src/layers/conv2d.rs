//! 2-D convolution with an optional bias (PyTorch's `nn.Conv2d`).

use focal_engine::{conv2d, conv2d_relu, Conv2dOptions, Rng, Tensor};

use super::Layer;
use crate::init;
use crate::module::{Module, Visitor};
use crate::param::Param;

/// `y = conv(x, weight) + bias`, with `weight` of shape `(out, in / groups, kh, kw)` and
/// `bias` of shape `(out)`.
#[derive(Clone)]
pub struct Conv2d {
    pub weight: Param,
    pub bias: Option<Param>,
    pub opts: Conv2dOptions,
}

impl Conv2d {
    /// A `k`×`k` convolution from `in_channels` to `out_channels`, stride 1, no padding, with
    /// a bias, initialised as PyTorch does by default (see [`init::pytorch_default`]). Set the
    /// geometry with the builder methods; re-initialise with [`Conv2d::init_weight`] /
    /// [`Conv2d::init_bias`].
    pub fn new(in_channels: usize, out_channels: usize, k: usize, rng: &mut Rng) -> Conv2d {
        let (w, b) = init::pytorch_default(&[out_channels, in_channels, k, k], out_channels, rng);
        Conv2d::from_parts(w, Some(b), Conv2dOptions::default())
    }

    /// A convolution with the given weight `(out, in / groups, kh, kw)`, bias and options.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, opts: Conv2dOptions) -> Conv2d {
        assert_eq!(weight.rank(), 4, "Conv2d: weight must be (out, in, kh, kw)");
        if let Some(b) = &bias {
            assert_eq!(
                b.shape(),
                &[weight.shape()[0]],
                "Conv2d: bias must be (out)"
            );
        }
        Conv2d {
            weight: Param::new(weight),
            bias: bias.map(Param::no_decay),
            opts,
        }
    }

    pub fn stride(mut self, s: usize) -> Conv2d {
        self.opts.stride = (s, s);
        self
    }

    pub fn padding(mut self, p: usize) -> Conv2d {
        self.opts.padding = (p, p);
        self
    }

    pub fn dilation(mut self, d: usize) -> Conv2d {
        self.opts.dilation = (d, d);
        self
    }

    /// Removes the bias (a convolution followed by a norm layer needs none).
    pub fn no_bias(mut self) -> Conv2d {
        self.bias = None;
        self
    }

    /// Replaces the weight's values, e.g. `conv.init_weight(init::normal(conv.weight_shape(), 0.0, 0.01, rng))`.
    pub fn init_weight(&mut self, value: Tensor) {
        assert_eq!(
            value.shape(),
            self.weight.shape(),
            "Conv2d::init_weight: shape"
        );
        self.weight.value = value;
    }

    /// Replaces the bias's values (panics if the layer has none).
    pub fn init_bias(&mut self, value: Tensor) {
        let b = self
            .bias
            .as_mut()
            .expect("Conv2d::init_bias: the layer has no bias");
        assert_eq!(value.shape(), b.shape(), "Conv2d::init_bias: shape");
        b.value = value;
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        self.weight.shape().to_vec()
    }

    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b = self.bias.as_ref().map(|b| b.var());
        conv2d(x, &self.weight.var(), b.as_ref(), self.opts)
    }

    /// `max(forward(x), 0)` as one fused op (`focal_engine::conv2d_relu`): the same bits
    /// as `forward(x).relu()`, without the pre-activation tensor.
    pub fn forward_relu(&self, x: &Tensor) -> Tensor {
        let b = self.bias.as_ref().map(|b| b.var());
        conv2d_relu(x, &self.weight.var(), b.as_ref(), self.opts)
    }
}

impl Module for Conv2d {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.param("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            v.param("bias", b);
        }
    }
}

impl Layer for Conv2d {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        Conv2d::forward(self, x)
    }
}
