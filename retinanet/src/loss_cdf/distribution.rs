//! The normalised loss distribution of one set of entries (positives or negatives) at one
//! γ: the curve of the paper's Figure 4 and the share of the loss its hardest entries
//! carry.
//!
//! Every loss is computed by the engine's [`sigmoid_focal_loss`] (the function training
//! differentiates) with α = 1, from x_t and target 1 (then x = x_t and p_t = σ(x_t)). The
//! losses are sorted ascending (easiest first, as in the paper) and summed in f64 in that
//! order. With l_1 ≤ … ≤ l_n and S = Σ l_i:
//!
//! - the curve at the fraction i/n of the entries is (l_1 + … + l_i)/S;
//! - the share carried by the hardest fraction f is (l_{n−k+1} + … + l_n)/S with
//!   k = max(1, round(f·n)) entries.

use focal_engine::{no_grad, sigmoid_focal_loss, Reduction, Tensor};

/// One set's losses at one γ, sorted ascending.
#[derive(Clone, Debug)]
pub struct LossDistribution {
    pub gamma: f32,
    /// Every entry's loss, ascending.
    losses: Vec<f32>,
    /// Their sum, in ascending order, in f64.
    total: f64,
}

impl LossDistribution {
    /// The focal losses (α = 1) of entries with the given x_t at `gamma`, sorted.
    pub fn new(xt: &[f32], gamma: f32) -> LossDistribution {
        let losses = if xt.is_empty() {
            Vec::new()
        } else {
            let x = Tensor::from_vec(&[xt.len()], xt.to_vec());
            let ones = Tensor::ones(&[xt.len()]);
            no_grad(|| sigmoid_focal_loss(&x, &ones, None, gamma, Reduction::None)).to_vec()
        };
        LossDistribution::from_losses(losses, gamma)
    }

