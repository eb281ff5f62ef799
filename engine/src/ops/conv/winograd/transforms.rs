//! The Winograd transforms of F(2x2, 3x3) and F(4x4, 3x3), and their adjoints.
//!
//! A tile computes an `m × m` block of outputs of a 3x3 convolution from an `α × α`
//! block of inputs (`α = m + 2`):
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        g: 3×3 filter, d: α×α input, Y: m×m
//! ```
//!
//! Each 2-D transform is the 1-D one applied to every column, then to every row
//! ([`separable`]). The 1-D transforms are written out by hand, with the zeros of the
//! matrices skipped and shared sub-expressions computed once. They are plain f32
//! arithmetic in a fixed order (Rust never reassociates or fuses float operations), so
//! every code path, whatever the instruction set the compiler vectorises them with,
//! computes the same bits.
//!
//! The transforms run on [`Lanes`] of tiles (or filters) side by side; each lane does
//! exactly the scalar code's operations, so a lane and a scalar call give the same bits
//! (a test checks it).
//!
//! The backward passes need two adjoints: `dM = A dY Aᵀ` (of the output transform) for
//! the weight gradient, and `dg = Gᵀ dU G` (of the filter transform). The input
//! transform's adjoint is not needed: the input gradient is computed as another 3x3
//! convolution (see `mod.rs`).

use std::ops::{Add, Mul, Neg, Sub};

/// What the transforms compute on: one `f32`, or [`Lanes`] (the same value for several
/// tiles side by side). Only addition, subtraction, negation and multiplication by a
/// constant are used, each exactly rounded, so a lane computes the same bits as the
/// scalar code.
pub(crate) trait Num:
    Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> + Mul<f32, Output = Self>
{
}

impl Num for f32 {}

/// Tiles transformed together: the kernels run the transforms on this many tiles at a
/// time, one per lane, so the compiler can use vector instructions.
pub(crate) const LANES: usize = 8;

/// One value for each of [`LANES`] tiles. Every operation is elementwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Lanes(pub [f32; LANES]);

impl Lanes {
    pub const ZERO: Lanes = Lanes([0.0; LANES]);

    /// The first `LANES` floats of `s`, or all of `s` followed by zeros when it is
    /// shorter.
    #[inline(always)]
    pub fn load(s: &[f32]) -> Lanes {
        match s.get(..LANES) {
            // A fixed-size copy: one or two vector loads, no call to memcpy.
            Some(full) => Lanes(full.try_into().unwrap()),
            None => {
                let mut l = Lanes::ZERO;
                for (d, &v) in l.0.iter_mut().zip(s) {
                    *d = v;
                }
                l
            }
        }
    }

    /// Writes the first `min(LANES, d.len())` lanes to `d`.
    #[inline(always)]
    pub fn store(self, d: &mut [f32]) {
        match d.get_mut(..LANES) {
            Some(full) => full.copy_from_slice(&self.0),
            None => {
                for (d, v) in d.iter_mut().zip(self.0) {
                    *d = v;
                }
            }
        }
    }
}

impl Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}

impl Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] - o.0[i]))
    }
}

impl Neg for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn neg(self) -> Lanes {
        Lanes(self.0.map(|v| -v))
    }
}

impl Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(self, k: f32) -> Lanes {
        Lanes(self.0.map(|v| v * k))
    }
}

impl Num for Lanes {}

/// One tile size: its sizes and its five transforms. Every slice is row-major. The
/// transforms are generic over [`Num`] (one tile, or one per
/// lane), and so are the filter transforms (one filter, or one per lane).
pub(crate) trait Tile: Send + Sync + 'static {
    /// Outputs per side of a tile.
    const M: usize;
    /// Inputs per side of a tile, `M + 2`; a tile has `ALPHA²` transform positions.
    const ALPHA: usize;
    /// `V = Bᵀ d B` for an `α × α` input block `d`.
    fn input<N: Num>(d: &[N], v: &mut [N]);
    /// `U = G g Gᵀ` for a 3x3 filter `g`.
    fn filter<N: Num>(g: &[N], u: &mut [N]);
    /// `Y = Aᵀ M A`, the `m × m` outputs of an `α × α` product `M`.
    fn output<N: Num>(m: &[N], y: &mut [N]);
    /// `dM = A dY Aᵀ`: the gradient of an `α × α` product from its outputs' gradient.
    fn output_adjoint<N: Num>(dy: &[N], dm: &mut [N]);
    /// `dg = Gᵀ dU G`: a filter's gradient from the gradient of its transform.
    fn filter_adjoint<N: Num>(du: &[N], dg: &mut [N]);
}

