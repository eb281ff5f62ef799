//! Implicit im2col: the column matrix of a convolution as GEMM operands that pack
//! themselves straight from the image, block by block, so that no column matrix is
//! ever built.
//!
//! For a stack of `channels` input planes (one group) and a [`Window`], row
//! `r = (c·KH + ky)·KW + kx` of the column matrix (matching the weight's row-major
//! `(O, C/G, KH, KW)` layout) and column `j = s·P + p` (pixel `p` of the `s`-th sample)
//! hold the input value under tap `(ky, kx)` of channel `c` for that output pixel:
//!
//! ```text
//!   cols[r, j] = x[n0 + s, c0 + c, iy(p, ky), ix(p, kx)]        (channels·KH·KW, samples·P)
//! ```
//!
//! The GEMM operands of every pass are built on it, or on the output gradient (see `pack.rs` for the panel order they write):
//!
//! | source      | matrix                         | used as                        |
//! |-------------|--------------------------------|--------------------------------|
//! | [`Im2col`]  | `cols` (K × samples·P)         | `B` of the forward pass        |
//! | [`Im2colT`] | `colsᵀ` (samples·P × K)        | `B` of the weight gradient     |
//! | [`GradT`]   | `∂yᵀ` (samples·P × O/G)        | `Aᵀ` of the weight gradient    |
//! | [`Grad`]    | `∂y` (O/G × samples·P)         | `B` of the col2im input gradient |
//!
//! A row of `cols` is filled in runs that share one output row: a contiguous copy of an
//! input row (stride 1), a strided gather (stride 2, 3, …), and zeros for the padding.
//! Where the runs of a block go depends on the tap, not on the channel, so they are
//! worked out once per packed block ([`Layout`]: per tap, a list of segments to copy or
//! zero) and every row (channel, tap) of the block only copies. On small planes, whose
//! output rows are a few pixels long, a table of input offsets per (tap, pixel) replaces
//! the runs, looked up eight at a time by AVX2 gathers where the CPU has them. The
//! transposed source ([`Im2colT`]) fills eight rows and writes them into the panel by
//! 8 × 8 transposes in AVX registers. All of it only moves values: the packed operands,
//! and so the results, are the same bits on every path.

use std::cell::Cell;

use super::geometry::Window;
use crate::gemm::Panels;
use crate::ops::simd_level::Level;

/// Planes with fewer output pixels than this are gathered through an offset table.
const TABLE_BELOW: usize = 256;

/// The column matrix of `channels` planes (channels `c0..` of samples `n0..n0+samples`
/// of `x`, which holds `per_sample` planes per sample).
pub(crate) struct Im2col<'a> {
    win: Window,
    x: &'a [f32],
    per_sample: usize,
    c0: usize,
    channels: usize,
    n0: usize,
    samples: usize,
    /// [`Window::columns`] of each kernel column `kx`.
    columns: Vec<(isize, usize, usize)>,
    /// [`Window::gather_table`] on small planes.
    table: Option<Vec<i32>>,
}

/// A run of consecutive columns of `cols` (without a table: inside one sample and one
/// output row) and where it goes: `len` values from pixel `pix` of sample `s`, to `dst`
/// (plus the caller's row offset).
#[derive(Clone, Copy, Debug)]
struct Piece {
    s: usize,
    pix: usize,
    len: usize,
    dst: usize,
}

/// Where one run of a row of `cols` comes from, the same for every channel: `len`
/// values to `dst` (plus the caller's row offset), read from `src` (plus the channel's
/// plane offset) every `sw`-th input pixel, or zeros (`src == ZEROS`, the padding).
#[derive(Clone, Copy, Debug)]
struct Segment {
    dst: usize,
    len: usize,
    src: usize,
}

/// [`Segment::src`] of a run of padding.
const ZEROS: usize = usize::MAX;

