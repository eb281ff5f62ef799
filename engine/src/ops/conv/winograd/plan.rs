//! What the three Winograd kernels share: the geometry of a 3x3 stride-1 convolution,
//! its grid of tiles cut into chunks, and the input and filter transforms over whole
//! tensors (the filters' packed once per call for the GEMM, [`packed_filters`]).
//!
//! **Tiles.** The output planes `(OH, OW)` are covered by `⌈OH/m⌉ × ⌈OW/m⌉` tiles of
//! `m × m` pixels; the tiles on the bottom and right edges hang over the plane and their
//! extra outputs are dropped. Tile `(ty, tx)` of sample `n` reads the `α × α` input block
//! whose top-left pixel is `(ty·m − py, tx·m − px)`, zero outside the plane (the
//! padding).
//!
//! **Chunks.** The weight gradient (`weight_grad.rs`) processes the rows of tiles of
//! the whole batch (`N·⌈OH/m⌉` of them, sample after sample) a chunk of rows at a time
//! ([`Grid`]), so that the transformed inputs and products of one chunk (`α²·(S + R)`
//! floats per tile) stay within [`CHUNK_FLOATS`], whatever the image size. Each chunk
//! runs in phases, each one parallel over independent pieces (channels, transform
//! positions, output channels): every value is computed by one task in a fixed order,
//! and the chunks depend only on the shapes, so the result is bitwise the same on any
//! number of threads. The forward kernel (and the input gradient, which runs through
//! it) cuts the tiles its own way: small chunks of tiles, each run start to finish on
//! one thread (`forward.rs`).
//!
//! **Memory.** A call holds the transformed filters packed for the GEMM (`α²·S·R`
//! floats: 16/9 ≈ 1.8× the weight for F(2x2), 4× for F(4x4); the unpacked transform
//! only while packing) and its chunk buffers, allocated per call and freed on return:
//! for the weight gradient one chunk's (at most [`CHUNK_FLOATS`], or one row of tiles if
//! that is more), for the forward kernel one chunk's per task running at a time (at
//! most `forward::PIPELINE_FLOATS` = 9 MiB each, or one GEMM panel of tiles if that is
//! more; 2 × 9 MiB for the RetinaNet head on 2 threads, where the phased kernel took
//! 2 × 19 MiB). (Keeping them in thread-local buffers between calls measured the same
//! CPU time for a R18-FPN training step at 512 px but a peak resident memory 70-80 MB
//! higher; the forward kernel's alone, 18 MB higher: 678 against 660 MiB.)

use rayon::prelude::*;

use super::simd::{multiversion, Level};
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::{Isa, MatRef, PackedA};

/// A 3x3, stride-1 convolution, in the general form both the forward pass and the
/// input gradient take:
///
/// ```text
/// out[n, r, oy, ox] = Σ_{s, ky, kx} k[r, s, ky, kx] · src[n, s, oy + ky − py, ox + kx − px]
/// ```
///
/// with `src: (N, S, H, W)` (zero outside the plane) and `out: (N, R, OH, OW)`. The
/// offsets `py, px` are the padding of the forward pass; for the input gradient they are
/// `2 − padding`, which is negative when the padding is above 2.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv3 {
    pub n: usize,
    /// Source channels `S` (the GEMM's inner dimension).
    pub s: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels `R`.
    pub r: usize,
    pub oh: usize,
    pub ow: usize,
    pub py: isize,
    pub px: isize,
}

/// Floats of transformed inputs and products per chunk of tile rows of the weight
/// gradient: 16 M floats = 64 MB at most, whatever the image size. The transformed
/// filters are packed once per call, so the chunk size no longer buys back any packing;
/// what larger chunks still buy is the weight gradient's: each chunk adds its products
/// into every `dU_ξ` (`α²·R·S` floats, 9 MB for the head's 256 → 256 with F(4x4)), and a
/// longer inner dimension (tiles) per product. Measured with `focal bench conv --preset
/// grid --compare-algos` (forward + backward speed-up over direct, by CPU time, 2-core
/// AMD EPYC Zen 5 under a load of 8-12 from other jobs), with 4 M floats against 16 M:
/// 256 → 256 at 64², batch 2: 1.22 / 1.24 against 1.34 / 1.70 (F(2x2) / F(4x4)); 512 →
/// 512 at 64²: 1.28 / 1.51 against 1.45 / 1.80; 1 M and 256 K floats were slower still
/// (0.8-1.07).
pub(crate) const CHUNK_FLOATS: usize = 1 << 24;

