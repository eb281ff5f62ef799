//! The fast kernels against the naive reference implementations in `focal_engine::naive`
//! (direct loops from the definitions, f64 accumulation), over a table of shapes.
//!
//! Tolerance: an f32 dot product of length K with terms of order 1 has a rounding error
//! of about ε₃₂·√K·|partial sums| ≈ 6e-8·K (under 3e-4 for K = 4608). We allow
//! `1e-4·(|reference| + √K)`, an order of magnitude above that, and far below the
//! error of a single wrong or missing term (of order 1).

use focal_engine::gemm::{gemm, MatMut, MatRef};
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
        gemm(
            1.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            0.0,
            MatMut::row_major(&mut c, m, n),
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
        gemm(
            0.5,
            MatRef::row_major(&at, k, m).t(),
            MatRef::row_major(&bt, n, k).t(),
            2.0,
            MatMut::new(&mut c2, m, n, 1, m),
        );
        assert_close(&format!("strided {m}x{k}x{n}"), &c2, &want2, k);
    }
}

#[test]
fn one_thread_and_every_thread_give_the_same_gemm() {
    let mut r = Rng::new(2);
    // 2·m·k·n above the parallel threshold: several tasks on more than one thread.
    let (m, k, n) = (300, 100, 80);
    let a = r.normal_vec(m * k, 0.0, 1.0);
    let b = r.normal_vec(k * n, 0.0, 1.0);
    let product = |threads: usize| {
        focal_engine::threads::with_threads(threads, || {
            let mut c = vec![0.0; m * n];
            gemm(
                1.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.0,
                MatMut::row_major(&mut c, m, n),
            );
            c
        })
    };
    let one = product(1);
    assert_eq!(one, product(3));
    assert_close("threads", &one, &naive::gemm(m, k, n, &a, &b), k);
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
            "1x1 stride (2,3), groups 2, odd sizes, several tiles",
            [2, 10, 67, 50],
            [6, 5, 1, 1],
            Opts {
                stride: (2, 3),
                ..d
            }
            .with_groups(2),
            true,
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
        // Output planes under 256 pixels run as one product for the whole batch
        // (engine/src/ops/conv/forward.rs), all samples' columns side by side. These
        // cover several samples, groups, stride, dilation, row and column blocks and
        // 1x1 planes.
        (
            "batched: 3x3 s2, groups 2, batch 5",
            [5, 6, 7, 6],
            [4, 3, 3, 3],
            Opts::sp(2, 1).with_groups(2),
            true,
        ),
        (
            "batched: dilation 2, batch 3, 2x2 output",
            [3, 4, 6, 6],
            [3, 4, 3, 3],
            Opts::sp(1, 0).with_dilation(2),
            false,
        ),
        (
            "batched: 1x1 output plane, batch 8, 160 out channels (row blocks)",
            [8, 24, 2, 2],
            [160, 24, 3, 3],
            Opts::sp(2, 1),
            true,
        ),
        (
            "batched: 3x3, 80 channels, batch 6, groups 4 (channel and sample blocks)",
            [6, 80, 4, 3],
            [12, 20, 3, 3],
            Opts::sp(1, 1).with_groups(4),
            true,
        ),
        (
            "batched: 1x1 s1, batch 4",
            [4, 9, 3, 5],
            [7, 9, 1, 1],
            d,
            true,
        ),
        (
            "batched: 1x1 s2 (downsample), batch 2, 700 channels (wide weight gradient)",
            [2, 700, 4, 4],
            [3, 700, 1, 1],
            d.with_stride(2),
            false,
        ),
        (
            "batched: 15x16 output, batch 3 (columns past one tile)",
            [3, 2, 15, 16],
            [3, 2, 3, 3],
            Opts::sp(1, 1),
            true,
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

/// conv2d (groups 2, stride 2, padding 1, bias) and max_pool2d (3x3, s2, p1) forward
/// and backward against values printed by PyTorch 2.15 (a Python with `pip install torch`) with:
///
/// ```text
/// import torch, torch.nn.functional as F
/// torch.set_printoptions(precision=6)
/// x = torch.sin(torch.arange(1*4*5*5, dtype=torch.float64) * 0.7).view(1, 4, 5, 5).float().requires_grad_()
/// w = torch.cos(torch.arange(6*2*3*3, dtype=torch.float64) * 0.3).view(6, 2, 3, 3).float().requires_grad_()
/// b = torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5, -0.6], requires_grad=True)
/// y = F.conv2d(x, w, b, stride=2, padding=1, dilation=1, groups=2)
/// r = torch.sin(torch.arange(y.numel(), dtype=torch.float64) * 1.3).view(y.shape).float()
/// (y * r).sum().backward()
/// fmt = lambda t: ", ".join(f"{v:.6f}" for v in t.detach().reshape(-1).tolist())
/// print("y", list(y.shape), fmt(y)); print("dx", fmt(x.grad)); print("dw", fmt(w.grad)); print("db", fmt(b.grad))
/// p = torch.sin(torch.arange(1*1*5*6, dtype=torch.float64) * 2.1).view(1, 1, 5, 6).float().requires_grad_()
/// q = F.max_pool2d(p, 3, 2, 1)
/// rq = torch.cos(torch.arange(q.numel(), dtype=torch.float64)).view(q.shape).float()
/// (q * rq).sum().backward()
/// print("pool", list(q.shape), fmt(q)); print("dpool", fmt(p.grad))
/// ```
#[test]
#[allow(clippy::excessive_precision)] // literals pasted exactly as PyTorch printed them
fn conv2d_and_max_pool_match_pytorch_literals() {
    let ramp = |n: usize, f: fn(f64) -> f64, s: f64| -> Vec<f32> {
        (0..n).map(|i| f(i as f64 * s) as f32).collect()
    };
    let x = Tensor::from_vec(&[1, 4, 5, 5], ramp(100, f64::sin, 0.7));
    let w = Tensor::from_vec(&[6, 2, 3, 3], ramp(108, f64::cos, 0.3));
    let b = Tensor::from_vec(&[6], vec![0.1, -0.2, 0.3, -0.4, 0.5, -0.6]);
    let (ix, iw, ib) = (ParamId::fresh(), ParamId::fresh(), ParamId::fresh());
    let opts = Opts::sp(2, 1).with_groups(2);
    let y = conv2d(&x.track(ix), &w.track(iw), Some(&b.track(ib)), opts);
    assert_eq!(y.shape(), &[1, 6, 3, 3]);
    let r = Tensor::from_vec(y.shape(), ramp(54, f64::sin, 1.3));
    let grads = backward_with(&y, r);
    let torch_y = [
        2.151826, 1.815891, -0.335666, -0.328123, -1.166394, -0.363031, -1.397380, -0.368389,
        0.742751, 0.986398, 1.463777, 0.486910, -0.382988, -0.377809, -0.094638, -0.853486,
        -1.626604, -1.307290, -0.245829, 0.696084, 1.607619, 0.495840, 1.340685, 0.896776,
        0.967854, -1.042522, -1.748329, 1.176914, -0.278996, -2.048875, -1.241836, -1.826262,
        -0.606716, -1.216368, 0.825356, 1.340694, 2.464287, 1.609517, -0.189403, -0.111656,
        -0.231912, 0.476359, -0.699603, -0.045541, 0.850646, 0.316524, 0.687402, 0.173757,
        -0.534592, -0.102817, -0.423294, -1.306391, -2.517858, -1.895589,
    ];
    let torch_dx = [
        -1.556874, -0.826190, 0.394530, 1.807232, 1.767947, -1.677495, -2.768509, -2.389939,
        -1.502382, 0.398883, 0.551318, -0.847952, -1.472993, -2.246708, -1.339365, 2.603340,
        2.553512, 0.993898, -0.598614, -2.071607, 0.756436, 2.057302, 1.744057, 1.454683, 0.176631,
        1.282662, 0.362115, -0.892614, -2.127029, -1.760208, 2.424048, 2.603225, 1.452375,
        -0.195135, -1.647031, -0.049094, 1.324494, 1.733944, 2.208672, 0.976749, -2.333533,
        -1.253436, 0.398597, 2.037036, 2.546781, -1.211385, -2.285102, -1.624837, -1.079664,
        0.342101, -1.208042, -0.261262, 0.564527, 1.665513, 1.510063, -1.887093, -3.290462,
        -2.633958, -1.792550, 0.477932, 0.243353, -1.049031, -1.379869, -1.713537, -0.981580,
        2.889650, 3.039871, 1.068024, -0.705128, -2.318260, 0.854726, 1.784313, 1.438857, 0.822311,
        -0.084941, 0.942075, -0.315097, -1.171702, -2.212743, -1.568933, 2.442008, 2.865424,
        1.629581, 0.208221, -1.570186, 0.332327, 1.747982, 1.746727, 1.803882, 0.602168, -2.469627,
        -1.681619, 0.248942, 1.854364, 2.602811, -1.424568, -2.222737, -1.364309, -0.406250,
        0.694666,
    ];
    let torch_dw = [
        0.293912, -0.517122, 0.190113, 0.847535, 1.657176, 0.592811, -0.292941, 0.357176, 0.035479,
        0.223149, 0.027501, -0.127684, -0.528277, 0.722704, 0.698253, -0.028246, -0.397263,
        0.276348, 0.278504, -0.314701, -0.069093, 0.838370, 1.220843, -0.160927, -0.099682,
        -0.054354, 0.262139, -0.003667, 0.435824, -0.286165, 0.321821, 1.483637, 1.017656,
        0.206220, -0.546304, 0.259758, 0.066805, 0.109524, -0.279602, 0.238317, -0.075949,
        -0.801243, 0.163833, -0.427575, 0.304042, -0.227898, 0.536975, -0.242954, 0.945097,
        1.198892, 0.619807, 0.295340, -0.310305, 0.060088, 0.064043, -0.342595, 0.280534, 0.925689,
        1.349564, 0.782528, -0.234501, 0.562812, -0.211500, 0.319613, -0.410020, 0.151629,
        -0.495995, 0.523137, 0.558322, -0.279221, 0.102608, 0.089109, 0.249773, -0.569870,
        0.190371, 1.022478, 1.145827, -0.059740, -0.269511, 0.437562, 0.003737, 0.259278,
        -0.049442, -0.122481, 0.225239, 1.612198, 0.871908, -0.051289, -0.305292, 0.297365,
        0.259461, -0.395496, -0.033966, 0.398617, 0.134502, -0.859902, -0.114567, 0.003915,
        0.216340, 0.016202, 0.345983, -0.310265, 0.787724, 1.564969, 0.570967, 0.212792, -0.498021,
        0.296036,
    ];
    let torch_db = [
        0.612774, 0.644451, 0.221914, -0.357030, -0.684336, -0.529317,
    ];
    // Literals carry 6 decimals; the f32 sums differ from PyTorch's by a few ulp.
    let near = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 2e-5, "{what}[{i}]: {g} vs PyTorch {w}");
        }
    };
    near("y", y.data(), &torch_y);
    near("dx", grads.get(ix).unwrap().data(), &torch_dx);
    near("dw", grads.get(iw).unwrap().data(), &torch_dw);
    near("db", grads.get(ib).unwrap().data(), &torch_db);

    let p = Tensor::from_vec(&[1, 1, 5, 6], ramp(30, f64::sin, 2.1));
    let ip = ParamId::fresh();
    let q = max_pool2d(&p.track(ip), (3, 3), (2, 2), (1, 1));
    assert_eq!(q.shape(), &[1, 1, 3, 3]);
    let rq = Tensor::from_vec(q.shape(), ramp(9, f64::cos, 1.0));
    let grads = backward_with(&q, rq);
    near(
        "pool",
        q.data(),
        &[
            0.863209, 0.863209, 0.854599, 0.845747, 0.845747, 0.836656, 0.807973, 0.807973,
            0.797952,
        ],
    );
    near(
        "pool grad",
        grads.get(ip).unwrap().data(),
        &[
            0.000000, 1.540302, 0.000000, 0.000000, -0.416147, 0.000000, 0.000000, -1.643636,
            0.000000, 0.000000, 0.283662, 0.000000, 0.000000, 0.000000, 0.000000, 0.000000,
            0.000000, 0.000000, 0.000000, 1.714072, 0.000000, 0.000000, -0.145500, 0.000000,
            0.000000, 0.000000, 0.000000, 0.000000, 0.000000, 0.000000,
        ],
    );
}
