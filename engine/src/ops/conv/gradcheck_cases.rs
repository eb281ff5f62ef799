//! The gradient-check cases of conv2d: one per option (stride, padding, dilation,
//! groups, bias, 1x1, small and large planes, each input alone), listed by
//! `focal gradcheck`.

use super::conv2d::conv2d;
use super::geometry::Conv2dOptions;
use crate::gradcheck::case::{randn, Case};
use crate::op::Op;
use crate::rng::Rng;

pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(22);
    let mut case = |name: &str, x: &[usize], w: &[usize], bias: bool, opts: Conv2dOptions| {
        let mut inputs = vec![randn(&mut r, x), randn(&mut r, w)];
        if bias {
            inputs.push(randn(&mut r, &[w[0]]));
        }
        Case::new(Op::Conv2d, name, inputs, move |t| {
            conv2d(&t[0], &t[1], t.get(2), opts)
        })
    };
    let d = Conv2dOptions::default();
    let mut v = vec![
        case(
            "3x3 s1 p1 + bias, batch 2",
            &[2, 3, 5, 5],
            &[4, 3, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
        case(
            "3x3 no padding, no bias",
            &[1, 2, 6, 5],
            &[3, 2, 3, 3],
            false,
            d,
        ),
        case(
            "3x3 stride 2 pad 1, odd input",
            &[1, 2, 7, 7],
            &[3, 2, 3, 3],
            true,
            Conv2dOptions::sp(2, 1),
        ),
        case(
            "2x3 kernel, stride (2,1), pad (0,2)",
            &[1, 2, 5, 4],
            &[2, 2, 2, 3],
            true,
            Conv2dOptions {
                stride: (2, 1),
                padding: (0, 2),
                ..d
            },
        ),
        case(
            "3x3 dilation 2 pad 2",
            &[1, 2, 7, 6],
            &[2, 2, 3, 3],
            true,
            Conv2dOptions::sp(1, 2).with_dilation(2),
        ),
        case(
            "dilation (2,1) stride 2",
            &[1, 1, 8, 7],
            &[2, 1, 3, 2],
            false,
            Conv2dOptions {
                stride: (2, 2),
                dilation: (2, 1),
                ..d
            },
        ),
        case(
            "groups 2 (4 -> 6)",
            &[2, 4, 5, 5],
            &[6, 2, 3, 3],
            true,
            Conv2dOptions::sp(1, 1).with_groups(2),
        ),
        case(
            "depthwise groups = C = 3",
            &[1, 3, 5, 5],
            &[3, 1, 3, 3],
            false,
            Conv2dOptions::sp(1, 1).with_groups(3),
        ),
        case(
            "1x1 s1 p0 (no im2col)",
            &[2, 3, 4, 3],
            &[5, 3, 1, 1],
            true,
            d,
        ),
        case(
            "1x1 s1 p0 groups 2",
            &[1, 4, 3, 3],
            &[2, 2, 1, 1],
            false,
            d.with_groups(2),
        ),
        case(
            "1x1 stride 2 (downsample)",
            &[1, 3, 5, 5],
            &[4, 3, 1, 1],
            false,
            d.with_stride(2),
        ),
        case(
            "7x7 stride 2 pad 3 (stem)",
            &[1, 2, 9, 8],
            &[2, 2, 7, 7],
            false,
            Conv2dOptions::sp(2, 3),
        ),
        case(
            "3x3 padding 2 > 1",
            &[1, 2, 4, 4],
            &[2, 2, 3, 3],
            true,
            d.with_padding(2),
        ),
        case(
            "5 channels, batch 3 (channel blocks)",
            &[3, 5, 4, 4],
            &[2, 5, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
        // 16·16 = 256 output pixels, batch 2: one product per sample (not batched),
        // input gradient as a convolution of ∂y.
        case(
            "3x3 s1 batch 2, 16x16 (per-sample products)",
            &[2, 2, 16, 16],
            &[3, 2, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
        // 24·24 = 576 output pixels: several GEMM column blocks.
        case(
            "several blocks 24x24 output",
            &[1, 1, 24, 24],
            &[2, 1, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        ),
    ];
    v.push(
        case(
            "weight only (input constant)",
            &[1, 3, 5, 5],
            &[2, 3, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        )
        .wrt(&[false, true, true]),
    );
    v.push(
        case(
            "input only",
            &[1, 2, 5, 5],
            &[2, 2, 3, 3],
            false,
            Conv2dOptions::sp(2, 1),
        )
        .wrt(&[true, false]),
    );
    // N·P = 8 pixels against 136 output and 128 input channels, weights of
    // 136 × 1152 values: the swapped forward and input gradient (`forward.rs`,
    // `Form::Swapped`; `Path::TransposedSwapped`). With respect to the input and the
    // bias only: the 156 672 weights would need as many pairs of forward passes (their
    // gradient does not depend on the swap). Step 1: the convolution is linear in the
    // input and the bias, so the central difference has no truncation error at any
    // step, and the f32 rounding of the 1152-term sums (about 2e-3 at the default step
    // 1e-2) is divided by 100.
    v.push(
        case(
            "swapped operands (8 pixels, 136 x 1152 weights)",
            &[2, 128, 2, 2],
            &[136, 128, 3, 3],
            true,
            Conv2dOptions::sp(1, 1),
        )
        .wrt(&[true, false, true])
        .step(1.0),
    );
    v.extend(super::winograd::gradcheck_cases::gradcheck_cases());
    v
}
