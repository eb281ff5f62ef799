//! How the focal loss spreads over easy and hard examples: the paper's Figure 4.
//!
//! Take a trained model and a sample of images. Match the anchors to the ground truth as
//! in training; every (anchor, class) entry of an anchor that is not ignored is a
//! *positive* (its anchor is matched to an object of that class) or a *negative*
//! (everything else). With x the entry's logit and y± = +1 for a positive, −1 for a
//! negative, write x_t = y±·x: then p_t = σ(x_t) and the entry's focal loss with α = 1 is
//!
//! ```text
//!     FL_γ(x_t) = −(1 − σ(x_t))^γ · ln σ(x_t)
//! ```
//!
//! For each γ ∈ {0, 0.5, 1, 2} (whatever γ the model was trained with) and separately for
//! positives and negatives: compute every entry's loss, normalise the set to sum to 1,
//! sort ascending, and plot the cumulative sum against the fraction of entries. A curve
//! that stays flat and jumps at the right end means a few hard entries carry the loss.
//!
//! - [`sample`]: keeps the x_t of every entry, or a uniform sample when there are more
//!   than a fixed number (memory stays bounded: 4 bytes per kept entry);
//! - [`entries`]: the x_t of the positive and negative entries of a batch (model forward
//!   pass without recording, the training matcher, ignored anchors left out);
//! - [`distribution`]: one set's sorted normalised losses at one γ, its cumulative curve
//!   and the share of the loss carried by its hardest fraction.
//!
//! α is 1 here, as in the paper's figure: α only rescales a whole set (α for every
//! positive, 1 − α for every negative), so after normalisation the curves do not depend
//! on it.

pub mod distribution;
pub mod entries;
pub mod sample;

pub use distribution::LossDistribution;
pub use entries::{collect_batch, collect_entries};
pub use sample::EntrySample;

/// The γ values of the paper's Figure 4.
pub const FIGURE_GAMMAS: [f32; 4] = [0.0, 0.5, 1.0, 2.0];
