//! Initialisers. Every random one takes the one seeded [`Rng`] of the run, so a seed fixes the
//! whole initialisation, and draws the values in row-major order.
//!
//! Fans follow PyTorch: for a weight of shape `(out, in, k1, k2, ...)` the receptive field is
//! `k1·k2·...`, `fan_in = in · receptive` and `fan_out = out · receptive`.
//!
//! [`without_random_init`] builds a model whose every value is about to be overwritten
//! (weights loaded strictly from a file, or a model built only to read its names and
//! shapes) without drawing any random number: ResNet-50's 25 M normal draws take seconds.

use std::cell::Cell;

use focal_engine::{Rng, Tensor};

thread_local! {
    static SKIP_RANDOM_INIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with [`normal`] and [`uniform`] (and the initialisers built on them) returning
/// zeros on this thread, without drawing from the generator. Only for models whose every
/// parameter is then overwritten: a strict load, or reading names and shapes.
pub fn without_random_init<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SKIP_RANDOM_INIT.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SKIP_RANDOM_INIT.with(|s| s.replace(true)));
    f()
}

fn skipping() -> bool {
    SKIP_RANDOM_INIT.with(|s| s.get())
}

/// Which fan scales a Kaiming initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Preserves the variance of activations in the forward pass.
    FanIn,
    /// Preserves the variance of gradients in the backward pass.
    FanOut,
}

/// `(fan_in, fan_out)` of a weight shape. A vector of length `n` has both fans `n`.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            let receptive: usize = shape[2..].iter().product();
            (shape[1] * receptive, shape[0] * receptive)
        }
    }
}

fn fan(shape: &[usize], mode: FanMode) -> usize {
    let (fan_in, fan_out) = fans(shape);
    match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    }
}

/// The gain of a leaky ReLU with negative slope `a`: √(2 / (1 + a²)) (√2 for a ReLU).
pub fn leaky_relu_gain(a: f32) -> f32 {
    (2.0 / (1.0 + a * a)).sqrt()
}

/// Kaiming (He) normal: N(0, std²) with std = gain / √fan, gain = √(2/(1+a²)).
pub fn kaiming_normal(shape: &[usize], a: f32, mode: FanMode, rng: &mut Rng) -> Tensor {
    let std = leaky_relu_gain(a) / (fan(shape, mode) as f32).sqrt();
    normal(shape, 0.0, std, rng)
}

/// Kaiming (He) uniform: U(−bound, bound) with bound = gain · √(3 / fan), which has the same
/// variance as [`kaiming_normal`].
pub fn kaiming_uniform(shape: &[usize], a: f32, mode: FanMode, rng: &mut Rng) -> Tensor {
    let bound = leaky_relu_gain(a) * (3.0 / fan(shape, mode) as f32).sqrt();
    uniform(shape, -bound, bound, rng)
}

/// N(mean, std²), independently for each value.
pub fn normal(shape: &[usize], mean: f32, std: f32, rng: &mut Rng) -> Tensor {
    if skipping() {
        return Tensor::zeros(shape);
    }
    let n = shape.iter().product();
    Tensor::from_vec(shape, rng.normal_vec(n, mean, std))
}

/// U(lo, hi), independently for each value.
pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
    if skipping() {
        return Tensor::zeros(shape);
    }
    let n = shape.iter().product();
    Tensor::from_vec(shape, rng.uniform_vec(n, lo, hi))
}

/// Every value equal to `value`.
pub fn constant(shape: &[usize], value: f32) -> Tensor {
    Tensor::full(shape, value)
}

/// The bias that makes a sigmoid classifier start by predicting probability `pi` for every
/// class (RetinaNet, section 4.1: π = 0.01): σ(b) = π ⇔ b = −log((1 − π) / π).
pub fn prior_probability_bias(pi: f32) -> f32 {
    assert!(
        pi > 0.0 && pi < 1.0,
        "prior probability must lie in (0, 1), got {pi}"
    );
    -((1.0 - pi) / pi).ln()
}

