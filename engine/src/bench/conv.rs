//! conv2d on the layer shapes of a ResNet-18 RetinaNet: forward and forward + backward,
//! beside the GEMM of the same size on ready-made columns.

use rayon::prelude::*;

use super::gemm::cpu_fraction;
use super::timing::{time_interleaved, Budget, Row};
use crate::gemm::{gemm, MatMut, MatRef};
use crate::ops::conv::conv_output_len;
use crate::Tensor;
use crate::{backward_with, conv2d, conv2d_with, no_grad, Conv2dOptions, ConvAlgo, ParamId, Rng};

/// A convolution layer to measure.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    pub name: &'static str,
    /// Input (N, C, H, W).
    pub x: [usize; 4],
    /// Weight (O, C/G, KH, KW).
    pub w: [usize; 4],
    pub opts: Conv2dOptions,
    pub bias: bool,
    /// Whether the input needs a gradient (not for the image fed to the stem).
    pub input_grad: bool,
}

/// One row of a case table: name, input, weight, stride, padding, bias, input gradient.
type CaseRow = (
    &'static str,
    [usize; 4],
    [usize; 4],
    usize,
    usize,
    bool,
    bool,
);

fn cases(table: &[CaseRow]) -> Vec<ConvCase> {
    table
        .iter()
        .map(|&(name, x, w, s, p, bias, input_grad)| ConvCase {
            name,
            x,
            w,
            opts: Conv2dOptions::sp(s, p),
            bias,
            input_grad,
        })
        .collect()
}

/// The conv layers of a ResNet-18 backbone at 512 px input, batch 2, and the RetinaNet
/// head conv (256 → 256, 3x3, on the 64x64 P3 map).
#[rustfmt::skip]
const CASES_512: &[CaseRow] = &[
    // name                              input               weight            s  p  bias   ∂x
    ("stem 7x7 s2 3->64 @512",          [2, 3, 512, 512],   [64, 3, 7, 7],     2, 3, false, false),
    ("layer1 3x3 64->64 @128",          [2, 64, 128, 128],  [64, 64, 3, 3],    1, 1, false, true),
    ("layer2.0 3x3 s2 64->128 @128",    [2, 64, 128, 128],  [128, 64, 3, 3],   2, 1, false, true),
    ("layer2 3x3 128->128 @64",         [2, 128, 64, 64],   [128, 128, 3, 3],  1, 1, false, true),
    ("layer2.down 1x1 s2 64->128 @128", [2, 64, 128, 128],  [128, 64, 1, 1],   2, 0, false, true),
    ("layer3.0 3x3 s2 128->256 @64",    [2, 128, 64, 64],   [256, 128, 3, 3],  2, 1, false, true),
    ("layer3 3x3 256->256 @32",         [2, 256, 32, 32],   [256, 256, 3, 3],  1, 1, false, true),
    ("layer3.down 1x1 s2 128->256 @64", [2, 128, 64, 64],   [256, 128, 1, 1],  2, 0, false, true),
    ("layer4.0 3x3 s2 256->512 @32",    [2, 256, 32, 32],   [512, 256, 3, 3],  2, 1, false, true),
    ("layer4 3x3 512->512 @16",         [2, 512, 16, 16],   [512, 512, 3, 3],  1, 1, false, true),
    ("layer4.down 1x1 s2 256->512 @32", [2, 256, 32, 32],   [512, 256, 1, 1],  2, 0, false, true),
    ("head 3x3 256->256 @64",           [2, 256, 64, 64],   [256, 256, 3, 3],  1, 1, true,  true),
    // The heads' last convs on P3: 9 anchors × 80 classes, 9 × 4 box deltas.
    ("head.cls 3x3 256->720 @64",       [2, 256, 64, 64],   [720, 256, 3, 3],  1, 1, true,  true),
    ("head.box 3x3 256->36 @64",        [2, 256, 64, 64],   [36, 256, 3, 3],   1, 1, true,  true),
];