/// What [`Im2col::fill`] needs for every row of a block (see [`Im2col::layout`]).
struct Layout {
    pieces: Vec<Piece>,
    offsets: Option<Vec<usize>>,
    /// With a table on a CPU with AVX2 (and an input under 2³¹ floats): the same
    /// offsets as `i32`, −1 in the padding, for [`gather_avx2`] (then `offsets` is
    /// `None`).
    offsets32: Option<Vec<i32>>,
    /// Without a table: the segments of tap `t` are `segments[seg_at[t]..seg_at[t + 1]]`.
    segments: Vec<Segment>,
    seg_at: Vec<usize>,
    len: usize,
}

impl<'a> Im2col<'a> {
    pub(crate) fn new(
        win: Window,
        x: &'a [f32],
        per_sample: usize,
        (c0, channels): (usize, usize),
        (n0, samples): (usize, usize),
    ) -> Im2col<'a> {
        assert!(
            c0 + channels <= per_sample && (n0 + samples) * per_sample * win.hw() <= x.len(),
            "im2col: channels {c0}+{channels} of samples {n0}+{samples} outside the input"
        );
        let table = (win.p() < TABLE_BELOW).then(|| win.gather_table());
        Im2col {
            win,
            x,
            per_sample,
            c0,
            channels,
            n0,
            samples,
            columns: (0..win.kw).map(|kx| win.columns(kx)).collect(),
            table,
        }
    }

    /// Rows: `channels·KH·KW`.
    pub(crate) fn k(&self) -> usize {
        self.channels * self.win.taps()
    }
    /// Columns: `samples·P`.
    pub(crate) fn cols(&self) -> usize {
        self.samples * self.win.p()
    }

    /// How to fill columns `[j0, j0 + len)` of any row, computed once per block: the
    /// pieces of the range (cut every `w` columns, the destination advancing by `w`
    /// within a panel and by `stride` from one panel to the next; without a table also
    /// at samples and output rows) and, with a table, the offset in `x` of every
    /// column's input pixel for every tap (channel 0 of the group); without one, each
    /// tap's pieces cut into segments of copies and zeros ([`Im2col::segments`]), so
    /// that filling a row (one channel and tap) only copies.
    fn layout(&self, j0: usize, len: usize, w: usize, stride: usize) -> Layout {
        let p = self.win.p();
        let mut pieces = Vec::new();
        let mut i = 0;
        while i < len {
            let (s, pix) = ((j0 + i) / p, (j0 + i) % p);
            let mut run = (len - i).min(w - i % w);
            if self.table.is_none() {
                run = run.min(p - pix).min(self.win.ow - pix % self.win.ow);
            }
            pieces.push(Piece {
                s,
                // With a table, `pix` is the piece's first column within the range.
                pix: if self.table.is_some() { i } else { pix },
                len: run,
                dst: (i / w) * stride + i % w,
            });
            i += run;
        }
        let offsets = self.table.as_ref().map(|table| {
            let hw = self.win.hw();
            let mut v = Vec::with_capacity(self.win.taps() * len);
            for tap in 0..self.win.taps() {
                v.extend((j0..j0 + len).map(|j| {
                    let at = table[tap * p + j % p];
                    if at < 0 {
                        usize::MAX
                    } else {
                        (self.n0 + j / p) * self.per_sample * hw + at as usize
                    }
                }));
            }
            v
        });
        let (segments, seg_at) = match offsets {
            Some(_) => (Vec::new(), Vec::new()),
            None => self.segments(&pieces),
        };
        let (offsets, offsets32) = match offsets {
            Some(v) if has_avx2() && self.x.len() <= i32::MAX as usize => {
                let v32 = v
                    .iter()
                    .map(|&o| if o == usize::MAX { -1 } else { o as i32 })
                    .collect();
                (None, Some(v32))
            }
            v => (v, None),
        };
        Layout {
            pieces,
            offsets,
            offsets32,
            segments,
            seg_at,
            len,
        }
    }

    /// The segments of every tap over a block's pieces (no table): per piece, the
    /// padding columns before the plane, the run inside it, the padding after it (a
    /// whole piece of zeros when its input row is padding), adjacent zeros merged.
    /// The source offsets are those of channel 0 of the group.
    fn segments(&self, pieces: &[Piece]) -> (Vec<Segment>, Vec<usize>) {
        let win = &self.win;
        let hw = win.hw();
        let mut segs: Vec<Segment> = Vec::with_capacity(win.taps() * pieces.len() * 2);
        let mut seg_at = Vec::with_capacity(win.taps() + 1);
        let push = |segs: &mut Vec<Segment>, seg: Segment, first: usize| {
            if seg.len == 0 {
                return;
            }
            if let Some(last) = segs[first..].last_mut() {
                if seg.src == ZEROS && last.src == ZEROS && last.dst + last.len == seg.dst {
                    last.len += seg.len;
                    return;
                }
            }
            segs.push(seg);
        };
        for tap in 0..win.taps() {
            let (ky, kx) = (tap / win.kw, tap % win.kw);
            let (off, lo, hi) = self.columns[kx];
            let first = segs.len();
            seg_at.push(first);
            for pc in pieces {
                let zeros = |dst: usize, len: usize| Segment {
                    dst,
                    len,
                    src: ZEROS,
                };
                let (oy, ox0) = (pc.pix / win.ow, pc.pix % win.ow);
                let Some(iy) = win.iy(oy, ky) else {
                    push(&mut segs, zeros(pc.dst, pc.len), first);
                    continue;
                };
                // Inside the plane: output columns [a, b) of the piece.
                let a = lo.clamp(ox0, ox0 + pc.len);
                let b = hi.clamp(a, ox0 + pc.len);
                push(&mut segs, zeros(pc.dst, a - ox0), first);
                if b > a {
                    let ix0 = (a as isize * win.sw as isize + off) as usize;
                    let plane = ((self.n0 + pc.s) * self.per_sample + self.c0) * hw;
                    let run = Segment {
                        dst: pc.dst + a - ox0,
                        len: b - a,
                        src: plane + iy * win.w + ix0,
                    };
                    push(&mut segs, run, first);
                }
                push(&mut segs, zeros(pc.dst + b - ox0, ox0 + pc.len - b), first);
            }
        }
        seg_at.push(segs.len());
        (segs, seg_at)
    }

    /// Row `r` of `cols` over a block's [`Layout`]: `out[piece.dst + at ..][..piece.len]`
    /// for every piece (every entry written, zeros in the padding).
    fn fill(&self, r: usize, lay: &Layout, out: &mut [f32], at: usize) {
        let win = &self.win;
        let (taps, hw) = (win.taps(), win.hw());
        let (c, tap) = (r / taps, r % taps);
        #[cfg(target_arch = "x86_64")]
        if let Some(offsets) = &lay.offsets32 {
            // Small planes, eight lookups per instruction.
            let c_off = (self.c0 + c) * hw;
            let row = &offsets[tap * lay.len..(tap + 1) * lay.len];
            let x = &self.x[c_off..];
            for pc in &lay.pieces {
                let dst = &mut out[pc.dst + at..pc.dst + at + pc.len];
                // SAFETY: `offsets32` exists only where the CPU has AVX2; every entry
                // `o ≥ 0` is `(n0 + s)·per_sample·hw + iy·w + ix` with `s < samples`,
                // `iy < h`, `ix < w` (the table), and `c0 + c < per_sample`, so
                // `c_off + o < (n0 + samples)·per_sample·hw ≤ x.len()` (asserted in
                // `Im2col::new`): every lane read lies inside `x[c_off..]`.
                unsafe { gather_avx2(x, &row[pc.pix..pc.pix + pc.len], dst) };
            }
            return;
        }
        if let Some(offsets) = &lay.offsets {
            // Small planes: one lookup per column, the padding at usize::MAX.
            let c_off = (self.c0 + c) * hw;
            let row = &offsets[tap * lay.len..(tap + 1) * lay.len];
            for pc in &lay.pieces {
                let dst = &mut out[pc.dst + at..pc.dst + at + pc.len];
                for (d, &o) in dst.iter_mut().zip(&row[pc.pix..pc.pix + pc.len]) {
                    *d = if o == usize::MAX {
                        0.0
                    } else {
                        self.x[o + c_off]
                    };
                }
            }
            return;
        }
        let c_off = c * hw;
        for sg in &lay.segments[lay.seg_at[tap]..lay.seg_at[tap + 1]] {
            let dst = &mut out[sg.dst + at..sg.dst + at + sg.len];
            if sg.src == ZEROS {
                dst.fill(0.0);
            } else if win.sw == 1 {
                copy_short(dst, &self.x[sg.src + c_off..sg.src + c_off + sg.len]);
            } else {
                let span = (sg.len - 1) * win.sw + 1;
                gather(dst, &self.x[sg.src + c_off..sg.src + c_off + span], win.sw);
            }
        }
    }
}

