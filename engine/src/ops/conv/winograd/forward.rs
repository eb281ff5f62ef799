//! The Winograd convolution `out = conv3x3(src, k)` of a [`Conv3`], used by the forward
//! pass (`src = x`, `k = w`) and by the input gradient (`src = ∂y`, `k = w` turned by
//! 180° with its channel axes swapped).
//!
//! With `U = G k Gᵀ` computed and packed for the GEMM once per call
//! (`plan::packed_filters`), the tiles of the batch (sample after sample, row after row
//! of tiles) are cut into chunks of `J` consecutive tiles, and each chunk runs start to
//! finish on one thread, the chunks in parallel:
//!
//! ```text
//! chunk of J tiles (one task)                               the task's buffer
//!   1. V[s, ξ, j]  = (Bᵀ d_{s,j} B)[ξ]     every channel s   V: α²·S·J floats, in the
//!                                                           GEMM's B micro-panel order
//!                                                           (`packed_inputs.rs`)
//!   2. for ξ in 0..α²:                                      V_ξ (S × J) in L2, read in
//!        M_ξ (R, J) = U_ξ (R, S) · V_ξ (S, J)               place by the GEMM; U_ξ
//!                                                           prepacked, from L3
//!   3. for r in 0..R:                                       M: α²·R·J floats, [R][α²][J]
//!        out tiles j of channel r = Aᵀ M[r, ·, j] A (+ bias)
//! ```
//!
//! The products run one after another on the task's thread (`gemm_packed_here`), and
//! the GEMM reads the micro-panels of `V_ξ` where step 1 wrote them (no copy); `M_ξ` is
//! stored once (β = 0, no zero fill). The chunks depend only on the shapes
//! ([`chunk_tiles`]), and each output element is the same chain of fused multiply-adds
//! over `s = 0 .. S−1` whatever the chunk and the thread (see `crate::gemm`), so the
//! result is the same bits on any number of threads and for any `J`.
//!
//! **Chunk size.** `J` is the largest multiple of the panel width whose `V` and `M`
//! (`α²·(S + R)·J` floats) fit in [`PIPELINE_FLOATS`], and at most a quarter of the tiles
//! ([`chunk_tiles`]): 128 tiles for the RetinaNet head at 512 px (256 → 256, F(4x4), 512
//! tiles), where `V_ξ` is 128 KiB (in L2 beside `M_ξ`) and the chunk's `V` and `M` 9 MiB
//! per thread (in L3). The call allocates one such buffer per task running at a time
//! (zero-filled once) and frees them on return. Each chunk reads all of `U` (`α²·R·S`
//! floats, 9 MiB for the head) from L3, so `J` trades that stream against the size of the
//! chunk. Measured on the head conv alone (2-core AMD EPYC Zen 3 under KVM, a shared and
//! loaded host, interleaved, minimum CPU ms of 20 calls): 75-78 before, 59 with `J` = 48
//! or 64, 54-58 with 96 and 128 (wall 35 → 28 ms in a quieter moment). With `focal bench
//! conv --preset 512 --filter head` (2 rounds, interleaved) the 256 → 256 head conv took
//! 77-80 CPU ms before and 65-73 after, forward + backward 247-298 and 234-235; `focal
//! bench infer` at 512 px, batch 2: peak RSS 266 → 238 MiB, wall and CPU time within the
//! host's noise (±10 % and more), and the 512-px training step's peak RSS unchanged
//! (658-660 MiB). Before, the kernel ran each of the three steps over chunks of up to 16
//! M floats (`plan.rs`) with a barrier between them, on all threads: for the head `V` and
//! `M` were about 19 MiB each, so every step streamed them through memory, and the GEMM
//! copied every panel of `V_ξ` before reading it.
//!
//! `J` is the number of tiles in the chunk. Step 2 is where the multiplications are
//! saved: a direct convolution does `9·S` multiply-adds per output pixel, this does
//! `α²·S` per tile of `m²` pixels (`16·S/4 = 4·S` for F(2x2,3x3), `36·S/16 = 2.25·S`
//! for F(4x4,3x3)).

use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::packed_inputs::{chunk_inputs, packed_len, PackedInputs};
use super::plan::{tile_runs, Conv3};
use super::simd::{multiversion, Level};
use super::transforms::{Lanes, Tile, LANES};
use crate::gemm::{b_panel_width, gemm_packed_here, AlignedBuf, MatMut, PackedA, Start};
use crate::ops::unary::relu_f32;

/// Floats of transformed inputs and products (`α²·(S + R)` per tile) per chunk of
/// tiles: 2.25 M floats = 9 MiB, 128 tiles of the RetinaNet head (see the module doc).
pub(crate) const PIPELINE_FLOATS: usize = 36 * 512 * 128;

