//! Unit tests of the Winograd kernels against the naive definitions, and of the
//! vector builds against each other.

use super::plan::{transform_filters, transform_inputs};
use super::simd::Level;
use super::*;
use crate::gradcheck::randn;
use crate::naive;
use crate::ops::conv::Conv2dOptions;
use crate::ops::unary::relu_f32;
use crate::rng::Rng;

/// The GEMM paths this CPU has; the missing ones are named on stdout.
fn paths() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| {
            let ok = isa.available();
            if !ok {
                println!("{isa}: not on this CPU, skipped");
            }
            ok
        })
        .collect()
}

fn max_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0, f32::max)
}

/// Small shapes with every edge case of the tile grid, both tiles, every GEMM path,
/// against the naive definitions.
#[test]
fn small_shapes_match_naive() {
    let mut r = Rng::new(1);
    for (x_shape, o, pad) in [
        ([1, 1, 3, 3], 1, (0, 0)),
        ([1, 1, 3, 3], 1, (1, 1)),
        ([2, 3, 5, 7], 4, (1, 1)),
        ([1, 2, 9, 6], 3, (0, 0)),
        ([3, 5, 11, 10], 2, (1, 0)),
        ([1, 2, 4, 4], 2, (2, 2)),
        ([1, 2, 6, 5], 3, (3, 1)),
        ([2, 7, 13, 17], 5, (1, 1)),
        // Rows of 18 (F4) and 35 (F2) tiles: several groups of lanes, the last partial.
        ([2, 3, 9, 70], 4, (1, 1)),
        ([1, 2, 5, 67], 3, (0, 2)),
        // More channels than LANES, in the filter transforms and the weight gradient.
        ([2, 19, 6, 9], 11, (1, 1)),
    ] {
        let opts = Conv2dOptions {
            padding: pad,
            ..Conv2dOptions::default()
        };
        let w_shape = [o, x_shape[1], 3, 3];
        let x = randn(&mut r, &x_shape);
        let w = randn(&mut r, &w_shape);
        let b = randn(&mut r, &[o]);
        let g = Geom::new(&x_shape, &w_shape, opts);
        let want = naive::conv2d(&x, &w, Some(&b), opts);
        let gy = randn(&mut r, want.shape());
        let want_gx = naive::conv2d_input_grad(&x_shape, &w, &gy, opts);
        let want_gw = naive::conv2d_weight_grad(&x, &w_shape, &gy, opts);
        // The default chunks, and the smallest: one row of tiles (weight gradient), one
        // GEMM panel of tiles (forward and input gradient).
        let runs = [TileKind::F2, TileKind::F4]
            .into_iter()
            .flat_map(|t| [(t, Chunks::DEFAULT), (t, Chunks::SMALLEST)])
            .flat_map(|(t, c)| paths().into_iter().map(move |isa| (t, c, isa)));
        for (tile, chunk, isa) in runs {
            let what = format!("{tile:?} {isa} {chunk:?} x {x_shape:?} o {o} pad {pad:?}");
            let mut y = vec![f32::NAN; want.numel()];
            let b = Some(b.data());
            forward_in_chunks(tile, isa, &g, x.data(), w.data(), (b, false), &mut y, chunk);
            assert!(max_err(&y, want.data()) < 1e-4, "forward {what}");
            // The fused ReLU of the output transform: max(·, 0) of the same bits.
            let mut y_relu = vec![f32::NAN; want.numel()];
            forward_in_chunks(
                tile,
                isa,
                &g,
                x.data(),
                w.data(),
                (b, true),
                &mut y_relu,
                chunk,
            );
            let relu_of_y: Vec<u32> = y.iter().map(|v| v.max(0.0).to_bits()).collect();
            let bits: Vec<u32> = y_relu.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, relu_of_y, "fused relu {what}");
            let mut gx = vec![f32::NAN; x.numel()];
            let mut gw = vec![f32::NAN; w.numel()];
            backward_in_chunks(
                tile,
                isa,
                &g,
                Some(x.data()),
                Some(w.data()),
                gy.data(),
                Some(&mut gx),
                Some(&mut gw),
                chunk,
            );
            assert!(max_err(&gx, want_gx.data()) < 1e-4, "input grad {what}");
            assert!(max_err(&gw, want_gw.data()) < 1e-4, "weight grad {what}");
        }
    }
}

