//! focal's GEMM on every path the CPU has, against the naive reference (f64 sums),
//! over a table of shapes: 1, primes, the tails of every tile size (6, 8, 16, 48), the
//! edges of every cache block (KC, MC, NC), transposed and strided operands, and the
//! α/β cases. Then the promises of `engine/src/gemm/mod.rs`: the AVX2 and AVX-512 paths
//! give the same bits, and so does every thread count.
//!
//! A path the CPU lacks is skipped with a notice on stdout (run with `--nocapture` to
//! see it), never silently: the test names the paths it ran.
//!
//! Tolerance, as in `kernels.rs`: `1e-4·(|reference| + √K)` scaled by `|α|`, far above
//! the f32 rounding of a K-term sum and far below one wrong term.

use focal_engine::gemm::{
    gemm_packed, gemm_panels, gemm_with, Isa, MatMut, MatRef, PackedA, Panels, Start,
};
use focal_engine::naive;
use focal_engine::threads::with_threads;
use focal_engine::Rng;

/// The paths this CPU can run, printing a notice for each one it cannot.
fn paths() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| match isa.check() {
            Ok(_) => true,
            Err(e) => {
                println!("skipping the {isa} path: {e}");
                false
            }
        })
        .collect()
}

/// (m, k, n): 1, primes, tails around every MR (6, 8) and NR (16, 48), and around
/// KC = 256, MC = 120/128, NC = 480/512.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (2, 3, 5),
    (7, 11, 13),
    (5, 1, 17),
    (6, 16, 16),
    (8, 9, 48),
    (13, 37, 47),
    (17, 31, 49),
    (23, 257, 33),
    (31, 255, 95),
    (49, 64, 97),
    (97, 513, 31),
    (121, 29, 130),
    (131, 7, 481),
    (257, 65, 514),
];

/// One operand layout: how a logical `rows × cols` matrix is stored.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    /// Stored as its transpose, read back with `.t()`.
    Transposed,
    /// Row-major with every other column unused and padded rows.
    Strided,
}

/// Stores `v` (row-major `rows × cols`) in `layout`; returns the buffer and strides.
fn store(v: &[f32], rows: usize, cols: usize, layout: Layout) -> (Vec<f32>, usize, usize) {
    match layout {
        Layout::RowMajor => (v.to_vec(), cols, 1),
        Layout::Transposed => {
            let mut t = vec![0.0; v.len()];
            for i in 0..rows {
                for j in 0..cols {
                    t[j * rows + i] = v[i * cols + j];
                }
            }
            (t, 1, rows)
        }
        Layout::Strided => {
            let rs = 2 * cols + 3;
            let mut s = vec![f32::NAN; rows.max(1) * rs];
            for i in 0..rows {
                for j in 0..cols {
                    s[i * rs + 2 * j] = v[i * cols + j];
                }
            }
            (s, rs, 2)
        }
    }
}

fn load(buf: &[f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| buf[(i / cols) * rs + (i % cols) * cs])
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], k: usize, scale: f32) {
    let slack = (k as f32).sqrt();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * (w.abs() + slack * scale.max(1.0));
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, reference {w} (tolerance {tol})"
        );
    }
}

/// `α·A·B + β·C` by the naive reference, all row-major.
#[allow(clippy::too_many_arguments)]
fn reference(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &[f32],
) -> Vec<f32> {
    let mut want = c.to_vec();
    naive::gemm_strided(
        m,
        k,
        n,
        alpha,
        a,
        (k, 1),
        b,
        (n, 1),
        beta,
        &mut want,
        (n, 1),
    );
    want
}

/// Runs `C ← α·A·B + β·C` on `isa` with the given layouts; returns C row-major.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c0: &[f32],
    layouts: [Layout; 3],
) -> Vec<f32> {
    let (ab, rsa, csa) = store(a, m, k, layouts[0]);
    let (bb, rsb, csb) = store(b, k, n, layouts[1]);
    let (mut cb, rsc, csc) = store(c0, m, n, layouts[2]);
    gemm_with(
        isa,
        alpha,
        MatRef::new(&ab, m, k, rsa, csa),
        MatRef::new(&bb, k, n, rsb, csb),
        beta,
        MatMut::new(&mut cb, m, n, rsc, csc),
    );
    load(&cb, m, n, rsc, csc)
}