/// Whether the gathers of [`gather_avx2`] may run: the process's path (`FOCAL_ISA`) is
/// AVX2 or AVX-512, which [`Level`] names only when the CPU has AVX2. With `portable`
/// the plain loops run, so that path tests them too (only copies: the same bits).
fn has_avx2() -> bool {
    Level::active() != Level::Portable
}

/// `dst[j] = x[at[j]]`, or 0 where `at[j] < 0`, eight lanes per AVX2 gather (the
/// padding lanes masked off, so never read), the last `len mod 8` one by one.
///
/// # Safety
/// The CPU must have AVX2, and every `at[j] ≥ 0` must be an index into `x` (the
/// gather's lanes are not bounds-checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_avx2(x: &[f32], at: &[i32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut d = dst.chunks_exact_mut(8);
    let mut a = at.chunks_exact(8);
    let none = _mm256_set1_epi32(-1);
    for (d8, a8) in (&mut d).zip(&mut a) {
        // SAFETY: `a8` is 8 i32 (a checked chunk); loadu has no alignment need.
        let idx = unsafe { _mm256_loadu_si256(a8.as_ptr().cast()) };
        let inside = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, none));
        // SAFETY: the lanes with `inside` set read `x[at[j]]`, an index into `x` (the
        // caller's promise); the others are not read and give 0.
        let v =
            unsafe { _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), x.as_ptr(), idx, inside) };
        // SAFETY: `d8` is 8 floats (a checked chunk); storeu has no alignment need.
        unsafe { _mm256_storeu_ps(d8.as_mut_ptr(), v) };
    }
    for (d1, &a1) in d.into_remainder().iter_mut().zip(a.remainder()) {
        *d1 = if a1 < 0 { 0.0 } else { x[a1 as usize] };
    }
}

