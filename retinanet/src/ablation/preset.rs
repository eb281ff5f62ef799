//! The experiments `focal ablate` knows by name (`--preset`): each is a base configuration
//! and a grid.
//!
//! - [`Preset::Table1`] (the default): the paper's Table 1a/1b at small scale on the 64-px
//!   shapes, 17 cells, once ([`super::training::base_config`]; docs/ablation-table.md).
//! - [`Preset::Imbalance`]: the same comparison at COCO-like class imbalance
//!   ([`imbalance_config`], [`imbalance_grid`]; docs/imbalance-table.md).

use super::setting::Grid;
use super::training::{base_config, CHECKPOINT_EVERY};
use crate::config::BackboneName;
use crate::train::{ShapesData, TrainConfig};

/// A named experiment of `focal ablate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The paper's Table 1 at small scale (about 774 anchors per image, 50:1 imbalance).
    Table1,
    /// The focal loss against cross-entropy at COCO-like imbalance (≥ 500:1).
    Imbalance,
}

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::Table1, Preset::Imbalance];

    /// The name given to `--preset`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Table1 => "table1",
            Preset::Imbalance => "imbalance",
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
        }
    }

    /// The grid of cells.
    pub fn grid(self) -> Grid {
        match self {
            Preset::Table1 => Grid::default(),
            Preset::Imbalance => imbalance_grid(),
        }
    }

    /// The default output folder.
    pub fn default_out(self) -> &'static str {
        match self {
            Preset::Table1 => "runs/ablate",
            Preset::Imbalance => "runs/ablate-imbalance",
        }
    }
}

/// Steps (of 8 images) of every cell of the imbalance preset. Chosen from the time one
/// cell took on the machine the grid ran on: see docs/focal-loss.md, "At COCO-like
/// imbalance".
pub const IMBALANCE_ITERS: u64 = 720;

/// Evaluations on the validation set during a cell of the imbalance preset (the last at
/// the end): the AP curve (each cell's `ap.png`) shows whether AP has stopped rising.
pub const IMBALANCE_EVALS: u64 = 6;

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
///   its AP to level off and the 22 runs of [`imbalance_grid`] fit in about 85 minutes on
///   one core of the machine the grid ran on;
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

/// The grid of the imbalance preset: α-balanced CE at α ∈ {0.25, 0.5, 0.75} (the paper's
/// best CE α was 0.75, its worst 0.25); the focal loss at γ ∈ {0.5, 1, 2, 5}, each with
/// two α — the paper's best α for that γ and its neighbour towards CE's (γ = 0.5:
/// 0.5, 0.75; γ = 1, 2 and 5: 0.25, 0.5); seeds 0 and 1. 11 losses, 22 runs.
pub fn imbalance_grid() -> Grid {
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
    fn the_imbalance_preset_is_the_grid_of_the_issue() {
        let g = Preset::Imbalance.grid();
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

        let c = Preset::Imbalance.base();
        c.validate().unwrap();
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