/// The conv layers of a small-image model with the widths of `focal train`'s default:
/// ResNet-18 at 128 px, batch 8 (the default feeds 96 px), an FPN 64 channels wide
/// (P3..P7 on 16², 8², 4², 2², 1² maps, P6 from C5) and the towers of the heads (64
/// wide) with their last convs (9 anchors × 5 classes, 9 × 4 box deltas). The feature
/// maps are small, so each image has few output pixels (`OH·OW` = 16 at layer4, 1 on
/// P7).
#[rustfmt::skip]
const CASES_SMALL: &[CaseRow] = &[
    // name                              input             weight            s  p  bias   ∂x
    ("stem 7x7 s2 3->64 @128",          [8, 3, 128, 128], [64, 3, 7, 7],     2, 3, false, false),
    ("layer1 3x3 64->64 @32",           [8, 64, 32, 32],  [64, 64, 3, 3],    1, 1, false, true),
    ("layer2.0 3x3 s2 64->128 @32",     [8, 64, 32, 32],  [128, 64, 3, 3],   2, 1, false, true),
    ("layer2 3x3 128->128 @16",         [8, 128, 16, 16], [128, 128, 3, 3],  1, 1, false, true),
    ("layer2.down 1x1 s2 64->128 @32",  [8, 64, 32, 32],  [128, 64, 1, 1],   2, 0, false, true),
    ("layer3.0 3x3 s2 128->256 @16",    [8, 128, 16, 16], [256, 128, 3, 3],  2, 1, false, true),
    ("layer3 3x3 256->256 @8",          [8, 256, 8, 8],   [256, 256, 3, 3],  1, 1, false, true),
    ("layer3.down 1x1 s2 128->256 @16", [8, 128, 16, 16], [256, 128, 1, 1],  2, 0, false, true),
    ("layer4.0 3x3 s2 256->512 @8",     [8, 256, 8, 8],   [512, 256, 3, 3],  2, 1, false, true),
    ("layer4 3x3 512->512 @4",          [8, 512, 4, 4],   [512, 512, 3, 3],  1, 1, false, true),
    ("layer4.down 1x1 s2 256->512 @8",  [8, 256, 8, 8],   [512, 256, 1, 1],  2, 0, false, true),
    ("fpn.lateral 1x1 128->64 @16",     [8, 128, 16, 16], [64, 128, 1, 1],   1, 0, true,  true),
    ("fpn.lateral 1x1 512->64 @4",      [8, 512, 4, 4],   [64, 512, 1, 1],   1, 0, true,  true),
    ("fpn.out 3x3 64->64 @16",          [8, 64, 16, 16],  [64, 64, 3, 3],    1, 1, true,  true),
    ("fpn.out 3x3 64->64 @4",           [8, 64, 4, 4],    [64, 64, 3, 3],    1, 1, true,  true),
    ("fpn.p6 3x3 s2 512->64 @4",        [8, 512, 4, 4],   [64, 512, 3, 3],   2, 1, true,  true),
    ("fpn.p7 3x3 s2 64->64 @2",         [8, 64, 2, 2],    [64, 64, 3, 3],    2, 1, true,  true),
    ("head 3x3 64->64 @16",             [8, 64, 16, 16],  [64, 64, 3, 3],    1, 1, true,  true),
    ("head 3x3 64->64 @8",              [8, 64, 8, 8],    [64, 64, 3, 3],    1, 1, true,  true),
    ("head 3x3 64->64 @4",              [8, 64, 4, 4],    [64, 64, 3, 3],    1, 1, true,  true),
    ("head 3x3 64->64 @2",              [8, 64, 2, 2],    [64, 64, 3, 3],    1, 1, true,  true),
    ("head 3x3 64->64 @1",              [8, 64, 1, 1],    [64, 64, 3, 3],    1, 1, true,  true),
    ("head.cls 3x3 64->45 @16",         [8, 64, 16, 16],  [45, 64, 3, 3],    1, 1, true,  true),
    ("head.box 3x3 64->36 @8",          [8, 64, 8, 8],    [36, 64, 3, 3],    1, 1, true,  true),
];

