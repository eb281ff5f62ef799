//! Winograd convolution (forward, input gradient, weight gradient) against the naive
//! reference implementations (direct loops, f64 accumulation), within the error bound
//! documented in `engine/src/ops/conv/winograd/mod.rs` and `docs/winograd.md`:
//!
//! ```text
//! max |winograd − reference| ≤ BOUND · max |reference|      (per output tensor)
//! ```
//!
//! with `BOUND` = 1e-5 for the direct kernels and F(2x2,3x3) (measured up to 6.3e-6 and
//! 4.2e-6, at full size) and 5e-5 for F(4x4,3x3) (measured up to 2.3e-5): see
//! [`bound`].

use focal_engine::gradcheck::randn;
use focal_engine::{
    backward_with, conv2d_with, naive, Conv2dOptions, ConvAlgo, ParamId, Rng, Tensor,
};

/// The documented bound for `algo` (see the module doc): 5e-5 for F(4x4), 1e-5 for
/// F(2x2) and the direct kernels. Their weight gradients are chains of multiply-adds
/// over every pixel (or tile) of the batch, whose rounding grows with the batch's
/// pixels: the full-size test below measured 6.3e-6 (direct) and 4.2e-6 (F(2x2)) at
/// 64 → 64 on 128², batch 2, against at most 2.6e-6 on the smaller shapes.
fn bound(algo: ConvAlgo) -> f64 {
    match algo {
        ConvAlgo::WinogradF4 => 5e-5,
        _ => 1e-5,
    }
}

/// Forward output, input gradient and weight gradient of `conv2d_with(.., algo)` for
/// the upstream gradient `gy`.
fn run(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    gy: &Tensor,
    opts: Conv2dOptions,
    algo: ConvAlgo,
) -> [Tensor; 3] {
    let (ix, iw, ib) = (ParamId::fresh(), ParamId::fresh(), ParamId::fresh());
    let bt = b.map(|b| b.track(ib));
    let y = conv2d_with(&x.track(ix), &w.track(iw), bt.as_ref(), opts, algo);
    let g = backward_with(&y, gy.clone());
    [y, g.get(ix).unwrap().clone(), g.get(iw).unwrap().clone()]
}

/// `max |got − want| / max |want|`.
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let (mut e, mut s) = (0.0f64, 0.0f64);
    for (&g, &w) in got.data().iter().zip(want.data()) {
        e = e.max((g as f64 - w as f64).abs());
        s = s.max((w as f64).abs());
    }
    e / s.max(f64::MIN_POSITIVE)
}

/// The three results of every algorithm against the naive reference, each within its
/// bound; prints the relative errors (forward, input gradient, weight gradient).
fn check(what: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, opts: Conv2dOptions, r: &mut Rng) {
    let mut want_y = naive::conv2d(x, w, b, opts);
    let gy = randn(r, want_y.shape());
    let want = [
        std::mem::replace(&mut want_y, Tensor::zeros(&[0])),
        naive::conv2d_input_grad(x.shape(), w, &gy, opts),
        naive::conv2d_weight_grad(x, w.shape(), &gy, opts),
    ];
    for algo in [ConvAlgo::Direct, ConvAlgo::WinogradF2, ConvAlgo::WinogradF4] {
        let got = run(x, w, b, &gy, opts, algo);
        let errs: [f64; 3] = std::array::from_fn(|i| rel_err(&got[i], &want[i]));
        println!(
            "{what:<26} {:<12} {:.1e}  {:.1e}  {:.1e}",
            algo.name(),
            errs[0],
            errs[1],
            errs[2]
        );
        for (e, pass) in errs
            .iter()
            .zip(["forward", "input gradient", "weight gradient"])
        {
            assert!(
                *e <= bound(algo),
                "{what}, {}: {pass} error {e:.3e} above the bound {:.0e}",
                algo.name(),
                bound(algo)
            );
        }
    }
}

/// Odd sizes: planes that are not multiples of either tile, paddings 0..3 (3 makes the
/// input gradient's offset negative), batches above 1, channel counts that are
/// multiples of nothing, rows of more tiles than the kernels' lanes, and a bias.
#[test]
fn winograd_matches_naive_on_odd_shapes() {
    let mut r = Rng::new(1);
    for (x_shape, o, pad, bias) in [
        ([1, 1, 3, 3], 1, (1, 1), false),
        ([1, 1, 3, 3], 2, (0, 0), true),
        ([2, 3, 5, 7], 5, (1, 1), true),
        ([3, 7, 11, 13], 13, (1, 1), false),
        ([2, 5, 9, 6], 3, (0, 0), true),
        ([1, 4, 6, 10], 7, (2, 1), false),
        ([2, 3, 5, 5], 2, (3, 3), true),
        ([2, 13, 7, 45], 9, (1, 0), true),
        ([1, 17, 19, 2], 11, (1, 1), false),
    ] {
        let w_shape = [o, x_shape[1], 3, 3];
        let x = randn(&mut r, &x_shape);
        let w = randn(&mut r, &w_shape);
        let b = randn(&mut r, &[o]);
        let opts = Conv2dOptions {
            padding: pad,
            ..Conv2dOptions::default()
        };
        let what = format!("x {x_shape:?}, w {w_shape:?}, padding {pad:?}");
        check(&what, &x, &w, bias.then_some(&b), opts, &mut r);
    }
}

