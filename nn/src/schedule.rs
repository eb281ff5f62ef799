//! Learning-rate schedules: a linear warm-up followed by multi-step or cosine decay.
//!
//! The learning rate at iteration `t` (counted from 0) is `base_lr · warmup(t) · decay(t)`:
//!
//! - warm-up (Goyal et al., "Accurate, Large Minibatch SGD"): for t < T_w the factor rises
//!   linearly from `warmup_factor` at t = 0 towards 1: `f + (1 − f)·t/T_w`; it is 1 after.
//! - multi-step: `decay(t) = γ^k` where k is the number of milestones ≤ t (γ = 0.1 divides
//!   by 10 at each milestone, as in the RetinaNet paper's 60k/80k schedule).
//! - cosine (Loshchilov & Hutter, SGDR without restarts): from 1 at t = 0 down to
//!   `min_lr / base_lr` at t = `total_iters`, along half a cosine:
//!   `m + (1 − m)·(1 + cos(π·t/T))/2`, and the minimum after T.
//!
//! Factors are computed in f64 and the product rounded once to f32.

/// The decay after (and during) warm-up.
#[derive(Clone, Debug, PartialEq)]
pub enum Decay {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` at each of `milestones` (iterations, ascending).
    MultiStep { milestones: Vec<u64>, gamma: f64 },
    /// Half a cosine from `base_lr` to `min_lr` over `total_iters` iterations.
    Cosine { total_iters: u64, min_lr: f64 },
}

/// A learning-rate schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    /// T_w; 0 for no warm-up.
    pub warmup_iters: u64,
    /// The warm-up factor at iteration 0 (e.g. 1/1000).
    pub warmup_factor: f64,
    pub decay: Decay,
}

impl Schedule {
    pub fn constant(base_lr: f64) -> Schedule {
        Schedule {
            base_lr,
            warmup_iters: 0,
            warmup_factor: 1.0,
            decay: Decay::Constant,
        }
    }

    /// Multi-step decay, ÷10 at each milestone.
    pub fn multi_step(base_lr: f64, milestones: Vec<u64>) -> Schedule {
        Schedule {
            decay: Decay::MultiStep {
                milestones,
                gamma: 0.1,
            },
            ..Schedule::constant(base_lr)
        }
    }

    pub fn cosine(base_lr: f64, total_iters: u64, min_lr: f64) -> Schedule {
        Schedule {
            decay: Decay::Cosine {
                total_iters,
                min_lr,
            },
            ..Schedule::constant(base_lr)
        }
    }

    /// Adds a linear warm-up over `iters` iterations starting at `factor`.
    pub fn with_warmup(mut self, iters: u64, factor: f64) -> Schedule {
        self.warmup_iters = iters;
        self.warmup_factor = factor;
        self
    }

    /// The warm-up factor at iteration `t`.
    pub fn warmup_at(&self, t: u64) -> f64 {
        if t >= self.warmup_iters {
            return 1.0;
        }
        let alpha = t as f64 / self.warmup_iters as f64;
        self.warmup_factor + (1.0 - self.warmup_factor) * alpha
    }

    /// The decay factor at iteration `t`.
    pub fn decay_at(&self, t: u64) -> f64 {
        match &self.decay {
            Decay::Constant => 1.0,
            Decay::MultiStep { milestones, gamma } => {
                let k = milestones.iter().filter(|&&m| m <= t).count();
                gamma.powi(k as i32)
            }
            Decay::Cosine {
                total_iters,
                min_lr,
            } => {
                let m = min_lr / self.base_lr;
                if t >= *total_iters {
                    return m;
                }
                let progress = t as f64 / *total_iters as f64;
                m + (1.0 - m) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// The learning rate at iteration `t` (0-based).
    pub fn lr_at(&self, t: u64) -> f32 {
        (self.base_lr * self.warmup_at(t) * self.decay_at(t)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_multistep() {
        // base 0.01, warm-up 100 iterations from 1/1000, ÷10 at 1000 and 1500.
        let s = Schedule::multi_step(0.01, vec![1000, 1500]).with_warmup(100, 0.001);
        assert!((s.lr_at(0) - 1e-5).abs() < 1e-12); // 0.01 · 0.001
                                                    // t = 50: factor 0.001 + 0.999·0.5 = 0.5005, lr = 0.005005.
        assert!((s.lr_at(50) - 0.005005).abs() < 1e-9);
        assert_eq!(s.lr_at(100), 0.01);
        assert_eq!(s.lr_at(999), 0.01);
        assert!((s.lr_at(1000) - 0.001).abs() < 1e-10);
        assert!((s.lr_at(1499) - 0.001).abs() < 1e-10);
        assert!((s.lr_at(1500) - 0.0001).abs() < 1e-11);
    }

    #[test]
    fn cosine_from_base_to_minimum() {
        let s = Schedule::cosine(0.1, 1000, 0.001);
        assert_eq!(s.lr_at(0), 0.1);
        // Halfway: m + (1 − m)/2 with m = 0.01, times 0.1: 0.0505.
        assert!((s.lr_at(500) - 0.0505).abs() < 1e-8);
        assert!((s.lr_at(1000) - 0.001).abs() < 1e-9);
        assert!((s.lr_at(5000) - 0.001).abs() < 1e-9);
        // Monotone.
        let lrs: Vec<f32> = (0..=1000).map(|t| s.lr_at(t)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        // With warm-up the two factors multiply: t = 5 of 10 from 0.1 → factor 0.55.
        let w = Schedule::cosine(0.1, 1000, 0.0).with_warmup(10, 0.1);
        let expected = 0.1 * 0.55 * 0.5 * (1.0 + (std::f64::consts::PI * 0.005).cos());
        assert!((w.lr_at(5) as f64 - expected).abs() < 1e-8);
    }
}
