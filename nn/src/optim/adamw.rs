//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), in PyTorch's form.
//!
//! For a parameter w with gradient g, at its t-th update (t counted per parameter):
//!
//! ```text
//! w ← w·(1 − lr·λ)                       decoupled weight decay
//! m ← β₁·m + (1 − β₁)·g                  first moment
//! v ← β₂·v + (1 − β₂)·g²                 second moment
//! w ← w − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! The bias corrections 1 − βᵗ are computed in f64 and rounded once, as PyTorch does with
//! Python floats.

use std::collections::HashMap;

use focal_engine::{Gradients, Tensor};

use super::{for_each_update, update_chunks, OptimState, Optimizer, ParamState};
use crate::error::Error;
use crate::module::Module;
use crate::record::TensorRecord;

#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// λ.
    pub weight_decay: f32,
    /// Apply weight decay also to parameters marked `decay = false` (norm weights, biases).
    pub decay_norm_and_bias: bool,
    state: HashMap<String, Moments>,
}

#[derive(Clone, Debug)]
struct Moments {
    step: u64,
    m: Tensor,
    v: Tensor,
}

impl AdamW {
    /// PyTorch's defaults β = (0.9, 0.999), ε = 1e-8, with weight decay λ.
    pub fn new(weight_decay: f32) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decay_norm_and_bias: false,
            state: HashMap::new(),
        }
    }

    pub fn betas(mut self, beta1: f32, beta2: f32) -> AdamW {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    pub fn eps(mut self, eps: f32) -> AdamW {
        self.eps = eps;
        self
    }

    pub fn decay_norm_and_bias(mut self, on: bool) -> AdamW {
        self.decay_norm_and_bias = on;
        self
    }
}

impl Optimizer for AdamW {
    fn kind(&self) -> &'static str {
        "adamw"
    }

    fn step(&mut self, model: &mut dyn Module, grads: &Gradients, lr: f32) {
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        for_each_update(
            model,
            grads,
            self.weight_decay,
            self.decay_norm_and_bias,
            |name, p, grad, wd| {
                let st = self
                    .state
                    .entry(name.to_string())
                    .or_insert_with(|| Moments {
                        step: 0,
                        m: Tensor::zeros(grad.shape()),
                        v: Tensor::zeros(grad.shape()),
                    });
                assert_eq!(
                    st.m.shape(),
                    grad.shape(),
                    "AdamW moments of {name}: wrong shape"
                );
                st.step += 1;
                let t = st.step as i32;
                let bias1 = (1.0 - (b1 as f64).powi(t)) as f32;
                let bias2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt() as f32;
                let step_size = lr / bias1;
                let shrink = 1.0 - lr * wd;
                update_chunks(
                    p.value.data_mut(),
                    grad.data(),
                    [st.m.data_mut(), st.v.data_mut()],
                    |w, g, [m, v]| {
                        // Zipped iterators (no bounds checks), so the loop vectorises.
                        let elems = w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
                        for (((w, &g), m), v) in elems {
                            *w *= shrink;
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            let denom = v.sqrt() / bias2_sqrt + eps;
                            *w -= step_size * *m / denom;
                        }
                    },
                );
            },
        );
    }

    fn state(&self) -> OptimState {
        let mut params: Vec<ParamState> = self
            .state
            .iter()
            .map(|(name, st)| ParamState {
                param: name.clone(),
                step: st.step,
                tensors: vec![
                    TensorRecord::new("exp_avg", &st.m),
                    TensorRecord::new("exp_avg_sq", &st.v),
                ],
            })
            .collect();
        params.sort_by(|a, b| a.param.cmp(&b.param));
        OptimState {
            kind: self.kind().to_string(),
            hyper: vec![
                ("beta1".into(), self.beta1 as f64),
                ("beta2".into(), self.beta2 as f64),
                ("eps".into(), self.eps as f64),
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
        let mut state = HashMap::new();
        for p in &s.params {
            let m = p.tensor("exp_avg")?.to_tensor();
            let v = p.tensor("exp_avg_sq")?.to_tensor();
            if m.shape() != v.shape() {
                return Err(Error::invalid(format!(
                    "optimiser state of {}: moment shapes differ",
                    p.param
                )));
            }
            state.insert(p.param.clone(), Moments { step: p.step, m, v });
        }
        self.beta1 = s.hyper("beta1")? as f32;
        self.beta2 = s.hyper("beta2")? as f32;
        self.eps = s.hyper("eps")? as f32;
        self.weight_decay = s.hyper("weight_decay")? as f32;
        self.decay_norm_and_bias = s.hyper("decay_norm_and_bias")? != 0.0;
        self.state = state;
        Ok(())
    }
}