/// The 3x3 stride-1 convs of `focal train`'s default model at its 96-px input, batch 8:
/// ResNet-18 (layer1..4 on 24², 12², 6², 3² maps), the FPN's output convs (64 wide on
/// P3..P5) and the heads' towers (64 wide, on P3..P7: 12² down to 1²) with their last
/// convs (1 anchor × 5 classes, 1 × 4 box deltas). The convs it leaves out (the stem,
/// the stride-2 and 1x1 ones) never run Winograd.
#[rustfmt::skip]
const CASES_96: &[CaseRow] = &[
    // name                              input             weight            s  p  bias   ∂x
    ("layer1 3x3 64->64 @24",           [8, 64, 24, 24],  [64, 64, 3, 3],    1, 1, false, true),
    ("layer2 3x3 128->128 @12",         [8, 128, 12, 12], [128, 128, 3, 3],  1, 1, false, true),
    ("layer3 3x3 256->256 @6",          [8, 256, 6, 6],   [256, 256, 3, 3],  1, 1, false, true),
    ("layer4 3x3 512->512 @3",          [8, 512, 3, 3],   [512, 512, 3, 3],  1, 1, false, true),
    ("fpn.out 3x3 64->64 @12",          [8, 64, 12, 12],  [64, 64, 3, 3],    1, 1, true,  true),
    ("fpn.out 3x3 64->64 @6",           [8, 64, 6, 6],    [64, 64, 3, 3],    1, 1, true,  true),
    ("fpn.out 3x3 64->64 @3",           [8, 64, 3, 3],    [64, 64, 3, 3],    1, 1, true,  true),
    ("head 3x3 64->64 @12",             [8, 64, 12, 12],  [64, 64, 3, 3],    1, 1, false, true),
    ("head 3x3 64->64 @6",              [8, 64, 6, 6],    [64, 64, 3, 3],    1, 1, false, true),
    ("head 3x3 64->64 @3",              [8, 64, 3, 3],    [64, 64, 3, 3],    1, 1, false, true),
    ("head 3x3 64->64 @2",              [8, 64, 2, 2],    [64, 64, 3, 3],    1, 1, false, true),
    ("head 3x3 64->64 @1",              [8, 64, 1, 1],    [64, 64, 3, 3],    1, 1, false, true),
    ("head.cls 3x3 64->5 @12",          [8, 64, 12, 12],  [5, 64, 3, 3],     1, 1, true,  true),
    ("head.box 3x3 64->4 @12",          [8, 64, 12, 12],  [4, 64, 3, 3],     1, 1, true,  true),
];

/// A grid of 3x3 stride-1 convs, batch 2: C = O in {64, 128, 256, 512} on planes of
/// 8² to 64², the measurements behind `--conv-algo auto`'s rule
/// (`focal bench conv --preset grid --compare-algos direct,winograd-f2,winograd-f4`).
#[rustfmt::skip]
const CASES_GRID: &[CaseRow] = &[
    ("64->64 @8 b2",    [2, 64, 8, 8],    [64, 64, 3, 3],   1, 1, false, true),
    ("64->64 @16 b2",   [2, 64, 16, 16],  [64, 64, 3, 3],   1, 1, false, true),
    ("64->64 @32 b2",   [2, 64, 32, 32],  [64, 64, 3, 3],   1, 1, false, true),
    ("64->64 @64 b2",   [2, 64, 64, 64],  [64, 64, 3, 3],   1, 1, false, true),
    ("128->128 @8 b2",  [2, 128, 8, 8],   [128, 128, 3, 3], 1, 1, false, true),
    ("128->128 @16 b2", [2, 128, 16, 16], [128, 128, 3, 3], 1, 1, false, true),
    ("128->128 @32 b2", [2, 128, 32, 32], [128, 128, 3, 3], 1, 1, false, true),
    ("128->128 @64 b2", [2, 128, 64, 64], [128, 128, 3, 3], 1, 1, false, true),
    ("256->256 @8 b2",  [2, 256, 8, 8],   [256, 256, 3, 3], 1, 1, false, true),
    ("256->256 @16 b2", [2, 256, 16, 16], [256, 256, 3, 3], 1, 1, false, true),
    ("256->256 @32 b2", [2, 256, 32, 32], [256, 256, 3, 3], 1, 1, false, true),
    ("256->256 @64 b2", [2, 256, 64, 64], [256, 256, 3, 3], 1, 1, false, true),
    ("512->512 @8 b2",  [2, 512, 8, 8],   [512, 512, 3, 3], 1, 1, false, true),
    ("512->512 @16 b2", [2, 512, 16, 16], [512, 512, 3, 3], 1, 1, false, true),
    ("512->512 @32 b2", [2, 512, 32, 32], [512, 512, 3, 3], 1, 1, false, true),
    ("512->512 @64 b2", [2, 512, 64, 64], [512, 512, 3, 3], 1, 1, false, true),
];

