//! A small seeded random generator (SplitMix64), so that one seed fixes a whole run.
//!
//! Its entire state is one `u64`, which checkpoints store and restore exactly.
//! [`Rng::derive`] makes independent streams from a seed and a few integers (for example
//! seed, epoch and image index), so augmentation does not depend on which thread
//! processes which image.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: mix(seed ^ 0x5DEE_CE66_D1CE_4E5B),
        }
    }

    /// An independent generator for the stream identified by `seed` and `keys`.
    pub fn derive(seed: u64, keys: &[u64]) -> Rng {
        let mut h = mix(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
        for &k in keys {
            h = mix(h ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        }
        Rng { state: h }
    }

    /// The full state, for checkpoints.
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn from_state(state: u64) -> Rng {
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        // 24 random bits give every representable multiple of 2^-24 in [0, 1).
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// An integer uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        // Multiply-shift: unbiased enough for n far below 2^64.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform_f64(); // (0, 1]
        let u2 = self.uniform_f64();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// True with probability `p`.
    pub fn bernoulli(&mut self, p: f32) -> bool {
        self.uniform() < p
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `n` values from N(mean, std^2).
    pub fn normal_vec(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        (0..n).map(|_| mean + std * self.normal()).collect()
    }

    /// `n` values uniform in [lo, hi).
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform_range(lo, hi)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trips() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = Rng::from_state(a.state());
        assert_eq!(a.next_u64(), c.next_u64());
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn moments_of_normal_and_uniform() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let xs = r.normal_vec(n, 0.0, 1.0);
        let mean: f64 = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var: f64 = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        let us = r.uniform_vec(n, 0.0, 1.0);
        assert!(us.iter().all(|&u| (0.0..1.0).contains(&u)));
        let um: f64 = us.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert!((um - 0.5).abs() < 0.01);
    }

    #[test]
    fn derived_streams_differ() {
        let a = Rng::derive(1, &[0, 5]).next_u64();
        let b = Rng::derive(1, &[0, 6]).next_u64();
        let c = Rng::derive(1, &[1, 5]).next_u64();
        assert!(a != b && a != c && b != c);
    }
}