    /// From per-entry losses (any order; each finite and ≥ 0).
    pub fn from_losses(mut losses: Vec<f32>, gamma: f32) -> LossDistribution {
        losses.sort_by(f32::total_cmp);
        let total = losses.iter().map(|&l| l as f64).sum();
        LossDistribution {
            gamma,
            losses,
            total,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.losses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.losses.is_empty()
    }

    /// The sum of the losses.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The sorted losses.
    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    /// The share of the total loss carried by the hardest `fraction` of the entries:
    /// the largest k = max(1, round(fraction·n)) losses over the sum. `None` for an empty
    /// set or a zero total.
    pub fn hardest_share(&self, fraction: f64) -> Option<f64> {
        let n = self.losses.len();
        if n == 0 || self.total <= 0.0 {
            return None;
        }
        let k = ((fraction * n as f64).round() as usize).clamp(1, n);
        let top: f64 = self.losses[n - k..].iter().map(|&l| l as f64).sum();
        Some(top / self.total)
    }

    /// The cumulative normalised loss at about `points` evenly spaced fractions of the
    /// entries, from (0, 0) to (1, 1): pairs (i/n, (l_1 + … + l_i)/S). Empty for an empty
    /// set or a zero total.
    pub fn cumulative(&self, points: usize) -> Vec<(f64, f64)> {
        let n = self.losses.len();
        if n == 0 || self.total <= 0.0 {
            return Vec::new();
        }
        let step = n.div_ceil(points.max(1)).max(1);
        let mut out = vec![(0.0, 0.0)];
        let mut sum = 0.0f64;
        for (i, &l) in self.losses.iter().enumerate() {
            sum += l as f64;
            let count = i + 1;
            if count % step == 0 || count == n {
                out.push((count as f64 / n as f64, sum / self.total));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_curve_on_a_small_set_by_hand() {
        // Ten losses 1..10 in scrambled order: S = 55.
        let d = LossDistribution::from_losses(
            vec![3.0, 10.0, 1.0, 7.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0],
            2.0,
        );
        assert_eq!(d.len(), 10);
        assert_eq!(d.total(), 55.0);
        // Hardest 20%: k = round(0.2·10) = 2 → (9 + 10)/55 = 19/55 = 0.345454...
        assert!((d.hardest_share(0.2).unwrap() - 19.0 / 55.0).abs() < 1e-12);
        // Hardest 1%: round(0.1) = 0 → at least one entry: 10/55.
        assert!((d.hardest_share(0.01).unwrap() - 10.0 / 55.0).abs() < 1e-12);
        // Hardest 10%: k = 1, the same 10/55 = 0.181818...
        assert!((d.hardest_share(0.1).unwrap() - 10.0 / 55.0).abs() < 1e-12);
        // All: 1.
        assert!((d.hardest_share(1.0).unwrap() - 1.0).abs() < 1e-12);
        // Curve with 5 points: every 2nd entry. Cumulative sums of 1..10 at i = 2, 4, 6,
        // 8, 10: 3, 10, 21, 36, 55 → /55.
        let c = d.cumulative(5);
        let want = [
            (0.0, 0.0),
            (0.2, 3.0 / 55.0),
            (0.4, 10.0 / 55.0),
            (0.6, 21.0 / 55.0),
            (0.8, 36.0 / 55.0),
            (1.0, 1.0),
        ];
        assert_eq!(c.len(), want.len());
        for (got, want) in c.iter().zip(want) {
            assert!(
                (got.0 - want.0).abs() < 1e-12 && (got.1 - want.1).abs() < 1e-12,
                "{c:?}"
            );
        }
        // The curve and the shares agree: 1 − curve(0.8) = (9 + 10)/55.
        assert!((1.0 - c[4].1 - d.hardest_share(0.2).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn losses_are_the_focal_loss_with_alpha_one() {
        // x_t = ln 9 → p_t = 0.9; x_t = −ln 9 → p_t = 0.1 (the worked figures of
        // docs/focal-loss.md).
        let ln9 = 9f32.ln();
        let xt = [ln9, -ln9];
        // γ = 0: CE = −ln 0.9 = 0.105361, −ln 0.1 = 2.302585.
        let d = LossDistribution::new(&xt, 0.0);
        assert!((d.losses()[0] - 0.105361).abs() < 1e-6, "{:?}", d.losses());
        assert!((d.losses()[1] - std::f32::consts::LN_10).abs() < 1e-5);
        // γ = 2: FL = 0.1²·0.105361 = 0.00105361 and 0.9²·2.302585 = 1.865094.
        let d = LossDistribution::new(&xt, 2.0);
        assert!(
            (d.losses()[0] - 0.00105361).abs() < 1e-8,
            "{:?}",
            d.losses()
        );
        assert!((d.losses()[1] - 1.865094).abs() < 1e-5);
        // Hardest half at γ = 2: 1.865094 / (1.865094 + 0.00105361) = 0.999435.
        assert!((d.hardest_share(0.5).unwrap() - 0.999435).abs() < 1e-6);
        // γ = 0.5: 0.1^0.5·0.105361 = 0.0333179, 0.9^0.5·2.302585 = 2.184424.
        let d = LossDistribution::new(&xt, 0.5);
        assert!((d.losses()[0] - 0.0333179).abs() < 1e-6, "{:?}", d.losses());
        assert!((d.losses()[1] - 2.184424).abs() < 1e-5);
    }

    #[test]
    fn raising_gamma_concentrates_the_negative_loss() {
        // 99 easy negatives at p_t = 0.99 (x_t = ln 99) and one hard at p_t = 0.1.
        // γ = 0: easy −ln 0.99 = 0.0100503 each, hard 2.302585:
        //   share of the hardest 1% = 2.302585 / (2.302585 + 99·0.0100503) = 0.69826.
        // γ = 2: easy 0.01²·0.0100503 = 1.00503e−6, hard 0.81·2.302585 = 1.865094:
        //   share = 1.865094 / (1.865094 + 99·1.00503e−6) = 0.999947.
        let mut xt = vec![99f32.ln(); 99];
        xt.push(-(9f32.ln()));
        let s0 = LossDistribution::new(&xt, 0.0).hardest_share(0.01).unwrap();
        let s2 = LossDistribution::new(&xt, 2.0).hardest_share(0.01).unwrap();
        assert!((s0 - 0.69826).abs() < 1e-4, "{s0}");
        assert!((s2 - 0.999947).abs() < 1e-5, "{s2}");
    }

    #[test]
    fn empty_or_zero_sets_have_no_share() {
        let d = LossDistribution::new(&[], 2.0);
        assert!(d.is_empty() && d.hardest_share(0.2).is_none() && d.cumulative(10).is_empty());
        let d = LossDistribution::from_losses(vec![0.0, 0.0], 2.0);
        assert!(d.hardest_share(0.5).is_none());
    }
}