/// The names of the presets, for messages.
pub const PRESETS: &str = "\"512\", \"small\", \"96\" or \"grid\"";

/// The cases of a preset: "512" (ResNet-18 at 512 px, batch 2, and the head convs on
/// P3), "small" (the default training model's widths at 128 px, batch 8), "96" (the 3x3
/// stride-1 convs of the default model at 96 px) or "grid" (3x3 stride-1, batch 2,
/// 64..512 channels on 8²..64² planes).
pub fn conv_preset(name: &str) -> Option<Vec<ConvCase>> {
    match name {
        "512" => Some(cases(CASES_512)),
        "small" => Some(cases(CASES_SMALL)),
        "96" => Some(cases(CASES_96)),
        "grid" => Some(cases(CASES_GRID)),
        _ => None,
    }
}

/// Whether Winograd can run `case` (3x3, stride 1, dilation 1, one group).
pub fn winograd_shape(case: &ConvCase) -> bool {
    let o = case.opts;
    case.w[2] == 3 && case.w[3] == 3 && o.stride == (1, 1) && o.dilation == (1, 1) && o.groups == 1
}

/// The algorithms side by side: for each case, forward and forward + backward with each
/// algorithm in `algos`, all interleaved so that every one sees the same machine load.
///
/// The GFLOP/s are the direct convolution's FLOPs over the time (an *effective* rate:
/// Winograd does fewer multiplications for the same result). `speedup`,
/// `best_speedup` and `cpu_speedup` are the first algorithm's median, best and CPU
/// times over this one's (the CPU-time ratio is the steadier one on a shared machine);
/// `max_abs_diff` and `max_rel_diff` compare this algorithm's forward output with the
/// first's (relative to the largest output magnitude).
pub fn algo_rows(cases: &[ConvCase], algos: &[ConvAlgo], budget: Budget) -> Vec<Row> {
    let mut rng = Rng::new(4);
    let mut rows = Vec::new();
    for case in cases {
        let [o, cg, kh, kw] = case.w;
        let (oh, ow) = out_hw(case);
        let n = case.x[0];
        let flops = 2.0 * (n * o * oh * ow * cg * kh * kw) as f64;
        let bwd_flops = if case.input_grad { 2.0 * flops } else { flops };
        let x = Tensor::from_vec(&case.x, random(&mut rng, case.x.iter().product()));
        // Kaiming-normal weights (std √(2 / fan-in)), as a trained network's are scaled.
        let std = (2.0 / (cg * kh * kw) as f32).sqrt();
        let w = Tensor::from_vec(&case.w, rng.normal_vec(case.w.iter().product(), 0.0, std));
        let b = Tensor::from_vec(&[o], random(&mut rng, o));
        let bias = case.bias.then_some(&b);
        let seed = Tensor::from_vec(&[n, o, oh, ow], random(&mut rng, n * o * oh * ow));
        let outputs: Vec<Tensor> = algos
            .iter()
            .map(|&a| no_grad(|| conv2d_with(&x, &w, bias, case.opts, a)))
            .collect();
        let mut fs: Vec<Box<dyn FnMut() + '_>> = Vec::new();
        for &a in algos {
            let (x, w) = (&x, &w);
            fs.push(Box::new(move || {
                let y = no_grad(|| conv2d_with(x, w, bias, case.opts, a));
                std::hint::black_box(y);
            }));
        }
        for &a in algos {
            let (x, w, b, seed) = (&x, &w, &b, &seed);
            fs.push(Box::new(move || {
                let xt = if case.input_grad {
                    x.track(ParamId(u64::MAX - 1))
                } else {
                    x.clone()
                };
                let wt = w.track(ParamId(u64::MAX - 2));
                let bt = b.track(ParamId(u64::MAX - 3));
                let y = conv2d_with(&xt, &wt, case.bias.then_some(&bt), case.opts, a);
                std::hint::black_box(backward_with(&y, seed.clone()));
            }));
        }
        let mut refs: Vec<&mut dyn FnMut()> = fs
            .iter_mut()
            .map(|f| f.as_mut() as &mut dyn FnMut())
            .collect();
        let t = time_interleaved(budget, &mut refs);
        drop(refs);
        drop(fs);
        let k = algos.len();
        let scale = outputs[0].data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, &a) in algos.iter().enumerate() {
            let diff = outputs[i]
                .data()
                .iter()
                .zip(outputs[0].data())
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            let (f, fb) = (t[i], t[k + i]);
            let name = |pass: &str| format!("conv/{}/{}/{pass}", case.name, a.name());
            rows.push(
                Row::new(name("fwd"), f.wall_ms, flops)
                    .with("cpu_ms", f.cpu_ms)
                    .with("best_ms", f.best_ms)
                    .with("speedup", t[0].wall_ms / f.wall_ms)
                    .with("best_speedup", t[0].best_ms / f.best_ms)
                    .with("cpu_speedup", t[0].cpu_ms / f.cpu_ms)
                    .with("max_abs_diff", diff as f64)
                    .with("max_rel_diff", (diff / scale.max(f32::MIN_POSITIVE)) as f64),
            );
            rows.push(
                Row::new(name("fwd+bwd"), fb.wall_ms, flops + bwd_flops)
                    .with("cpu_ms", fb.cpu_ms)
                    .with("best_ms", fb.best_ms)
                    .with("speedup", t[k].wall_ms / fb.wall_ms)
                    .with("best_speedup", t[k].best_ms / fb.best_ms)
                    .with("cpu_speedup", t[k].cpu_ms / fb.cpu_ms),
            );
        }
    }
    rows
}