/// `dst = src` for the short runs of one output row, in blocks of 8 floats that the
/// compiler turns into vector moves (a `memcpy` call costs more than these copies).
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d8, s8) in (&mut d).zip(&mut s) {
        let s8: &[f32; 8] = s8.try_into().expect("chunks of 8");
        let d8: &mut [f32; 8] = d8.try_into().expect("chunks of 8");
        *d8 = *s8;
    }
    for (d1, s1) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d1 = *s1;
    }
}

/// `dst[j] = src[j·s]` for every `j` (`s ≥ 2`), written over `s`-sized chunks so the
/// loop has no index checks (stride 2, every strided conv of ResNet, compiles to
/// vector shuffles).
fn gather(dst: &mut [f32], src: &[f32], s: usize) {
    let Some((last, body)) = dst.split_last_mut() else {
        return;
    };
    let n = body.len();
    if s == 2 {
        for (d, pair) in body.iter_mut().zip(src[..2 * n].chunks_exact(2)) {
            *d = pair[0];
        }
    } else {
        for (d, chunk) in body.iter_mut().zip(src[..s * n].chunks_exact(s)) {
            *d = chunk[0];
        }
    }
    *last = src[s * n];
}

thread_local! {
    /// One row (or column) of the operand being packed, kept between calls.
    static ROW: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's row buffer (contents arbitrary).
fn with_row<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = ROW.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    ROW.set(buf);
    r
}