/// Tiles per chunk for `c` with `α² = a2`, `total` tiles and panels of `w` tiles: as
/// many whole panels as keep `α²·(S + R)` floats per tile within `budget` floats, and
/// no more than a quarter of the tiles (rounded up to whole panels), so that small
/// grids still give the threads several chunks; at least one panel. Shapes only: the
/// thread count plays no part (nor could it change a bit, see the module doc).
pub(crate) fn chunk_tiles(c: &Conv3, a2: usize, total: usize, w: usize, budget: usize) -> usize {
    let per_tile = (a2 * (c.s + c.r)).max(1);
    let quarter = total.div_ceil(4).div_ceil(w);
    (budget / per_tile / w).min(quarter).max(1) * w
}

/// `out (N, R, OH, OW) = conv(src, k) + bias`, every element written, `max(·, 0)` of it
/// when `store.1` (the fused `conv2d_relu`; `store.0` is the bias). `u` holds the
/// filters' transforms `U_ξ` (`R × S`), packed for the GEMM (`plan::packed_filters`);
/// the GEMM path is theirs, and the transforms run in the build that goes with it.
/// The chunks hold at most `budget` floats ([`chunk_tiles`]; the kernels pass
/// [`PIPELINE_FLOATS`], the tests less or more).
pub(crate) fn conv<T: Tile>(
    c: &Conv3,
    src: &[f32],
    u: &[PackedA],
    store: (Option<&[f32]>, bool),
    out: &mut [f32],
    budget: usize,
) {
    let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
    debug_assert_eq!(u.len(), a2);
    debug_assert_eq!(out.len(), c.n * c.r * c.oh * c.ow);
    let level = Level::of(u[0].isa());
    let (th, tw) = (c.oh.div_ceil(m), c.ow.div_ceil(m));
    let total = c.n * th * tw;
    // V in the GEMM's B micro-panel order (`packed_inputs.rs`), panels of `w` tiles.
    let w = b_panel_width(u[0].isa());
    let per = chunk_tiles(c, a2, total, w, budget);
    let planes = Planes::new(out);
    // The buffers of the call: one per task running at a time, each taken by a chunk
    // and handed back when it is done, freed on return. (Kept in thread-local buffers
    // between calls instead, they added 18 MB to the peak resident memory of a 512-px
    // training step.) Every float a chunk reads from one it has written first.
    let spare: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());
    let most = packed_len(a2, c.s, per, w) + a2 * c.r * per;
    (0..total.div_ceil(per)).into_par_iter().for_each(|ci| {
        let first = ci * per;
        let tiles = per.min(total - first);
        let taken = spare.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buf = taken.unwrap_or_else(|| {
            let mut b = AlignedBuf::default();
            b.ensure(most);
            b
        });
        let (v_len, m_len) = (packed_len(a2, c.s, tiles, w), a2 * c.r * tiles);
        let (v, prod) = buf.as_mut_slice()[..v_len + m_len].split_at_mut(v_len);
        chunk_inputs::<T>(level, c, (th, tw), src, first, tiles, w, v);
        let v = &*v;
        // M laid out [R][α²][tiles]: M_ξ is columns ξ·tiles .. of an (R, α²·tiles)
        // matrix, and the α² products of one output channel are one contiguous block
        // for step 3 to read.
        let mut rest = MatMut::row_major(prod, c.r, a2 * tiles);
        for (xi, u_xi) in u.iter().enumerate() {
            let (m_xi, right) = rest.split_cols(tiles);
            rest = right;
            let v_xi = PackedInputs::new(v, xi, a2, c.s, tiles, w);
            // U_ξ (R, S) · V_ξ (S, tiles) -> M_ξ (R, tiles), on this thread.
            gemm_packed_here(u_xi, &v_xi, Start::Beta(0.0), m_xi);
        }
        chunk_outputs::<T>(level, c, (th, tw), prod, first, store, &planes);
        spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buf);
    });
}

/// The output tensor, written by the chunk tasks side by side through a pointer: each
/// task writes the pixels of its own tiles and nothing else (see [`Planes::write`]).
struct Planes<'a> {
    ptr: *mut f32,
    len: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `Planes` is the exclusive borrow of `out` it was made from, shared by the
// chunk tasks of one call; it only writes, and `write`'s contract keeps the elements
// written by different threads apart.
unsafe impl Send for Planes<'_> {}
// SAFETY: as above.
unsafe impl Sync for Planes<'_> {}

