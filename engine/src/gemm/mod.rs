//! focal's own GEMM: `C ← α·A·B + β·C` (or `C ← A·B + bias`) on f32 matrices.
//!
//! ```text
//!   operands          view.rs     MatRef / MatMut: slice, rows, cols, strides, .t()
//!   packing           pack.rs     blocks of A and B into micro-panel order (Panels)
//!                     panel_width.rs  each path's B micro-panel width, for callers
//!                                 that lay out B in that order themselves
//!   loop nest         driver.rs   KC / NC blocking, tasks for the threads
//!   micro-kernels     avx512.rs   8 × 48 tile, AVX-512F + FMA
//!                     avx2.rs     6 × 16 tile, AVX2 + FMA
//!   portable path     portable.rs matrixmultiply, for any other CPU
//!   choice of path    isa.rs      detected once; FOCAL_ISA=avx512|avx2|portable forces one
//!   peak              peak.rs     the measured FMA peak, for `focal bench peak`
//! ```
//!
//! **Determinism.** On the two SIMD paths every element of `C` is one chain of fused
//! multiply-adds over `k = 0, 1, …, K−1`, starting from `β·C` (or 0, or the bias; see
//! `kernel.rs`), with `α` applied to `A` once as it is packed. Blocking and threads
//! cut `C` into tiles and `K` into blocks, but a tile continues its chains from the
//! stored f32 accumulator, so neither the tile shape nor the thread count changes a
//! bit: AVX2 and AVX-512 give the same result, on any number of threads. The
//! `portable` path agrees with them to rounding.
//!
//! **Operands.** [`gemm`] takes strided matrices ([`MatRef`], [`MatMut`]). The general
//! form, [`gemm_panels`], takes `A` and `B` as [`Panels`]: anything that can write a
//! block of itself in micro-panel order. The convolution uses that to pack `B` straight
//! from the image (implicit im2col) without building a column matrix. [`PackedA`] packs
//! `A` once for use in many products (a convolution's weights, reused for every image
//! and tile).

mod avx2;
mod avx512;
pub(crate) mod driver;
pub mod isa;
mod kernel;
mod pack;
mod panel_width;
pub mod peak;
mod portable;
mod view;

pub use isa::Isa;
pub(crate) use pack::AlignedBuf;
pub use pack::Panels;
pub use panel_width::b_panel_width;
pub use view::{MatMut, MatRef};

use driver::{ASide, PackedPanels};

/// What `C` starts from: the product is added to it.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// `β·C`; with `β = 0` the old `C` is ignored (it may hold anything, even NaN).
    Beta(f32),
    /// `bias[i]` on every element of row `i` (the old `C` is ignored); `bias` has at
    /// least one value per row of `C`.
    RowBias(&'a [f32]),
}

/// `C ← α·A·B + β·C` on the process's path ([`isa::active`]), on all threads when the
/// product is large enough. `A: (m, k)`, `B: (k, n)`, `C: (m, n)`.
///
/// # Panics
/// When the sizes do not match.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    gemm_with(isa::active(), alpha, a, b, beta, c)
}

/// [`gemm`] on a given path.
///
/// # Panics
/// When the sizes do not match, or when the CPU lacks the path's instruction set.
pub fn gemm_with(isa: Isa, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    assert_eq!(
        a.cols(),
        b.rows(),
        "gemm: A is {} x {} but B is {} x {}",
        a.rows(),
        a.cols(),
        b.rows(),
        b.cols()
    );
    gemm_panels(isa, alpha, &a.t(), &b, Start::Beta(beta), c)
}

/// `C ← α·A·B + start`, with `A` given by a source of `Aᵀ` (`K × m`) and `B` by a
/// source of `B` (`K × n`): the general form every other entry point calls.
///
/// # Panics
/// When the sizes do not match, when a row bias is shorter than `C`'s rows, or when the
/// CPU lacks the path's instruction set.
pub fn gemm_panels(isa: Isa, alpha: f32, at: &dyn Panels, b: &dyn Panels, start: Start, c: MatMut) {
    let (k, m) = at.dims();
    check(isa, m, k, b, &start, &c);
    if c.rows() == 0 || c.cols() == 0 {
        return;
    }
    if k == 0 {
        return apply_start(&start, c);
    }
    match isa {
        Isa::Portable => match at.as_matrix() {
            Some(atm) => portable::gemm(alpha, atm.t(), b, start, c, true),
            None => {
                let plain = plain_a(at, 1.0);
                let plain = MatRef::row_major(&plain, k, m).t();
                portable::gemm(alpha, plain, b, start, c, true)
            }
        },
        _ => simd(isa, ASide::Source(at, alpha), b, start, c, true),
    }
}

/// The SIMD driver for `isa` (which the caller checked the CPU has), on all threads
/// when `parallel` and the product is large enough, else on the calling thread.
fn simd(isa: Isa, a: ASide, b: &dyn Panels, start: Start, c: MatMut, parallel: bool) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => driver::gemm::<avx512::Avx512>(a, b, start, c, parallel),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => driver::gemm::<avx2::Avx2>(a, b, start, c, parallel),
        _ => unreachable!("gemm: no SIMD driver for the {isa} path"),
    }
}

/// Size and path checks shared by every entry point.
fn check(isa: Isa, m: usize, k: usize, b: &dyn Panels, start: &Start, c: &MatMut) {
    if let Err(e) = isa.check() {
        panic!("gemm: {e}");
    }
    let (kb, n) = b.dims();
    assert!(
        kb == k && c.rows() == m && c.cols() == n,
        "gemm: A is {m} x {k}, B is {kb} x {n}, C is {} x {}",
        c.rows(),
        c.cols()
    );
    if let Start::RowBias(bias) = start {
        assert!(
            bias.len() >= m,
            "gemm: a bias of {} values for {m} rows",
            bias.len()
        );
    }
}

