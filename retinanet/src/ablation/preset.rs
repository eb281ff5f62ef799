//! The experiments `focal ablate` knows by name (`--preset`): each is a base configuration
//! and a grid.
//!
//! - [`Preset::Table1`] (the default): the paper's Table 1a/1b at small scale on the 64-px
//!   shapes, 17 cells, once ([`super::training::base_config`]; docs/ablation-table.md).
//! - [`Preset::ImbalanceSweep`]: the same comparison at COCO-like class imbalance, every
//!   loss with two or three α over a short budget, to choose each loss's α
//!   ([`imbalance_sweep_config`], [`imbalance_sweep_grid`]; docs/imbalance-sweep-table.md).
//! - [`Preset::Imbalance`]: each loss at the α the sweep chose, trained until its AP curve
//!   has levelled off ([`imbalance_config`], [`imbalance_grid`]; docs/imbalance-table.md).

use super::setting::Grid;
use super::training::{base_config, CHECKPOINT_EVERY};
use crate::config::BackboneName;
use crate::train::{ShapesData, TrainConfig};

/// A named experiment of `focal ablate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The paper's Table 1 at small scale (about 774 anchors per image, 50:1 imbalance).
    Table1,
    /// The focal loss against cross-entropy at COCO-like imbalance (≥ 500:1), each loss at
    /// its best α, long enough for AP to level off.
    Imbalance,
    /// The α sweep that chose those α: the same configuration over a quarter of the steps.
    ImbalanceSweep,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Table1, Preset::Imbalance, Preset::ImbalanceSweep];

    /// The name given to `--preset`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Table1 => "table1",
            Preset::Imbalance => "imbalance",
            Preset::ImbalanceSweep => "imbalance-sweep",
        }
    }

    pub fn parse(text: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == text.trim())
    }

    /// The configuration every cell starts from.
    pub fn base(self) -> TrainConfig {
        match self {
            Preset::Table1 => base_config(),
            Preset::Imbalance => imbalance_config(),
            Preset::ImbalanceSweep => imbalance_sweep_config(),
        }
    }

    /// The grid of cells.
    pub fn grid(self) -> Grid {
        match self {
            Preset::Table1 => Grid::default(),
            Preset::Imbalance => imbalance_grid(),
            Preset::ImbalanceSweep => imbalance_sweep_grid(),
        }
    }

    /// The default output folder.
    pub fn default_out(self) -> &'static str {
        match self {
            Preset::Table1 => "runs/ablate",
            Preset::Imbalance => "runs/ablate-imbalance",
            Preset::ImbalanceSweep => "runs/ablate-imbalance-sweep",
        }
    }

    /// Evaluations on the validation set during a cell (the last at the end), kept when
    /// `--iters` changes the length; 0 for a preset that evaluates only at the end.
    pub fn evals(self) -> u64 {
        match self {
            Preset::Table1 => 0,
            Preset::Imbalance => IMBALANCE_EVALS,
            Preset::ImbalanceSweep => IMBALANCE_SWEEP_EVALS,
        }
    }
}

/// Steps (of 8 images) of every cell of the imbalance preset: four times the sweep's.
/// At twice the sweep's budget the best cells were still gaining 2–3.5 AP over their last
/// 240 steps; at four times their curves level off (docs/focal-loss.md, section 6, shows
/// them). The 10 cells take about two hours on 2 cores.
pub const IMBALANCE_ITERS: u64 = 2880;

/// Evaluations on the validation set during a cell of the imbalance preset (the last at
/// the end), every 240 steps: the AP curve (each cell's `ap.png`) shows whether AP has
/// stopped rising.
pub const IMBALANCE_EVALS: u64 = 12;

/// Steps of every cell of the α sweep: 22 cells in about 100 minutes of one core.
pub const IMBALANCE_SWEEP_ITERS: u64 = 720;

/// Evaluations during a cell of the α sweep (every 120 steps).
pub const IMBALANCE_SWEEP_EVALS: u64 = 6;

