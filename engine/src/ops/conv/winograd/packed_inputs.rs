//! The transformed inputs of the forward kernel, written straight in the order the
//! GEMM reads its `B` operand, so that packing `V_ξ` is one contiguous copy per
//! micro-panel instead of a gather of `S` rows lying `α²·tiles` floats apart.
//!
//! **Layout.** The tiles of a chunk are cut into panels of `W` consecutive tiles (`W`
//! the GEMM path's `B` micro-panel width, [`crate::gemm::b_panel_width`]; the last panel
//! padded with zeros):
//!
//! ```text
//!   v[((p·α² + ξ)·S + s)·W + jj] = V[s, ξ, tile p·W + jj]      (0 past the last tile)
//!
//!   panel p:  [ ξ = 0: S rows of W | ξ = 1: S rows of W | … | ξ = α²−1 ]
//! ```
//!
//! so rows `k0 .. k0 + kc` of panel `p` of `V_ξ` are `kc·W` consecutive floats: exactly
//! the micro-panel the GEMM's packing writes ([`PackedInputs`]). A panel holds every
//! channel's transforms of its `W` tiles; the work is cut into (panel, group of
//! channels) tasks, each writing its own rows of every `ξ` block.
//!
//! Only the layout changes: every value is the same transform of the same inputs as in
//! `plan::transform_inputs`, and the GEMM reads the same values in the same order, so
//! the results are the same bits as with the strided layout.

use rayon::prelude::*;

use super::plan::{input_lanes, split_phases, Conv3, Grid};
use super::simd::{multiversion, Level};
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::Panels;

/// Floats the layout takes for `tiles` tiles, `s` channels, panels of `w` tiles.
pub(crate) fn packed_len(a2: usize, s: usize, tiles: usize, w: usize) -> usize {
    tiles.div_ceil(w) * a2 * s * w
}

/// `V = Bᵀ d B` for every (source channel, tile) of the chunk of tile rows `[r0, r1)`,
/// in the panel layout of the module doc with panels of `w` tiles. `v` holds
/// [`packed_len`] floats, every one written (the padding with zeros).
#[allow(clippy::too_many_arguments)]
pub(crate) fn transform_inputs_packed<T: Tile>(
    level: Level,
    c: &Conv3,
    grid: &Grid,
    src: &[f32],
    (r0, r1): (usize, usize),
    w: usize,
    v: &mut [f32],
) {
    let a2 = T::ALPHA * T::ALPHA;
    let tiles = (r1 - r0) * grid.tw;
    debug_assert_eq!(v.len(), packed_len(a2, c.s, tiles, w));
    if v.is_empty() {
        return;
    }
    let panels = tiles.div_ceil(w);
    // Enough tasks to keep every thread busy; how the channels are grouped changes no
    // value (each is computed alone).
    let groups = (4 * rayon::current_num_threads())
        .div_ceil(panels)
        .clamp(1, c.s);
    let per_group = c.s.div_ceil(groups);
    let mut tasks: Vec<(usize, usize, Vec<&mut [f32]>)> = Vec::new();
    for (p, panel) in v.chunks_mut(a2 * c.s * w).enumerate() {
        let first = tasks.len();
        for (g, s0) in (0..c.s).step_by(per_group).enumerate() {
            debug_assert_eq!(first + g, tasks.len());
            tasks.push((p, s0, Vec::with_capacity(a2)));
        }
        // Block ξ of the panel: S rows of w floats; group g takes rows s0 .. s0 + per_group.
        for block in panel.chunks_mut(c.s * w) {
            for (g, rows) in block.chunks_mut(per_group * w).enumerate() {
                tasks[first + g].2.push(rows);
            }
        }
    }
    let hw = c.h * c.w;
    tasks.into_par_iter().for_each(|(p, s0, blocks)| {
        panel_channels::<T>(level, c, grid, src, hw, r0, tiles, w, p, s0, blocks);
    });
}

multiversion! {
    /// [`transform_inputs_packed`] for panel `p` and the channels `s0 ..` whose rows
    /// `blocks[ξ]` holds (`w` floats per channel).
    fn panel_channels<T: Tile>(
        c: &Conv3,
        grid: &Grid,
        src: &[f32],
        hw: usize,
        r0: usize,
        tiles: usize,
        w: usize,
        p: usize,
        s0: usize,
        blocks: Vec<&mut [f32]>,
    ) {
        let (a, m) = (T::ALPHA, T::M);
        let a2 = a * a;
        let mut blocks = blocks;
        let channels = blocks[0].len() / w;
        // Tile tx reads phase k mod m at position tx + k div m, k < α.
        let len = grid.tw.next_multiple_of(LANES) + (a - 1) / m;
        let mut rows = vec![0.0f32; a * m * len];
        let mut line = vec![0.0f32; m * len];
        let mut d = [Lanes::ZERO; 36];
        let mut t = [Lanes::ZERO; 36];
        let (j_lo, j_hi) = (p * w, ((p + 1) * w).min(tiles));
        for sl in 0..channels {
            let ch = s0 + sl;
            let mut j = j_lo;
            // The panel's tiles, one run per row of tiles.
            while j < j_hi {
                let r = r0 + j / grid.tw;
                let tx_a = j % grid.tw;
                let tx_b = (tx_a + (j_hi - j)).min(grid.tw);
                let (n, ty) = (r / grid.th, r % grid.th);
                let plane = &src[(n * c.s + ch) * hw..(n * c.s + ch + 1) * hw];
                let y0 = (ty * m) as isize - c.py;
                split_phases::<T>(plane, c.h, c.w, y0, c.px, a, &mut line, &mut rows);
                for tx0 in (tx_a..tx_b).step_by(LANES) {
                    input_lanes::<T>(&rows, len, tx0, &mut d, &mut t);
                    let count = (tx_b - tx0).min(LANES);
                    let jj = j + (tx0 - tx_a) - j_lo;
                    for (val, block) in t[..a2].iter().zip(blocks.iter_mut()) {
                        val.store(&mut block[sl * w + jj..][..count]);
                    }
                }
                j += tx_b - tx_a;
            }
            // The last panel's columns past the last tile are zero.
            for block in blocks.iter_mut() {
                block[sl * w + (j_hi - j_lo)..(sl + 1) * w].fill(0.0);
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
        ((p * self.a2 + self.xi) * self.s + k) * self.w
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