impl Panels for Im2col<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.k(), self.cols())
    }

    /// Each row of the block goes straight into its place in every panel.
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        let lay = self.layout(j0, nc, w, kc * w);
        for kk in 0..kc {
            self.fill(k0 + kk, &lay, out, kk * w);
        }
        // Columns past nc in the last panel.
        if !nc.is_multiple_of(w) {
            let last = (nc / w) * kc * w;
            for kk in 0..kc {
                out[last + kk * w + nc % w..last + (kk + 1) * w].fill(0.0);
            }
        }
    }
}

/// `colsᵀ` (`samples·P × channels·KH·KW`), the `B` of the weight gradient.
pub(crate) struct Im2colT<'a>(pub Im2col<'a>);

impl Panels for Im2colT<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.0.cols(), self.0.k())
    }

    /// Column `r` of the block is row `r` of `cols`. Rows are filled eight at a time
    /// into a buffer, then interleaved into the panel: eight consecutive floats per
    /// step of `k`, instead of one float per cache line.
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        const G: usize = 8;
        let lay = self.0.layout(k0, kc, usize::MAX, 0);
        with_row(G * kc, |rows| {
            for (pi, panel) in out.chunks_mut(kc * w).take(nc.div_ceil(w)).enumerate() {
                for g0 in (0..w).step_by(G) {
                    let g = G.min(w - g0);
                    for t in 0..g {
                        let r = j0 + pi * w + g0 + t;
                        let row = &mut rows[t * kc..(t + 1) * kc];
                        if r < j0 + nc {
                            self.0.fill(r, &lay, row, 0);
                        } else {
                            row.fill(0.0);
                        }
                    }
                    if g == G {
                        interleave8(rows, kc, kc, panel, w, g0);
                    } else {
                        for (kk, dst) in panel.chunks_exact_mut(w).enumerate() {
                            for (t, d) in dst[g0..g0 + g].iter_mut().enumerate() {
                                *d = rows[t * kc + kk];
                            }
                        }
                    }
                }
            }
        });
    }
}

/// `panel[kk·w + g0 + t] = rows[t·ld + kk]` for the eight rows `t` and every `kk < kc`:
/// eight rows of a matrix (of `cols`, of the weight) written as eight columns of a panel, as 8 × 8 transposes in
/// AVX registers where the CPU has AVX (the plain loop elsewhere, and for the last
/// `kc mod 8` columns). Only copies: the same bits on every path.
pub(crate) fn interleave8(
    rows: &[f32],
    ld: usize,
    kc: usize,
    panel: &mut [f32],
    w: usize,
    g0: usize,
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `has_avx2` holds only when the CPU has AVX2 (detected), hence AVX, the
        // only requirement of `transpose8_avx`.
        unsafe { transpose8_avx(rows, ld, kc, panel, w, g0) };
        done = kc - kc % 8;
    }
    for kk in done..kc {
        for t in 0..8 {
            panel[kk * w + g0 + t] = rows[t * ld + kk];
        }
    }
}

/// The first `kc − kc mod 8` columns of [`interleave8`], one 8 × 8 block at a time:
/// eight unaligned loads, the transpose by unpack / shuffle / lane permute, eight
/// unaligned stores.
///
/// # Safety
/// The CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8_avx(
    rows: &[f32],
    ld: usize,
    kc: usize,
    panel: &mut [f32],
    w: usize,
    g0: usize,
) {
    use std::arch::x86_64::*;
    for kk0 in (0..kc - kc % 8).step_by(8) {
        let r: [__m256; 8] = std::array::from_fn(|t| {
            let src = &rows[t * ld + kk0..t * ld + kk0 + 8];
            // SAFETY: `src` is 8 floats (a checked slice); loadu has no alignment need.
            unsafe { _mm256_loadu_ps(src.as_ptr()) }
        });
        // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves.
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let cols = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (i, col) in cols.into_iter().enumerate() {
            let at = (kk0 + i) * w + g0;
            let dst = &mut panel[at..at + 8];
            // SAFETY: `dst` is 8 floats (a checked slice); storeu has no alignment need.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), col) };
        }
    }
}

