//! The paper's α/γ experiment at small scale (its Table 1a and 1b): the same small
//! RetinaNet trained with the same budget for a grid of classification losses —
//! α-balanced cross-entropy (γ = 0) for several α, and the focal loss for several γ × α —
//! and compared by COCO AP on the validation split.
//!
//! - [`setting`]: a cell (γ, α) and the grid;
//! - [`record`]: a finished cell's JSON record, with the hash of its configuration;
//! - [`runner`]: runs the cells that are not done, skipping the recorded ones, with the
//!   training of a cell injected ([`CellTrainer`]);
//! - [`table`]: the Markdown Tables 1a/1b and the CSV;
//! - [`curves`]: every cell's AP at each evaluation during training, and how much it
//!   still rose over the last quarter of the steps;
//! - [`training`]: the real training of a cell with the trainer, and the base
//!   configuration every cell starts from;
//! - [`preset`]: the named experiments (`--preset table1|imbalance|imbalance-sweep`): a base
//!   configuration and a grid each.
//!
//! `focal ablate` is the command; `docs/focal-loss.md` discusses the result.

pub mod curves;
pub mod preset;
pub mod record;
pub mod runner;
pub mod setting;
pub mod table;
pub mod training;

pub use curves::{Curve, CURVES_MD};
pub use preset::Preset;
pub use record::{config_hash, CellRecord};
pub use runner::{
    plan, run_grid, write_tables, CellOutcome, CellState, CellTrainer, GridObserver, GridOutcome,
    PlannedCell, Quiet, TABLE_CSV, TABLE_MD,
};
pub use setting::{Grid, Setting};
