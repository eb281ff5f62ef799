//! # focal-engine
//!
//! f32 tensors and tape-based reverse-mode automatic differentiation, written to be read.
//!
//! - [`Tensor`]: a row-major, contiguous f32 array with a shape (images are NCHW).
//! - [`tape`]: the list of recorded ops and the single reverse walk that is `backward`.
//! - [`ops`]: every op's forward and hand-written backward, side by side.
//! - [`gradcheck`]: the finite-difference checker that every op is tested with.
//! - [`gemm`]: focal's own GEMM (packed micro-kernels, AVX-512 / AVX2 / portable).
//! - [`bench`]: the kernel benchmarks of `focal bench` and `cargo bench`.
//! - [`threads`]: rayon parallelism that never changes a result.
//! - [`profile`]: time and FLOPs per op kind (`focal bench train-step --profile`).
//!
//! ## Errors: panics for broken contracts, `Result` for the outside world
//!
//! An op given tensors whose shapes break its contract (a matmul of (2, 3) by (4, 5), a
//! conv2d whose weight has the wrong number of input channels) **panics**, with a message
//! naming the op and the shapes (`"matmul: cannot multiply [2, 3] by [4, 5]; ..."`).
//! Such a call is a bug in the code that builds the network, not bad input from a user:
//! every shape a user can influence (image sizes, class counts, configuration values) is
//! checked before it reaches an op, by the crates above, which return errors for it
//! (`focal_nn::Error`, `focal_data::Error`, `focal_retinanet::Error`). Fallible
//! operations on the outside world here (thread-pool setup, tensors built from
//! untrusted data with [`Tensor::try_from_vec`], file writes) return `Result`.
//!
//! ```
//! use focal_engine::{backward, ParamId, Tensor};
//! let w_id = ParamId::fresh();
//! let w = Tensor::from_vec(&[2], vec![1.0, -2.0]).track(w_id);
//! let x = Tensor::from_vec(&[2], vec![3.0, 4.0]);
//! let loss = w.mul(&x).sum_all(); // 1·3 + (−2)·4 = −5
//! assert_eq!(loss.item(), -5.0);
//! let grads = backward(&loss);
//! assert_eq!(grads.get(w_id).unwrap().to_vec(), vec![3.0, 4.0]); // ∂loss/∂w = x
//! ```

pub mod bench;
pub mod fsio;
pub mod gemm;
pub mod gradcheck;
mod gradcheck_cases;
pub mod naive;
pub mod op;
pub mod ops;
pub mod profile;
pub mod rng;
pub mod shape;
pub mod storage;
pub mod tape;
pub mod tensor;
pub mod testing;
pub mod threads;

pub use fsio::{write_atomic, write_atomic_unsynced};
pub use op::Op;
pub use ops::conv::{
    conv2d, conv2d_relu, conv2d_relu_with, conv2d_with, conv_algo, set_conv_algo, Conv2dOptions,
    ConvAlgo,
};
pub use ops::loss::{
    bce_with_logits, l1, sigmoid_focal_loss, sigmoid_focal_loss_rows, smooth_l1, Reduction,
    RowTarget,
};
pub use ops::norm::{
    batch_norm_train, batch_norm_train_relu, channel_affine, channel_affine_relu, group_norm,
    group_norm_relu, BatchStats,
};
pub use ops::pool::max_pool2d;
pub use ops::upsample::{upsample_nearest, upsample_nearest_to};
pub use rng::Rng;
pub use storage::{live_bytes, peak_bytes, reset_peak_bytes};
pub use tape::{
    backward, backward_with, clear_tape, is_grad_enabled, no_grad, tape_len, tape_summary,
    Gradients, NoGradGuard, ParamId,
};
pub use tensor::Tensor;