/// The tiles `lo .. hi` of a chunk that starts at tile `first` of the batch (tiles
/// counted sample after sample, row after row of tiles, `tw` to a row), as runs that
/// each stay within one row of tiles: `(j, r, tx_a, tx_b)`, the run's first tile counted
/// from the chunk's start, its row of tiles in the batch, and its tiles `tx_a .. tx_b`
/// of that row. The forward kernel's input and output transforms walk a chunk this way.
pub(crate) fn tile_runs(
    first: usize,
    (lo, hi): (usize, usize),
    tw: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut j = lo;
    std::iter::from_fn(move || {
        (j < hi).then(|| {
            let (r, tx_a) = ((first + j) / tw, (first + j) % tw);
            let tx_b = (tx_a + (hi - j)).min(tw);
            let run = (j, r, tx_a, tx_b);
            j += tx_b - tx_a;
            run
        })
    })
}

/// The tile grid of a [`Conv3`] for tile size `T`, and its cut into chunks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    /// Tiles per column and per row of an output plane.
    pub th: usize,
    pub tw: usize,
    /// Rows of tiles per chunk (the last chunk may have fewer).
    pub rows_per_chunk: usize,
}

impl Grid {
    /// The grid of `c`, with as many rows of tiles per chunk as fit in `chunk_floats`
    /// (at least one; the kernels pass [`CHUNK_FLOATS`], the tests less).
    pub fn new<T: Tile>(c: &Conv3, chunk_floats: usize) -> Grid {
        let (th, tw) = (c.oh.div_ceil(T::M), c.ow.div_ceil(T::M));
        let per_tile = T::ALPHA * T::ALPHA * (c.s + c.r);
        let rows_per_chunk = (chunk_floats / (per_tile * tw).max(1)).clamp(1, (c.n * th).max(1));
        Grid {
            th,
            tw,
            rows_per_chunk,
        }
    }

    /// Rows of tiles of the whole batch.
    pub fn rows(&self, c: &Conv3) -> usize {
        c.n * self.th
    }

    /// The chunks, as ranges of tile rows `[r0, r1)`.
    pub fn chunks(&self, c: &Conv3) -> impl Iterator<Item = (usize, usize)> {
        let (rows, per) = (self.rows(c), self.rows_per_chunk);
        (0..rows.div_ceil(per)).map(move |i| (i * per, ((i + 1) * per).min(rows)))
    }
}

/// `U = G g Gᵀ` for every filter, laid out `[R][α²][S]` (so `U_ξ`, the `(R, S)` matrix
/// of transform position `ξ`, has rows `α²·S` floats apart and contiguous columns).
///
/// `w` is a conv weight `(O, C, 3, 3)`. Without `flip`, row `r` is output channel `o`
/// and column `s` input channel `c`: `g = w[o, c]`. With `flip` (the input gradient),
/// rows are input channels and columns output channels, and each filter is turned by
/// 180°: `g[ky, kx] = w[o, c, 2 − ky, 2 − kx]`.
pub(crate) fn transform_filters<T: Tile>(
    level: Level,
    w: &[f32],
    o: usize,
    c: usize,
    flip: bool,
    u: &mut [f32],
) {
    let a2 = T::ALPHA * T::ALPHA;
    let (rows, cols) = if flip { (c, o) } else { (o, c) };
    debug_assert_eq!(u.len(), rows * a2 * cols);
    u.par_chunks_mut(a2 * cols)
        .enumerate()
        .for_each(|(r, ur)| filter_row::<T>(level, w, c, flip, r, ur));
}