/// The builds of the transforms that the paths run (the portable one, and the AVX2 one
/// for the AVX2 and AVX-512 paths, `simd.rs`) give the same bits (where the CPU has
/// them; a missing one is reported and skipped).
#[test]
fn every_vector_build_of_the_transforms_gives_the_same_bits() {
    fn transforms<T: Tile>(level: Level, c: &Conv3, x: &[f32], w: &[f32]) -> Vec<u32> {
        let a2 = T::ALPHA * T::ALPHA;
        let mut u = vec![0.0f32; c.r * a2 * c.s];
        transform_filters::<T>(level, w, c.r, c.s, false, &mut u);
        let grid = Grid::new::<T>(c, CHUNK_FLOATS);
        let rows = grid.rows(c);
        let mut v = vec![0.0f32; c.s * a2 * rows * grid.tw];
        transform_inputs::<T>(level, c, &grid, x, (0, rows), &mut v);
        u.iter().chain(&v).map(|f| f.to_bits()).collect()
    }
    let mut r = Rng::new(4);
    let (x_shape, w_shape) = ([2, 19, 13, 37], [11, 19, 3, 3]);
    let g = Geom::new(&x_shape, &w_shape, Conv2dOptions::sp(1, 1));
    let c = forward_conv(&g);
    let x = randn(&mut r, &x_shape);
    let w = randn(&mut r, &w_shape);
    let levels: Vec<Level> = paths().into_iter().map(Level::of).collect();
    for level in &levels {
        assert_eq!(
            transforms::<F2>(*level, &c, x.data(), w.data()),
            transforms::<F2>(Level::Portable, &c, x.data(), w.data()),
            "F2 {level:?}"
        );
        assert_eq!(
            transforms::<F4>(*level, &c, x.data(), w.data()),
            transforms::<F4>(Level::Portable, &c, x.data(), w.data()),
            "F4 {level:?}"
        );
    }
}

/// The whole Winograd convolution (forward, both gradients) gives the same bits on the
/// AVX2 and AVX-512 paths (transforms and GEMM), and agrees with the portable path
/// (matrixmultiply) to rounding.
#[test]
fn avx2_and_avx512_paths_give_the_same_bits() {
    let mut r = Rng::new(4);
    let (x_shape, w_shape) = ([2, 19, 13, 37], [11, 19, 3, 3]);
    let opts = Conv2dOptions::sp(1, 1);
    let g = Geom::new(&x_shape, &w_shape, opts);
    let x = randn(&mut r, &x_shape);
    let w = randn(&mut r, &w_shape);
    let gy = randn(&mut r, &g.out_shape());
    let run = |tile, isa| {
        let mut y = vec![0.0; gy.numel()];
        forward(tile, isa, &g, x.data(), w.data(), None, false, &mut y);
        let (mut gx, mut gw) = (vec![0.0; x.numel()], vec![0.0; w.numel()]);
        let (xs, ws) = (Some(x.data()), Some(w.data()));
        backward(
            tile,
            isa,
            &g,
            xs,
            ws,
            gy.data(),
            Some(&mut gx),
            Some(&mut gw),
        );
        [y, gx, gw]
    };
    let bits = |v: &[Vec<f32>; 3]| v.iter().flatten().map(|f| f.to_bits()).collect::<Vec<_>>();
    let simd: Vec<Isa> = paths()
        .into_iter()
        .filter(|&i| i != Isa::Portable)
        .collect();
    for tile in [TileKind::F2, TileKind::F4] {
        let portable = run(tile, Isa::Portable);
        let mut first: Option<Vec<u32>> = None;
        for &isa in &simd {
            let got = run(tile, isa);
            for (a, b) in got.iter().zip(&portable) {
                assert!(max_err(a, b) < 1e-5, "{tile:?}: {isa} against portable");
            }
            match &first {
                None => first = Some(bits(&got)),
                Some(f) => assert!(*f == bits(&got), "{tile:?}: {isa} differs from {}", simd[0]),
            }
        }
    }
}

