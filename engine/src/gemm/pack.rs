//! Packing: copying a block of an operand into the order the micro-kernel reads it.
//!
//! ```text
//!   B block (kc × nc), cut into micro-panels of w columns:
//!
//!        j0          j0+w        j0+2w
//!   k0   [ panel 0  | panel 1   | panel 2 ...]      in memory, panel after panel;
//!   ..   [ kc × w   | kc × w    |            ]      inside a panel, row k of its w
//!   k0+kc[          |           |            ]      columns, then row k+1, ...
//!
//!   out[(panel·kc + k)·w + jj] = B[k0 + k, j0 + panel·w + jj]   (0 past the last column)
//! ```
//!
//! The micro-kernel then reads one panel front to back: `w` consecutive floats per step
//! of `k`. `A` is packed the same way *as `Aᵀ`*: an `MR`-row micro-panel of `A` is an
//! `MR`-column panel of `Aᵀ`, so one trait, [`Panels`], serves both operands.
//!
//! [`Panels`] is implemented by strided matrices ([`MatRef`]) and, in the convolution,
//! by sources that compute each element from the input image (implicit im2col): the
//! GEMM never needs a matrix to exist in memory, only to be packable block by block.

use super::view::MatRef;

/// A `K × N` matrix (`K` the GEMM's inner dimension) that can write any block of itself
/// in micro-panel order. Implementors must write every element of `out` they are asked
/// for, including the zeros past column `N`.
pub trait Panels: Sync {
    /// `(K, N)`.
    fn dims(&self) -> (usize, usize);

    /// Writes rows `k0..k0+kc` and columns `j0..j0+nc` into `out` in panels of `w`
    /// columns (`⌈nc/w⌉` panels of `kc·w` floats; see the module doc), zero past
    /// column `j0+nc`. `out` has at least `⌈nc/w⌉·kc·w` floats.
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]);

    /// The matrix itself, when it is a plain strided one (the `portable` path then
    /// hands it to matrixmultiply as it is instead of copying it).
    fn as_matrix(&self) -> Option<MatRef<'_>> {
        None
    }

    /// The micro-panel of rows `k0..k0+kc` and columns `j0..j0+w` when the source
    /// already holds it in micro-panel order: exactly the `kc·w` floats [`Panels::pack`]
    /// would write for that one panel (zero past column `N`). The SIMD driver then
    /// reads it in place instead of copying it. `None` (the default): pack it.
    fn stored_panel(&self, k0: usize, kc: usize, j0: usize, w: usize) -> Option<&[f32]> {
        let _ = (k0, kc, j0, w);
        None
    }
}

