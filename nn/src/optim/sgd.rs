//! Stochastic gradient descent with momentum, in PyTorch's form.
//!
//! For a parameter w with gradient g, at every step:
//!
//! ```text
//! g ← g + λ·w                 weight decay λ (L2 penalty folded into the gradient)
//! v ← g          first step   momentum buffer
//! v ← μ·v + g    later steps
//! d ← g + μ·v    Nesterov     (or d ← v without)
//! w ← w − lr·d
//! ```
//!
//! Note that the learning rate multiplies the buffer at each step (PyTorch's convention, not
//! the paper's v ← μv − lr·g); the two agree while lr is constant.

use std::collections::HashMap;

use focal_engine::{Gradients, Tensor};

use super::{for_each_update, update_chunks, OptimState, Optimizer, ParamState};
use crate::module::Module;
use crate::record::TensorRecord;

#[derive(Clone, Debug)]
pub struct Sgd {
    /// μ; 0 for plain SGD (then no buffer is kept).
    pub momentum: f32,
    pub nesterov: bool,
    /// λ.
    pub weight_decay: f32,
    /// Apply weight decay also to parameters marked `decay = false` (norm weights, biases).
    pub decay_norm_and_bias: bool,
    state: HashMap<String, (u64, Option<Tensor>)>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32) -> Sgd {
        Sgd {
            momentum,
            nesterov: false,
            weight_decay,
            decay_norm_and_bias: false,
            state: HashMap::new(),
        }
    }

    pub fn nesterov(mut self, on: bool) -> Sgd {
        self.nesterov = on;
        self
    }

    pub fn decay_norm_and_bias(mut self, on: bool) -> Sgd {
        self.decay_norm_and_bias = on;
        self
    }
}

impl Optimizer for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn step(&mut self, model: &mut dyn Module, grads: &Gradients, lr: f32) {
        let (mu, nesterov) = (self.momentum, self.nesterov);
        for_each_update(
            model,
            grads,
            self.weight_decay,
            self.decay_norm_and_bias,
            |name, p, grad, wd| {
                let (step, buf) = self.state.entry(name.to_string()).or_insert((0, None));
                let w = p.value.data_mut();
                let g = grad.data();
                let first = buf.is_none();
                if mu != 0.0 && first {
                    *buf = Some(Tensor::zeros(grad.shape()));
                }
                match buf {
                    Some(buf) => {
                        assert_eq!(
                            buf.shape(),
                            grad.shape(),
                            "momentum buffer of {name}: wrong shape"
                        );
                        update_chunks(w, g, [buf.data_mut()], |w, g, [v]| {
                            for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                                let gi = g + wd * *w;
                                *v = if first { gi } else { mu * *v + gi };
                                let d = if nesterov { gi + mu * *v } else { *v };
                                *w -= lr * d;
                            }
                        });
                    }
                    None => update_chunks(w, g, [], |w, g, []| {
                        for (w, &g) in w.iter_mut().zip(g) {
                            *w -= lr * (g + wd * *w);
                        }
                    }),
                }
                *step += 1;
            },
        );
    }

    fn state(&self) -> OptimState {
        let mut params: Vec<ParamState> = self
            .state
            .iter()
            .map(|(name, (step, buf))| ParamState {
                param: name.clone(),
                step: *step,
                tensors: buf
                    .iter()
                    .map(|b| TensorRecord::new("momentum_buffer", b))
                    .collect(),
            })
            .collect();
        params.sort_by(|a, b| a.param.cmp(&b.param));
        OptimState {
            kind: self.kind().to_string(),
            hyper: vec![
                ("momentum".into(), self.momentum as f64),
                ("nesterov".into(), self.nesterov as u8 as f64),
                ("weight_decay".into(), self.weight_decay as f64),
                (
                    "decay_norm_and_bias".into(),
                    self.decay_norm_and_bias as u8 as f64,
                ),
            ],
            params,
        }
    }

    fn load_state(&mut self, s: &OptimState) -> crate::Result<()> {
        s.check_kind(self.kind())?;
        let momentum = s.hyper("momentum")? as f32;
        let mut state = HashMap::new();
        for p in &s.params {
            let buf = if momentum != 0.0 {
                Some(p.tensor("momentum_buffer")?.to_tensor())
            } else {
                None
            };
            state.insert(p.param.clone(), (p.step, buf));
        }
        self.momentum = momentum;
        self.nesterov = s.hyper("nesterov")? != 0.0;
        self.weight_decay = s.hyper("weight_decay")? as f32;
        self.decay_norm_and_bias = s.hyper("decay_norm_and_bias")? != 0.0;
        self.state = state;
        Ok(())
    }
}
