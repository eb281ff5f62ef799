//! The blocked loop nest around the micro-kernels (the five loops of BLIS), and the
//! split of `C` into tasks for the threads.
//!
//! ```text
//!  C (m × n) cut into tasks: bands of whole MR-row panels × column blocks (cut in
//!  vectors of VL columns, so that the threads' shares differ by at most one vector)
//!  task (rows i0.., columns j0..):
//!    for jc in task columns, blocks of ≤ NC:        even widths (block_width)
//!      for pc in 0..K step KC:                      inner-dimension block
//!        pack B[pc.., jc..] → Bp (KC × NC, NR-column micro-panels)     in L2
//!        for ir in task rows step MR:               A micro-panel MR × KC          in L1
//!          for jr in micro-panels of Bp:            B micro-panel KC × NR, from L2
//!            tile(KC, Ap[ir], Bp[jr], C[ir, jr])    MR × NR accumulators in registers
//! ```
//!
//! **Block sizes** (per kernel, `avx512.rs`, `avx2.rs`). They were chosen on Zen 5
//! (48 KiB L1d, 1 MiB L2 per core) and measured again on Intel Sapphire Rapids (48 KiB
//! L1d, 2 MiB L2 per core), where they still hold. `KC = 256`: the A micro-panel
//! (`MR × KC`: 8 KiB for 8 × 48) sits in L1 beside the B micro-panel streaming past it,
//! and each tile's `MR × NR` accumulators are loaded and stored once per 256 fused
//! multiply-adds, which costs less than the tile's first FMAs waiting for `C`. `NC = 480`
//! (ten 48-wide micro-panels): the packed B block (`KC × NC`, 480 KiB) fits in half of the
//! smaller L2 beside the rows of C being updated. On Sapphire Rapids, with the larger L2,
//! `KC` 384 or 512 and `NC` 960 measured no faster (within the noise of a shared 2-core
//! machine), and a kernel alone on L2-resident panels runs at the FMA peak, so what is
//! left between a GEMM and the peak is outside these sizes (packing, `C` in L3, the
//! split between threads). `KC` 128 (a `B` micro-panel of half the L1d) and the BLIS
//! order (`B` micro-panel in L1 across the rows, `A` block from L2) were measured again
//! there and were no faster, or 5-17 % slower: `docs/gemm.md` has those figures, the
//! share of the time each operand's traffic costs in place, and the prefetches and
//! loop orders tried. A task walks its columns in blocks of even width, at most
//! `NC` ([`block_width`]): a thin last block would read all of `A` for one narrow tile.
//! `MC` is one micro-panel: the whole of packed A is shared by the tasks and read from
//! L3 one micro-panel at a time, each used against the B micro-panels of the block. This
//! order measured as fast as or faster than BLIS's (A block in L2, B micro-panel in L1)
//! for every tile shape compared, and it walks C row by row.
//!
//! `A` is packed in full before the tasks start (or arrives prepacked, [`PackedPanels`]),
//! so tasks share it; each task packs its own `B` block, or reads its micro-panels in
//! place when the source holds them in that order already (`Panels::stored_panel`: the
//! Winograd transformed inputs; the columns of a stored panel past the block's end go
//! into no element of `C`, as the packed zeros would not). The first `pc` block starts
//! each tile as the caller asked (zero, `β·C`, row bias); the later blocks load the tile
//! back and continue its chains. Tasks split rows and columns of `C`, never `K`, so the
//! split (which depends on the thread count) cannot change a bit of the result.

use std::cell::Cell;

use rayon::prelude::*;

use super::kernel::{MicroKernel, TileStart};
use super::pack::{AlignedBuf, Panels};
use super::view::MatMut;
use super::Start;

/// Below this many flops (`2·m·n·k`) a product runs on the calling thread.
const PAR_FLOPS: usize = 1 << 21;

/// `A` packed for one kernel: `⌈K/KC⌉` blocks, each `⌈M/MR⌉` panels of `MR × kc`.
///
/// ```text
///   block q (rows pc = q·KC .. of the inner dimension), at q·KC·m_pad:
///     panel r (rows r·MR .. of A), at + r·MR·kc:   a[k][ii] = α·A[r·MR + ii, pc + k]
/// ```
pub(crate) struct PackedPanels {
    data: AlignedBuf,
    pub(crate) k: usize,
    m_pad: usize,
    mr: usize,
    kc: usize,
}