impl Panels for MatRef<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.rows(), self.cols())
    }

    fn as_matrix(&self) -> Option<MatRef<'_>> {
        Some(*self)
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, w: usize, out: &mut [f32]) {
        let (rs, cs) = self.strides();
        let d = self.data();
        for (p, panel) in out.chunks_mut(kc * w).take(nc.div_ceil(w)).enumerate() {
            let jp = j0 + p * w;
            let cols = w.min(j0 + nc - jp);
            if cs == 1 {
                // Rows contiguous: copy `cols` floats per k.
                for (k, dst) in panel.chunks_exact_mut(w).enumerate() {
                    let at = (k0 + k) * rs + jp;
                    dst[..cols].copy_from_slice(&d[at..at + cols]);
                    dst[cols..].fill(0.0);
                }
            } else if rs == 1 && cols == w && w == 8 {
                // Columns contiguous (a transposed row-major matrix, as the weights are
                // for the A side), 8 of them: the panel is written in order, one row of
                // 8 per k, gathered from the 8 column streams.
                let col = |jj: usize| &d[(jp + jj) * cs + k0..(jp + jj) * cs + k0 + kc];
                let c: [&[f32]; 8] = std::array::from_fn(col);
                for (k, dst) in panel.chunks_exact_mut(8).enumerate() {
                    let dst: &mut [f32; 8] = dst.try_into().expect("rows of 8");
                    *dst = std::array::from_fn(|jj| c[jj][k]);
                }
            } else if rs == 1 {
                // Columns contiguous: read each column along k, write it with stride w.
                if cols < w {
                    panel.fill(0.0);
                }
                for jj in 0..cols {
                    let col = &d[(jp + jj) * cs + k0..(jp + jj) * cs + k0 + kc];
                    for (k, v) in col.iter().enumerate() {
                        panel[k * w + jj] = *v;
                    }
                }
            } else {
                for (k, dst) in panel.chunks_exact_mut(w).enumerate() {
                    for (jj, o) in dst.iter_mut().enumerate() {
                        *o = if jj < cols {
                            d[(k0 + k) * rs + (jp + jj) * cs]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// A float buffer whose first element sits on a 64-byte boundary (one cache line, one
/// AVX-512 vector), so that packed panels never straddle lines needlessly.
///
/// Buffers are plain allocations, freed on drop. (They used to go back to a process-wide
/// pool of up to 64 MiB, when the allocator handed freed memory back to the kernel and
/// every fresh buffer was faulted in again; the `focal` binary now tells its allocator
/// to keep freed memory, so the pool only added its 64 MiB to the peak resident size.
/// See `docs/memory.md`.)
#[derive(Default)]
pub(crate) struct AlignedBuf {
    raw: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Grows to at least `len` floats, keeping the alignment.
    pub(crate) fn ensure(&mut self, len: usize) {
        if self.len >= len {
            return;
        }
        // 16 floats of slack for the alignment; the old buffer is freed here.
        self.raw = vec![0.0; len + 16];
        let misalign = (self.raw.as_ptr() as usize / 4) % 16;
        self.start = (16 - misalign) % 16;
        self.len = len;
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout of the same matrix packs to the same panels.
    #[test]
    fn row_major_transposed_and_strided_pack_alike() {
        let (k, n) = (5, 7);
        let rm: Vec<f32> = (0..k * n).map(|v| v as f32 + 1.0).collect();
        let cm: Vec<f32> = (0..k * n).map(|i| rm[(i % k) * n + i / k]).collect();
        let mut wide = vec![0.0f32; k * n * 3];
        for i in 0..k {
            for j in 0..n {
                wide[i * 3 * n + j * 3] = rm[i * n + j];
            }
        }
        let views = [
            MatRef::row_major(&rm, k, n),
            MatRef::row_major(&cm, n, k).t(),
            MatRef::new(&wide, k, n, 3 * n, 3),
        ];
        let (k0, kc, j0, nc, w) = (1, 3, 2, 5, 4);
        let mut want = vec![f32::NAN; 2 * kc * w];
        for p in 0..2 {
            for kk in 0..kc {
                for jj in 0..w {
                    let j = j0 + p * w + jj;
                    want[(p * kc + kk) * w + jj] = if j < j0 + nc {
                        rm[(k0 + kk) * n + j]
                    } else {
                        0.0
                    };
                }
            }
        }
        for v in views {
            let mut out = vec![f32::NAN; 2 * kc * w];
            v.pack(k0, kc, j0, nc, w, &mut out);
            assert_eq!(out, want, "strides {:?}", v.strides());
        }
    }

    /// Contiguous rows, 48-wide panels with a narrower last one: each panel holds its
    /// columns of every row, zeros past the last column.
    #[test]
    fn contiguous_rows_pack_into_every_panel() {
        let (k, n, rs) = (11, 130, 140);
        let d: Vec<f32> = (0..k * rs).map(|v| v as f32 * 0.5 - 3.0).collect();
        let m = MatRef::new(&d, k, n, rs, 1);
        let (k0, kc, j0, nc, w) = (1, 9, 3, 120, 48);
        let mut out = vec![f32::NAN; 3 * kc * w];
        m.pack(k0, kc, j0, nc, w, &mut out);
        for p in 0..3 {
            for kk in 0..kc {
                for jj in 0..w {
                    let j = j0 + p * w + jj;
                    let want = if j < j0 + nc {
                        d[(k0 + kk) * rs + j]
                    } else {
                        0.0
                    };
                    assert_eq!(out[(p * kc + kk) * w + jj], want, "panel {p}, k {kk}, {jj}");
                }
            }
        }
    }

    /// Growing a buffer (as the thread-local packed-B block does) gives the new length,
    /// still on a cache line; asking for less keeps it as it is.
    #[test]
    fn aligned_buffers_grow_and_stay_aligned() {
        let mut b = AlignedBuf::default();
        for len in [5, 1 << 16, 3, (1 << 18) + 7] {
            let before = b.as_slice().len();
            b.ensure(len);
            assert_eq!(b.as_slice().len(), before.max(len));
            assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
            b.as_mut_slice().fill(1.0);
            assert!(b.as_slice().iter().all(|&v| v == 1.0));
        }
    }

    #[test]
    fn aligned_buffers_start_on_a_cache_line() {
        for len in [1, 17, 1000] {
            let mut b = AlignedBuf::default();
            b.ensure(len);
            assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
            assert_eq!(b.as_slice().len(), len);
        }
    }
}