/// The transformed filters of a call, each `U_ξ` (`R × S`) packed once for the GEMM on
/// `isa` ([`PackedA`]) and then used against the transformed inputs of every chunk of
/// tiles. `w` as in [`transform_filters`]; the unpacked transform is freed on return.
pub(crate) fn packed_filters<T: Tile>(
    isa: Isa,
    w: &[f32],
    o: usize,
    c: usize,
    flip: bool,
) -> Vec<PackedA> {
    let a2 = T::ALPHA * T::ALPHA;
    let (rows, cols) = if flip { (c, o) } else { (o, c) };
    let mut u = vec![0.0f32; rows * a2 * cols];
    transform_filters::<T>(Level::of(isa), w, o, c, flip, &mut u);
    (0..a2)
        .map(|xi| {
            // U_ξ: rows a2·cols floats apart, contiguous columns.
            let u_xi = MatRef::new(&u[xi * cols..], rows, cols, a2 * cols, 1);
            PackedA::from_panels(isa, 1.0, &u_xi.t())
        })
        .collect()
}

multiversion! {
    /// Row `r` of [`transform_filters`]: `LANES` filters at a time (columns
    /// `s0 .. s0 + LANES`), gathered from the weight, transformed and stored.
    fn filter_row<T: Tile>(w: &[f32], c: usize, flip: bool, r: usize, ur: &mut [f32]) {
        let a2 = T::ALPHA * T::ALPHA;
        let cols = ur.len() / a2;
        let mut g = [Lanes::ZERO; 9];
        let mut t = [Lanes::ZERO; 36];
        for s0 in (0..cols).step_by(LANES) {
            let count = (cols - s0).min(LANES);
            for l in 0..count {
                let s = s0 + l;
                for (i, gi) in g.iter_mut().enumerate() {
                    gi.0[l] = if flip {
                        w[(s * c + r) * 9 + 8 - i]
                    } else {
                        w[(r * c + s) * 9 + i]
                    };
                }
            }
            T::filter(&g, &mut t[..a2]);
            for (xi, val) in t[..a2].iter().enumerate() {
                val.store(&mut ur[xi * cols + s0..][..count]);
            }
        }
    }
}

/// `V = Bᵀ d B` for every (source channel, tile) of the chunk of tile rows `[r0, r1)`,
/// laid out `[S][α²][tiles]` (so `V_ξ`, the `(S, tiles)` matrix of position `ξ`, has rows
/// `α²·tiles` floats apart and contiguous columns). One task per source channel.
///
/// For each row of tiles, the `α` input rows it reads are first split by column phase
/// ([`split_phases`]), so that entry `(i, k)` of the input blocks of [`LANES`]
/// consecutive tiles is one contiguous load; the transform then runs on those lanes.
pub(crate) fn transform_inputs<T: Tile>(
    level: Level,
    c: &Conv3,
    grid: &Grid,
    src: &[f32],
    (r0, r1): (usize, usize),
    v: &mut [f32],
) {
    let a2 = T::ALPHA * T::ALPHA;
    let tiles = (r1 - r0) * grid.tw;
    let hw = c.h * c.w;
    debug_assert_eq!(v.len(), c.s * a2 * tiles);
    v.par_chunks_mut(a2 * tiles)
        .enumerate()
        .for_each(|(ch, vc)| {
            input_channel::<T>(level, c, grid, src, hw, ch, r0, r1, vc);
        });
}

multiversion! {
    /// [`transform_inputs`] for source channel `ch`.
    fn input_channel<T: Tile>(
        c: &Conv3,
        grid: &Grid,
        src: &[f32],
        hw: usize,
        ch: usize,
        r0: usize,
        r1: usize,
        vc: &mut [f32],
    ) {
        let (a, m) = (T::ALPHA, T::M);
        let a2 = a * a;
        let tiles = (r1 - r0) * grid.tw;
        // Tile tx reads phase k mod m at position tx + k div m, k < α.
        let len = grid.tw.next_multiple_of(LANES) + (a - 1) / m;
        let mut rows = vec![0.0f32; a * m * len];
        let mut line = vec![0.0f32; m * len];
        let mut d = [Lanes::ZERO; 36];
        let mut t = [Lanes::ZERO; 36];
        for r in r0..r1 {
            let (n, ty) = (r / grid.th, r % grid.th);
            let plane = &src[(n * c.s + ch) * hw..(n * c.s + ch + 1) * hw];
            let y0 = (ty * m) as isize - c.py;
            split_phases::<T>(plane, c.h, c.w, y0, c.px, a, &mut line, &mut rows);
            let j_row = (r - r0) * grid.tw;
            for tx0 in (0..grid.tw).step_by(LANES) {
                input_lanes::<T>(&rows, len, tx0, &mut d, &mut t);
                let count = (grid.tw - tx0).min(LANES);
                for (xi, val) in t[..a2].iter().enumerate() {
                    val.store(&mut vc[xi * tiles + j_row + tx0..][..count]);
                }
            }
        }
    }
}

