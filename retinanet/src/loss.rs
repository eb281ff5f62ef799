//! The RetinaNet loss (eq. (5) and §4.1): the focal loss on the class subnet's output and
//! a smooth-L1 (or L1) loss on the box subnet's output, both normalised by the number of
//! positive anchors in the whole batch.
//!
//! **Classification.** For every anchor that is not ignored and every class k, with
//! logit x, target y ∈ {0, 1} (1 only for the anchor's class when it is positive),
//! p = σ(x), p_t = p if y = 1 else 1 − p, α_t = α if y = 1 else 1 − α:
//!
//! ```text
//!     FL(x, y) = α_t · (1 − p_t)^γ · CE(x, y),   CE = −ln p_t = BCE-with-logits,
//! ```
//!
//! summed over all those (anchor, class) entries (α = 0.25, γ = 2). The engine's
//! `sigmoid_focal_loss_rows` computes CE from the logit in a stable form, never as the log
//! of a clamped probability, and takes each anchor's label instead of one-hot targets.
//!
//! **Box regression.** For every positive anchor, the four deltas (dx, dy, dw, dh)
//! against the encoded ground-truth box, each through smooth L1
//! (0.5·d²/β if |d| < β, else |d| − 0.5·β; β = 0.11, the authors' code) or L1, summed.
//!
//! **Normalisation.** Both sums are divided by max(1, positive anchors in the batch).
//! An image without objects therefore still contributes its (small) background loss.
//!
//! **At initialisation** (class bias −ln((1−π)/π), π = 0.01, so every p = 0.01) each
//! background entry costs 0.75·0.01²·(−ln 0.99) = 7.5378e−7 and each positive entry
//! 0.25·0.99²·ln 100 = 1.12838, so the first classification loss is
//! ≈ 1.128 + (anchors·K·7.5378e−7) / positives — a check the tests make.

use focal_engine::ops::loss::{l1, sigmoid_focal_loss_rows, smooth_l1, Reduction};
use focal_engine::Tensor;

use crate::config::{BoxLoss, LossConfig};
use crate::targets::BatchTargets;

/// The two terms of the loss, already normalised, as tracked scalars.
#[derive(Clone, Debug)]
pub struct Losses {
    pub classification: Tensor,
    pub box_regression: Tensor,
    /// Positive anchors in the batch (the normaliser is max(1, this)).
    pub num_positive: usize,
}

impl Losses {
    /// cls + box, the scalar that is differentiated.
    pub fn total(&self) -> Tensor {
        self.classification.add(&self.box_regression)
    }
}

/// The loss of a batch. `cls_logits` is (N, A_total, K) and `box_deltas` (N, A_total, 4),
/// the heads' concatenated outputs; `targets` comes from
/// [`crate::targets::assign_targets`] for the same anchors.
pub fn retinanet_loss(
    config: &LossConfig,
    cls_logits: &Tensor,
    box_deltas: &Tensor,
    targets: &BatchTargets,
) -> Losses {
    retinanet_loss_normalised_by(
        config,
        cls_logits,
        box_deltas,
        targets,
        targets.num_positive(),
    )
}