/// Output height and width of a case.
fn out_hw(case: &ConvCase) -> (usize, usize) {
    let len = |l, k, s, p, d| conv_output_len(l, k, s, p, d).expect("a valid case");
    let o = case.opts;
    (
        len(case.x[2], case.w[2], o.stride.0, o.padding.0, o.dilation.0),
        len(case.x[3], case.w[3], o.stride.1, o.padding.1, o.dilation.1),
    )
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.normal_vec(n, 0.0, 1.0)
}

/// For each case: forward, the same-size GEMM, and forward + backward, interleaved.
///
/// Two GEMM references, on ready-made columns:
/// - `gemm_gflops`, `ratio_to_gemm`: one `(O/G, K)·(K, OH·OW)` product per (sample,
///   group), in parallel over the samples (what the forward pass would cost if packing
///   from the image were free and each image were its own product);
/// - `batch_gemm_cpu_gflops`: one `(O/G, K)·(K, N·OH·OW)` product per group for the
///   whole batch, in GFLOP per CPU-second; `cpu_ratio_to_batch_gemm` is the
///   convolution's GFLOP per CPU-second over that rate.
///
/// `peak_fraction` is each pass's rate over `peak` (GFLOP/s, `focal bench peak`);
/// `best_ms`, `best_ratio_to_gemm` and `best_ratio_to_fwd` are the comparisons on each
/// closure's fastest run instead of its median.
pub fn conv_rows(cases: &[ConvCase], budget: Budget, peak: f64) -> Vec<Row> {
    let mut rng = Rng::new(2);
    let mut rows = Vec::new();
    for case in cases {
        let n = case.x[0];
        let [o, cg, kh, kw] = case.w;
        let groups = case.opts.groups;
        let (oh, ow) = out_hw(case);
        let (k, p, og) = (cg * kh * kw, oh * ow, o / groups);
        let flops = 2.0 * (n * o * p * k) as f64;
        let x = Tensor::from_vec(&case.x, random(&mut rng, case.x.iter().product()));
        let w = Tensor::from_vec(&case.w, random(&mut rng, case.w.iter().product()));
        let b = Tensor::from_vec(&[o], random(&mut rng, o));
        let bias = case.bias.then_some(&b);

        let mut forward = || {
            let y = no_grad(|| conv2d(&x, &w, bias, case.opts));
            std::hint::black_box(y);
        };

        // Same (M, N, K) as plain products on precomputed columns.
        let cols: Vec<f32> = random(&mut rng, k * p);
        let mut out = vec![0.0f32; n * o * p];
        let mut per_sample_gemm = || {
            out.par_chunks_mut(og * p).enumerate().for_each(|(ng, y)| {
                let grp = ng % groups;
                let wg = &w.data()[grp * og * k..(grp + 1) * og * k];
                // (O/G, K) · (K, P) -> (O/G, P)
                gemm(
                    1.0,
                    MatRef::row_major(wg, og, k),
                    MatRef::row_major(&cols, k, p),
                    0.0,
                    MatMut::row_major(y, og, p),
                );
            });
        };

        let batch_cols: Vec<f32> = random(&mut rng, k * n * p);
        let mut batch_out = vec![0.0f32; og * n * p];
        let mut batch_gemm = || {
            for grp in 0..groups {
                let wg = &w.data()[grp * og * k..(grp + 1) * og * k];
                // (O/G, K) · (K, N·P) -> (O/G, N·P)
                gemm(
                    1.0,
                    MatRef::row_major(wg, og, k),
                    MatRef::row_major(&batch_cols, k, n * p),
                    0.0,
                    MatMut::row_major(&mut batch_out, og, n * p),
                );
            }
        };

        let seed = Tensor::from_vec(&[n, o, oh, ow], random(&mut rng, n * o * p));
        let mut forward_backward = || {
            let xt = if case.input_grad {
                x.track(ParamId(u64::MAX - 1))
            } else {
                x.clone()
            };
            let wt = w.track(ParamId(u64::MAX - 2));
            let bt = b.track(ParamId(u64::MAX - 3));
            let y = conv2d(&xt, &wt, case.bias.then_some(&bt), case.opts);
            let g = backward_with(&y, seed.clone());
            std::hint::black_box(g);
        };
        let t = time_interleaved(
            budget,
            &mut [
                &mut forward,
                &mut per_sample_gemm,
                &mut forward_backward,
                &mut batch_gemm,
            ],
        );
        let (fwd, gemm_ms, fwd_bwd) = (t[0].wall_ms, t[1].wall_ms, t[2].wall_ms);
        let bwd_flops = if case.input_grad { 2.0 * flops } else { flops };
        // GFLOP per CPU-second (all threads together).
        let per_cpu_s = |flops: f64, cpu_ms: f64| flops / (cpu_ms * 1e6);
        let batch_rate = per_cpu_s(flops, t[3].cpu_ms);

        rows.push(
            Row::new(format!("conv/{}/fwd", case.name), fwd, flops)
                .with("cpu_ms", t[0].cpu_ms)
                .with("best_ms", t[0].best_ms)
                .with("peak_fraction", flops / (fwd * 1e6) / peak)
                .with("cpu_peak_fraction", cpu_fraction(flops, t[0].cpu_ms, peak))
                .with("gemm_gflops", flops / (gemm_ms * 1e6))
                .with("ratio_to_gemm", gemm_ms / fwd)
                .with("best_ratio_to_gemm", t[1].best_ms / t[0].best_ms)
                .with("cpu_ratio_to_gemm", t[1].cpu_ms / t[0].cpu_ms)
                .with("cpu_gflops", per_cpu_s(flops, t[0].cpu_ms))
                .with("batch_gemm_cpu_gflops", batch_rate)
                .with(
                    "cpu_ratio_to_batch_gemm",
                    per_cpu_s(flops, t[0].cpu_ms) / batch_rate,
                ),
        );
        let total = flops + bwd_flops;
        rows.push(
            Row::new(format!("conv/{}/fwd+bwd", case.name), fwd_bwd, total)
                .with("cpu_ms", t[2].cpu_ms)
                .with("best_ms", t[2].best_ms)
                .with("peak_fraction", total / (fwd_bwd * 1e6) / peak)
                .with("cpu_peak_fraction", cpu_fraction(total, t[2].cpu_ms, peak))
                .with("ratio_to_fwd", fwd_bwd / fwd)
                .with("best_ratio_to_fwd", t[2].best_ms / t[0].best_ms)
                .with("cpu_ratio_to_fwd", t[2].cpu_ms / t[0].cpu_ms)
                .with("cpu_gflops", per_cpu_s(total, t[2].cpu_ms))
                .with(
                    "cpu_ratio_to_batch_gemm",
                    per_cpu_s(total, t[2].cpu_ms) / batch_rate,
                ),
        );
    }
    rows
}