impl PackedPanels {
    /// Packs `α·A` from `at`, a source of `Aᵀ` (`K × M`), for kernel `K`.
    pub(crate) fn new<K: MicroKernel>(at: &dyn Panels, alpha: f32) -> PackedPanels {
        PackedPanels::new_in::<K>(AlignedBuf::default(), at, alpha)
    }

    /// As [`PackedPanels::new`], in `data` (grown if it is too short; every float used is
    /// written, so what it held does not matter).
    fn new_in<K: MicroKernel>(mut data: AlignedBuf, at: &dyn Panels, alpha: f32) -> PackedPanels {
        let (k, m) = at.dims();
        let m_pad = m.div_ceil(K::MR) * K::MR;
        data.ensure((k * m_pad).max(1));
        // Blocks of the inner dimension, each cut into groups of panels for the threads.
        let buf = &mut data.as_mut_slice()[..k * m_pad];
        let panels = m_pad / K::MR;
        let group = if 2 * m * k < PAR_FLOPS / 4 {
            panels.max(1)
        } else {
            panels.div_ceil(4 * rayon::current_num_threads()).max(1)
        };
        let mut jobs: Vec<(usize, usize, &mut [f32])> = Vec::new();
        let mut rest = buf;
        for pc in (0..k).step_by(K::KC) {
            let kc = K::KC.min(k - pc);
            let (block, tail) = rest.split_at_mut(kc * m_pad);
            rest = tail;
            for (g, chunk) in block.chunks_mut(group * K::MR * kc).enumerate() {
                jobs.push((pc, g * group * K::MR, chunk));
            }
        }
        let run = |(pc, r0, out): (usize, usize, &mut [f32])| {
            let kc = K::KC.min(k - pc);
            let cols = (out.len() / kc).min(m - r0.min(m));
            if cols == 0 {
                out.fill(0.0);
                return;
            }
            at.pack(pc, kc, r0, cols, K::MR, out);
            if alpha != 1.0 {
                out.iter_mut().for_each(|v| *v *= alpha);
            }
        };
        if jobs.len() > 1 {
            jobs.into_par_iter().for_each(run);
        } else {
            jobs.into_iter().for_each(run);
        }
        PackedPanels {
            data,
            k,
            m_pad,
            mr: K::MR,
            kc: K::KC,
        }
    }

    /// The micro-panel of rows `r·MR..` in the block starting at `pc`.
    fn panel(&self, pc: usize, r: usize) -> *const f32 {
        let kc = self.kc.min(self.k - pc);
        let at = pc * self.m_pad + r * self.mr * kc;
        self.data.as_slice()[at..at + self.mr * kc].as_ptr()
    }

    /// The buffer, for the next product to pack into.
    fn into_buf(self) -> AlignedBuf {
        self.data
    }

    /// Whether this was packed for kernel `K`.
    pub(crate) fn fits<K: MicroKernel>(&self) -> bool {
        self.mr == K::MR && self.kc == K::KC
    }
}

