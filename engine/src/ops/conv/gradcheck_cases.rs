//! The gradient-check cases of conv2d: one per option (stride, padding, dilation,
//! groups, bias, 1x1, small and large planes, each input alone), listed by
//! `focal gradcheck`.

use super::conv2d::conv2d;
use super::geometry::Conv2dOptions;
use super::relu::conv2d_relu_with;
use super::winograd::ConvAlgo;
use crate::gradcheck::case::{randn, Case, STEP};
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
    v.extend(relu_cases());
    v
}

/// The fused `conv2d_relu`: direct, and with each Winograd tile. A finite difference
/// across ReLU's kink is meaningless, so the inputs are drawn again (deterministically)
/// until every pre-activation is at least `2·h·(largest input)` from zero: a step `h` moves one
/// output by at most `h` times the largest input, weight or 1 (the bias).
fn relu_cases() -> Vec<Case> {
    let mut r = Rng::new(41);
    let mut case = |what: &str, x: &[usize], w: &[usize], opts: Conv2dOptions, algo, step: f32| {
        for _ in 0..10_000 {
            let inputs = vec![randn(&mut r, x), randn(&mut r, w), randn(&mut r, &[w[0]])];
            let biggest = inputs
                .iter()
                .flat_map(|t| t.to_vec())
                .fold(1.0f32, |m, v| m.max(v.abs()));
            let z =
                crate::ops::conv::conv2d_with(&inputs[0], &inputs[1], Some(&inputs[2]), opts, algo);
            let clear = z
                .to_vec()
                .iter()
                .all(|v| v.abs() > (2.0 * step * biggest).max(0.05));
            let both_sides =
                z.to_vec().iter().any(|&v| v < 0.0) && z.to_vec().iter().any(|&v| v > 0.0);
            if clear && both_sides {
                return Case::new(Op::Conv2dRelu, what, inputs, move |t| {
                    conv2d_relu_with(&t[0], &t[1], t.get(2), opts, algo)
                })
                .step(step);
            }
        }
        panic!("conv2d_relu case {what}: no draw keeps every output clear of the kink");
    };
    vec![
        case(
            "3x3 s1 p1 + bias, direct",
            &[1, 2, 4, 4],
            &[2, 2, 3, 3],
            Conv2dOptions::sp(1, 1),
            ConvAlgo::Direct,
            STEP,
        ),
        case(
            "3x3 s2 p1 + bias, direct",
            &[1, 2, 5, 5],
            &[2, 2, 3, 3],
            Conv2dOptions::sp(2, 1),
            ConvAlgo::Direct,
            STEP,
        ),
        // Winograd's rounding noise wants a larger step (see winograd/gradcheck_cases.rs);
        // 0.1 with a correspondingly wider margin.
        case(
            "3x3 p1 + bias, winograd F(2x2,3x3)",
            &[1, 1, 4, 4],
            &[1, 1, 3, 3],
            Conv2dOptions::sp(1, 1),
            ConvAlgo::WinogradF2,
            0.1,
        ),
        case(
            "3x3 p1 + bias, winograd F(4x4,3x3)",
            &[1, 1, 4, 4],
            &[1, 1, 3, 3],
            Conv2dOptions::sp(1, 1),
            ConvAlgo::WinogradF4,
            0.1,
        ),
    ]
}
