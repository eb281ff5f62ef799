//! Gradient clipping by global norm.
//!
//! The global norm is ‖g‖ = √(Σ over all trainable parameters of Σ gᵢ²), accumulated in f64
//! in the model's visiting order (so the result never depends on the thread count). When it
//! exceeds `max_norm`, every gradient is multiplied by `max_norm / (‖g‖ + 1e-6)` (PyTorch's
//! `clip_grad_norm_`).

use focal_engine::Gradients;

use crate::module::{for_each_named, Module, Slot};

/// The global L2 norm of the gradients of the model's trainable parameters.
pub fn grad_norm(model: &mut dyn Module, grads: &Gradients) -> f32 {
    let mut sum = 0f64;
    for_each_named(model, |_, slot| {
        let Slot::Param(p) = slot else { return };
        if p.frozen {
            return;
        }
        if let Some(g) = grads.get(p.id) {
            sum += g
                .data()
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>();
        }
    });
    sum.sqrt() as f32
}

/// Scales the gradients so that their global norm is at most `max_norm`. Returns the norm
/// before clipping (log it: a sudden jump announces a diverging run).
pub fn clip_grad_norm(model: &mut dyn Module, grads: &mut Gradients, max_norm: f32) -> f32 {
    let norm = grad_norm(model, grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for_each_named(model, |_, slot| {
            let Slot::Param(p) = slot else { return };
            if p.frozen {
                return;
            }
            if let Some(g) = grads.remove(p.id) {
                grads.insert(p.id, g.detach().mul_scalar(coef));
            }
        });
    }
    norm
}
