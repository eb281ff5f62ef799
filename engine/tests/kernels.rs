//! The fast kernels against the naive reference implementations in `focal_engine::naive`
//! (direct loops from the definitions, f64 accumulation), over a table of shapes.
//!
//! Tolerance: an f32 dot product of length K with terms of order 1 has a rounding error
//! of about ε₃₂·√K·|partial sums| ≈ 6e-8·K (under 3e-4 for K = 4608). We allow
//! `1e-4·(|reference| + √K)`, an order of magnitude above that, and far below the
//! error of a single wrong or missing term (of order 1).

use focal_engine::gemm::{sgemm, sgemm_rows_par};
use focal_engine::gradcheck::{distinct, randn};
use focal_engine::Conv2dOptions as Opts;
use focal_engine::{
    backward_with, conv2d, max_pool2d, naive, upsample_nearest, upsample_nearest_to, ParamId, Rng,
    Tensor,
};

fn assert_close(what: &str, got: &[f32], want: &[f32], k: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let slack = (k as f32).sqrt();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * (w.abs() + slack);
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, reference {w} (tolerance {tol})"
        );
    }
}

#[test]
fn sgemm_matches_naive_for_odd_sizes_and_strides() {
    let mut r = Rng::new(1);
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 7),
        (17, 1, 9),
        (33, 65, 31),
        (64, 64, 64),
        (130, 7, 129),
    ] {
        let a = r.normal_vec(m * k, 0.0, 1.0);
        let b = r.normal_vec(k * n, 0.0, 1.0);
        let want = naive::gemm(m, k, n, &a, &b);
        let mut c = vec![f32::NAN; m * n];
        sgemm(
            m, k, n, 1.0, &a, k as isize, 1, &b, n as isize, 1, 0.0, &mut c, n as isize, 1,
        );
        assert_close(&format!("A·B {m}x{k}x{n}"), &c, &want, k);

        // Aᵀ·Bᵀ·... through strides: store Aᵀ (k, m) and Bᵀ (n, k) row-major and read them
        // back transposed; C column-major; α = 0.5, β = 2 on a random C.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let c0 = r.normal_vec(m * n, 0.0, 1.0);
        let mut want2 = c0.clone();
        naive::gemm_strided(
            m,
            k,
            n,
            0.5,
            &a,
            (k, 1),
            &b,
            (n, 1),
            2.0,
            &mut want2,
            (1, m),
        );
        let mut c2 = c0.clone();
        sgemm(
            m, k, n, 0.5, &at, 1, m as isize, &bt, 1, k as isize, 2.0, &mut c2, 1, m as isize,
        );
        assert_close(&format!("strided {m}x{k}x{n}"), &c2, &want2, k);
    }
}

#[test]
fn parallel_row_blocks_equal_one_gemm_bitwise() {
    let mut r = Rng::new(2);
    // 300 rows = 3 blocks (the last one short); 2·m·k·n above the parallel threshold.
    let (m, k, n) = (300, 100, 80);
    let a = r.normal_vec(m * k, 0.0, 1.0);
    let b = r.normal_vec(k * n, 0.0, 1.0);
    let mut one = vec![0.0; m * n];
    sgemm(
        m, k, n, 1.0, &a, k as isize, 1, &b, n as isize, 1, 0.0, &mut one, n as isize, 1,
    );
    let mut par = vec![0.0; m * n];
    sgemm_rows_par(
        m, k, n, 1.0, &a, k as isize, 1, &b, n as isize, 1, 0.0, &mut par,
    );
    assert_eq!(one, par);
    assert_close("row blocks", &par, &naive::gemm(m, k, n, &a, &b), k);
}