/// `t[ξ] = (Bᵀ d B)[ξ]` for the [`LANES`] consecutive tiles from `tx0` on, their input
/// blocks `d` read from rows split by phase ([`split_phases`], `len` floats per phase
/// row): entry `(i, k)` of tile `tx` is `rows[(i·m + k mod m)·len + tx + k div m]`.
/// Shared by the strided layout ([`transform_inputs`]) and the panel layout
/// (`packed_inputs.rs`), so both compute every value the same way.
#[inline(always)]
pub(crate) fn input_lanes<T: Tile>(
    rows: &[f32],
    len: usize,
    tx0: usize,
    d: &mut [Lanes; 36],
    t: &mut [Lanes; 36],
) {
    let (a, m) = (T::ALPHA, T::M);
    for i in 0..a {
        for k in 0..a {
            let at = (i * m + k % m) * len + tx0 + k / m;
            // Lanes past the run of tiles are never stored; `load` zero-fills past the
            // end of `rows`.
            d[i * a + k] = Lanes::load(&rows[at..]);
        }
    }
    T::input(&d[..a * a], &mut t[..a * a]);
}

/// `rows` rows of `plane` (`h × w`) from row `y0` on, split by column phase (`m = T::M`,
/// `len = line.len() / m`):
///
/// ```text
/// out[(i·m + r)·len + u] = plane[y0 + i, u·m + r − x_off]     (zero outside the plane)
/// ```
///
/// for `i < rows`, `r < m`, `u < len`. Column `tx·m + k − x_off` (entry `k` of tile
/// `tx`) is then `out[(i·m + k mod m)·len + tx + k div m]`: the same entry of
/// consecutive tiles sits in consecutive floats. `line` is scratch space.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn split_phases<T: Tile>(
    plane: &[f32],
    h: usize,
    w: usize,
    y0: isize,
    x_off: isize,
    rows: usize,
    line: &mut [f32],
    out: &mut [f32],
) {
    let m = T::M;
    let span = line.len(); // = m·len
    let len = span / m;
    for (i, phases) in out[..rows * span].chunks_exact_mut(span).enumerate() {
        let y = y0 + i as isize;
        if y < 0 || y >= h as isize {
            phases.fill(0.0);
            continue;
        }
        let src = &plane[y as usize * w..(y as usize + 1) * w];
        // line[q] = src[q − x_off], zero outside the row.
        let q0 = x_off.clamp(0, span as isize) as usize;
        let q1 = (w as isize + x_off).clamp(q0 as isize, span as isize) as usize;
        line[..q0].fill(0.0);
        let s0 = (q0 as isize - x_off) as usize;
        line[q0..q1].copy_from_slice(&src[s0..s0 + (q1 - q0)]);
        line[q1..].fill(0.0);
        // De-interleave: phase r takes every m-th float from r on.
        for (r, dst) in phases.chunks_exact_mut(len).enumerate() {
            for (d, chunk) in dst.iter_mut().zip(line.chunks_exact(m)) {
                *d = chunk[r];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tile_runs;

    /// Tiles 5 .. 15 of a batch with 4 tiles to a row: the rest of row 1, all of row 2,
    /// three tiles of row 3; and a panel of that chunk (its tiles 2 .. 6).
    #[test]
    fn tile_runs_stay_within_rows_of_tiles() {
        let runs: Vec<_> = tile_runs(5, (0, 10), 4).collect();
        assert_eq!(runs, vec![(0, 1, 1, 4), (3, 2, 0, 4), (7, 3, 0, 3)]);
        let runs: Vec<_> = tile_runs(5, (2, 6), 4).collect();
        assert_eq!(runs, vec![(2, 1, 3, 4), (3, 2, 0, 3)]);
        assert_eq!(tile_runs(5, (4, 4), 4).count(), 0);
    }
}