#[test]
fn every_path_matches_the_reference_over_the_shape_table() {
    use Layout::*;
    let mut r = Rng::new(1);
    let paths = paths();
    println!("paths tested: {paths:?}");
    for &(m, k, n) in SHAPES {
        let a = r.normal_vec(m * k, 0.0, 1.0);
        let b = r.normal_vec(k * n, 0.0, 1.0);
        let c0 = r.normal_vec(m * n, 0.0, 1.0);
        for (alpha, beta, layouts) in [
            (1.0, 0.0, [RowMajor, RowMajor, RowMajor]),
            (0.5, 2.0, [Transposed, RowMajor, RowMajor]),
            (1.0, 1.0, [RowMajor, Transposed, Transposed]),
            (-1.5, 0.25, [Strided, Strided, Strided]),
            (2.0, -1.0, [Transposed, Transposed, RowMajor]),
        ] {
            let want = reference(m, k, n, alpha, &a, &b, beta, &c0);
            for &isa in &paths {
                let got = run(isa, (m, k, n), alpha, &a, &b, beta, &c0, layouts);
                let what = format!("{isa} {m}x{k}x{n} α={alpha} β={beta} {layouts:?}");
                assert_close(&what, &got, &want, k, alpha.abs());
            }
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c_and_empty_k_scales_c() {
    let mut r = Rng::new(2);
    for isa in paths() {
        let (m, k, n) = (9, 5, 50);
        let a = r.normal_vec(m * k, 0.0, 1.0);
        let b = r.normal_vec(k * n, 0.0, 1.0);
        let mut c = vec![f32::NAN; m * n];
        gemm_with(
            isa,
            1.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            0.0,
            MatMut::row_major(&mut c, m, n),
        );
        assert_close(
            &format!("{isa} NaN C"),
            &c,
            &naive::gemm(m, k, n, &a, &b),
            k,
            1.0,
        );

        let mut c = vec![1.0, 2.0, f32::NAN];
        gemm_with(
            isa,
            1.0,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 1),
            3.0,
            MatMut::row_major(&mut c[..2], 2, 1),
        );
        assert_eq!(&c[..2], &[3.0, 6.0], "{isa}: K = 0 leaves β·C");
        gemm_with(
            isa,
            1.0,
            MatRef::row_major(&[], 1, 0),
            MatRef::row_major(&[], 0, 3),
            0.0,
            MatMut::row_major(&mut c, 1, 3),
        );
        assert_eq!(c, [0.0, 0.0, 0.0], "{isa}: K = 0, β = 0 gives zeros");
    }
}

#[test]
fn row_bias_and_prepacked_a_reused_for_several_b() {
    let mut r = Rng::new(3);
    for isa in paths() {
        for &(m, k, n) in &[(1, 1, 1), (13, 300, 70), (64, 27, 130)] {
            let a = r.normal_vec(m * k, 0.0, 1.0);
            let bias = r.normal_vec(m, 0.0, 1.0);
            let packed = PackedA::from_panels(isa, 1.0, &MatRef::row_major(&a, m, k).t());
            assert_eq!((packed.rows(), packed.cols(), packed.isa()), (m, k, isa));
            for round in 0..2 {
                let b = r.normal_vec(k * n, 0.0, 1.0);
                let mut want = naive::gemm(m, k, n, &a, &b);
                for (i, row) in want.chunks_mut(n).enumerate() {
                    row.iter_mut().for_each(|v| *v += bias[i]);
                }
                let mut c = vec![f32::NAN; m * n];
                gemm_packed(
                    &packed,
                    &MatRef::row_major(&b, k, n),
                    Start::RowBias(&bias),
                    MatMut::row_major(&mut c, m, n),
                );
                assert_close(
                    &format!("{isa} packed {m}x{k}x{n} round {round}"),
                    &c,
                    &want,
                    k,
                    1.0,
                );
                // The same through the general entry point, A as a source of Aᵀ.
                let mut c2 = vec![f32::NAN; m * n];
                gemm_panels(
                    isa,
                    1.0,
                    &MatRef::row_major(&a, m, k).t(),
                    &MatRef::row_major(&b, k, n),
                    Start::RowBias(&bias),
                    MatMut::row_major(&mut c2, m, n),
                );
                assert_eq!(bits(&c), bits(&c2), "{isa}: packed and unpacked A differ");
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A source that is not a strided matrix (it only packs), like the convolution's
/// implicit im2col: `B[k, j] = sin(k·0.37 + j·0.11)`.
struct Computed(usize, usize);

impl Panels for Computed {
    fn dims(&self) -> (usize, usize) {
        (self.0, self.1)
    }
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        for (p, panel) in out.chunks_mut(kc * w).take(nc.div_ceil(w)).enumerate() {
            for k in 0..kc {
                for jj in 0..w {
                    let j = j0 + p * w + jj;
                    panel[k * w + jj] = if j < j0 + nc {
                        self.value(k0 + k, j)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

impl Computed {
    fn value(&self, k: usize, j: usize) -> f32 {
        (k as f32 * 0.37 + j as f32 * 0.11).sin()
    }
}

#[test]
fn a_packing_source_multiplies_like_its_matrix() {
    let mut r = Rng::new(4);
    for isa in paths() {
        let (m, k, n) = (19, 600, 530);
        let a = r.normal_vec(m * k, 0.0, 1.0);
        let src = Computed(k, n);
        let b: Vec<f32> = (0..k * n).map(|i| src.value(i / n, i % n)).collect();
        let mut c = vec![0.0; m * n];
        gemm_panels(
            isa,
            1.0,
            &MatRef::row_major(&a, m, k).t(),
            &src,
            Start::Beta(0.0),
            MatMut::row_major(&mut c, m, n),
        );
        assert_close(
            &format!("{isa} computed B"),
            &c,
            &naive::gemm(m, k, n, &a, &b),
            k,
            1.0,
        );
    }
}

#[test]
fn avx2_and_avx512_give_the_same_bits() {
    use Layout::*;
    if !Isa::Avx512.available() || !Isa::Avx2.available() {
        println!(
            "skipping: the CPU lacks {} (both SIMD paths are needed)",
            if Isa::Avx512.available() {
                "AVX2"
            } else {
                "AVX-512"
            }
        );
        return;
    }
    let mut r = Rng::new(5);
    for &(m, k, n) in SHAPES.iter().chain(&[(300, 1100, 700)]) {
        let a = r.normal_vec(m * k, 0.0, 1.0);
        let b = r.normal_vec(k * n, 0.0, 1.0);
        let c0 = r.normal_vec(m * n, 0.0, 1.0);
        for (alpha, beta, layouts) in [
            (1.0, 0.0, [RowMajor, RowMajor, RowMajor]),
            (0.7, 1.3, [Transposed, Strided, Transposed]),
            (1.0, 1.0, [Strided, Transposed, RowMajor]),
        ] {
            let x = run(Isa::Avx512, (m, k, n), alpha, &a, &b, beta, &c0, layouts);
            let y = run(Isa::Avx2, (m, k, n), alpha, &a, &b, beta, &c0, layouts);
            assert!(
                bits(&x) == bits(&y),
                "{m}x{k}x{n} α={alpha} β={beta} {layouts:?}: AVX2 and AVX-512 differ"
            );
        }
    }
}

/// Products large enough to be cut into tasks, on 2 and 3 threads: the columns are
/// cut in vectors (1024 into 512 and 512, each task ending on a narrower tile; 1000 into
/// pieces that are no multiple of 48), rows in panels, with every layout, α and β, and
/// the result still matches the reference.
#[test]
fn products_cut_into_tasks_match_the_reference() {
    use Layout::*;
    let mut r = Rng::new(7);
    let paths = paths();
    for &(m, k, n) in &[
        (64, 300, 1024),
        (129, 77, 1000),
        (300, 50, 333),
        (520, 40, 40),
    ] {
        let a = r.normal_vec(m * k, 0.0, 1.0);
        let b = r.normal_vec(k * n, 0.0, 1.0);
        let c0 = r.normal_vec(m * n, 0.0, 1.0);
        for (alpha, beta, layouts) in [
            (1.0, 0.0, [RowMajor, RowMajor, RowMajor]),
            (0.5, 2.0, [Transposed, RowMajor, Strided]),
            (-1.5, 1.0, [Strided, Transposed, RowMajor]),
        ] {
            let want = reference(m, k, n, alpha, &a, &b, beta, &c0);
            for &isa in &paths {
                for threads in [2, 3] {
                    let got = with_threads(threads, || {
                        run(isa, (m, k, n), alpha, &a, &b, beta, &c0, layouts)
                    });
                    let what = format!(
                        "{isa} {m}x{k}x{n} α={alpha} β={beta} {layouts:?}, {threads} threads"
                    );
                    assert_close(&what, &got, &want, k, alpha.abs());
                }
            }
        }
    }
}

#[test]
fn every_thread_count_gives_the_same_bits() {
    let mut r = Rng::new(6);
    for isa in paths() {
        for &(m, k, n) in &[(300, 700, 650), (7, 2000, 1500), (1000, 300, 9)] {
            let a = r.normal_vec(m * k, 0.0, 1.0);
            let b = r.normal_vec(k * n, 0.0, 1.0);
            let once = |threads: usize| {
                with_threads(threads, || {
                    let mut c = vec![0.0; m * n];
                    gemm_with(
                        isa,
                        1.0,
                        MatRef::row_major(&a, m, k),
                        MatRef::row_major(&b, k, n),
                        0.0,
                        MatMut::row_major(&mut c, m, n),
                    );
                    bits(&c)
                })
            };
            let one = once(1);
            for t in [2, 3, 4] {
                assert!(
                    one == once(t),
                    "{isa} {m}x{k}x{n}: 1 and {t} threads differ"
                );
            }
        }
    }
}

#[test]
fn mismatched_sizes_are_rejected_with_the_sizes() {
    let e = std::panic::catch_unwind(|| {
        let mut c = vec![0.0; 4];
        gemm_with(
            Isa::Portable,
            1.0,
            MatRef::row_major(&[0.0; 6], 2, 3),
            MatRef::row_major(&[0.0; 4], 2, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
    })
    .unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("A is 2 x 3 but B is 2 x 2"), "{msg}");
}