#[test]
fn matmul_forward_and_backward_match_naive() {
    let mut r = Rng::new(3);
    for (a_shape, b_shape) in [
        (vec![5, 7], vec![7, 3]),
        (vec![3, 4, 6], vec![6, 5]),
        (vec![3, 4, 6], vec![3, 6, 5]),
        (vec![1, 1, 9], vec![9, 1]),
    ] {
        let a = randn(&mut r, &a_shape);
        let b = randn(&mut r, &b_shape);
        let (ia, ib) = (ParamId::fresh(), ParamId::fresh());
        let y = a.track(ia).matmul(&b.track(ib));
        let g = randn(&mut r, y.shape());
        let grads = backward_with(&y, g.clone());
        let (k, n) = (a_shape[a_shape.len() - 1], b_shape[b_shape.len() - 1]);
        let m = a_shape[a_shape.len() - 2];
        let batch = if a_shape.len() == 3 { a_shape[0] } else { 1 };
        let shared = b_shape.len() == 2;
        let (ad, bd, gd) = (a.data(), b.data(), g.data());
        let mut want_y = Vec::new();
        let mut want_da = Vec::new();
        let mut want_db = vec![0.0f32; k * n];
        for i in 0..batch {
            let ai = &ad[i * m * k..(i + 1) * m * k];
            let bi = if shared {
                bd
            } else {
                &bd[i * k * n..(i + 1) * k * n]
            };
            let gi = &gd[i * m * n..(i + 1) * m * n];
            want_y.extend(naive::gemm(m, k, n, ai, bi));
            let bt: Vec<f32> = (0..n * k).map(|j| bi[(j % k) * n + j / k]).collect();
            want_da.extend(naive::gemm(m, n, k, gi, &bt));
            let at: Vec<f32> = (0..k * m).map(|j| ai[(j % m) * k + j / m]).collect();
            let dbi = naive::gemm(k, m, n, &at, gi);
            if shared {
                want_db.iter_mut().zip(&dbi).for_each(|(d, v)| *d += v);
            } else if i == 0 {
                want_db = dbi;
            } else {
                want_db.extend(dbi);
            }
        }
        let what = format!("{a_shape:?}x{b_shape:?}");
        assert_close(&format!("{what} y"), y.data(), &want_y, k);
        assert_close(
            &format!("{what} dA"),
            grads.get(ia).unwrap().data(),
            &want_da,
            n,
        );
        assert_close(
            &format!("{what} dB"),
            grads.get(ib).unwrap().data(),
            &want_db,
            m * batch,
        );
    }
}

