//! Results are bitwise identical whatever the thread count.
//!
//! Each check runs the same forward and backward pass in private pools of 1, 2 and 3
//! threads (`threads::with_threads`) and compares every output and gradient bit for bit.
//! The shapes are large enough that every kernel takes its parallel path: several conv
//! tasks and tiles, GEMM row blocks, elementwise chunks above the threshold.

use focal_engine::gradcheck::{distinct, randn};
use focal_engine::testing::output_and_gradient_bits;
use focal_engine::threads::with_threads;
use focal_engine::{
    conv2d, conv2d_with, max_pool2d, upsample_nearest, upsample_nearest_to, Conv2dOptions,
    ConvAlgo, Rng, Tensor,
};

/// Runs `f(inputs)` with every input tracked, backpropagates a fixed random upstream
/// gradient, and returns the output and every input's gradient as bits.
fn run(inputs: &[Tensor], f: &(dyn Fn(&[Tensor]) -> Tensor + Sync)) -> Vec<Vec<u32>> {
    output_and_gradient_bits(inputs, 99, f)
}

fn same_for_1_2_3_threads(name: &str, inputs: Vec<Tensor>, f: impl Fn(&[Tensor]) -> Tensor + Sync) {
    let one = with_threads(1, || run(&inputs, &f));
    for n in [2, 3] {
        let many = with_threads(n, || run(&inputs, &f));
        assert_eq!(one.len(), many.len());
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            let what = if i == 0 {
                "output".to_string()
            } else {
                format!("gradient of input {}", i - 1)
            };
            assert!(a == b, "{name}: {what} differs between 1 and {n} threads");
        }
    }
}

#[test]
fn conv2d_is_deterministic() {
    let mut r = Rng::new(1);
    // 3x3 s1 p1, batch 2, 48x40 output = 1920 pixels: several tiles and channel blocks.
    same_for_1_2_3_threads(
        "conv 3x3",
        vec![
            randn(&mut r, &[2, 8, 48, 40]),
            randn(&mut r, &[16, 8, 3, 3]),
            randn(&mut r, &[16]),
        ],
        |x| conv2d(&x[0], &x[1], Some(&x[2]), Conv2dOptions::sp(1, 1)),
    );
    same_for_1_2_3_threads(
        "conv 7x7 s2 stem, batch 1",
        vec![randn(&mut r, &[1, 3, 70, 66]), randn(&mut r, &[8, 3, 7, 7])],
        |x| conv2d(&x[0], &x[1], None, Conv2dOptions::sp(2, 3)),
    );
    same_for_1_2_3_threads(
        "conv 1x1 batch 3",
        vec![
            randn(&mut r, &[3, 16, 20, 20]),
            randn(&mut r, &[8, 16, 1, 1]),
        ],
        |x| conv2d(&x[0], &x[1], None, Conv2dOptions::default()),
    );
    same_for_1_2_3_threads(
        "conv 3x3 with 80 channels (weight-gradient channel blocks)",
        vec![
            randn(&mut r, &[2, 80, 12, 12]),
            randn(&mut r, &[8, 80, 3, 3]),
        ],
        |x| conv2d(&x[0], &x[1], None, Conv2dOptions::sp(1, 1)),
    );
    same_for_1_2_3_threads(
        "conv groups 2 stride 2",
        vec![randn(&mut r, &[2, 8, 30, 30]), randn(&mut r, &[8, 4, 3, 3])],
        |x| conv2d(&x[0], &x[1], None, Conv2dOptions::sp(2, 1).with_groups(2)),
    );
    same_for_1_2_3_threads(
        "conv on 2x2 planes, batch 8 (batched kernels: row, column and sample blocks)",
        vec![
            randn(&mut r, &[8, 64, 4, 4]),
            randn(&mut r, &[128, 64, 3, 3]),
            randn(&mut r, &[128]),
        ],
        |x| conv2d(&x[0], &x[1], Some(&x[2]), Conv2dOptions::sp(2, 1)),
    );
}