/// The error on layer shapes of a ResNet/RetinaNet (64..512 channels, smaller planes
/// than the real ones to keep the f64 reference quick), with N(0, 1) inputs and output
/// gradients and Kaiming-normal weights (std √(2/(9·C))), as in a trained network.
/// These are the figures of the table in `docs/winograd.md`
/// (`cargo test --release -p focal-engine --test winograd -- --nocapture` prints them).
#[test]
fn winograd_error_on_network_shapes_is_within_the_bound() {
    let mut r = Rng::new(2);
    println!("relative error max|got − ref| / max|ref|: forward, input grad, weight grad");
    for (n, c, o, hw) in [
        (2, 64, 64, 32),
        (2, 128, 128, 16),
        (2, 256, 256, 16),
        (2, 512, 512, 8),
    ] {
        let x = randn(&mut r, &[n, c, hw, hw]);
        let std = (2.0 / (9 * c) as f32).sqrt();
        let w = Tensor::from_vec(&[o, c, 3, 3], r.normal_vec(o * c * 9, 0.0, std));
        let what = format!("{c}->{o} @{hw}x{hw}, batch {n}");
        check(&what, &x, &w, None, Conv2dOptions::sp(1, 1), &mut r);
    }
}

/// `auto` and `winograd` pick a tile per shape, and every other convolution (stride 2,
/// 1x1, dilation, groups) runs the direct kernels whatever the choice: bit for bit the
/// same as `direct`.
#[test]
fn the_choice_only_changes_eligible_convolutions() {
    let mut r = Rng::new(3);
    let x = randn(&mut r, &[2, 8, 9, 9]);
    for (w_shape, opts) in [
        ([4, 8, 3, 3], Conv2dOptions::sp(2, 1)),
        ([4, 8, 1, 1], Conv2dOptions::default()),
        ([4, 8, 3, 3], Conv2dOptions::sp(1, 2).with_dilation(2)),
        ([4, 4, 3, 3], Conv2dOptions::sp(1, 1).with_groups(2)),
        ([4, 8, 5, 5], Conv2dOptions::sp(1, 2)),
    ] {
        let w = randn(&mut r, &w_shape);
        let direct = conv2d_with(&x, &w, None, opts, ConvAlgo::Direct);
        for algo in ConvAlgo::ALL {
            let y = conv2d_with(&x, &w, None, opts, algo);
            assert_eq!(y.data(), direct.data(), "{w_shape:?} {opts:?} {algo:?}");
        }
    }
    // An eligible one does change with the tile (by rounding).
    let w = randn(&mut r, &[4, 8, 3, 3]);
    let opts = Conv2dOptions::sp(1, 1);
    let f2 = conv2d_with(&x, &w, None, opts, ConvAlgo::WinogradF2);
    let f4 = conv2d_with(&x, &w, None, opts, ConvAlgo::WinogradF4);
    assert_ne!(f2.data(), f4.data());
}

#[test]
fn algorithm_names_round_trip() {
    for a in ConvAlgo::ALL {
        assert_eq!(ConvAlgo::from_name(a.name()), Ok(a));
    }
    let e = ConvAlgo::from_name("fft").unwrap_err();
    assert!(e.contains("\"fft\"") && e.contains("winograd-f4"), "{e}");
}

/// The same at the real sizes of the two heaviest 3x3 layers of R18-FPN at 512 px,
/// batch 2 (the head conv 256→256 on the 64² P3 map, layer1 64→64 at 128²). Ignored by
/// default: the f64 reference takes about a minute (`cargo test --release -p
/// focal-engine --test winograd -- --ignored --nocapture`).
#[test]
#[ignore]
fn winograd_error_at_full_size_is_within_the_bound() {
    let mut r = Rng::new(5);
    for (n, c, o, hw) in [(2, 256, 256, 64), (2, 64, 64, 128)] {
        let x = randn(&mut r, &[n, c, hw, hw]);
        let std = (2.0 / (9 * c) as f32).sqrt();
        let w = Tensor::from_vec(&[o, c, 3, 3], r.normal_vec(o * c * 9, 0.0, std));
        let what = format!("{c}->{o} @{hw}x{hw}, batch {n}");
        check(&what, &x, &w, None, Conv2dOptions::sp(1, 1), &mut r);
    }
}