/// The output gradient of one group as a matrix `∂y_g` (`O/G × samples·P`): element
/// `(o, (s, p)) = gy[n0 + s, o0 + o, p]` of a gradient with `o_total` channels. `B` of
/// the col2im input gradient `∂cols = W_gᵀ·∂y_g`; its transpose [`GradT`] is the `Aᵀ`
/// of the weight gradient `∂W_g = ∂y_g·colsᵀ`.
#[derive(Clone, Copy)]
pub(crate) struct Grad<'a> {
    pub gy: &'a [f32],
    pub o_total: usize,
    pub o0: usize,
    pub og: usize,
    pub p: usize,
    pub n0: usize,
    pub samples: usize,
}

impl Grad<'_> {
    /// `f(offset, run)` for the runs of row `o` over pixels `[j0, j0 + len)`, each run
    /// inside one sample's plane (so contiguous in `gy`).
    fn runs(&self, o: usize, j0: usize, len: usize, mut f: impl FnMut(usize, &[f32])) {
        let mut i = 0;
        while i < len {
            let (s, pix) = ((j0 + i) / self.p, (j0 + i) % self.p);
            let run = (self.p - pix).min(len - i);
            let at = ((self.n0 + s) * self.o_total + self.o0 + o) * self.p + pix;
            f(i, &self.gy[at..at + run]);
            i += run;
        }
    }
}

impl Panels for Grad<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.og, self.samples * self.p)
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        for kk in 0..kc {
            self.runs(k0 + kk, j0, nc, |i, run| {
                // Cut the run at panel boundaries.
                let mut q = 0;
                while q < run.len() {
                    let j = i + q;
                    let (pi, jj) = (j / w, j % w);
                    let len = (w - jj).min(run.len() - q);
                    let at = (pi * kc + kk) * w + jj;
                    out[at..at + len].copy_from_slice(&run[q..q + len]);
                    q += len;
                }
            });
            if !nc.is_multiple_of(w) {
                let at = ((nc / w) * kc + kk) * w + nc % w;
                out[at..at + w - nc % w].fill(0.0);
            }
        }
    }
}

/// `∂y_gᵀ` (`samples·P × O/G`): see [`Grad`].
pub(crate) struct GradT<'a>(pub Grad<'a>);