/// [`retinanet_loss`] divided by `batch_positives` instead of this batch's own count of
/// positive anchors: the loss of one shard of a larger batch (see
/// [`crate::train::data_parallel`]), whose shards' losses then add up to the loss of the
/// whole batch.
pub fn retinanet_loss_normalised_by(
    config: &LossConfig,
    cls_logits: &Tensor,
    box_deltas: &Tensor,
    targets: &BatchTargets,
    batch_positives: usize,
) -> Losses {
    let n = targets.images.len();
    let (a, k) = (targets.num_anchors, targets.num_classes);
    assert_eq!(
        cls_logits.shape(),
        &[n, a, k],
        "retinanet_loss: class logits must be (N, A_total, K) = ({n}, {a}, {k})"
    );
    assert_eq!(
        box_deltas.shape(),
        &[n, a, 4],
        "retinanet_loss: box deltas must be (N, A_total, 4) = ({n}, {a}, 4)"
    );
    let num_positive = targets.num_positive();
    let normaliser = 1.0 / batch_positives.max(1) as f32;

    // Classification: every anchor's row, the ignored ones left out by the op itself (no
    // copy of the logits, no one-hot targets).
    let logits = cls_logits.reshape(&[n * a, k]);
    let rows = targets.row_targets();
    let classification =
        sigmoid_focal_loss_rows(&logits, &rows, config.alpha, config.gamma).mul_scalar(normaliser);

    // Box regression: the rows of the positive anchors only.
    let deltas = box_deltas.reshape(&[n * a, 4]);
    let box_regression = if num_positive == 0 {
        deltas.sum_all().mul_scalar(0.0)
    } else {
        let rows = targets.positive_rows();
        let pred = deltas.index_select(0, &rows);
        let t = Tensor::from_vec(&[rows.len(), 4], targets.positive_box_targets());
        match config.box_loss {
            // Smooth L1 with β = 0 is L1 (and would divide by zero).
            BoxLoss::L1 | BoxLoss::SmoothL1 { beta: 0.0 } => l1(&pred, &t, Reduction::Sum),
            BoxLoss::SmoothL1 { beta } => smooth_l1(&pred, &t, beta, Reduction::Sum),
        }
        .mul_scalar(normaliser)
    };

    Losses {
        classification,
        box_regression,
        num_positive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchors::Anchors;
    use crate::config::{AnchorConfig, MatcherConfig};
    use crate::targets::{assign_targets, AnchorLabel, GroundTruth, ImageTargets};
    use focal_engine::gradcheck::{check, Case};
    use focal_engine::{backward, Op, ParamId, Rng};

    /// Two images, three anchors, two classes (see the hand computation in the test).
    fn tiny_targets() -> BatchTargets {
        use AnchorLabel::*;
        BatchTargets {
            images: vec![
                ImageTargets {
                    labels: vec![Class(1), Ignored, Background],
                    positives: vec![0],
                    box_targets: vec![[0.1, -0.2, 0.3, 0.05]],
                },
                ImageTargets {
                    labels: vec![Background, Background, Class(0)],
                    positives: vec![2],
                    box_targets: vec![[0.0; 4]],
                },
            ],
            num_anchors: 3,
            num_classes: 2,
        }
    }

    #[test]
    fn tiny_case_by_hand() {
        let ln9 = 9f32.ln();
        #[rustfmt::skip]
        let logits = Tensor::from_vec(&[2, 3, 2], vec![
            0.0, ln9,   // image 0, anchor 0: positive for class 1
            5.0, -5.0,  // anchor 1: ignored, must not count
            -ln9, 0.0,  // anchor 2: background
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, // image 1: all logits 0
        ]);
        #[rustfmt::skip]
        let deltas = Tensor::from_vec(&[2, 3, 4], vec![
            0.15, -0.2, 0.0, 0.25,  // image 0, anchor 0 (positive)
            9.0, 9.0, 9.0, 9.0,     // not positive: no box loss
            9.0, 9.0, 9.0, 9.0,
            9.0, 9.0, 9.0, 9.0,     // image 1
            9.0, 9.0, 9.0, 9.0,
            0.5, 0.0, 0.0, 0.0,     // image 1, anchor 2 (positive)
        ]);
        // Focal loss entries, α_t (1 − p_t)² (−ln p_t):
        //   x = 0, y = 0: p_t = 0.5, α_t = 0.75 → 0.75·0.25·ln 2 = 0.129965
        //   x = 0, y = 1: p_t = 0.5, α_t = 0.25 → 0.25·0.25·ln 2 = 0.043322
        //   x = ln 9, y = 1: p = 0.9 = p_t → 0.25·0.01·0.105361 = 0.000263
        //   x = −ln 9, y = 0: p = 0.1, p_t = 0.9 → 0.75·0.01·0.105361 = 0.000790
        // Image 0: 0.129965 + 0.000263 + 0.000790 + 0.129965 = 0.260984
        // Image 1: 5·0.129965 + 0.043322 = 0.693147 (= ln 2)
        // Two positives in the batch: cls = (0.260984 + 0.693147) / 2 = 0.477066.
        // Smooth L1, β = 0.11, on the positives' differences:
        //   image 0: (0.05, 0, −0.3, 0.2) → 0.5·0.05²/0.11 + 0 + (0.3 − 0.055) + (0.2 − 0.055)
        //            = 0.011364 + 0.245 + 0.145 = 0.401364
        //   image 1: (0.5, 0, 0, 0) → 0.5 − 0.055 = 0.445
        //   box = (0.401364 + 0.445) / 2 = 0.423182.
        let l = retinanet_loss(&LossConfig::default(), &logits, &deltas, &tiny_targets());
        assert_eq!(l.num_positive, 2);
        assert!(
            (l.classification.item() - 0.477066).abs() < 2e-6,
            "{:?}",
            l.classification
        );
        assert!(
            (l.box_regression.item() - 0.423182).abs() < 2e-6,
            "{:?}",
            l.box_regression
        );
        // L1: image 0: 0.05 + 0 + 0.3 + 0.2 = 0.55, image 1: 0.5 → (0.55 + 0.5) / 2.
        let cfg = LossConfig {
            box_loss: BoxLoss::L1,
            ..LossConfig::default()
        };
        let l = retinanet_loss(&cfg, &logits, &deltas, &tiny_targets());
        assert!((l.box_regression.item() - 0.525).abs() < 2e-6);
        // γ = 0, no α: plain cross-entropy: image 0: ln 2 + 0.105361 + 0.105361 + ln 2,
        // image 1: 6 ln 2 → (8 ln 2 + 0.210721) / 2 = 2.877948.
        let cfg = LossConfig {
            alpha: None,
            gamma: 0.0,
            ..LossConfig::default()
        };
        let l = retinanet_loss(&cfg, &logits, &deltas, &tiny_targets());
        assert!(
            (l.classification.item() - 2.877948).abs() < 1e-5,
            "{:?}",
            l.classification
        );
    }

    #[test]
    fn no_positives_normalises_by_one_and_has_no_box_loss() {
        let targets = BatchTargets {
            images: vec![ImageTargets {
                labels: vec![AnchorLabel::Background; 4],
                positives: vec![],
                box_targets: vec![],
            }],
            num_anchors: 4,
            num_classes: 1,
        };
        let logits = Tensor::zeros(&[1, 4, 1]);
        let l = retinanet_loss(
            &LossConfig::default(),
            &logits,
            &Tensor::ones(&[1, 4, 4]),
            &targets,
        );
        // 4 background entries at x = 0: 4·0.129965, divided by max(1, 0) = 1.
        assert!((l.classification.item() - 4.0 * 0.75 * 0.25 * 2f32.ln()).abs() < 1e-6);
        assert_eq!(l.box_regression.item(), 0.0);
    }

    #[test]
    fn classification_loss_at_initialisation() {
        // A 512×512 image with a few boxes, K = 80, every logit at the prior bias −ln 99.
        let anchors = Anchors::generate(&AnchorConfig::default(), 512, 512);
        let k = 80;
        let gt = vec![
            GroundTruth {
                boxes: vec![
                    [40., 60., 200., 180.],
                    [300., 310., 340., 400.],
                    [10., 400., 500., 500.],
                ],
                labels: vec![0, 17, 79],
            },
            GroundTruth {
                boxes: vec![[100., 100., 420., 300.], [5., 5., 37., 29.]],
                labels: vec![3, 3],
            },
        ];
        let t = assign_targets(&MatcherConfig::default(), &anchors, &gt, k).unwrap();
        let pos = t.num_positive();
        assert!(pos > 0);
        let prior = -(99f32.ln());
        let logits = Tensor::full(&[2, anchors.len(), k], prior);
        let deltas = Tensor::zeros(&[2, anchors.len(), 4]);
        let l = retinanet_loss(&LossConfig::default(), &logits, &deltas, &t);
        // ≈ 1.128 + anchors·K·7.5378e−7 / positives (anchors of the whole batch; see
        // docs/focal-loss.md, "The prior initialisation").
        // Each positive entry: 0.25·0.99²·ln 100 = 1.12838; each negative 7.5378e−7.
        let positive_entry = 0.25 * 0.99f64.powi(2) * 100f64.ln();
        let expected = positive_entry + (2 * anchors.len() * k) as f64 * 7.5378e-7 / pos as f64;
        let got = l.classification.item() as f64;
        println!("initial cls loss {got:.5}, formula {expected:.5}, {pos} positives");
        assert!(
            (got - expected).abs() < 0.01 * expected,
            "initial cls loss {got} vs {expected} ({pos} positives, {} anchors)",
            anchors.len()
        );
    }

    #[test]
    fn gradients_reach_only_the_rows_that_have_a_loss() {
        let logits = Tensor::zeros(&[2, 3, 2]);
        // Every delta 1: no positive's prediction equals its target.
        let deltas = Tensor::ones(&[2, 3, 4]);
        let (lid, did) = (ParamId::fresh(), ParamId::fresh());
        let l = retinanet_loss(
            &LossConfig::default(),
            &logits.track(lid),
            &deltas.track(did),
            &tiny_targets(),
        );
        let g = backward(&l.total());
        let gl = g.get(lid).unwrap().to_vec();
        let gd = g.get(did).unwrap().to_vec();
        // The ignored anchor (image 0, anchor 1) gets no class gradient; the others do.
        assert_eq!(&gl[2..4], &[0.0, 0.0]);
        assert!(gl[..2].iter().chain(&gl[4..]).all(|&v| v != 0.0));
        // Box gradients only on the two positive anchors (rows 0 and 3 + 2 = 5), and
        // there on every delta.
        for (row, chunk) in gd.chunks(4).enumerate() {
            let positive = row == 0 || row == 5;
            assert!(
                chunk.iter().all(|&v| (v != 0.0) == positive),
                "row {row}: {chunk:?}"
            );
        }
    }

    #[test]
    fn gradient_check_end_to_end() {
        let mut rng = Rng::new(5);
        // Logits spread over ±3 and deltas at least 0.02 away from the smooth-L1 switch
        // |d − t| = β for both β used (the second derivative jumps there, which would
        // spoil the central difference; the first derivative is continuous).
        let logits = Tensor::from_vec(&[2, 3, 2], rng.normal_vec(12, 0.0, 1.5));
        let mut deltas: Vec<f32> = rng.normal_vec(24, 0.0, 0.3);
        let targets = tiny_targets();
        let t = targets.positive_box_targets();
        for (j, row) in [0usize, 5].iter().enumerate() {
            for c in 0..4 {
                let d = &mut deltas[row * 4 + c];
                let diff = *d - t[j * 4 + c];
                if [0.11f32, 1.0].iter().any(|b| (diff.abs() - b).abs() < 0.02) {
                    *d += 0.05;
                }
            }
        }
        let deltas = Tensor::from_vec(&[2, 3, 4], deltas);
        for cfg in [
            LossConfig::default(),
            LossConfig {
                alpha: None,
                gamma: 0.5,
                box_loss: BoxLoss::SmoothL1 { beta: 1.0 },
            },
        ] {
            let tg = targets.clone();
            let c = cfg.clone();
            let case = Case::new(
                Op::SigmoidFocalLoss,
                "retinanet loss: logits and deltas",
                vec![logits.clone(), deltas.clone()],
                move |x| retinanet_loss(&c, &x[0], &x[1], &tg).total(),
            );
            let r = check(&case);
            assert!(r.passed, "{cfg:?}: {r:?}");
        }
    }
}