/// (name, input shape, weight shape, options, with bias)
type ConvCase = (&'static str, [usize; 4], [usize; 4], Opts, bool);

fn conv_table() -> Vec<ConvCase> {
    let d = Opts::default();
    vec![
        ("1x1 s1 p0, batch 2", [2, 8, 9, 7], [5, 8, 1, 1], d, true),
        (
            "1x1 s2 downsample, batch 3",
            [3, 6, 9, 9],
            [4, 6, 1, 1],
            d.with_stride(2),
            false,
        ),
        (
            "1x1 pointwise, large plane",
            [1, 16, 30, 30],
            [8, 16, 1, 1],
            d,
            true,
        ),
        (
            "3x3 s1 p1, odd sizes",
            [1, 5, 13, 11],
            [7, 5, 3, 3],
            Opts::sp(1, 1),
            true,
        ),
        (
            "3x3 s2 p1, batch 3",
            [3, 4, 15, 16],
            [8, 4, 3, 3],
            Opts::sp(2, 1),
            false,
        ),
        (
            "3x3 s1 p1, batch 3, several tiles",
            [3, 4, 40, 37],
            [6, 4, 3, 3],
            Opts::sp(1, 1),
            true,
        ),
        (
            "7x7 s2 p3 stem, several tiles",
            [1, 3, 67, 45],
            [8, 3, 7, 7],
            Opts::sp(2, 3),
            false,
        ),
        (
            "3x3 groups 4",
            [2, 8, 10, 10],
            [12, 2, 3, 3],
            Opts::sp(1, 1).with_groups(4),
            true,
        ),
        (
            "3x3 depthwise",
            [1, 6, 9, 9],
            [6, 1, 3, 3],
            Opts::sp(1, 1).with_groups(6),
            false,
        ),
        (
            "3x3 dilation 2 pad 2",
            [1, 4, 12, 12],
            [3, 4, 3, 3],
            Opts::sp(1, 2).with_dilation(2),
            true,
        ),
        (
            "3x5 kernel, padding (3, 2) > 1",
            [1, 2, 6, 8],
            [3, 2, 3, 5],
            Opts {
                padding: (3, 2),
                ..d
            },
            true,
        ),
        (
            "non-square stride (1, 2), dilation (1, 3)",
            [2, 3, 7, 19],
            [4, 3, 2, 3],
            Opts {
                stride: (1, 2),
                dilation: (1, 3),
                padding: (1, 0),
                ..d
            },
            false,
        ),
        (
            "stride 3 > kernel 2",
            [1, 2, 11, 10],
            [3, 2, 2, 2],
            d.with_stride(3),
            true,
        ),
        (
            "1x1 input, 3x3 pad 1",
            [2, 4, 1, 1],
            [3, 4, 3, 3],
            Opts::sp(1, 1),
            true,
        ),
        // K = 70·9 = 630 > 576: the weight gradient is split into channel blocks.
        (
            "3x3, 70 channels: channel blocks",
            [1, 70, 6, 5],
            [3, 70, 3, 3],
            Opts::sp(1, 1),
            true,
        ),
        (
            "1x1 s1, 700 channels: blocks",
            [2, 700, 3, 4],
            [5, 700, 1, 1],
            d,
            false,
        ),
    ]
}

#[test]
fn conv2d_forward_and_backward_match_naive() {
    let mut r = Rng::new(4);
    for (name, xs, ws, opts, with_bias) in conv_table() {
        let x = randn(&mut r, &xs);
        let w = randn(&mut r, &ws);
        let b = randn(&mut r, &[ws[0]]);
        let bias = with_bias.then_some(&b);
        let (ix, iw, ib) = (ParamId::fresh(), ParamId::fresh(), ParamId::fresh());
        let bt = b.track(ib);
        let y = conv2d(&x.track(ix), &w.track(iw), with_bias.then_some(&bt), opts);
        let want_y = naive::conv2d(&x, &w, bias, opts);
        assert_eq!(y.shape(), want_y.shape(), "{name}: output shape");
        let k = ws[1] * ws[2] * ws[3];
        assert_close(&format!("{name}: forward"), y.data(), want_y.data(), k);

        let gy = randn(&mut r, y.shape());
        let grads = backward_with(&y, gy.clone());
        let want_gx = naive::conv2d_input_grad(&xs, &w, &gy, opts);
        let want_gw = naive::conv2d_weight_grad(&x, &ws, &gy, opts);
        let (gx, gw) = (grads.get(ix).unwrap(), grads.get(iw).unwrap());
        let og = ws[0] / opts.groups;
        assert_close(
            &format!("{name}: input grad"),
            gx.data(),
            want_gx.data(),
            og * ws[2] * ws[3],
        );
        let pixels = xs[0] * y.shape()[2] * y.shape()[3];
        assert_close(
            &format!("{name}: weight grad"),
            gw.data(),
            want_gw.data(),
            pixels,
        );
        if with_bias {
            let want_gb = naive::conv2d_bias_grad(&gy);
            assert_close(
                &format!("{name}: bias grad"),
                grads.get(ib).unwrap().data(),
                want_gb.data(),
                pixels,
            );
        } else {
            assert!(grads.get(ib).is_none());
        }
    }
}

#[test]
fn conv2d_input_without_gradient_gets_none() {
    // The stem's image input needs no gradient: only the weight's is computed.
    let mut r = Rng::new(5);
    let x = randn(&mut r, &[1, 3, 9, 9]);
    let w = randn(&mut r, &[4, 3, 7, 7]);
    let iw = ParamId::fresh();
    let y = conv2d(&x, &w.track(iw), None, Opts::sp(2, 3));
    let gy = randn(&mut r, y.shape());
    let grads = backward_with(&y, gy.clone());
    assert_eq!(grads.len(), 1);
    let want = naive::conv2d_weight_grad(&x, w.shape(), &gy, Opts::sp(2, 3));
    assert_close(
        "weight grad",
        grads.get(iw).unwrap().data(),
        want.data(),
        25,
    );
}

#[test]
fn max_pool2d_matches_naive() {
    let mut r = Rng::new(6);
    for (shape, k, s, p) in [
        ([2, 3, 7, 7], (3, 3), (2, 2), (1, 1)),
        ([1, 2, 8, 6], (3, 3), (2, 2), (1, 1)),
        ([3, 1, 9, 10], (2, 2), (2, 2), (0, 0)),
        ([1, 2, 6, 9], (3, 2), (1, 3), (1, 1)),
        ([1, 1, 5, 5], (5, 5), (1, 1), (2, 2)),
        ([2, 2, 4, 4], (1, 1), (1, 1), (0, 0)),
    ] {
        // Ties on purpose (values rounded to 0.5 steps) to check "first maximum".
        let x = Tensor::from_vec(
            &shape,
            randn(&mut r, &shape)
                .data()
                .iter()
                .map(|v| (v * 2.0).round() / 2.0)
                .collect(),
        );
        let id = ParamId::fresh();
        let y = max_pool2d(&x.track(id), k, s, p);
        let want = naive::max_pool2d(&x, k, s, p);
        assert_eq!(y.shape(), want.shape(), "{shape:?} {k:?} {s:?} {p:?}");
        assert_eq!(y.data(), want.data(), "{shape:?} {k:?} {s:?} {p:?}");
        let gy = randn(&mut r, y.shape());
        let grads = backward_with(&y, gy.clone());
        let want_gx = naive::max_pool2d_backward(&x, &gy, k, s, p);
        assert_close(
            "max pool grad",
            grads.get(id).unwrap().data(),
            want_gx.data(),
            9,
        );
    }
    // Distinct values: the same check without ties.
    let x = distinct(&mut r, &[2, 4, 11, 13], 0.01);
    let y = max_pool2d(&x, (3, 3), (2, 2), (1, 1));
    assert_eq!(
        y.data(),
        naive::max_pool2d(&x, (3, 3), (2, 2), (1, 1)).data()
    );
}

#[test]
fn upsampling_matches_naive() {
    let mut r = Rng::new(7);
    for (shape, h, w) in [
        ([2, 3, 4, 5], 8, 10),
        ([1, 2, 3, 5], 5, 9),
        ([1, 1, 13, 7], 25, 13),
        ([1, 2, 3, 26], 5, 44), // PyTorch's f32 rounding differs from exact here
        ([2, 1, 4, 4], 6, 7),
        ([1, 2, 5, 5], 5, 5),
        ([1, 1, 6, 4], 3, 2),
    ] {
        let x = randn(&mut r, &shape);
        let id = ParamId::fresh();
        let y = upsample_nearest_to(&x.track(id), h, w);
        let want = naive::upsample_nearest_to(&x, h, w);
        assert_eq!(y.data(), want.data(), "{shape:?} -> {h}x{w}");
        let gy = randn(&mut r, y.shape());
        let grads = backward_with(&y, gy.clone());
        let want_gx = naive::upsample_nearest_backward(&gy, shape[2], shape[3]);
        assert_close(
            "upsample grad",
            grads.get(id).unwrap().data(),
            want_gx.data(),
            4,
        );
    }
    let x = randn(&mut r, &[2, 3, 3, 4]);
    assert_eq!(
        upsample_nearest(&x, 3).data(),
        naive::upsample_nearest_to(&x, 9, 12).data()
    );
}
