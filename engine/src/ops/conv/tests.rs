//! Every path of every pass against the naive definitions (`crate::naive`), including
//! the paths the dispatch would not pick for a shape (both forward layouts, all three
//! input-gradient paths where they apply). The public op is tested in
//! `engine/tests/kernels.rs`.

use super::conv2d::conv2d;
use super::forward::{forward_with, Form};
use super::geometry::{Conv2dOptions, Geom};
use super::input_grad::{input_grad_with, path, Path};
use super::weight_grad::weight_grad;
use crate::gemm::{isa, Isa};
use crate::gradcheck::case::randn;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::threads::with_threads;

/// The input-gradient paths that run as a convolution of `∂y`.
const TRANSPOSED: [Path; 3] = [
    Path::Transposed,
    Path::TransposedBatched,
    Path::TransposedSwapped,
];

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| (a - b).abs() < 1e-4 * (1.0 + b.abs()))
}

#[test]
fn every_path_matches_the_naive_definitions() {
    let mut r = Rng::new(5);
    let d = Conv2dOptions::default();
    for (xs, ws, opts) in [
        ([2, 3, 7, 9], [4, 3, 3, 3], Conv2dOptions::sp(1, 1)),
        (
            [1, 2, 9, 8],
            [3, 2, 3, 2],
            Conv2dOptions {
                stride: (2, 3),
                padding: (2, 1),
                dilation: (1, 2),
                groups: 1,
            },
        ),
        (
            [2, 4, 6, 6],
            [4, 2, 3, 3],
            Conv2dOptions::sp(2, 1).with_groups(2),
        ),
        (
            [3, 4, 8, 7],
            [6, 2, 3, 3],
            Conv2dOptions::sp(1, 1).with_groups(2),
        ),
        ([1, 2, 11, 9], [2, 2, 7, 7], Conv2dOptions::sp(2, 3)),
        ([2, 3, 5, 7], [2, 3, 1, 1], d),
        (
            [2, 3, 9, 8],
            [5, 3, 3, 3],
            Conv2dOptions::sp(1, 2).with_dilation(2),
        ),
        // Padding 2 > d·(K−1) = 1: the transposed window does not apply.
        ([1, 2, 6, 8], [3, 2, 2, 2], d.with_padding(2)),
        // A plane of 20·20 = 400 ≥ SMALL_PLANE pixels and 40 channels.
        ([2, 40, 20, 20], [9, 40, 3, 3], Conv2dOptions::sp(1, 1)),
        // N·P = 8 pixels against 130 output and 120 input channels, weights of
        // 130 × 1080 values: the swapped forms are the ones the dispatch picks.
        ([2, 120, 2, 2], [130, 120, 3, 3], Conv2dOptions::sp(1, 1)),
        // 40 output channels: the input gradient's inner dimension 40·9 = 360 spans two
        // KC = 256 blocks, the second starting inside an output channel's taps.
        ([2, 8, 9, 9], [40, 8, 3, 3], Conv2dOptions::sp(1, 1)),
        (
            [1, 8, 17, 16],
            [40, 4, 3, 3],
            Conv2dOptions::sp(1, 1).with_groups(2),
        ),
    ] {
        let x = randn(&mut r, &xs);
        let w = randn(&mut r, &ws);
        let b = randn(&mut r, &[ws[0]]);
        let g = Geom::new(&xs, &ws, opts);
        let want_y = crate::naive::conv2d(&x, &w, Some(&b), opts);
        let gy = randn(&mut r, want_y.shape());
        let want_gx = crate::naive::conv2d_input_grad(&xs, &w, &gy, opts);
        let want_gw = crate::naive::conv2d_weight_grad(&x, &ws, &gy, opts);
        let what = format!("{xs:?} {ws:?} {opts:?}");
        for form in Form::ALL {
            let mut y = vec![f32::NAN; want_y.numel()];
            forward_with(
                &g,
                x.data(),
                w.data(),
                Some(b.data()),
                &mut y,
                form,
                isa::active(),
            );
            assert!(close(&y, want_y.data()), "forward, {form:?}, {what}");
        }
        let mut paths = vec![Path::Col2im];
        if g.transposed_window().is_some() {
            paths.extend(TRANSPOSED);
        }
        assert!(paths.contains(&path(&g)));
        for p in paths {
            let mut gx = vec![f32::NAN; x.numel()];
            input_grad_with(&g, w.data(), gy.data(), &mut gx, p, isa::active());
            assert!(close(&gx, want_gx.data()), "input grad, {p:?}, {what}");
        }
        let mut gw = vec![f32::NAN; w.numel()];
        weight_grad(&g, x.data(), gy.data(), &mut gw, isa::active());
        assert!(close(&gw, want_gw.data()), "weight grad, {what}");
    }
}

