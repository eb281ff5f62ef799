//! The settings of the α/γ experiment: one (γ, α) pair per grid cell, trained once, or
//! once per seed.
//!
//! The paper's Table 1a varies α with γ = 0 (α-balanced cross-entropy); its Table 1b
//! varies γ and reports the best α for each. [`Grid`] holds both lists: every γ of
//! `gammas` with every α of `alphas` (or with its own list, `gamma_alphas`: the focal
//! loss), and γ = 0 with every α of `ce_alphas` (α-balanced CE); with `seeds`, every
//! cell is trained once per seed, so the tables can give a mean and a spread.

use crate::error::Error;
use std::fmt;

/// One cell of the grid: the classification loss α_t·(1 − p_t)^γ·CE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    /// γ of the modulating factor; 0 is α-balanced cross-entropy.
    pub gamma: f32,
    /// α: the weight of the positive entries (negatives get 1 − α).
    pub alpha: f32,
    /// The run's seed (initial weights, order and flips of the batches) when the grid
    /// repeats each cell over seeds; `None`: the base configuration's seed.
    pub seed: Option<u64>,
}

impl Setting {
    /// The cell (γ, α) of the base configuration's seed.
    pub fn new(gamma: f32, alpha: f32) -> Setting {
        Setting {
            gamma,
            alpha,
            seed: None,
        }
    }

    /// The same loss, without the seed: what the tables group the seeds of.
    pub fn loss(&self) -> Setting {
        Setting::new(self.gamma, self.alpha)
    }

    /// α-balanced cross-entropy (γ = 0), the paper's Table 1a.
    pub fn is_cross_entropy(&self) -> bool {
        self.gamma == 0.0
    }

    /// The name of the cell's files: `gamma2_alpha0.25` (its record is
    /// `gamma2_alpha0.25.json`, its run folder `gamma2_alpha0.25/`), `gamma2_alpha0.25_seed1`
    /// with a seed. Rust's shortest round-trip formatting makes the name unique for
    /// distinct values.
    pub fn file_stem(&self) -> String {
        match self.seed {
            Some(seed) => format!("gamma{}_alpha{}_seed{seed}", self.gamma, self.alpha),
            None => format!("gamma{}_alpha{}", self.gamma, self.alpha),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_cross_entropy() {
            write!(f, "α-balanced CE, α = {}", self.alpha)?;
        } else {
            write!(f, "FL γ = {}, α = {}", self.gamma, self.alpha)?;
        }
        match self.seed {
            Some(seed) => write!(f, ", seed {seed}"),
            None => Ok(()),
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
    /// When not empty, one α list per γ of `gammas` (same order), used instead of
    /// `alphas`: the paper's Table 1b needs only the neighbourhood of each γ's best α.
    pub gamma_alphas: Vec<Vec<f32>>,
    /// When not empty, every cell is trained once per seed, all cells of the first seed
    /// before any of the second (an interrupted grid then holds whole comparisons).
    /// Empty: once, with the base configuration's seed.
    pub seeds: Vec<u64>,
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
            gamma_alphas: Vec::new(),
            seeds: Vec::new(),
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
        if !self.gamma_alphas.is_empty() {
            if self.gamma_alphas.len() != self.gammas.len() {
                return Err(Error::config(format!(
                    "{} α lists for {} values of γ: give one list per γ",
                    self.gamma_alphas.len(),
                    self.gammas.len()
                )));
            }
            if self.gamma_alphas.iter().any(Vec::is_empty) {
                return Err(Error::config("every γ needs at least one α"));
            }
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
        let mut alpha_lists = vec![("--alphas", &self.alphas), ("--ce-alphas", &self.ce_alphas)];
        for list in &self.gamma_alphas {
            alpha_lists.push(("--gamma-alphas", list));
        }
        for &(name, list) in &alpha_lists {
            for &a in list.iter() {
                if !(0.0..=1.0).contains(&a) {
                    return Err(Error::config(format!(
                        "{name}: α must lie in [0, 1], got {a}"
                    )));
                }
            }
        }
        alpha_lists.push(("--gammas", &self.gammas));
        for (name, list) in alpha_lists {
            for (i, v) in list.iter().enumerate() {
                if list[..i].contains(v) {
                    return Err(Error::config(format!("{name}: {v} is given twice")));
                }
            }
        }
        for (i, v) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(v) {
                return Err(Error::config(format!("--seeds: {v} is given twice")));
            }
        }
        Ok(())
    }

    /// The α values trained with `gamma` (its own list, or `alphas`).
    pub fn alphas_of(&self, gamma: f32) -> &[f32] {
        match self.gammas.iter().position(|&g| g == gamma) {
            Some(i) if !self.gamma_alphas.is_empty() => &self.gamma_alphas[i],
            _ => &self.alphas,
        }
    }

    /// Every loss of the grid (γ, α), without seeds, in table order: the α-balanced CE
    /// cells (in the order of `ce_alphas`), then the focal-loss cells by γ and, within a
    /// γ, by α, in the order of the lists.
    pub fn losses(&self) -> Vec<Setting> {
        let mut cells: Vec<Setting> = self
            .ce_alphas
            .iter()
            .map(|&alpha| Setting::new(0.0, alpha))
            .collect();
        for &gamma in &self.gammas {
            for &alpha in self.alphas_of(gamma) {
                cells.push(Setting::new(gamma, alpha));
            }
        }
        cells
    }

    /// Every cell, in the order they are trained: the losses of [`Grid::losses`] (Table 1a,
    /// then Table 1b), once, or once per seed, seed by seed.
    pub fn settings(&self) -> Vec<Setting> {
        if self.seeds.is_empty() {
            return self.losses();
        }
        let mut cells = Vec::new();
        for &seed in &self.seeds {
            for s in self.losses() {
                cells.push(Setting {
                    seed: Some(seed),
                    ..s
                });
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
        assert_eq!(cells[4], Setting::new(0.0, 0.99));
        assert_eq!(cells[5], Setting::new(0.5, 0.25));
        assert_eq!(cells[16], Setting::new(5.0, 0.75));
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
