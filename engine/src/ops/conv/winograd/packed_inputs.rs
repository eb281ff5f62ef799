//! The transformed inputs of the forward kernel, written straight in the order the
//! GEMM reads its `B` operand, so that packing `V_ξ` is one contiguous copy per
//! micro-panel instead of a gather of `S` rows lying `α²·tiles` floats apart.
//!
//! **Layout.** The tiles of a chunk are cut into panels of `W` consecutive tiles (`W`
//! the GEMM path's `B` micro-panel width, [`crate::gemm::b_panel_width`]; the last panel
//! padded with zeros):
//!
//! ```text
//!   v[(p·α² + ξ)·(S·W + 16) + s·W + jj] = V[s, ξ, tile p·W + jj]   (0 past the last tile)
//!
//!   panel p:  [ ξ = 0: S rows of W, 16 unused | ξ = 1: S rows of W, 16 unused | … ]
//! ```
//!
//! so rows `k0 .. k0 + kc` of panel `p` of `V_ξ` are `kc·W` consecutive floats: exactly
//! the micro-panel the GEMM's packing writes, which the GEMM reads in place
//! ([`PackedInputs`], `Panels::stored_panel`) instead of copying it. A panel holds
//! every channel's transforms of its `W` tiles; one chunk of tiles is transformed on
//! one thread ([`chunk_inputs`]), the chunks in parallel (`forward.rs`).
//!
//! Only the layout changes: every value is the same transform of the same inputs as in
//! `plan::transform_inputs`, and the GEMM reads the same values in the same order, so
//! the results are the same bits as with the strided layout.

use super::plan::{input_lanes, split_phases, tile_runs, Conv3};
use super::simd::multiversion;
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::Panels;

/// Floats the layout takes for `tiles` tiles, `s` channels, panels of `w` tiles.
pub(crate) fn packed_len(a2: usize, s: usize, tiles: usize, w: usize) -> usize {
    tiles.div_ceil(w) * a2 * block(s, w)
}

/// Floats from one `ξ` block of a panel to the next: `S` rows of `w`, and one cache line
/// ([`SKEW`]) that nothing reads.
fn block(s: usize, w: usize) -> usize {
    s * w + SKEW
}

/// Floats left unused after each `ξ` block. Without them the blocks of a 256-channel
/// panel (16 KiB with rows of 16) would lie a multiple of 4 KiB apart, and the `α²`
/// stores of one tile's transform, one to each block, would all fall into the same set
/// of the L1 cache (8 ways, indexed by address bits 6-11) and evict one another; one
/// line apart they fall into `α²` different sets.
const SKEW: usize = 16;

multiversion! {
    /// `V = Bᵀ d B` for every (source channel, tile) of the chunk of `tiles` tiles
    /// starting at tile `first` of the batch (tiles counted sample after sample, row
    /// after row of tiles, `tw` to a row of `th` rows: `grid = (th, tw)`), in the panel
    /// layout of the module doc with panels of `w` tiles, on the calling thread. `v`
    /// holds [`packed_len`] floats, every one written (the padding with zeros).
    ///
    /// Channel after channel, panel after panel; the `α` input rows a row of tiles
    /// reads are split by phase ([`split_phases`]) once per (channel, row of tiles),
    /// also when the row is shared by two panels.
    pub(crate) fn chunk_inputs<T: Tile>(
        c: &Conv3,
        grid: (usize, usize),
        src: &[f32],
        first: usize,
        tiles: usize,
        w: usize,
        v: &mut [f32],
    ) {
        let (a, m) = (T::ALPHA, T::M);
        let a2 = a * a;
        let (th, tw) = grid;
        debug_assert_eq!(v.len(), packed_len(a2, c.s, tiles, w));
        let hw = c.h * c.w;
        // Tile tx reads phase k mod m at position tx + k div m, k < α.
        let len = tw.next_multiple_of(LANES) + (a - 1) / m;
        let mut rows = vec![0.0f32; a * m * len];
        let mut line = vec![0.0f32; m * len];
        let mut d = [Lanes::ZERO; 36];
        let mut t = [Lanes::ZERO; 36];
        for ch in 0..c.s {
            // The row of tiles (of the batch) whose input rows `rows` holds.
            let mut split = usize::MAX;
            for p in 0..tiles.div_ceil(w) {
                // Row `ch` of block ξ of panel p.
                let row = |xi: usize| (p * a2 + xi) * block(c.s, w) + ch * w;
                let (j_lo, j_hi) = (p * w, ((p + 1) * w).min(tiles));
                // The panel's tiles, one run per row of tiles.
                for (j, r, tx_a, tx_b) in tile_runs(first, (j_lo, j_hi), tw) {
                    if r != split {
                        let (n, ty) = (r / th, r % th);
                        let plane = &src[(n * c.s + ch) * hw..(n * c.s + ch + 1) * hw];
                        let y0 = (ty * m) as isize - c.py;
                        split_phases::<T>(plane, c.h, c.w, y0, c.px, a, &mut line, &mut rows);
                        split = r;
                    }
                    for tx0 in (tx_a..tx_b).step_by(LANES) {
                        input_lanes::<T>(&rows, len, tx0, &mut d, &mut t);
                        let count = (tx_b - tx0).min(LANES);
                        let jj = j + (tx0 - tx_a) - j_lo;
                        for (xi, val) in t[..a2].iter().enumerate() {
                            val.store(&mut v[row(xi) + jj..][..count]);
                        }
                    }
                }
                // The last panel's columns past the last tile are zero.
                if j_hi - j_lo < w {
                    for xi in 0..a2 {
                        v[row(xi) + (j_hi - j_lo)..row(xi) + w].fill(0.0);
                    }
                }
            }
        }
    }
}