impl Panels for GradT<'_> {
    fn dims(&self) -> (usize, usize) {
        let (rows, cols) = self.0.dims();
        (cols, rows)
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        for (pi, panel) in out.chunks_mut(kc * w).take(nc.div_ceil(w)).enumerate() {
            for jj in 0..w {
                let o = j0 + pi * w + jj;
                if o >= j0 + nc {
                    for kk in 0..kc {
                        panel[kk * w + jj] = 0.0;
                    }
                    continue;
                }
                self.0.runs(o, k0, kc, |i, run| {
                    for (q, v) in run.iter().enumerate() {
                        panel[(i + q) * w + jj] = *v;
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::MatRef;

    /// Every source packs exactly the matrix it stands for, written out naively, on
    /// planes with runs (large) and with the table (small), strided and padded.
    #[test]
    fn sources_pack_the_matrices_they_stand_for() {
        let mut rng = crate::rng::Rng::new(9);
        for (h, w, k, s, p, d, samples) in [
            (7, 9, 3, 1, 1, 1, 2),
            (9, 8, 3, 2, 1, 1, 3),
            (40, 30, 3, 1, 1, 1, 1),
            (33, 35, 7, 2, 3, 1, 2),
            (12, 12, 3, 2, 2, 2, 2),
            (20, 20, 1, 2, 0, 1, 2),
        ] {
            let (oh, ow) = (
                super::super::conv_output_len(h, k, s, p, d).unwrap(),
                super::super::conv_output_len(w, k, s, p, d).unwrap(),
            );
            let win = Window {
                h,
                w,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                ph: p,
                pw: p,
                dh: d,
                dw: d,
                oh,
                ow,
            };
            let (per_sample, c0, ch) = (5, 1, 3);
            let x = rng.normal_vec(samples * per_sample * h * w, 0.0, 1.0);
            let src = Im2col::new(win, &x, per_sample, (c0, ch), (0, samples));
            let (rows, cols) = (src.k(), src.cols());
            // The column matrix from the formula.
            let mut want = vec![0.0f32; rows * cols];
            for r in 0..rows {
                let (c, tap) = (r / (k * k), r % (k * k));
                for j in 0..cols {
                    let (sm, pix) = (j / (oh * ow), j % (oh * ow));
                    let iy = (pix / ow * s + tap / k * d) as isize - p as isize;
                    let ix = (pix % ow * s + tap % k * d) as isize - p as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        want[r * cols + j] =
                            x[((sm * per_sample + c0 + c) * h + iy as usize) * w + ix as usize];
                    }
                }
            }
            let blocks =
                |k0: usize, kc: usize, j0: usize, nc: usize, wd: usize| (k0, kc, j0, nc, wd);
            for (k0, kc, j0, nc, wd) in [
                blocks(0, rows, 0, cols, 16),
                blocks(1, rows - 1, 3, cols - 5, 6),
            ] {
                let plain = MatRef::row_major(&want, rows, cols);
                let mut a = vec![f32::NAN; nc.div_ceil(wd) * kc * wd];
                let mut b = a.clone();
                src.pack(k0, kc, j0, nc, wd, &mut a);
                plain.pack(k0, kc, j0, nc, wd, &mut b);
                assert_eq!(a, b, "Im2col {h}x{w} k{k} s{s} p{p} d{d}");
                // Transposed: the blocks swap roles.
                let (kc2, nc2) = (nc.min(cols - j0), kc.min(rows - k0));
                let mut a = vec![f32::NAN; nc2.div_ceil(wd) * kc2 * wd];
                let mut b = a.clone();
                Im2colT(Im2col::new(win, &x, per_sample, (c0, ch), (0, samples)))
                    .pack(j0, kc2, k0, nc2, wd, &mut a);
                plain.t().pack(j0, kc2, k0, nc2, wd, &mut b);
                assert_eq!(a, b, "Im2colT {h}x{w} k{k} s{s} p{p} d{d}");
            }
        }
    }

    #[test]
    fn grad_packs_the_gradient_of_a_group_and_its_transpose() {
        let (n, o_total, p, o0, og, n0, samples) = (4, 6, 5, 2, 3, 1, 3);
        let gy: Vec<f32> = (0..n * o_total * p).map(|v| v as f32).collect();
        let src = Grad {
            gy: &gy,
            o_total,
            o0,
            og,
            p,
            n0,
            samples,
        };
        let cols = samples * p;
        let mut want = vec![0.0f32; og * cols];
        for s in 0..samples {
            for o in 0..og {
                for q in 0..p {
                    want[o * cols + s * p + q] = gy[((n0 + s) * o_total + o0 + o) * p + q];
                }
            }
        }
        let plain = MatRef::row_major(&want, og, cols);
        for (k0, kc, j0, nc, w) in [
            (0usize, 3usize, 0usize, 15usize, 4usize),
            (1, 2, 3, 11, 6),
            (0, 3, 2, 13, 16),
        ] {
            let mut a = vec![f32::NAN; nc.div_ceil(w) * kc * w];
            let mut b = a.clone();
            src.pack(k0, kc, j0, nc, w, &mut a);
            plain.pack(k0, kc, j0, nc, w, &mut b);
            assert_eq!(a, b, "Grad {k0} {kc} {j0} {nc} {w}");
        }
        for (k0, kc, j0, nc, w) in [(3usize, 11usize, 0usize, 3usize, 2usize), (0, 15, 1, 2, 8)] {
            let mut a = vec![f32::NAN; nc.div_ceil(w) * kc * w];
            let mut b = a.clone();
            GradT(src).pack(k0, kc, j0, nc, w, &mut a);
            plain.t().pack(k0, kc, j0, nc, w, &mut b);
            assert_eq!(a, b, "GradT {k0} {kc} {j0} {nc} {w}");
        }
    }
}