/// Where `A` comes from.
pub(crate) enum ASide<'a> {
    /// Already packed for this kernel.
    Packed(&'a PackedPanels),
    /// A source of `Aᵀ` (`K × M`), and α.
    Source(&'a dyn Panels, f32),
}

thread_local! {
    /// The packed `B` block of the task running on this thread, kept between calls.
    static B_BLOCK: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
    /// The packed `A` of the last product this thread started from an unpacked `A`, kept
    /// for the next one when at most [`KEEP_A`] floats.
    static A_PANELS: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
}

/// The largest packed `A` (floats) kept on a thread between products: 16 MiB, a 2048²
/// `A`. A new buffer is zeroed by the allocator on the calling thread before the threads
/// start: 0.2 ms for 4 MiB on Intel Sapphire Rapids (mimalloc keeping freed memory, as
/// the `focal` binary sets it), 3 % of a 1024² product at the FMA peak of 2 cores. A
/// 16 MiB one was faulted in again at every product (huge pages zeroed by the kernel
/// while the threads pack into it): keeping it lowered the CPU time of a 2048² product
/// in six of seven interleaved runs (median −2.4 %) and its wall time in five (median
/// −10 %), 2 threads on a shared host (`docs/gemm.md`); the peak RSS of inference and
/// of the 96-px and 512-px training steps did not change (`docs/memory.md`).
/// Larger `A`s get a new buffer each time, so that what is kept adds at most 16 MiB per
/// calling thread to the peak memory (`docs/memory.md`).
const KEEP_A: usize = 1 << 22;

/// `(start, len)` pieces of `0..len` cut into `parts` runs whose lengths are multiples
/// of `unit` (the last one shorter).
pub(crate) fn cuts(len: usize, parts: usize, unit: usize) -> Vec<(usize, usize)> {
    let step = len.div_ceil(parts.max(1)).div_ceil(unit).max(1) * unit;
    (0..len)
        .step_by(step)
        .map(|s| (s, step.min(len - s)))
        .collect()
}

/// The width of the column blocks that a task of `n` columns walks: at most `nc` (the
/// kernel's `NC`, a multiple of `nr`), all of one width in whole micro-panels but the
/// last, so that no block is a thin remainder. A task of 512 columns with 48-wide
/// panels walks two blocks of 288 and 224 columns, not 480 and 32: a 32-wide block
/// would read every `A` micro-panel of the task for a single narrow tile.
pub(crate) fn block_width(n: usize, nc: usize, nr: usize) -> usize {
    let blocks = n.div_ceil(nc).max(1);
    (n.div_ceil(blocks).div_ceil(nr) * nr).clamp(nr, nc.max(nr))
}

/// Cost of packing one `B` micro-panel (`K × NR`), in units of one tile's
/// multiply-adds (`MR × NR × K`): copying from the image (implicit im2col) runs at about
/// one element per cycle, a tile step at `MR·NR/32` elements per cycle.
const PACK_COST: f64 = 2.0;

/// How many row and column pieces to cut `C` into (`m × n`, tiles of `mr × nr`, rows
/// cut in whole `mr`-row panels, columns in units of `cu` ≤ `nr`): the split whose
/// busiest thread has the least to do, counting for each task its tiles and the packing
/// of its own `B` columns (cutting rows makes several tasks pack the same columns), the
/// tasks dealt to the threads largest first. A narrower last tile counts for its share
/// of a whole one. A task wider than `NC` walks its column blocks in turn. A small
/// product runs as one task.
///
/// Columns are cut in vectors (`cu` = the kernel's `VL`), not in whole micro-panels:
/// 1024 columns in 48-wide panels (21⅓ of them) split as 528 and 496 in panels, one
/// thread doing 6 % more than the other, but as 512 and 512 in vectors, each task
/// ending on one 32-wide tile.
pub(crate) fn task_grid(
    m: usize,
    n: usize,
    k: usize,
    (mr, nr): (usize, usize),
    cu: usize,
) -> (usize, usize) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || 2 * m * n * k < PAR_FLOPS {
        return (1, 1);
    }
    let (row_panels, col_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    // (length, how many) of the pieces `cuts` makes: all full but the last.
    let pieces = |len: usize, parts: usize, unit: usize| {
        let step = len.div_ceil(parts).div_ceil(unit) * unit;
        let count = len.div_ceil(step);
        [(step, count - 1), (len - (count - 1) * step, 1)]
    };
    let mut best = (f64::INFINITY, 1, 1);
    let (mut work, mut load) = (Vec::new(), vec![0.0f64; threads]);
    for cols in 1..=col_panels.min(4 * threads) {
        for rows in 1..=row_panels.min(4 * threads) {
            if rows * cols > 8 * threads {
                continue;
            }
            work.clear();
            for (rl, rn) in pieces(m, rows, mr) {
                for (cl, cn) in pieces(n, cols, cu) {
                    let tr = rl.div_ceil(mr) as f64;
                    let tc = (cl.div_ceil(cu) * cu) as f64 / nr as f64;
                    let w = tr * tc + tc * PACK_COST;
                    work.extend(std::iter::repeat_n(w, rn * cn));
                }
            }
            // Largest first, each to the least loaded thread.
            work.sort_by(|a, b| b.total_cmp(a));
            load.fill(0.0);
            for w in &work {
                let least = (0..threads)
                    .min_by(|&a, &b| load[a].total_cmp(&load[b]))
                    .unwrap_or(0);
                load[least] += w;
            }
            let span = load.iter().copied().fold(0.0, f64::max);
            // Among equal spans, the fewest tasks.
            let cost = span * (1.0 + 1e-3 * work.len() as f64);
            if cost < best.0 {
                best = (cost, rows, cols);
            }
        }
    }
    (best.1, best.2)
}

/// `C ← A·B + start` with kernel `K` (see the module doc). `B` is `K × n`, `C` is `m × n`.
/// Without `parallel`, one task on the calling thread (the same bits: tasks split rows
/// and columns of `C`, never `K`).
pub(crate) fn gemm<K: MicroKernel>(
    a: ASide,
    b: &dyn Panels,
    start: Start,
    c: MatMut,
    parallel: bool,
) {
    let (m, n) = (c.rows(), c.cols());
    let k = b.dims().0;
    let mut owned = None;
    let pa: &PackedPanels = match a {
        ASide::Packed(p) => {
            assert!(p.fits::<K>(), "gemm: A was packed for another kernel");
            p
        }
        ASide::Source(at, alpha) => {
            owned.insert(PackedPanels::new_in::<K>(A_PANELS.take(), at, alpha))
        }
    };
    let (row_parts, col_parts) = if parallel {
        task_grid(m, n, k, (K::MR, K::NR), K::VL)
    } else {
        (1, 1)
    };
    let mut tasks = Vec::with_capacity(row_parts * col_parts);
    let mut rest = c;
    for (i0, rows) in cuts(m, row_parts, K::MR) {
        let (band, tail) = rest.split_rows(rows);
        rest = tail;
        let mut band = band;
        for (j0, cols) in cuts(n, col_parts, K::VL) {
            let (blk, right) = band.split_cols(cols);
            band = right;
            tasks.push((i0, j0, blk));
        }
    }
    let run = |(i0, j0, blk): (usize, usize, MatMut)| block::<K>(pa, b, &start, i0, j0, blk);
    if tasks.len() > 1 && 2 * m * n * k >= PAR_FLOPS {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    if let Some(packed) = owned {
        let buf = packed.into_buf();
        if buf.as_slice().len() <= KEEP_A {
            A_PANELS.set(buf);
        }
    }
}

/// One task: rows `i0..` and columns `j0..` of the product, written to `c`.
fn block<K: MicroKernel>(
    pa: &PackedPanels,
    b: &dyn Panels,
    start: &Start,
    i0: usize,
    j0: usize,
    mut c: MatMut,
) {
    let (mb, nb) = (c.rows(), c.cols());
    let k = pa.k;
    let mut buf = B_BLOCK.take();
    let width = block_width(nb, K::NC, K::NR);
    for jc in (0..nb).step_by(width) {
        let nc = width.min(nb - jc);
        let panels = nc.div_ceil(K::NR);
        for pc in (0..k).step_by(K::KC) {
            let kc = K::KC.min(k - pc);
            // The block's micro-panels, read in place when `B` holds them in panel
            // order already (the Winograd transformed inputs), else packed into `buf`.
            let stored: Option<Vec<&[f32]>> = (0..panels)
                .map(|jr| b.stored_panel(pc, kc, j0 + jc + jr * K::NR, K::NR))
                .collect();
            if stored.is_none() {
                buf.ensure(panels * kc * K::NR);
                let bp = &mut buf.as_mut_slice()[..panels * kc * K::NR];
                b.pack(pc, kc, j0 + jc, nc, K::NR, bp);
            }
            let bp = buf.as_slice();
            // One A micro-panel (MR × kc, in L1) against every B micro-panel of the
            // block (kc × NR each, streamed from the L2-resident block).
            for ir in (0..mb).step_by(K::MR) {
                let rows = K::MR.min(mb - ir);
                let apanel = pa.panel(pc, (i0 + ir) / K::MR);
                let start = if pc == 0 {
                    start.tile(i0 + ir)
                } else {
                    Tile::Load
                };
                for jr in 0..panels {
                    let cols = K::NR.min(nc - jr * K::NR);
                    let bpanel = match &stored {
                        Some(panels) => panels[jr],
                        None => &bp[jr * kc * K::NR..(jr + 1) * kc * K::NR],
                    };
                    tile::<K>(
                        kc,
                        apanel,
                        bpanel,
                        &mut c,
                        (ir, jc + jr * K::NR),
                        (rows, cols),
                        start,
                    );
                }
            }
        }
    }
    B_BLOCK.set(buf);
}

/// How a tile starts, before pointers are taken.
#[derive(Clone, Copy)]
enum Tile<'a> {
    Zero,
    Load,
    Scale(f32),
    /// The bias of rows `i..`.
    Bias(&'a [f32]),
}

impl Start<'_> {
    /// The start of the tile whose first row is `i` of `C`, in the first block of `k`.
    fn tile(&self, i: usize) -> Tile<'_> {
        match *self {
            Start::Beta(0.0) => Tile::Zero,
            Start::Beta(1.0) => Tile::Load,
            Start::Beta(b) => Tile::Scale(b),
            Start::RowBias(bias) => Tile::Bias(&bias[i..]),
        }
    }
}