#[test]
fn winograd_conv2d_is_deterministic() {
    let mut r = Rng::new(6);
    // 64 -> 64 channels at 128x128, batch 2: 2048 F(4x4) tiles (8192 of F(2x2), more
    // than one chunk of tiles, `engine/src/ops/conv/winograd/plan.rs`, so the weight
    // gradient is a sum over chunks); rows of 32 and 64 tiles, several groups of lanes.
    let inputs = vec![
        randn(&mut r, &[2, 64, 128, 128]),
        randn(&mut r, &[64, 64, 3, 3]),
        randn(&mut r, &[64]),
    ];
    for algo in [ConvAlgo::WinogradF2, ConvAlgo::WinogradF4] {
        same_for_1_2_3_threads(algo.name(), inputs.clone(), |x| {
            conv2d_with(&x[0], &x[1], Some(&x[2]), Conv2dOptions::sp(1, 1), algo)
        });
    }
}

#[test]
fn matmul_is_deterministic() {
    let mut r = Rng::new(2);
    // 300 rows: three row blocks; 2·300·200·150 flops, above the parallel threshold.
    same_for_1_2_3_threads(
        "matmul 2-D",
        vec![randn(&mut r, &[300, 200]), randn(&mut r, &[200, 150])],
        |x| x[0].matmul(&x[1]),
    );
    same_for_1_2_3_threads(
        "matmul batched",
        vec![randn(&mut r, &[4, 70, 60]), randn(&mut r, &[4, 60, 50])],
        |x| x[0].matmul(&x[1]),
    );
    same_for_1_2_3_threads(
        "matmul shared b",
        vec![randn(&mut r, &[4, 100, 60]), randn(&mut r, &[60, 50])],
        |x| x[0].matmul(&x[1]),
    );
}

#[test]
fn pool_and_upsample_are_deterministic() {
    let mut r = Rng::new(3);
    same_for_1_2_3_threads(
        "max_pool2d 3x3 s2 p1",
        vec![distinct(&mut r, &[2, 8, 33, 31], 0.01)],
        |x| max_pool2d(&x[0], (3, 3), (2, 2), (1, 1)),
    );
    same_for_1_2_3_threads("upsample x2", vec![randn(&mut r, &[2, 8, 25, 19])], |x| {
        upsample_nearest(&x[0], 2)
    });
    same_for_1_2_3_threads(
        "upsample to size",
        vec![randn(&mut r, &[2, 8, 13, 7])],
        |x| upsample_nearest_to(&x[0], 25, 13),
    );
}

#[test]
fn elementwise_and_reductions_are_deterministic() {
    let mut r = Rng::new(4);
    // 2·64·40·40 = 204 800 elements: well above the elementwise parallel threshold.
    let shape = [2, 64, 40, 40];
    same_for_1_2_3_threads(
        "broadcast mul + sigmoid + sum over all",
        vec![randn(&mut r, &shape), randn(&mut r, &[1, 64, 1, 1])],
        |x| x[0].mul(&x[1]).sigmoid().sum_all(),
    );
    same_for_1_2_3_threads(
        "exp + mean over (0, 2, 3)",
        vec![randn(&mut r, &shape)],
        |x| x[0].mul_scalar(0.1).exp().mean(&[0, 2, 3], true),
    );
    same_for_1_2_3_threads(
        "relu + add + mean_all",
        vec![randn(&mut r, &shape), randn(&mut r, &shape)],
        |x| x[0].relu().add(&x[1]).mean_all(),
    );
}

#[test]
fn a_small_network_step_is_deterministic() {
    // conv -> relu -> pool -> conv -> upsample -> matmul-free loss: gradients flow
    // through every kernel of this file in one tape.
    let mut r = Rng::new(5);
    same_for_1_2_3_threads(
        "conv/pool/upsample chain",
        vec![
            randn(&mut r, &[2, 3, 40, 36]),
            randn(&mut r, &[8, 3, 7, 7]),
            randn(&mut r, &[8, 8, 3, 3]),
        ],
        |x| {
            let y = conv2d(&x[0], &x[1], None, Conv2dOptions::sp(2, 3)).relu();
            let y = max_pool2d(&y, (3, 3), (2, 2), (1, 1));
            let y = conv2d(&y, &x[2], None, Conv2dOptions::sp(1, 1));
            upsample_nearest(&y, 2).sum(&[1], false)
        },
    );
}
