//! What every micro-kernel shares: its contract and how a tile's accumulators start.
//!
//! A micro-kernel computes one `MR × NR` tile of `C` from an `MR`-row micro-panel of
//! packed `A` and an `NR`-column micro-panel of packed `B` (`pack.rs`), both `kc` long:
//!
//! ```text
//!   for k in 0..kc:                    (in this order, always)
//!       for every (i, j) of the tile:  acc[i][j] = fma(a[k][i], b[k][j], acc[i][j])
//!   C[i][j] = acc[i][j]
//! ```
//!
//! `acc` starts as [`TileStart`] says: zero, the tile of `C` itself (to continue a chain
//! begun by an earlier block of `k`), `β·C`, or the bias of each row. Because the f32
//! accumulator is stored to `C` and loaded back unchanged, a chain cut into blocks of
//! `k` is the same chain: every element of `C` is one fused multiply-add per `k`, in
//! increasing `k`, whatever the tile shape, blocking or thread split. That is why the
//! AVX2 and AVX-512 kernels give the same bits.

/// How the accumulators of a tile start.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TileStart {
    /// `acc = 0`.
    Zero,
    /// `acc = C` (continue the chain of an earlier block of `k`, or `β = 1`).
    Load,
    /// `acc = β·C`, one rounded product per element.
    Scale(f32),
    /// `acc[i][j] = bias[i]`; the pointer addresses `MR` floats.
    RowBias(*const f32),
}

/// One micro-kernel: an `MR × NR` tile, `C` with unit column stride.
pub(crate) trait MicroKernel {
    /// Rows of the tile (of `A`'s micro-panel).
    const MR: usize;
    /// Columns of the tile (of `B`'s micro-panel).
    const NR: usize;
    /// Inner-dimension block: an `MR × KC` panel of `A` and a `KC × NR` panel of `B`
    /// are read per call.
    const KC: usize;
    /// Columns of `B` packed per block (a multiple of `NR`).
    const NC: usize;
    /// Floats per vector register (16 for AVX-512, 8 for AVX2).
    const VL: usize;

    /// Computes the tile (see the module doc).
    ///
    /// # Safety
    /// The CPU has the kernel's instruction set; `a` addresses `kc·MR` floats, `b`
    /// `kc·NR` floats, `c` the `MR` rows of `NR` floats at `c + i·ldc` (readable and
    /// writable, aliasing neither `a` nor `b`); a [`TileStart::RowBias`] pointer
    /// addresses `MR` floats.
    unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        start: TileStart,
    );

    /// The first `vectors · VL` columns of the tile only (`1 ≤ vectors ≤ NR / VL`), for
    /// the last, narrower micro-panel of a block: the same chains as [`Self::tile`] for
    /// those columns, without computing the zero padding.
    ///
    /// # Safety
    /// As [`Self::tile`], with `c` addressing `vectors · VL` floats per row.
    unsafe fn tile_narrow(
        vectors: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        start: TileStart,
    );
}