impl<'a> Planes<'a> {
    fn new(out: &'a mut [f32]) -> Planes<'a> {
        Planes {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _out: PhantomData,
        }
    }

    /// `out[at .. at + run.len()] = run`.
    ///
    /// # Safety
    /// No other thread reads or writes these elements while the `Planes` lives.
    unsafe fn write(&self, at: usize, run: &[f32]) {
        assert!(at <= self.len && run.len() <= self.len - at);
        // SAFETY: the range is inside `out` (asserted), which `self` borrows exclusively
        // for its lifetime, so the pointer is valid for writes there; `run` is another
        // slice (a borrow of `out` cannot exist beside `self`), and the caller promises
        // that no other thread touches these elements meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(run.as_ptr(), self.ptr.add(at), run.len()) }
    }
}

multiversion! {
    /// Step 3 for the chunk of tiles `first ..` (`grid = (th, tw)`, as in
    /// `chunk_inputs`), every output channel: each tile of channel `o` receives
    /// `Aᵀ M A + b`, or `max(Aᵀ M A + b, 0)` with relu (`store` = (bias, relu)).
    fn chunk_outputs<T: Tile>(
        c: &Conv3,
        grid: (usize, usize),
        prod: &[f32],
        first: usize,
        store: (Option<&[f32]>, bool),
        planes: &Planes<'_>,
    ) {
        let (a2, m) = (T::ALPHA * T::ALPHA, T::M);
        let (th, tw) = grid;
        let (bias, relu) = store;
        let tiles = prod.len() / (a2 * c.r);
        let plane = c.oh * c.ow;
        let mut mm = [Lanes::ZERO; 36];
        let mut y = [Lanes::ZERO; 16];
        for o in 0..c.r {
            let b = bias.map_or(0.0, |b| b[o]);
            // The α² products of channel o: M[o, ξ, j] = mo[ξ·tiles + j].
            let mo = &prod[o * a2 * tiles..(o + 1) * a2 * tiles];
            // The chunk's tiles, one run per row of tiles.
            for (j, r, tx_a, tx_b) in tile_runs(first, (0, tiles), tw) {
                let (n, ty) = (r / th, r % th);
                let at_plane = (n * c.r + o) * plane;
                // Output rows of this row of tiles; those past the bottom are dropped.
                let rows = m.min(c.oh - ty * m);
                for tx0 in (tx_a..tx_b).step_by(LANES) {
                    // Position ξ of LANES consecutive tiles: consecutive floats of M_ξ.
                    let count = (tx_b - tx0).min(LANES);
                    for (xi, v) in mm[..a2].iter_mut().enumerate() {
                        let at = xi * tiles + j + (tx0 - tx_a);
                        *v = Lanes::load(&mo[at..][..count]);
                        // The α² rows are more streams than the hardware prefetchers
                        // follow: ask for each one's line of four groups ahead.
                        prefetch(mo, at + 4 * LANES);
                    }
                    T::output(&mm[..a2], &mut y[..m * m]);
                    // Row i of these tiles is one run of the output row; the outputs
                    // hanging over the right edge are dropped.
                    let (x0, x1) = (tx0 * m, ((tx0 + count) * m).min(c.ow));
                    for (i, yi) in y.chunks_exact(m).take(rows).enumerate() {
                        // Tile `lane` covers run[lane·m ..]; its last one may be cut. The
                        // row is put together in registers and stored as one run.
                        let mut row = [0.0f32; 4 * LANES];
                        for lane in 0..LANES {
                            for (k, v) in yi.iter().enumerate() {
                                row[lane * m + k] = v.0[lane] + b;
                            }
                        }
                        if relu {
                            for v in &mut row {
                                *v = relu_f32(*v);
                            }
                        }
                        let at = at_plane + (ty * m + i) * c.ow + x0;
                        // SAFETY: these are pixels (n, o, ty·m + i, x0 .. x1) of tiles
                        // (n, ty, tx0 .. tx0 + count), tiles first + j .. of the batch,
                        // all inside this chunk. A pixel lies in exactly one tile, a tile
                        // in exactly one chunk, and a chunk runs on one task: no other
                        // thread writes (or reads) these elements during the call.
                        unsafe { planes.write(at, &row[..x1 - x0]) };
                    }
                }
            }
        }
    }
}

/// Asks the CPU to bring the cache line holding `s[at]` into L1 ahead of its use: a
/// hint, with no effect on any value (nothing when `at` is past the end).
#[inline(always)]
fn prefetch(s: &[f32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = s.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists on every
        // CPU this build runs on; a prefetch reads no memory the program can observe and
        // cannot fault, and the pointer is to an element of `s` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((v as *const f32).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, at);
}