/// `out = P x Pᵀ` for an `I × I` block `x`, where `f` is the 1-D map `v ↦ P v`
/// (`P` has `O` rows and `I` columns): `f` on every column of `x`, then on every row of
/// the result.
#[inline(always)]
fn separable<N: Num, const I: usize, const O: usize>(
    x: &[N],
    out: &mut [N],
    f: fn([N; I]) -> [N; O],
) {
    let x = &x[..I * I];
    let out = &mut out[..O * O];
    // t = P x, an O × I block, kept as O rows.
    let mut t = [[x[0]; I]; O];
    for k in 0..I {
        let col = f(std::array::from_fn(|j| x[j * I + k]));
        for (row, v) in t.iter_mut().zip(col) {
            row[k] = v;
        }
    }
    // out = t Pᵀ: row r of out is P applied to row r of t.
    for (r, row) in t.into_iter().enumerate() {
        out[r * O..(r + 1) * O].copy_from_slice(&f(row));
    }
}

/// F(2x2, 3x3): interpolation points 0, 1, −1 and ∞.
///
/// ```text
///      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤
/// Bᵀ = ⎢0  1  1  0⎥    G = ⎢1/2  1/2  1/2⎥    Aᵀ = ⎡1  1  1  0⎤
///      ⎢0 −1  1  0⎥        ⎢1/2 −1/2  1/2⎥         ⎣0  1 −1 −1⎦
///      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
/// ```
pub(crate) struct F2;

/// The 1-D maps of F(2x2, 3x3): `v ↦ Bᵀv`, `Gv`, `Aᵀv`, `Av`, `Gᵀv`. Named functions
/// rather than closures, so that `#[inline(always)]` puts them inside every build of
/// the loops (see `simd.rs`).
impl F2 {
    #[inline(always)]
    fn bt<N: Num>([d0, d1, d2, d3]: [N; 4]) -> [N; 4] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
    }

    #[inline(always)]
    fn g<N: Num>([g0, g1, g2]: [N; 3]) -> [N; 4] {
        let (s, h) = ((g0 + g2) * 0.5, g1 * 0.5);
        [g0, s + h, s - h, g2]
    }

    #[inline(always)]
    fn at<N: Num>([m0, m1, m2, m3]: [N; 4]) -> [N; 2] {
        [m0 + m1 + m2, m1 - m2 - m3]
    }

    /// `A = (Aᵀ)ᵀ`, 4×2.
    #[inline(always)]
    fn a<N: Num>([y0, y1]: [N; 2]) -> [N; 4] {
        [y0, y0 + y1, y0 - y1, -y1]
    }

    /// `Gᵀ`, 3×4.
    #[inline(always)]
    fn gt<N: Num>([u0, u1, u2, u3]: [N; 4]) -> [N; 3] {
        let (s, d) = ((u1 + u2) * 0.5, (u1 - u2) * 0.5);
        [u0 + s, d, s + u3]
    }
}

impl Tile for F2 {
    const M: usize = 2;
    const ALPHA: usize = 4;

    #[inline(always)]
    fn input<N: Num>(d: &[N], v: &mut [N]) {
        separable::<N, 4, 4>(d, v, F2::bt);
    }

    #[inline(always)]
    fn filter<N: Num>(g: &[N], u: &mut [N]) {
        separable::<N, 3, 4>(g, u, F2::g);
    }

    #[inline(always)]
    fn output<N: Num>(m: &[N], y: &mut [N]) {
        separable::<N, 4, 2>(m, y, F2::at);
    }

    #[inline(always)]
    fn output_adjoint<N: Num>(dy: &[N], dm: &mut [N]) {
        separable::<N, 2, 4>(dy, dm, F2::a);
    }

