//! Layers, one per file. Each holds its parameters, shows them to a [`crate::Visitor`] under
//! PyTorch's names (`weight`, `bias`, `running_mean`, ...), and has a `forward`.
//!
//! [`Layer`] is the common interface used by [`Sequential`]; stateless layers and
//! convolutions also have an inherent `forward(&self)`, so that one layer can be applied to
//! several inputs (RetinaNet's heads are shared by all pyramid levels).

pub mod batch_norm;
pub mod conv2d;
pub mod flatten;
pub mod group_norm;
pub mod linear;
pub mod max_pool;
pub mod relu;
pub mod sequential;
pub mod upsample;

pub use batch_norm::{BatchNorm2d, BnMode};
pub use conv2d::Conv2d;
pub use flatten::Flatten;
pub use group_norm::GroupNorm;
pub use linear::Linear;
pub use max_pool::MaxPool2d;
pub use relu::ReLU;
pub use sequential::Sequential;
pub use upsample::Upsample;

use focal_engine::Tensor;

use crate::module::Module;

/// A module with one input and one output. `Send`, so that a model holding boxed layers can
/// be moved into a thread pool.
pub trait Layer: Module + Send {
    /// Applies the layer. Takes `&mut self` because a BatchNorm in training mode updates its
    /// running statistics.
    fn forward(&mut self, x: &Tensor) -> Tensor;
}