/// Runs the kernel on the `rows × cols` tile of `c` at `(i, j)`: straight into `C` when
/// the tile is whole and its rows contiguous, else through a zero-padded copy.
fn tile<K: MicroKernel>(
    kc: usize,
    a: *const f32,
    b: &[f32],
    c: &mut MatMut,
    (i, j): (usize, usize),
    (rows, cols): (usize, usize),
    start: Tile,
) {
    const MAX: usize = 512;
    assert!(K::MR * K::NR <= MAX && K::MR <= 64);
    // A stored panel comes from a safe trait method: check its length in every build.
    assert!(
        b.len() >= kc * K::NR,
        "gemm: a B micro-panel shorter than kc·NR"
    );
    let (rs, cs) = c.strides();
    let mut bias_pad = [0.0f32; 64];
    let ts = match start {
        Tile::Zero => TileStart::Zero,
        Tile::Load => TileStart::Load,
        Tile::Scale(beta) => TileStart::Scale(beta),
        Tile::Bias(bias) => {
            let n = rows.min(bias.len());
            bias_pad[..n].copy_from_slice(&bias[..n]);
            TileStart::RowBias(bias_pad.as_ptr())
        }
    };
    if rows == K::MR && cs == 1 && cols % K::VL == 0 {
        // SAFETY: `a` is an MR × kc panel of a PackedPanels (PackedPanels::panel
        // sliced it), `b` holds kc·NR floats (asserted above; a shared borrow, packed
        // or stored, so it cannot alias C), and the tile's MR rows of `cols` contiguous
        // floats at c + r·rs are elements of C (rows i..i+MR, columns j..j+cols are
        // inside the matrix and cs = 1), exclusively borrowed through `c`; the bias copy
        // holds 64 ≥ MR floats. The caller's CPU check chose K's instruction set.
        unsafe {
            if cols == K::NR {
                K::tile(kc, a, b.as_ptr(), c.ptr_at(i, j), rs, ts)
            } else {
                K::tile_narrow(cols / K::VL, kc, a, b.as_ptr(), c.ptr_at(i, j), rs, ts)
            }
        }
        return;
    }
    // A partial tile (or C's rows not contiguous): through a row-major MR × NR copy,
    // computing only the vectors that hold its columns.
    let mut buf = [0.0f32; MAX];
    let w = K::NR;
    if matches!(ts, TileStart::Load | TileStart::Scale(_)) {
        c.read_block((i, j), (rows, cols), &mut buf, w);
    }
    // SAFETY: as above, with C replaced by `buf`, a local MR × NR row-major tile
    // (MR·NR ≤ MAX asserted), of which the kernel writes the first ⌈cols/VL⌉ vectors of
    // each row.
    unsafe {
        K::tile_narrow(
            cols.div_ceil(K::VL),
            kc,
            a,
            b.as_ptr(),
            buf.as_mut_ptr(),
            w,
            ts,
        )
    }
    c.write_block((i, j), (rows, cols), &buf, w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_grids_keep_both_threads_busy() {
        crate::threads::with_threads(2, || {
            // 512 x 128 (three 48-wide panels): rows are cut rather than 3 column tasks
            // for 2 threads.
            let (r, c) = task_grid(512, 128, 4608, (8, 48), 16);
            assert_eq!((r * c) % 2, 0, "{r} x {c}");
            // Tiny products stay whole.
            assert_eq!(task_grid(8, 8, 8, (8, 48), 16), (1, 1));
            // A square product: two halves of the columns, 512 each (cut in vectors of
            // 16, not in 48-wide panels: 528 and 496).
            assert_eq!(task_grid(1024, 1024, 1024, (8, 48), 16), (1, 2));
            assert_eq!(cuts(1024, 2, 16), vec![(0, 512), (512, 512)]);
            assert_eq!(cuts(2048, 2, 16), vec![(0, 1024), (1024, 1024)]);
        });
    }

    #[test]
    fn column_blocks_are_even_and_never_wider_than_nc() {
        // Two blocks of 288 and 224, not 480 and 32.
        assert_eq!(block_width(512, 480, 48), 288);
        // One block when the task fits; 1024 columns: 384, 384 and 256.
        assert_eq!(block_width(400, 480, 48), 432);
        assert_eq!(block_width(1024, 480, 48), 384);
        assert_eq!(block_width(5, 480, 48), 48);
        for n in 1..3000 {
            for (nc, nr) in [(480, 48), (480, 16), (448, 64)] {
                let w = block_width(n, nc, nr);
                assert!(w.is_multiple_of(nr) && w <= nc, "n {n}: width {w}");
                // As few blocks as NC allows, the last one not the only narrow piece
                // left over from full-width blocks.
                assert_eq!(n.div_ceil(w), n.div_ceil(nc), "n {n}, nc {nc}");
            }
        }
    }

    /// A plain-Rust kernel keeping the contract (one fused multiply-add chain per
    /// element), so that the driver can be tested on any CPU; `KC = 4` and `NC = 16` cut
    /// small products into several blocks.
    struct Plain;

    impl MicroKernel for Plain {
        const MR: usize = 8;
        const NR: usize = 8;
        const KC: usize = 4;
        const NC: usize = 16;
        const VL: usize = 8;

        unsafe fn tile(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            start: TileStart,
        ) {
            // SAFETY: forwarded contract (MicroKernel::tile, one vector of 8 columns).
            unsafe { Self::tile_narrow(1, kc, a, b, c, ldc, start) }
        }

        unsafe fn tile_narrow(
            vectors: usize,
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            start: TileStart,
        ) {
            // SAFETY: the caller's contract (MicroKernel::tile_narrow): `a` holds kc·8
            // floats, `b` kc·8, `c` 8 rows of 8·vectors ≤ 8 floats at c + i·ldc, a bias
            // 8 floats; every access below stays inside those.
            unsafe {
                for i in 0..8 {
                    for j in 0..8 * vectors {
                        let p = c.add(i * ldc + j);
                        let mut acc = match start {
                            TileStart::Zero => 0.0,
                            TileStart::Load => *p,
                            TileStart::Scale(beta) => beta * *p,
                            TileStart::RowBias(bias) => *bias.add(i),
                        };
                        for q in 0..kc {
                            acc = (*a.add(q * 8 + i)).mul_add(*b.add(q * 8 + j), acc);
                        }
                        *p = acc;
                    }
                }
            }
        }
    }

    /// The packed `A` is kept for the next product up to `KEEP_A` floats, and a product
    /// packing into the kept (larger, stale) buffer gives the same bits as one packing
    /// into a new buffer.
    #[test]
    fn packed_a_is_kept_up_to_its_cap_and_reuse_changes_no_bit() {
        use super::super::view::MatRef;
        let product = |m: usize, k: usize, n: usize, fill: f32| {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.25).collect();
            let mut c = vec![fill; m * n];
            let (a, b) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
            let c_view = MatMut::row_major(&mut c, m, n);
            gemm::<Plain>(
                ASide::Source(&a.t(), 1.0),
                &b,
                Start::Beta(0.0),
                c_view,
                true,
            );
            c
        };
        let kept = || {
            let buf = A_PANELS.take();
            let len = buf.as_slice().len();
            A_PANELS.set(buf);
            len
        };
        std::thread::spawn(move || {
            let fresh = product(9, 5, 7, 0.0);
            // A larger product first leaves its buffer, full of other values, behind.
            let big = product(40, 30, 20, 1.0);
            assert_eq!(kept(), 40 * 30);
            assert_eq!(product(9, 5, 7, f32::NAN), fresh);
            assert_eq!(kept(), 40 * 30, "a smaller A reuses the larger buffer");
            assert_eq!(big, product(40, 30, 20, 2.0));
            // Past the cap the buffer is dropped.
            let _ = product(KEEP_A / 64 + 8, 64, 1, 0.0);
            assert_eq!(kept(), 0);
        })
        .join()
        .expect("the products run");
    }

    #[test]
    fn cuts_cover_the_range_in_units() {
        assert_eq!(cuts(10, 3, 2), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(cuts(5, 1, 8), vec![(0, 5)]);
        assert_eq!(cuts(0, 4, 8), vec![]);
        assert_eq!(cuts(16, 8, 8), vec![(0, 8), (8, 8)]);
    }
}