/// The configuration of the imbalance preset: the class imbalance of COCO on a CPU's
/// budget. COCO's is about 100 000 anchors per image for a handful of objects; what the
/// focal loss answers is the *ratio* of easy negatives to positives, so this recreates
/// the ratio rather than the image size:
///
/// - 128-px synthetic images with 0–2 objects of 12–24 px (one object per image on
///   average), 2000 for training and 400 for validation, fed at their own size;
/// - the paper's 9 anchors per location (3 octave scales × 3 aspect ratios) on P3–P7,
///   base sizes 16–256: 3069 anchors per image, of which a handful are positive (`focal
///   imbalance --preset imbalance` measures it: more than 500 negatives per positive);
/// - the paper's head depth, 4 convolutions per tower (64 wide, GroupNorm);
/// - ResNet-18 at half width as the backbone, so that a cell can train long enough for
///   its AP to level off: the 12 runs of [`imbalance_grid`] take about two hours on 2
///   cores, the 22 shorter runs of [`imbalance_sweep_grid`] about 100 minutes of one core;
/// - [`IMBALANCE_ITERS`] steps of 8 images, AdamW at 4e-3, 100 warm-up steps and a
///   cosine decay as the shapes default, evaluated [`IMBALANCE_EVALS`] times.
pub fn imbalance_config() -> TrainConfig {
    let mut c = base_config();
    c.data.min_size = 128;
    c.data.max_size = 128;
    c.data.shapes = Some(ShapesData {
        train_images: 2000,
        val_images: 400,
        size: 128,
        seed: 0,
        max_objects: 2,
        train_max_objects: None,
        max_object_side: Some(24),
    });
    c.anchors.ratios = vec![0.5, 1.0, 2.0];
    c.model.head_depth = 4;
    c.model.depth = BackboneName::parse("resnet18-half").expect("a registered backbone");
    c.iters = Some(IMBALANCE_ITERS);
    c.eval_every = IMBALANCE_ITERS / IMBALANCE_EVALS;
    c.checkpoint_every = CHECKPOINT_EVERY;
    c
}

/// The configuration of the α sweep: [`imbalance_config`] over
/// [`IMBALANCE_SWEEP_ITERS`] steps, evaluated every 120.
pub fn imbalance_sweep_config() -> TrainConfig {
    let mut c = imbalance_config();
    c.iters = Some(IMBALANCE_SWEEP_ITERS);
    c.eval_every = IMBALANCE_SWEEP_ITERS / IMBALANCE_SWEEP_EVALS;
    c
}

/// The grid of the imbalance preset: every loss of the sweep at the α that gave it the
/// highest mean AP over both seeds in [`imbalance_sweep_grid`] (docs/imbalance-sweep-table.md),
/// chosen by the same rule for cross-entropy and the focal loss: α-balanced CE at
/// α = 0.75; the focal loss at γ = 0.5 with α = 0.75, γ = 1 and 2 with α = 0.25, γ = 5
/// with α = 0.5. Cross-entropy, the side the comparison's conclusion is against, also
/// gets its other α with detections in the sweep, 0.25, at the full budget (it came out
/// the better CE α at 2880 steps; the tables compare the focal losses with the better).
/// Seeds 0 and 1: 6 losses, 12 runs, docs/imbalance-table.md.
pub fn imbalance_grid() -> Grid {
    Grid {
        gammas: vec![0.5, 1.0, 2.0, 5.0],
        alphas: vec![0.75],
        ce_alphas: vec![0.25, 0.75],
        gamma_alphas: vec![vec![0.75], vec![0.25], vec![0.25], vec![0.5]],
        seeds: vec![0, 1],
    }
}

