//! The list of every differentiable operation the tape can record.
//!
//! Each variant names one forward function with a hand-written backward next to it
//! (in `ops/`). The list is also the contract of the gradient checker: the test
//! `every_op_has_a_gradient_check` fails when an op is added here without a case in
//! [`crate::gradcheck::cases`] that actually records it.

macro_rules! define_ops {
    ($( $variant:ident => $name:literal ),* $(,)?) => {
        /// A differentiable operation recorded on the tape.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op { $($variant),* }

        impl Op {
            /// Every op, in declaration order.
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            /// The name printed in tape dumps and accepted by `focal gradcheck --op`.
            pub fn name(self) -> &'static str {
                match self { $(Op::$variant => $name),* }
            }

            /// Looks an op up by its printed name.
            pub fn from_name(name: &str) -> Option<Op> {
                Op::ALL.iter().copied().find(|op| op.name() == name)
            }
        }
    };
}

define_ops! {
    // elementwise, binary with NumPy broadcasting (ops/binary.rs)
    Add => "add",
    Sub => "sub",
    Mul => "mul",
    Div => "div",
    AddRelu => "add_relu",
    // elementwise, unary (ops/unary.rs)
    Neg => "neg",
    AddScalar => "add_scalar",
    MulScalar => "mul_scalar",
    Exp => "exp",
    Log => "log",
    Sqrt => "sqrt",
    PowScalar => "pow_scalar",
    Abs => "abs",
    Relu => "relu",
    Sigmoid => "sigmoid",
    LogSigmoid => "log_sigmoid",
    Clamp => "clamp",
    Select => "select",
    // reductions (ops/reduce.rs)
    Sum => "sum",
    Mean => "mean",
    Max => "max",
    // shape (ops/shape.rs, ops/index.rs)
    Reshape => "reshape",
    Permute => "permute",
    Concat => "concat",
    Narrow => "narrow",
    IndexSelect => "index_select",
    ScatterAdd => "scatter_add",
    Pad => "pad",
    // linear algebra and images (ops/matmul.rs, ops/conv/, ops/pool.rs, ops/upsample.rs)
    Matmul => "matmul",
    Conv2d => "conv2d",
    Conv2dRelu => "conv2d_relu",
    MaxPool2d => "max_pool2d",
    UpsampleNearest => "upsample_nearest",
    // normalisation (ops/norm.rs)
    BatchNorm => "batch_norm",
    ChannelAffine => "channel_affine",
    GroupNorm => "group_norm",
    // each norm and the ReLU after it, as one op (ops/norm.rs)
    BatchNormRelu => "batch_norm_relu",
    ChannelAffineRelu => "channel_affine_relu",
    GroupNormRelu => "group_norm_relu",
    // losses (ops/loss.rs)
    BceWithLogits => "bce_with_logits",
    SmoothL1 => "smooth_l1",
    L1 => "l1",
    SigmoidFocalLoss => "sigmoid_focal_loss",
}
