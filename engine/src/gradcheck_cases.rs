//! Every gradient-check case, grouped by op family. Each option of an op (broadcast
//! shapes, axes, keepdim, strides, padding, dilation, groups, ...) has its own case, so a
//! failure names exactly what broke. `focal gradcheck` prints one row per case.

use crate::gradcheck::case::{away_from_zero, distinct, randn, Case};
use crate::op::Op;
use crate::rng::Rng;
use crate::tensor::Tensor;

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(elementwise());
    v.extend(reductions());
    v.extend(shapes());
    v.extend(crate::ops::matmul::gradcheck_cases());
    v.extend(crate::ops::conv::gradcheck_cases::gradcheck_cases());
    v.extend(crate::ops::pool::gradcheck_cases());
    v.extend(crate::ops::upsample::gradcheck_cases());
    v.extend(crate::ops::norm::gradcheck_cases());
    v.extend(crate::ops::loss::gradcheck_cases());
    v
}

fn elementwise() -> Vec<Case> {
    let mut r = Rng::new(11);
    let mut v = vec![
        Case::new(
            Op::Add,
            "same shape [2,3]",
            vec![randn(&mut r, &[2, 3]), randn(&mut r, &[2, 3])],
            |x| x[0].add(&x[1]),
        ),
        Case::new(
            Op::Add,
            "broadcast [2,3] + [3]",
            vec![randn(&mut r, &[2, 3]), randn(&mut r, &[3])],
            |x| x[0].add(&x[1]),
        ),
        Case::new(
            Op::Add,
            "broadcast [2,1,4] + [3,1]",
            vec![randn(&mut r, &[2, 1, 4]), randn(&mut r, &[3, 1])],
            |x| x[0].add(&x[1]),
        ),
        Case::new(
            Op::Add,
            "scalar + [2,3]",
            vec![randn(&mut r, &[]), randn(&mut r, &[2, 3])],
            |x| x[0].add(&x[1]),
        ),
        Case::new(
            Op::AddRelu,
            "same shape [2,4], every sum at least 0.1 from 0",
            // a + b in {±0.3, ±0.7, ...}: a finite difference never crosses the kink.
            vec![
                Tensor::from_vec(&[2, 4], vec![0.5, -0.2, 1.0, -1.1, 0.1, 0.9, -0.4, 0.2]),
                Tensor::from_vec(&[2, 4], vec![-0.2, -0.5, -0.3, 0.4, 0.6, -1.2, 1.1, -0.9]),
            ],
            |x| x[0].add_relu(&x[1]),
        ),
        Case::new(
            Op::Sub,
            "broadcast [2,3,4] - [1,3,1]",
            vec![randn(&mut r, &[2, 3, 4]), randn(&mut r, &[1, 3, 1])],
            |x| x[0].sub(&x[1]),
        ),
        Case::new(
            Op::Sub,
            "broadcast [4] - [3,1]",
            vec![randn(&mut r, &[4]), randn(&mut r, &[3, 1])],
            |x| x[0].sub(&x[1]),
        ),
        Case::new(
            Op::Mul,
            "same shape [3,4]",
            vec![randn(&mut r, &[3, 4]), randn(&mut r, &[3, 4])],
            |x| x[0].mul(&x[1]),
        ),
        Case::new(
            Op::Mul,
            "broadcast NCHW [2,3,2,2] * [1,3,1,1]",
            vec![randn(&mut r, &[2, 3, 2, 2]), randn(&mut r, &[1, 3, 1, 1])],
            |x| x[0].mul(&x[1]),
        ),
        Case::new(
            Op::Mul,
            "broadcast [3,1] * [1,4]",
            vec![randn(&mut r, &[3, 1]), randn(&mut r, &[1, 4])],
            |x| x[0].mul(&x[1]),
        ),
        Case::new(
            Op::Div,
            "same shape [2,3]",
            vec![
                randn(&mut r, &[2, 3]),
                away_from_zero(&mut r, &[2, 3], 0.5, 2.0),
            ],
            |x| x[0].div(&x[1]),
        ),
        Case::new(
            Op::Div,
            "broadcast [2,3] / [2,1]",
            vec![
                randn(&mut r, &[2, 3]),
                away_from_zero(&mut r, &[2, 1], 0.5, 2.0),
            ],
            |x| x[0].div(&x[1]),
        ),
        Case::new(Op::Neg, "[2,3]", vec![randn(&mut r, &[2, 3])], |x| {
            x[0].neg()
        }),
        Case::new(Op::AddScalar, "+ 1.5", vec![randn(&mut r, &[2, 3])], |x| {
            x[0].add_scalar(1.5)
        }),
        Case::new(Op::MulScalar, "* -2.5", vec![randn(&mut r, &[2, 3])], |x| {
            x[0].mul_scalar(-2.5)
        }),
        Case::new(
            Op::Exp,
            "x in [-2, 2]",
            vec![Tensor::from_vec(&[6], r.uniform_vec(6, -2.0, 2.0))],
            |x| x[0].exp(),
        ),
        Case::new(
            Op::Log,
            "x in [0.5, 3]",
            vec![Tensor::from_vec(&[6], r.uniform_vec(6, 0.5, 3.0))],
            |x| x[0].log(),
        ),
        Case::new(
            Op::Sqrt,
            "x in [0.5, 3]",
            vec![Tensor::from_vec(&[6], r.uniform_vec(6, 0.5, 3.0))],
            |x| x[0].sqrt(),
        ),
        Case::new(Op::PowScalar, "p = 2", vec![randn(&mut r, &[5])], |x| {
            x[0].pow_scalar(2.0)
        }),
        Case::new(Op::PowScalar, "p = 3", vec![randn(&mut r, &[5])], |x| {
            x[0].pow_scalar(3.0)
        }),
        Case::new(
            Op::PowScalar,
            "p = 0.5, x in [0.5, 2]",
            vec![Tensor::from_vec(&[5], r.uniform_vec(5, 0.5, 2.0))],
            |x| x[0].pow_scalar(0.5),
        ),
        Case::new(
            Op::PowScalar,
            "p = -1, x in [0.5, 2]",
            vec![Tensor::from_vec(&[5], r.uniform_vec(5, 0.5, 2.0))],
            |x| x[0].pow_scalar(-1.0),
        ),
        Case::new(
            Op::Abs,
            "|x| > 0.05",
            vec![away_from_zero(&mut r, &[8], 0.05, 2.0)],
            |x| x[0].abs(),
        ),
        Case::new(
            Op::Relu,
            "|x| > 0.05",
            vec![away_from_zero(&mut r, &[2, 4], 0.05, 2.0)],
            |x| x[0].relu(),
        ),
        Case::new(
            Op::Sigmoid,
            "x in [-4, 4]",
            vec![Tensor::from_vec(&[6], r.uniform_vec(6, -4.0, 4.0))],
            |x| x[0].sigmoid(),
        ),
        Case::new(
            Op::LogSigmoid,
            "x in [-6, 6]",
            vec![Tensor::from_vec(&[6], r.uniform_vec(6, -6.0, 6.0))],
            |x| x[0].log_sigmoid(),
        ),
        Case::new(
            Op::LogSigmoid,
            "large |x|: -30, 30",
            vec![Tensor::from_vec(&[2], vec![-30.0, 30.0])],
            |x| x[0].log_sigmoid(),
        ),
        Case::new(
            Op::Clamp,
            "[-1, 1], values inside and outside",
            vec![Tensor::from_vec(
                &[6],
                vec![-2.0, -0.7, -0.2, 0.3, 0.9, 1.8],
            )],
            |x| x[0].clamp(-1.0, 1.0),
        ),
    ];
    let mask = Tensor::from_vec(&[2, 3], vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    v.push(
        Case::new(
            Op::Select,
            "mask [2,3]",
            vec![mask, randn(&mut r, &[2, 3]), randn(&mut r, &[2, 3])],
            |x| Tensor::select(&x[0], &x[1], &x[2]),
        )
        .wrt(&[false, true, true]),
    );
    v
}

fn reductions() -> Vec<Case> {
    let mut r = Rng::new(12);
    let x = randn(&mut r, &[2, 3, 4]);
    let x4 = randn(&mut r, &[2, 3, 2, 2]);
    vec![
        Case::new(Op::Sum, "all axes", vec![x.clone()], |x| x[0].sum_all()),
        Case::new(Op::Sum, "axis 0", vec![x.clone()], |x| {
            x[0].sum(&[0], false)
        }),
        Case::new(Op::Sum, "axis -1 keepdim", vec![x.clone()], |x| {
            x[0].sum(&[-1], true)
        }),
        Case::new(
            Op::Sum,
            "axes [0, 2, 3] keepdim (per channel)",
            vec![x4.clone()],
            |x| x[0].sum(&[0, 2, 3], true),
        ),
        Case::new(Op::Sum, "axes [1, 3]", vec![x4.clone()], |x| {
            x[0].sum(&[1, 3], false)
        }),
        Case::new(Op::Mean, "all axes", vec![x.clone()], |x| x[0].mean_all()),
        Case::new(Op::Mean, "axis 1", vec![x.clone()], |x| {
            x[0].mean(&[1], false)
        }),
        Case::new(Op::Mean, "axes [0, 2] keepdim", vec![x.clone()], |x| {
            x[0].mean(&[0, 2], true)
        }),
        Case::new(
            Op::Max,
            "axis 1",
            vec![distinct(&mut r, &[2, 3, 4], 0.1)],
            |x| x[0].max(1, false).0,
        ),
        Case::new(
            Op::Max,
            "axis -1 keepdim",
            vec![distinct(&mut r, &[3, 5], 0.1)],
            |x| x[0].max(-1, true).0,
        ),
        Case::new(
            Op::Max,
            "axis 0",
            vec![distinct(&mut r, &[4, 3], 0.1)],
            |x| x[0].max(0, false).0,
        ),
    ]
}

fn shapes() -> Vec<Case> {
    let mut r = Rng::new(13);
    vec![
        Case::new(
            Op::Reshape,
            "[2,3,4] -> [6,4]",
            vec![randn(&mut r, &[2, 3, 4])],
            |x| {
                // multiply by a position-dependent constant so the reshape's layout matters
                let w = Tensor::from_vec(&[6, 4], (0..24).map(|k| k as f32 * 0.1).collect());
                x[0].reshape(&[6, 4]).mul(&w)
            },
        ),
        Case::new(
            Op::Permute,
            "[2,3,4] axes [2,0,1]",
            vec![randn(&mut r, &[2, 3, 4])],
            |x| x[0].permute(&[2, 0, 1]),
        ),
        Case::new(
            Op::Permute,
            "NCHW -> NHWC",
            vec![randn(&mut r, &[2, 3, 2, 3])],
            |x| x[0].permute(&[0, 2, 3, 1]),
        ),
        Case::new(
            Op::Permute,
            "transpose(0, 1) of [3,5]",
            vec![randn(&mut r, &[3, 5])],
            |x| x[0].transpose(0, 1),
        ),
        Case::new(
            Op::Concat,
            "axis 0, three tensors",
            vec![
                randn(&mut r, &[1, 3]),
                randn(&mut r, &[2, 3]),
                randn(&mut r, &[3, 3]),
            ],
            |x| Tensor::concat(&[&x[0], &x[1], &x[2]], 0),
        ),
        Case::new(
            Op::Concat,
            "axis 1 of NCHW",
            vec![randn(&mut r, &[2, 2, 2, 2]), randn(&mut r, &[2, 1, 2, 2])],
            |x| Tensor::concat(&[&x[0], &x[1]], 1),
        ),
        Case::new(
            Op::Narrow,
            "axis 1, 1..3 of [2,4,3]",
            vec![randn(&mut r, &[2, 4, 3])],
            |x| x[0].narrow(1, 1, 2),
        ),
        Case::new(Op::Narrow, "last axis", vec![randn(&mut r, &[3, 5])], |x| {
            x[0].narrow(-1, 2, 3)
        }),
        Case::new(Op::Pad, "every axis", vec![randn(&mut r, &[2, 3])], |x| {
            x[0].pad(&[(1, 0), (2, 1)])
        }),
        Case::new(
            Op::Pad,
            "pad2d NCHW (1, 2, 0, 1)",
            vec![randn(&mut r, &[1, 2, 2, 3])],
            |x| x[0].pad2d(1, 2, 0, 1),
        ),
        Case::new(
            Op::IndexSelect,
            "axis 0 with repeats",
            vec![randn(&mut r, &[4, 3])],
            |x| x[0].index_select(0, &[3, 1, 3, 0]),
        ),
        Case::new(
            Op::IndexSelect,
            "axis 1",
            vec![randn(&mut r, &[2, 5, 2])],
            |x| x[0].index_select(1, &[4, 0, 2]),
        ),
        Case::new(
            Op::ScatterAdd,
            "axis 0 with repeats",
            vec![randn(&mut r, &[4, 3])],
            |x| x[0].scatter_add(0, &[2, 0, 2, 1], 5),
        ),
        Case::new(
            Op::ScatterAdd,
            "axis -1",
            vec![randn(&mut r, &[2, 3])],
            |x| x[0].scatter_add(-1, &[1, 1, 3], 4),
        ),
    ]
}