/// The transformed inputs written in the GEMM's micro-panel order hold the same bits as
/// the strided layout (`plan::transform_inputs`), and pack to the same panels: through
/// the one-copy path (panels of the stored width, aligned), the element-wise one (any
/// other cut) and the panels read in place, for panel widths that do and do not divide
/// the tiles, rows of tiles that are not a multiple of
/// [`LANES`](super::transforms::LANES) and chunks that start inside the batch, at a row
/// of tiles or inside one.
#[test]
fn packed_inputs_pack_like_the_strided_layout() {
    use super::packed_inputs::{chunk_inputs, packed_len, PackedInputs};
    use crate::gemm::{MatRef, Panels};
    /// Rows `rows` of tiles in the strided layout against tiles `skip .. skip + count`
    /// of them in the panel layout.
    fn check<T: Tile>(c: &Conv3, x: &[f32], w: usize, rows: (usize, usize), skip: usize) {
        let a2 = T::ALPHA * T::ALPHA;
        let grid = Grid::new::<T>(c, CHUNK_FLOATS);
        let all = (rows.1 - rows.0) * grid.tw;
        let mut strided = vec![0.0f32; c.s * a2 * all];
        transform_inputs::<T>(Level::Portable, c, &grid, x, rows, &mut strided);
        let tiles = all - skip;
        // Stale values in the buffer must all be overwritten (the padding too).
        let mut packed = vec![f32::NAN; packed_len(a2, c.s, tiles, w)];
        let first = rows.0 * grid.tw + skip;
        let th_tw = (grid.th, grid.tw);
        chunk_inputs::<T>(Level::Portable, c, th_tw, x, first, tiles, w, &mut packed);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for xi in 0..a2 {
            let at = xi * all + skip;
            let want = MatRef::new(&strided[at..], c.s, tiles, a2 * all, 1);
            let got = PackedInputs::new(&packed, xi, a2, c.s, tiles, w);
            assert_eq!(got.dims(), want.dims());
            let what = format!(
                "{} ξ {xi} w {w} rows {rows:?} skip {skip}",
                std::any::type_name::<T>()
            );
            let mut cuts = vec![(0, c.s, 0, tiles, w), (1, c.s - 1, 0, tiles, w)];
            if tiles > w {
                cuts.push((0, c.s, w, tiles - w, w)); // aligned, to the end
                cuts.push((c.s - 2, 2, 0, w, w)); // one whole panel
                cuts.push((0, c.s, 1, tiles - 1, w)); // misaligned
            }
            cuts.push((0, c.s, 0, tiles, 8)); // another panel width
            for (k0, kc, j0, nc, pw) in cuts {
                let len = nc.div_ceil(pw) * kc * pw;
                let (mut a, mut b) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                got.pack(k0, kc, j0, nc, pw, &mut a);
                want.pack(k0, kc, j0, nc, pw, &mut b);
                assert_eq!(bits(&a), bits(&b), "{what} cut {:?}", (k0, kc, j0, nc, pw));
            }
            // Every stored panel is the one pack writes; other cuts are not stored.
            for j0 in (0..tiles).step_by(w) {
                let mut b = vec![f32::NAN; (c.s - 1) * w];
                want.pack(1, c.s - 1, j0, w.min(tiles - j0), w, &mut b);
                let stored = got.stored_panel(1, c.s - 1, j0, w).expect("a stored panel");
                assert_eq!(bits(stored), bits(&b), "{what} stored panel at {j0}");
            }
            assert!(got.stored_panel(0, c.s, 1, w).is_none(), "{what}");
            assert!(got.stored_panel(0, c.s, 0, w / 2).is_none(), "{what}");
        }
    }
    let mut r = Rng::new(6);
    for (x_shape, pad) in [([2, 5, 13, 37], (1, 1)), ([3, 4, 9, 9], (0, 2))] {
        let w_shape = [3, x_shape[1], 3, 3];
        let opts = Conv2dOptions {
            padding: pad,
            ..Conv2dOptions::default()
        };
        let g = Geom::new(&x_shape, &w_shape, opts);
        let c = forward_conv(&g);
        let x = randn(&mut r, &x_shape);
        for w in [8, 16, 48] {
            let rows = Grid::new::<F2>(&c, CHUNK_FLOATS).rows(&c);
            check::<F2>(&c, x.data(), w, (0, rows), 0);
            check::<F2>(&c, x.data(), w, (1, rows - 1), 0);
            check::<F2>(&c, x.data(), w, (1, rows), 3);
            let rows = Grid::new::<F4>(&c, CHUNK_FLOATS).rows(&c);
            check::<F4>(&c, x.data(), w, (0, rows), 0);
            check::<F4>(&c, x.data(), w, (1, rows), 0);
            check::<F4>(&c, x.data(), w, (0, rows), 2);
        }
    }
}