/// PyTorch's default initialisation of a convolution or linear layer: weight
/// `kaiming_uniform(a = √5, fan_in)`, which is U(−1/√fan_in, 1/√fan_in), and bias
/// U(−1/√fan_in, 1/√fan_in). Returns `(weight, bias)`; the bias is drawn after the weight.
pub fn pytorch_default(weight_shape: &[usize], bias_len: usize, rng: &mut Rng) -> (Tensor, Tensor) {
    let w = kaiming_uniform(weight_shape, 5f32.sqrt(), FanMode::FanIn, rng);
    let bound = 1.0 / (fans(weight_shape).0 as f32).sqrt();
    let b = uniform(&[bias_len], -bound, bound, rng);
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_random_init_gives_zeros_and_draws_nothing() {
        let mut rng = Rng::new(3);
        let (w, state) = without_random_init(|| {
            let w = kaiming_normal(&[4, 2, 3, 3], 0.0, FanMode::FanOut, &mut rng);
            let b = uniform(&[5], -1.0, 1.0, &mut rng);
            assert!(b.data().iter().all(|&v| v == 0.0));
            (w, rng.state())
        });
        assert!(w.data().iter().all(|&v| v == 0.0));
        assert_eq!(state, Rng::new(3).state(), "no number was drawn");
        // Outside, drawing is back.
        assert!(normal(&[3], 0.0, 1.0, &mut rng)
            .data()
            .iter()
            .any(|&v| v != 0.0));
    }

    fn mean_std(t: &Tensor) -> (f64, f64) {
        let n = t.numel() as f64;
        let m = t.data().iter().map(|&x| x as f64).sum::<f64>() / n;
        let v = t
            .data()
            .iter()
            .map(|&x| (x as f64 - m).powi(2))
            .sum::<f64>()
            / n;
        (m, v.sqrt())
    }

    #[test]
    fn fans_of_conv_linear_and_vector_shapes() {
        assert_eq!(fans(&[64, 3, 7, 7]), (3 * 49, 64 * 49));
        assert_eq!(fans(&[10, 20]), (20, 10));
        assert_eq!(fans(&[5]), (5, 5));
    }

    #[test]
    fn kaiming_normal_and_uniform_have_the_he_standard_deviation() {
        let mut rng = Rng::new(3);
        // fan_out = 64·3·3 = 576, ReLU gain √2: std = √2/24 = 0.058926.
        let w = kaiming_normal(&[64, 32, 3, 3], 0.0, FanMode::FanOut, &mut rng);
        let (m, s) = mean_std(&w);
        assert!(m.abs() < 0.002, "{m}");
        assert!((s - 0.058926).abs() < 0.001, "{s}");
        // a = 1: gain 1, fan_in = 32·9 = 288, bound = √(3/288) = 0.10206, std = bound/√3 = 0.058926.
        let w = kaiming_uniform(&[64, 32, 3, 3], 1.0, FanMode::FanIn, &mut rng);
        let bound = (3.0f32 / 288.0).sqrt();
        assert!((bound - 0.10206).abs() < 1e-5);
        assert!(w.data().iter().all(|&x| x.abs() <= bound));
        let max = w.data().iter().fold(0f32, |a, &x| a.max(x.abs()));
        assert!(max > 0.99 * bound, "{max}");
        let (_, s) = mean_std(&w);
        assert!((s - 0.058926).abs() < 0.001, "{s}");
    }

    #[test]
    fn normal_constant_and_seeded_repeatability() {
        let a = normal(&[10_000], 2.0, 0.5, &mut Rng::new(9));
        let (m, s) = mean_std(&a);
        assert!((m - 2.0).abs() < 0.02 && (s - 0.5).abs() < 0.02, "{m} {s}");
        let b = normal(&[10_000], 2.0, 0.5, &mut Rng::new(9));
        assert_eq!(a.data(), b.data());
        assert!(constant(&[3, 2], 0.25).data().iter().all(|&x| x == 0.25));
    }

    #[test]
    fn prior_bias_gives_the_prior_after_a_sigmoid() {
        // π = 0.01: b = −log(0.99/0.01) = −log(99) = −4.59512.
        let b = prior_probability_bias(0.01);
        assert!((b - (-4.59512)).abs() < 1e-5, "{b}");
        let p = 1.0 / (1.0 + (-b).exp());
        assert!((p - 0.01).abs() < 1e-7, "{p}");
    }

    #[test]
    fn pytorch_default_bounds() {
        // fan_in = 4·3·3 = 36: both bounds are 1/6.
        let (w, b) = pytorch_default(&[8, 4, 3, 3], 8, &mut Rng::new(1));
        assert!(w.data().iter().all(|&x| x.abs() <= 1.0 / 6.0));
        assert!(b.data().iter().all(|&x| x.abs() <= 1.0 / 6.0));
        assert_eq!(b.shape(), &[8]);
    }
}