    #[inline(always)]
    fn filter_adjoint<N: Num>(du: &[N], dg: &mut [N]) {
        separable::<N, 4, 3>(du, dg, F2::gt);
    }
}

/// F(4x4, 3x3): interpolation points 0, 1, −1, 2, −2 and ∞.
///
/// ```text
///      ⎡4  0 −5  0  1  0⎤        ⎡ 1/4    0     0  ⎤
///      ⎢0 −4 −4  1  1  0⎥        ⎢−1/6  −1/6  −1/6 ⎥         ⎡1  1  1  1  1  0⎤
/// Bᵀ = ⎢0  4 −4 −1  1  0⎥    G = ⎢−1/6   1/6  −1/6 ⎥    Aᵀ = ⎢0  1 −1  2 −2  0⎥
///      ⎢0 −2 −1  2  1  0⎥        ⎢1/24  1/12   1/6 ⎥         ⎢0  1  1  4  4  0⎥
///      ⎢0  2 −1 −2  1  0⎥        ⎢1/24 −1/12   1/6 ⎥         ⎣0  1 −1  8 −8  1⎦
///      ⎣0  4  0 −5  0  1⎦        ⎣  0     0     1  ⎦
/// ```
pub(crate) struct F4;

/// The 1-D maps of F(4x4, 3x3), as for [`F2`].
impl F4 {
    #[inline(always)]
    fn bt<N: Num>([d0, d1, d2, d3, d4, d5]: [N; 6]) -> [N; 6] {
        let (a, b) = (d4 - d2 * 4.0, d3 - d1 * 4.0); // rows 1, 2: a ± b
        let (c, e) = (d4 - d2, (d3 - d1) * 2.0); // rows 3, 4: c ± e
        [
            d0 * 4.0 - d2 * 5.0 + d4,
            a + b,
            a - b,
            c + e,
            c - e,
            d1 * 4.0 - d3 * 5.0 + d5,
        ]
    }

    /// 1/6, 1/12 and 1/24 are not exact in binary: each is the nearest f32, and a
    /// multiplication by it (faster than a division, and as deterministic).
    #[inline(always)]
    fn g<N: Num>([g0, g1, g2]: [N; 3]) -> [N; 6] {
        let s = g0 + g2;
        let (p, q) = (g0 * (1.0 / 24.0) + g2 * (1.0 / 6.0), g1 * (1.0 / 12.0));
        [
            g0 * 0.25,
            (s + g1) * (-1.0 / 6.0),
            (s - g1) * (-1.0 / 6.0),
            p + q,
            p - q,
            g2,
        ]
    }

    #[inline(always)]
    fn at<N: Num>([m0, m1, m2, m3, m4, m5]: [N; 6]) -> [N; 4] {
        let (s12, d12) = (m1 + m2, m1 - m2);
        let (s34, d34) = (m3 + m4, m3 - m4);
        [
            m0 + s12 + s34,
            d12 + d34 * 2.0,
            s12 + s34 * 4.0,
            d12 + d34 * 8.0 + m5,
        ]
    }

    /// `A = (Aᵀ)ᵀ`, 6×4.
    #[inline(always)]
    fn a<N: Num>([y0, y1, y2, y3]: [N; 4]) -> [N; 6] {
        let (e1, o1) = (y0 + y2, y1 + y3);
        let (e2, o2) = (y0 + y2 * 4.0, y1 * 2.0 + y3 * 8.0);
        [y0, e1 + o1, e1 - o1, e2 + o2, e2 - o2, y3]
    }

    /// `Gᵀ`, 3×6.
    #[inline(always)]
    fn gt<N: Num>([u0, u1, u2, u3, u4, u5]: [N; 6]) -> [N; 3] {
        let (s12, d12) = (u1 + u2, u1 - u2);
        let (s34, d34) = (u3 + u4, u3 - u4);
        [
            u0 * 0.25 - s12 * (1.0 / 6.0) + s34 * (1.0 / 24.0),
            d34 * (1.0 / 12.0) - d12 * (1.0 / 6.0),
            (s34 - s12) * (1.0 / 6.0) + u5,
        ]
    }
}

impl Tile for F4 {
    const M: usize = 4;
    const ALPHA: usize = 6;