/// Every pass, on every path, as bits: forward (both layouts), the three input-gradient
/// paths and the weight gradient.
fn all_passes(g: &Geom, x: &[f32], w: &[f32], b: &[f32], gy: &[f32], isa: Isa) -> Vec<Vec<u32>> {
    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let mut out = Vec::new();
    for form in Form::ALL {
        let mut y = vec![0.0; g.n * g.o * g.p()];
        forward_with(g, x, w, Some(b), &mut y, form, isa);
        out.push(bits(y));
    }
    let mut paths = vec![Path::Col2im];
    if g.transposed_window().is_some() {
        paths.extend(TRANSPOSED);
    }
    for p in paths {
        let mut gx = vec![0.0; x.len()];
        input_grad_with(g, w, gy, &mut gx, p, isa);
        out.push(bits(gx));
    }
    let mut gw = vec![0.0; w.len()];
    weight_grad(g, x, gy, &mut gw, isa);
    out.push(bits(gw));
    out
}

/// The AVX2 and AVX-512 kernels give the same bits on every pass, and so do 1, 2 and 3
/// threads (shapes large enough for several GEMM tasks and K blocks).
#[test]
fn avx2_avx512_and_thread_counts_give_the_same_bits() {
    let mut r = Rng::new(6);
    let simd: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .filter(|i| {
            let ok = i.available();
            if !ok {
                println!("skipping the {i} path: the CPU lacks {}", i.requires());
            }
            ok
        })
        .collect();
    for (xs, ws, opts) in [
        ([2, 48, 20, 22], [40, 48, 3, 3], Conv2dOptions::sp(1, 1)),
        (
            [3, 64, 9, 9],
            [72, 32, 3, 3],
            Conv2dOptions::sp(2, 1).with_groups(2),
        ),
        ([2, 3, 40, 36], [16, 3, 7, 7], Conv2dOptions::sp(2, 3)),
    ] {
        let g = Geom::new(&xs, &ws, opts);
        let x = randn(&mut r, &xs);
        let w = randn(&mut r, &ws);
        let b = randn(&mut r, &[ws[0]]);
        let gy = randn(&mut r, &g.out_shape());
        let run = |isa: Isa, threads: usize| {
            with_threads(threads, || {
                all_passes(&g, x.data(), w.data(), b.data(), gy.data(), isa)
            })
        };
        let Some(&first) = simd.first() else { return };
        let want = run(first, 1);
        for &isa in &simd {
            for threads in [1, 2, 3] {
                assert!(
                    run(isa, threads) == want,
                    "{xs:?} {ws:?}: {isa} on {threads} threads differs from {first} on 1"
                );
            }
        }
    }
}

/// The swapped forms compute each element by the same chain as the batched ones (the
/// products `a·b` and `b·a` are the same float; the bias is where the chain starts), so
/// they give the same bits: with and without a bias, over several K blocks (K = 52·9),
/// groups, and weight widths that are not multiples of the tile's.
#[test]
fn swapped_forms_give_the_batched_bits() {
    let mut r = Rng::new(8);
    for (xs, ws, groups) in [
        ([2, 52, 3, 3], [53, 52, 3, 3], 1),
        ([3, 64, 2, 2], [70, 32, 3, 3], 2),
        ([2, 9, 1, 1], [100, 9, 3, 3], 1),
    ] {
        let opts = Conv2dOptions::sp(1, 1).with_groups(groups);
        let g = Geom::new(&xs, &ws, opts);
        let x = randn(&mut r, &xs);
        let w = randn(&mut r, &ws);
        let b = randn(&mut r, &[ws[0]]);
        let gy = randn(&mut r, &g.out_shape());
        for isa in [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|i| i.available())
        {
            for bias in [Some(b.data()), None] {
                let y = |form| {
                    let mut y = vec![f32::NAN; g.n * g.o * g.p()];
                    forward_with(&g, x.data(), w.data(), bias, &mut y, form, isa);
                    y.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
                };
                assert_eq!(y(Form::Batched), y(Form::Swapped), "{xs:?} {ws:?} {isa}");
            }
            let gx = |p| {
                let mut gx = vec![f32::NAN; x.numel()];
                input_grad_with(&g, w.data(), gy.data(), &mut gx, p, isa);
                gx.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            };
            assert_eq!(
                gx(Path::TransposedBatched),
                gx(Path::TransposedSwapped),
                "{xs:?} {ws:?} {isa}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "conv2d: input [1, 3, 5, 5] and weight [4, 2, 3, 3]")]
fn channel_mismatch_names_the_shapes() {
    conv2d(
        &Tensor::zeros(&[1, 3, 5, 5]),
        &Tensor::zeros(&[4, 2, 3, 3]),
        None,
        Conv2dOptions::default(),
    );
}