/// The forward kernel computed the plain way, for [`chunks_give_the_bits_of_the_plain_way`]:
/// `V` of every tile at once in the strided layout (`plan::transform_inputs`), each
/// `M_ξ` by the GEMM from those strided rows (copied into panels, on all threads), and
/// the output transform tile by tile on scalars.
fn plain_conv<T: Tile>(
    isa: Isa,
    c: &Conv3,
    src: &[f32],
    u: &[crate::gemm::PackedA],
    (bias, relu): (Option<&[f32]>, bool),
) -> Vec<f32> {
    use crate::gemm::{gemm_packed, MatMut, MatRef, Start};
    let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
    let grid = Grid::new::<T>(c, usize::MAX);
    let (rows, tw) = (grid.rows(c), grid.tw);
    let tiles = rows * tw;
    let mut v = vec![0.0f32; c.s * a2 * tiles];
    transform_inputs::<T>(Level::of(isa), c, &grid, src, (0, rows), &mut v);
    // M laid out [α²][R][tiles].
    let mut prod = vec![0.0f32; a2 * c.r * tiles];
    for (xi, m_xi) in prod.chunks_mut(c.r * tiles).enumerate() {
        let v_xi = MatRef::new(&v[xi * tiles..], c.s, tiles, a2 * tiles, 1);
        let m_xi = MatMut::row_major(m_xi, c.r, tiles);
        gemm_packed(&u[xi], &v_xi, Start::Beta(0.0), m_xi);
    }
    let mut out = vec![f32::NAN; c.n * c.r * c.oh * c.ow];
    let (mut mm, mut y) = ([0.0f32; 36], [0.0f32; 16]);
    for n in 0..c.n {
        for o in 0..c.r {
            for ty in 0..grid.th {
                for tx in 0..tw {
                    let j = (n * grid.th + ty) * tw + tx;
                    for (xi, v) in mm[..a2].iter_mut().enumerate() {
                        *v = prod[(xi * c.r + o) * tiles + j];
                    }
                    T::output(&mm[..a2], &mut y[..m * m]);
                    for i in 0..m {
                        for k in 0..m {
                            let (oy, ox) = (ty * m + i, tx * m + k);
                            if oy < c.oh && ox < c.ow {
                                let val = y[i * m + k] + bias.map_or(0.0, |b| b[o]);
                                let val = if relu { relu_f32(val) } else { val };
                                out[((n * c.r + o) * c.oh + oy) * c.ow + ox] = val;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The pipelined forward kernel gives the bits of [`plain_conv`] whatever the chunk
/// size (one GEMM panel of tiles, three, the default, the largest) and the thread
/// count, on ragged shapes: tile counts that are not multiples of the chunk, rows of
/// tiles cut by chunks, padding and negative offsets (the input gradient's), batches
/// of several samples, channel counts that are not multiples of the kernels' `MR`.
/// On the portable path (matrixmultiply) to rounding.
#[test]
fn chunks_give_the_bits_of_the_plain_way() {
    use crate::threads::with_threads;
    fn check<T: Tile>(isa: Isa, c: &Conv3, x: &[f32], w: &[f32], bias: &[f32]) {
        let a2 = T::ALPHA * T::ALPHA;
        let u = packed_filters::<T>(isa, w, c.r, c.s, false);
        let panel = crate::gemm::b_panel_width(isa);
        for store in [(None, false), (Some(bias), true)] {
            let want = plain_conv::<T>(isa, c, x, &u, store);
            let per_tile = a2 * (c.s + c.r);
            let budgets = [
                1,
                3 * panel * per_tile,
                forward::PIPELINE_FLOATS,
                usize::MAX,
            ];
            for budget in budgets {
                for threads in [1, 3] {
                    let mut got = vec![f32::NAN; want.len()];
                    with_threads(threads, || {
                        forward::conv::<T>(c, x, &u, store, &mut got, budget)
                    });
                    let what = format!(
                        "{} {isa} {c:?} budget {budget} threads {threads} relu {}",
                        std::any::type_name::<T>(),
                        store.1
                    );
                    if isa == Isa::Portable {
                        assert!(max_err(&got, &want) < 1e-5, "{what}");
                    } else {
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert!(bits(&got) == bits(&want), "{what}");
                    }
                }
            }
        }
    }
    let mut r = Rng::new(8);
    let shape = |n, s, h, w, r, py: isize, px: isize| Conv3 {
        n,
        s,
        h,
        w,
        r,
        oh: (h as isize + 2 * py - 2) as usize,
        ow: (w as isize + 2 * px - 2) as usize,
        py,
        px,
    };
    for c in [
        // 3 samples of 6 x 11 (F4) tiles: 198 tiles.
        shape(3, 13, 23, 41, 10, 1, 1),
        // The input gradient's offset 2, rows of 7 (F4) tiles.
        shape(2, 7, 9, 30, 19, 2, 0),
        // Offset −1 (padding 3), one sample.
        shape(1, 5, 12, 12, 6, -1, -1),
        // Rows of 35 (F2) tiles.
        shape(2, 3, 6, 70, 4, 1, 1),
    ] {
        let x: Vec<f32> = randn(&mut r, &[c.n, c.s, c.h, c.w]).data().to_vec();
        let w: Vec<f32> = randn(&mut r, &[c.r, c.s, 3, 3]).data().to_vec();
        let bias: Vec<f32> = randn(&mut r, &[c.r]).data().to_vec();
        for isa in paths() {
            check::<F2>(isa, &c, &x, &w, &bias);
            check::<F4>(isa, &c, &x, &w, &bias);
        }
    }
}