    #[inline(always)]
    fn input<N: Num>(d: &[N], v: &mut [N]) {
        separable::<N, 6, 6>(d, v, F4::bt);
    }

    #[inline(always)]
    fn filter<N: Num>(g: &[N], u: &mut [N]) {
        separable::<N, 3, 6>(g, u, F4::g);
    }

    #[inline(always)]
    fn output<N: Num>(m: &[N], y: &mut [N]) {
        separable::<N, 6, 4>(m, y, F4::at);
    }

    #[inline(always)]
    fn output_adjoint<N: Num>(dy: &[N], dm: &mut [N]) {
        separable::<N, 4, 6>(dy, dm, F4::a);
    }

    #[inline(always)]
    fn filter_adjoint<N: Num>(du: &[N], dg: &mut [N]) {
        separable::<N, 6, 3>(du, dg, F4::gt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The matrices of the doc comments, in f64, as (Bᵀ, G, Aᵀ).
    fn matrices(alpha: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        if alpha == 4 {
            (
                vec![
                    1., 0., -1., 0., 0., 1., 1., 0., 0., -1., 1., 0., 0., 1., 0., -1.,
                ],
                vec![1., 0., 0., 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0., 0., 1.],
                vec![1., 1., 1., 0., 0., 1., -1., -1.],
            )
        } else {
            (
                vec![
                    4., 0., -5., 0., 1., 0., //
                    0., -4., -4., 1., 1., 0., //
                    0., 4., -4., -1., 1., 0., //
                    0., -2., -1., 2., 1., 0., //
                    0., 2., -1., -2., 1., 0., //
                    0., 4., 0., -5., 0., 1.,
                ],
                vec![
                    0.25,
                    0.,
                    0.,
                    -1. / 6.,
                    -1. / 6.,
                    -1. / 6.,
                    -1. / 6.,
                    1. / 6.,
                    -1. / 6.,
                    1. / 24.,
                    1. / 12.,
                    1. / 6.,
                    1. / 24.,
                    -1. / 12.,
                    1. / 6.,
                    0.,
                    0.,
                    1.,
                ],
                vec![
                    1., 1., 1., 1., 1., 0., //
                    0., 1., -1., 2., -2., 0., //
                    0., 1., 1., 4., 4., 0., //
                    0., 1., -1., 8., -8., 1.,
                ],
            )
        }
    }

    /// `P x Qᵀ` for row-major `P: (r, i)`, `x: (i, j)`, `Q: (s, j)`, in f64.
    fn sandwich(p: &[f64], x: &[f64], q: &[f64], r: usize, i: usize, j: usize) -> Vec<f64> {
        let s = q.len() / j;
        let mut out = vec![0.0; r * s];
        for a in 0..r {
            for b in 0..s {
                for k in 0..i {
                    for l in 0..j {
                        out[a * s + b] += p[a * i + k] * x[k * j + l] * q[b * j + l];
                    }
                }
            }
        }
        out
    }

    fn transpose(m: &[f64], rows: usize) -> Vec<f64> {
        let cols = m.len() / rows;
        (0..cols * rows)
            .map(|i| m[(i % rows) * cols + i / rows])
            .collect()
    }

    fn check_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    /// Each hand-written transform equals the product with the matrix of the doc
    /// comment, and the adjoints are the transposed products.
    fn transforms_match_matrices<T: Tile>() {
        let (a, m) = (T::ALPHA, T::M);
        let (bt, g, at) = matrices(a);
        let (gt, am) = (transpose(&g, a), transpose(&at, m));
        let mut r = Rng::new(7);
        let rand = |r: &mut Rng, n: usize| -> Vec<f32> { r.normal_vec(n, 0.0, 1.0) };
        let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };

        let d = rand(&mut r, a * a);
        let mut v = vec![0.0; a * a];
        T::input(&d, &mut v);
        check_close("Bᵀ d B", &v, &sandwich(&bt, &wide(&d), &bt, a, a, a));

        let w = rand(&mut r, 9);
        let mut u = vec![0.0; a * a];
        T::filter(&w, &mut u);
        check_close("G g Gᵀ", &u, &sandwich(&g, &wide(&w), &g, a, 3, 3));

        let mm = rand(&mut r, a * a);
        let mut y = vec![0.0; m * m];
        T::output(&mm, &mut y);
        check_close("Aᵀ M A", &y, &sandwich(&at, &wide(&mm), &at, m, a, a));

        let dy = rand(&mut r, m * m);
        let mut dm = vec![0.0; a * a];
        T::output_adjoint(&dy, &mut dm);
        check_close("A dY Aᵀ", &dm, &sandwich(&am, &wide(&dy), &am, a, m, m));

        let du = rand(&mut r, a * a);
        let mut dg = [0.0; 9];
        T::filter_adjoint(&du, &mut dg);
        check_close("Gᵀ dU G", &dg, &sandwich(&gt, &wide(&du), &gt, 3, a, a));
    }

    /// Each lane of a [`Lanes`] call gives the bits of the scalar call on that lane.
    fn lanes_equal_scalar<T: Tile>() {
        let (a, m) = (T::ALPHA, T::M);
        let mut r = Rng::new(9);
        let mut rand = |n: usize| -> Vec<Lanes> {
            (0..n)
                .map(|_| Lanes(std::array::from_fn(|_| r.normal())))
                .collect()
        };
        let lane = |v: &[Lanes], l: usize| -> Vec<f32> { v.iter().map(|x| x.0[l]).collect() };
        type F<N> = fn(&[N], &mut [N]);
        let cases: [(F<Lanes>, F<f32>, usize, usize); 3] = [
            (T::input::<Lanes>, T::input::<f32>, a * a, a * a),
            (T::output::<Lanes>, T::output::<f32>, a * a, m * m),
            (
                T::output_adjoint::<Lanes>,
                T::output_adjoint::<f32>,
                m * m,
                a * a,
            ),
        ];
        for (vector, scalar, ni, no) in cases {
            let x = rand(ni);
            let mut y = vec![Lanes::ZERO; no];
            vector(&x, &mut y);
            for l in 0..LANES {
                let mut want = vec![0.0f32; no];
                scalar(&lane(&x, l), &mut want);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&lane(&y, l)), bits(&want), "lane {l}");
            }
        }
    }

    #[test]
    fn lanes_give_the_scalar_bits() {
        lanes_equal_scalar::<F2>();
        lanes_equal_scalar::<F4>();
    }

    #[test]
    fn f2_transforms_match_their_matrices() {
        transforms_match_matrices::<F2>();
    }

    #[test]
    fn f4_transforms_match_their_matrices() {
        transforms_match_matrices::<F4>();
    }

    /// The algorithm itself: one tile of Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the direct 3x3
    /// correlation of d with g, on small integers (exact in f32 for F(2x2); F(4x4)'s
    /// G has 1/6 and 1/24, so there it is within rounding).
    fn one_tile_is_a_correlation<T: Tile>() {
        let (a, m) = (T::ALPHA, T::M);
        let mut r = Rng::new(3);
        for _ in 0..20 {
            let d: Vec<f32> = (0..a * a)
                .map(|_| (r.uniform_range(-4.0, 4.0)).round())
                .collect();
            let g: [f32; 9] = std::array::from_fn(|_| r.uniform_range(-3.0, 3.0).round());
            let (mut v, mut u, mut y) = (vec![0.0; a * a], vec![0.0; a * a], vec![0.0; m * m]);
            T::input(&d, &mut v);
            T::filter(&g, &mut u);
            let prod: Vec<f32> = u.iter().zip(&v).map(|(u, v)| u * v).collect();
            T::output(&prod, &mut y);
            for oy in 0..m {
                for ox in 0..m {
                    let mut want = 0.0f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            want += (d[(oy + ky) * a + ox + kx] * g[ky * 3 + kx]) as f64;
                        }
                    }
                    let got = y[oy * m + ox] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{}: output ({oy}, {ox}): {got} vs {want}",
                        std::any::type_name::<T>()
                    );
                }
            }
        }
    }

    #[test]
    fn one_f2_tile_is_a_correlation() {
        one_tile_is_a_correlation::<F2>();
    }

    #[test]
    fn one_f4_tile_is_a_correlation() {
        one_tile_is_a_correlation::<F4>();
    }
}