/// `C ← start` alone (an empty inner dimension).
fn apply_start(start: &Start, mut c: MatMut) {
    for i in 0..c.rows() {
        for j in 0..c.cols() {
            let v = match *start {
                Start::Beta(0.0) => 0.0,
                Start::Beta(b) => b * c.at(i, j),
                Start::RowBias(bias) => bias[i],
            };
            c.set(i, j, v);
        }
    }
}

/// `α·Aᵀ` written out row-major (`K × m`) from a source of `Aᵀ`.
fn plain_a(at: &dyn Panels, alpha: f32) -> Vec<f32> {
    let (k, m) = at.dims();
    let mut plain = vec![0.0f32; k * m];
    if k * m > 0 {
        at.pack(0, k, 0, m, m, &mut plain);
    }
    if alpha != 1.0 {
        plain.iter_mut().for_each(|v| *v *= alpha);
    }
    plain
}

/// `α·A` packed once, for many products with different `B` (a convolution's weights
/// against every image and tile).
pub struct PackedA {
    isa: Isa,
    m: usize,
    k: usize,
    inner: Packed,
}

enum Packed {
    /// Micro-panels for a SIMD path.
    Panels(PackedPanels),
    /// `α·Aᵀ` row-major (`K × m`), for the portable path.
    Plain(Vec<f32>),
}

impl PackedA {
    /// Packs `α·A` (`m × k`) for the process's path.
    pub fn new(alpha: f32, a: MatRef) -> PackedA {
        PackedA::from_panels(isa::active(), alpha, &a.t())
    }

    /// Packs `α·A` for `isa`, from a source of `Aᵀ` (`K × m`).
    ///
    /// # Panics
    /// When the CPU lacks the path's instruction set.
    pub fn from_panels(isa: Isa, alpha: f32, at: &dyn Panels) -> PackedA {
        if let Err(e) = isa.check() {
            panic!("gemm: {e}");
        }
        let (k, m) = at.dims();
        let inner = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Packed::Panels(PackedPanels::new::<avx512::Avx512>(at, alpha)),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Packed::Panels(PackedPanels::new::<avx2::Avx2>(at, alpha)),
            _ => Packed::Plain(plain_a(at, alpha)),
        };
        PackedA { isa, m, k, inner }
    }

    /// Rows `m` of `A`.
    pub fn rows(&self) -> usize {
        self.m
    }
    /// Columns `k` of `A` (the inner dimension).
    pub fn cols(&self) -> usize {
        self.k
    }
    /// The path it was packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// `C ← A·B + start` with `A` prepacked (α was applied when packing); `B` is `K × n`.
///
/// # Panics
/// When the sizes do not match or a row bias is too short.
pub fn gemm_packed(a: &PackedA, b: &dyn Panels, start: Start, c: MatMut) {
    packed_product(a, b, start, c, true)
}

/// [`gemm_packed`] on the calling thread alone, whatever the size: for callers that
/// already run one product per thread (the Winograd forward kernel runs each chunk of
/// tiles, with its `α²` products, as one task). The same bits as [`gemm_packed`]
/// (see the module doc: the split of `C` between threads changes none).
///
/// # Panics
/// When the sizes do not match or a row bias is too short.
pub fn gemm_packed_here(a: &PackedA, b: &dyn Panels, start: Start, c: MatMut) {
    packed_product(a, b, start, c, false)
}

/// [`gemm_packed`], spread over the threads when `parallel`.
fn packed_product(a: &PackedA, b: &dyn Panels, start: Start, c: MatMut, parallel: bool) {
    let (m, k) = (a.m, a.k);
    check(a.isa, m, k, b, &start, &c);
    if c.rows() == 0 || c.cols() == 0 {
        return;
    }
    if k == 0 {
        return apply_start(&start, c);
    }
    match &a.inner {
        Packed::Plain(plain) => {
            let plain = MatRef::row_major(plain, k, m).t();
            portable::gemm(1.0, plain, b, start, c, parallel)
        }
        Packed::Panels(p) => simd(a.isa, ASide::Packed(p), b, start, c, parallel),
    }
}

/// The micro-kernel shapes this CPU can run, each as a product `C ← A·B` through the
/// full driver: for the shape comparison of `focal bench gemm --shapes`.
#[doc(hidden)]
pub fn shape_variants() -> Vec<(&'static str, ShapeFn)> {
    #[cfg(target_arch = "x86_64")]
    {
        fn run<K: kernel::MicroKernel>(a: MatRef, b: MatRef, c: MatMut) {
            driver::gemm::<K>(ASide::Source(&a.t(), 1.0), &b, Start::Beta(0.0), c, true)
        }
        let mut v: Vec<(&'static str, ShapeFn)> = Vec::new();
        if Isa::Avx512.available() {
            v.push(("avx512 8x48", run::<avx512::Avx512>));
            v.push(("avx512 14x32", run::<avx512::Avx512x14x32>));
            v.push(("avx512 12x32", run::<avx512::Avx512x12x32>));
            v.push(("avx512 6x64", run::<avx512::Avx512x6x64>));
        }
        if Isa::Avx2.available() {
            v.push(("avx2 6x16", run::<avx2::Avx2>));
        }
        v
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// One tile-shape variant: `C ← A·B`.
#[doc(hidden)]
pub type ShapeFn = fn(MatRef, MatRef, MatMut);
