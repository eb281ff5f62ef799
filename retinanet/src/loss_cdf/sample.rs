//! A bounded sample of the entries' x_t values.
//!
//! Up to `capacity` values are all kept. Beyond that, reservoir sampling (Vitter's
//! Algorithm R) keeps a uniform random sample of `capacity` of all the values seen: the
//! i-th value (1-based) replaces a random slot with probability capacity/i. The paper
//! samples too (~10^7 negative and ~10^5 positive windows). The random stream is seeded,
//! so the sample, and every number computed from it, is reproducible.

use focal_engine::Rng;

/// The x_t of a set of entries (all of them, or a uniform sample).
#[derive(Clone, Debug)]
pub struct EntrySample {
    values: Vec<f32>,
    capacity: usize,
    seen: u64,
    rng: Rng,
}

impl EntrySample {
    /// Keeps at most `capacity` (≥ 1) values; `seed` fixes which.
    pub fn new(capacity: usize, seed: u64) -> EntrySample {
        assert!(capacity > 0, "EntrySample: the capacity must be at least 1");
        EntrySample {
            values: Vec::new(),
            capacity,
            seen: 0,
            rng: Rng::new(seed),
        }
    }

    pub fn push(&mut self, x: f32) {
        self.seen += 1;
        if self.values.len() < self.capacity {
            self.values.push(x);
        } else {
            let j = self.rng.below(self.seen as usize);
            if j < self.capacity {
                self.values[j] = x;
            }
        }
    }

    /// The kept values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// How many values were pushed.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether every value pushed is kept.
    pub fn is_complete(&self) -> bool {
        self.seen == self.values.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_up_to_the_capacity() {
        let mut s = EntrySample::new(5, 0);
        for i in 0..5 {
            s.push(i as f32);
        }
        assert!(s.is_complete());
        assert_eq!(s.values(), &[0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn beyond_the_capacity_the_sample_is_uniform() {
        // 1000 values into 100 slots, repeated with 400 seeds: each value should be kept
        // in 100/1000 = 10% of the runs, i.e. 40 times of 400; the first and last
        // hundred values alike (a biased reservoir favours one end).
        let (n, cap, runs) = (1000usize, 100usize, 400u64);
        let mut kept = vec![0u32; n];
        for seed in 0..runs {
            let mut s = EntrySample::new(cap, seed);
            for i in 0..n {
                s.push(i as f32);
            }
            assert_eq!(s.values().len(), cap);
            assert_eq!(s.seen(), n as u64);
            assert!(!s.is_complete());
            for &v in s.values() {
                kept[v as usize] += 1;
            }
        }
        let first: u32 = kept[..100].iter().sum();
        let last: u32 = kept[900..].iter().sum();
        // Expected 100 values × 40 = 4000 each; the binomial s.d. of a sum of 100 such
        // counts is about √(4000·0.9) ≈ 60 (a bit less: slots within a run are not
        // independent), so ±400 is far outside chance.
        assert!(
            (first as i64 - 4000).abs() < 400,
            "first hundred kept {first} times"
        );
        assert!(
            (last as i64 - 4000).abs() < 400,
            "last hundred kept {last} times"
        );
        // The same seed gives the same sample.
        let run = |seed| {
            let mut s = EntrySample::new(cap, seed);
            (0..n).for_each(|i| s.push(i as f32));
            s.values().to_vec()
        };
        assert_eq!(run(7), run(7));
    }
}