/// `V_ξ` (`S × tiles`) of a chunk in the panel layout, as a GEMM `B` operand.
pub(crate) struct PackedInputs<'a> {
    v: &'a [f32],
    xi: usize,
    a2: usize,
    s: usize,
    tiles: usize,
    /// Tiles per panel.
    w: usize,
}

impl<'a> PackedInputs<'a> {
    pub(crate) fn new(
        v: &'a [f32],
        xi: usize,
        a2: usize,
        s: usize,
        tiles: usize,
        w: usize,
    ) -> Self {
        debug_assert_eq!(v.len(), packed_len(a2, s, tiles, w));
        PackedInputs {
            v,
            xi,
            a2,
            s,
            tiles,
            w,
        }
    }

    /// The first float of rows `k ..` of panel `p`.
    fn at(&self, p: usize, k: usize) -> usize {
        (p * self.a2 + self.xi) * block(self.s, self.w) + k * self.w
    }

    /// `V_ξ[k, j]`.
    fn get(&self, k: usize, j: usize) -> f32 {
        self.v[self.at(j / self.w, k) + j % self.w]
    }
}

impl Panels for PackedInputs<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.s, self.tiles)
    }

    /// Panel `j0 / w` of the layout itself, when the GEMM asks for panels of the
    /// stored width: rows `k0 ..` of it are `kc·w` consecutive floats.
    fn stored_panel(&self, k0: usize, kc: usize, j0: usize, w: usize) -> Option<&[f32]> {
        if w != self.w || !j0.is_multiple_of(w) || j0 >= self.tiles || k0 + kc > self.s {
            return None;
        }
        let at = self.at(j0 / w, k0);
        Some(&self.v[at..at + kc * w])
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        let end = j0 + nc;
        let panels = nc.div_ceil(w);
        // The panels asked for are stored panels (the stored zeros pad the last one):
        // one copy each.
        if w == self.w && j0.is_multiple_of(w) && (end.is_multiple_of(w) || end == self.tiles) {
            for (q, dst) in out.chunks_exact_mut(kc * w).take(panels).enumerate() {
                let at = self.at(j0 / w + q, k0);
                dst.copy_from_slice(&self.v[at..at + kc * w]);
            }
            return;
        }
        // Any other cut: element by element.
        for (q, dst) in out.chunks_exact_mut(kc * w).take(panels).enumerate() {
            for (k, row) in dst.chunks_exact_mut(w).enumerate() {
                for (jj, o) in row.iter_mut().enumerate() {
                    let j = j0 + q * w + jj;
                    *o = if j < end { self.get(k0 + k, j) } else { 0.0 };
                }
            }
        }
    }
}
