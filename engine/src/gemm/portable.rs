//! The `portable` path: `matrixmultiply::sgemm` (BLIS-style, with its own AVX/FMA/
//! AVX-512 kernels where the CPU has them, plain Rust elsewhere).
//!
//! Operands that are plain strided matrices are handed over as they are. A source that
//! only knows how to pack itself (an implicit im2col) is written out one column block
//! of at most [`BLOCK`] columns and [`DEPTH`] rows at a time, and multiplied block by
//! block. matrixmultiply sums each element of `C` over `k` in its own fixed order, so
//! this path agrees with the SIMD paths to rounding, not to the bit.

use rayon::prelude::*;

use super::driver::{cuts, task_grid};
use super::pack::Panels;
use super::view::{MatMut, MatRef};
use super::Start;

/// Columns of `B` materialised per task when `B` is not a strided matrix.
pub(crate) const BLOCK: usize = 512;

/// Rows of `B` materialised at a time (so a column block holds at most
/// `DEPTH × BLOCK` floats, 4 MiB, however long the inner dimension).
const DEPTH: usize = 2048;

/// `C ← α·A·B + β·C` by matrixmultiply, on the calling thread.
fn mm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut MatMut) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let ((rsa, csa), (rsb, csb), (rsc, csc)) = (a.strides(), b.strides(), c.strides());
    // SAFETY: matrixmultiply reads A[i·rsa + l·csa] (i < m, l < k), B[l·rsb + j·csb]
    // (l < k, j < n) and reads/writes C[i·rsc + j·csc] (i < m, j < n), nothing else.
    // MatRef::new and MatMut::new proved every such offset lies inside their slices and
    // that C's elements are distinct places; C is an exclusive borrow, A and B shared
    // ones, so C aliases neither and no other thread touches it during the call. Strides
    // fit in isize because they index inside a slice.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data().as_ptr(),
            rsa as isize,
            csa as isize,
            b.data().as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.ptr_at(0, 0),
            rsc as isize,
            csc as isize,
        );
    }
}

/// `C ← α·A·B + start`, `A` a strided matrix, `B` any source (`K × n`); on the calling
/// thread alone unless `parallel`.
pub(crate) fn gemm(alpha: f32, a: MatRef, b: &dyn Panels, start: Start, c: MatMut, parallel: bool) {
    let (m, n) = (c.rows(), c.cols());
    let k = a.cols();
    let plain_b = b.as_matrix();
    let (row_parts, mut col_parts) = if parallel {
        task_grid(m, n, k, (8, 8), 8)
    } else {
        (1, 1)
    };
    if plain_b.is_none() {
        // A materialised block holds at most BLOCK columns.
        col_parts = col_parts.max(n.div_ceil(BLOCK));
    }
    let mut tasks = Vec::new();
    let mut rest = c;
    for (i0, rows) in cuts(m, row_parts, 8) {
        let (band, tail) = rest.split_rows(rows);
        rest = tail;
        let mut band = band;
        for (j0, cols) in cuts(n, col_parts, 8) {
            let (blk, right) = band.split_cols(cols);
            band = right;
            tasks.push((i0, j0, blk));
        }
    }
    let run = |(i0, j0, mut blk): (usize, usize, MatMut)| {
        let (rows, cols) = (blk.rows(), blk.cols());
        let beta = match start {
            Start::Beta(beta) => beta,
            Start::RowBias(bias) => {
                for r in 0..rows {
                    for q in 0..cols {
                        blk.set(r, q, bias[i0 + r]);
                    }
                }
                1.0
            }
        };
        match plain_b {
            Some(bm) => mm(
                alpha,
                a.block(i0, rows, 0, k),
                bm.block(0, k, j0, cols),
                beta,
                &mut blk,
            ),
            None => {
                // Blocks of DEPTH rows of B, each one panel as wide as the task:
                // row-major (kb × cols); C accumulates from the second block on.
                let mut cols_buf = vec![0.0f32; DEPTH.min(k) * cols];
                for pc in (0..k).step_by(DEPTH) {
                    let kb = DEPTH.min(k - pc);
                    b.pack(pc, kb, j0, cols, cols, &mut cols_buf[..kb * cols]);
                    mm(
                        alpha,
                        a.block(i0, rows, pc, kb),
                        MatRef::row_major(&cols_buf[..kb * cols], kb, cols),
                        if pc == 0 { beta } else { 1.0 },
                        &mut blk,
                    );
                }
            }
        }
    };
    if parallel && tasks.len() > 1 {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
}