/// The grid of the α sweep: α-balanced CE at α ∈ {0.25, 0.5, 0.75} (the paper's best CE α
/// was 0.75, its worst 0.25); the focal loss at γ ∈ {0.5, 1, 2, 5}, each with two α — the
/// paper's best α for that γ and its neighbour towards CE's (γ = 0.5: 0.5, 0.75; γ = 1, 2
/// and 5: 0.25, 0.5); seeds 0 and 1. 11 losses, 22 runs.
pub fn imbalance_sweep_grid() -> Grid {
    Grid {
        gammas: vec![0.5, 1.0, 2.0, 5.0],
        alphas: vec![0.25, 0.5],
        ce_alphas: vec![0.25, 0.5, 0.75],
        gamma_alphas: vec![
            vec![0.5, 0.75],
            vec![0.25, 0.5],
            vec![0.25, 0.5],
            vec![0.25, 0.5],
        ],
        seeds: vec![0, 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ablation::Setting;

    #[test]
    fn the_imbalance_preset_runs_the_sweeps_best_alphas_for_longer() {
        let g = Preset::Imbalance.grid();
        g.validate().unwrap();
        let runs = g.settings();
        assert_eq!(runs.len(), 12);
        assert_eq!(
            runs[1],
            Setting {
                seed: Some(0),
                ..Setting::new(0.0, 0.75)
            }
        );
        assert_eq!(
            runs[6],
            Setting {
                seed: Some(1),
                ..Setting::new(0.0, 0.25)
            }
        );
        assert_eq!(g.ce_alphas, vec![0.25, 0.75]);
        assert_eq!(g.alphas_of(0.5), &[0.75]);
        assert_eq!(g.alphas_of(1.0), &[0.25]);
        assert_eq!(g.alphas_of(2.0), &[0.25]);
        assert_eq!(g.alphas_of(5.0), &[0.5]);
        // Every α of the long grid was one of the sweep's for the same γ.
        let sweep = Preset::ImbalanceSweep.grid();
        for s in &runs {
            if s.is_cross_entropy() {
                assert!(sweep.ce_alphas.contains(&s.alpha));
            } else {
                assert!(sweep.alphas_of(s.gamma).contains(&s.alpha));
            }
        }

        let long = Preset::Imbalance.base();
        let short = Preset::ImbalanceSweep.base();
        long.validate().unwrap();
        short.validate().unwrap();
        assert_eq!(long.iters, Some(4 * short.iters.unwrap()));
        assert_eq!(
            long.iters.unwrap() / long.eval_every,
            Preset::Imbalance.evals()
        );
        assert_eq!(
            short.iters.unwrap() / short.eval_every,
            Preset::ImbalanceSweep.evals()
        );
        // Only the length and the evaluation interval differ.
        let mut same = short.clone();
        same.iters = long.iters;
        same.eval_every = long.eval_every;
        assert_eq!(same, long);
        assert_eq!(
            Preset::parse("imbalance-sweep"),
            Some(Preset::ImbalanceSweep)
        );
    }

    #[test]
    fn the_imbalance_sweep_is_the_grid_of_the_issue() {
        let g = Preset::ImbalanceSweep.grid();
        g.validate().unwrap();
        assert_eq!(g.losses().len(), 3 + 4 * 2);
        let runs = g.settings();
        assert_eq!(runs.len(), 22);
        // Seed 0's eleven runs first, then seed 1's.
        assert!(runs[..11].iter().all(|s| s.seed == Some(0)));
        assert_eq!(
            runs[11],
            Setting {
                seed: Some(1),
                ..Setting::new(0.0, 0.25)
            }
        );
        assert_eq!(
            runs[3],
            Setting {
                seed: Some(0),
                ..Setting::new(0.5, 0.5)
            }
        );
        assert_eq!(g.alphas_of(2.0), &[0.25, 0.5]);
        assert_eq!(g.alphas_of(0.5), &[0.5, 0.75]);
        assert_eq!(runs[3].file_stem(), "gamma0.5_alpha0.5_seed0");

        let c = Preset::ImbalanceSweep.base();
        c.validate().unwrap();
        assert_eq!(c.iters, Some(720));
        assert_eq!(c.eval_every, 120);
        assert_eq!(c.anchors.anchors_per_cell(), 9);
        assert_eq!(c.model.head_depth, 4);
        assert_eq!(c.data.min_size, 128);
        assert!(c.eval_every > 0 && c.iters.unwrap().is_multiple_of(c.eval_every));
        assert_eq!(Preset::parse("imbalance"), Some(Preset::Imbalance));
        assert_eq!(Preset::parse("table1"), Some(Preset::Table1));
        assert_eq!(Preset::parse("x"), None);
        assert_eq!(Preset::Table1.base(), base_config());
    }
}
