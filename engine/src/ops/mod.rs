//! Every differentiable op: forward kernel and hand-written backward side by side, one
//! family per file. The table of ops is [`crate::op::Op`].

pub mod binary;
pub mod conv;
mod focal_kernel;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod shape;
mod simd_level;
pub mod unary;
pub mod upsample;
