//! The settings of the α/γ experiment: one (γ, α) pair per grid cell.
//!
//! The paper's Table 1a varies α with γ = 0 (α-balanced cross-entropy); its Table 1b
//! varies γ and reports the best α for each. [`Grid`] holds both lists: every γ of
//! `gammas` with every α of `alphas` (the focal loss), and γ = 0 with every α of
//! `ce_alphas` (α-balanced CE).

use crate::error::Error;
use std::fmt;

/// One cell of the grid: the classification loss α_t·(1 − p_t)^γ·CE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    /// γ of the modulating factor; 0 is α-balanced cross-entropy.
    pub gamma: f32,
    /// α: the weight of the positive entries (negatives get 1 − α).
    pub alpha: f32,
}

impl Setting {
    /// α-balanced cross-entropy (γ = 0), the paper's Table 1a.
    pub fn is_cross_entropy(&self) -> bool {
        self.gamma == 0.0
    }

    /// The name of the cell's files: `gamma2_alpha0.25` (its record is
    /// `gamma2_alpha0.25.json`, its run folder `gamma2_alpha0.25/`). Rust's shortest
    /// round-trip formatting makes the name unique for distinct values.
    pub fn file_stem(&self) -> String {
        format!("gamma{}_alpha{}", self.gamma, self.alpha)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_cross_entropy() {
            write!(f, "α-balanced CE, α = {}", self.alpha)
        } else {
            write!(f, "FL γ = {}, α = {}", self.gamma, self.alpha)
        }
    }
}

/// The grid of the experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// γ > 0 of the focal-loss cells.
    pub gammas: Vec<f32>,
    /// α of the focal-loss cells.
    pub alphas: Vec<f32>,
    /// α of the α-balanced cross-entropy cells (γ = 0).
    pub ce_alphas: Vec<f32>,
}

impl Default for Grid {
    /// The grid of `focal ablate`: γ ∈ {0.5, 1, 2, 5} × α ∈ {0.25, 0.5, 0.75}, and
    /// α-balanced CE with α ∈ {0.25, 0.5, 0.75, 0.9, 0.99} — 17 cells. (The paper's own
    /// grids are wider: Table 1a also has α = 0.1 and 0.999, Table 1b γ = 0.1 and 0.2.)
    fn default() -> Self {
        Grid {
            gammas: vec![0.5, 1.0, 2.0, 5.0],
            alphas: vec![0.25, 0.5, 0.75],
            ce_alphas: vec![0.25, 0.5, 0.75, 0.9, 0.99],
        }
    }
}

impl Grid {
    /// Checks the values: γ finite and > 0 (γ = 0 belongs in `ce_alphas`), α in [0, 1],
    /// no list empty except `ce_alphas`, no value twice in a list.
    pub fn validate(&self) -> Result<(), Error> {
        if self.gammas.is_empty() || self.alphas.is_empty() {
            return Err(Error::config("the grid needs at least one γ and one α"));
        }
        for &g in &self.gammas {
            if g == 0.0 {
                return Err(Error::config(
                    "γ = 0 is α-balanced cross-entropy: give its α values with --ce-alphas, \
                     not γ = 0 in --gammas",
                ));
            }
            if !(g.is_finite() && g > 0.0) {
                return Err(Error::config(format!(
                    "γ must be a finite number > 0, got {g}"
                )));
            }
        }
        for (name, list) in [("--alphas", &self.alphas), ("--ce-alphas", &self.ce_alphas)] {
            for &a in list.iter() {
                if !(0.0..=1.0).contains(&a) {
                    return Err(Error::config(format!(
                        "{name}: α must lie in [0, 1], got {a}"
                    )));
                }
            }
        }
        for (name, list) in [
            ("--gammas", &self.gammas),
            ("--alphas", &self.alphas),
            ("--ce-alphas", &self.ce_alphas),
        ] {
            for (i, v) in list.iter().enumerate() {
                if list[..i].contains(v) {
                    return Err(Error::config(format!("{name}: {v} is given twice")));
                }
            }
        }
        Ok(())
    }

    /// Every cell, in the order they are trained: the α-balanced CE cells first (Table 1a,
    /// in the order of `ce_alphas`), then the focal-loss cells by γ and, within a γ, by α
    /// (Table 1b), in the order of the lists.
    pub fn settings(&self) -> Vec<Setting> {
        let mut cells: Vec<Setting> = self
            .ce_alphas
            .iter()
            .map(|&alpha| Setting { gamma: 0.0, alpha })
            .collect();
        for &gamma in &self.gammas {
            for &alpha in &self.alphas {
                cells.push(Setting { gamma, alpha });
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_grid_has_the_17_cells_of_the_issue() {
        let g = Grid::default();
        g.validate().unwrap();
        let cells = g.settings();
        // 5 α-balanced CE cells + 4 γ × 3 α.
        assert_eq!(cells.len(), 5 + 4 * 3);
        assert!(cells[..5].iter().all(Setting::is_cross_entropy));
        assert_eq!(
            cells[4],
            Setting {
                gamma: 0.0,
                alpha: 0.99
            }
        );
        assert_eq!(
            cells[5],
            Setting {
                gamma: 0.5,
                alpha: 0.25
            }
        );
        assert_eq!(
            cells[16],
            Setting {
                gamma: 5.0,
                alpha: 0.75
            }
        );
        let stems: Vec<String> = cells.iter().map(Setting::file_stem).collect();
        assert_eq!(stems[0], "gamma0_alpha0.25");
        assert_eq!(stems[12], "gamma2_alpha0.5");
        for (i, s) in stems.iter().enumerate() {
            assert!(!stems[..i].contains(s), "{s} twice");
        }
    }

    #[test]
    fn bad_grids_are_refused_with_the_reason() {
        let mut g = Grid::default();
        g.gammas.push(0.0);
        assert!(g.validate().unwrap_err().chain().contains("--ce-alphas"));
        let mut g = Grid::default();
        g.alphas.push(1.5);
        assert!(g.validate().unwrap_err().chain().contains("[0, 1]"));
        let mut g = Grid::default();
        g.ce_alphas.push(0.5);
        assert!(g.validate().unwrap_err().chain().contains("twice"));
        let g = Grid {
            gammas: vec![f32::NAN],
            ..Grid::default()
        };
        assert!(g.validate().is_err());
        let g = Grid {
            ce_alphas: vec![],
            ..Grid::default()
        };
        g.validate().unwrap();
        assert_eq!(g.settings().len(), 12);
    }
}
