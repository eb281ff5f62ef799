//! The one entry point to `matrixmultiply::sgemm`: general matrix multiplication
//! `C ← α·A·B + β·C` on f32 matrices given by a slice and two strides each.
//!
//! A matrix here is a slice plus a *row stride* and a *column stride* (in elements):
//! element `(i, j)` of `A` is `a[i·rsa + j·csa]`. A row-major `(M, K)` matrix has
//! strides `(K, 1)`; its transpose, seen as a `(K, M)` matrix, is the *same slice* with
//! strides `(1, K)`. That is how every backward pass in focal multiplies by a transpose
//! without copying it.
//!
//! [`sgemm`] checks that every element it may read or write lies inside its slice, then
//! calls matrixmultiply (BLIS-style packing and AVX/FMA/AVX-512 microkernels).
//! [`sgemm_rows_par`] splits a row-major `C` into blocks of rows and runs one
//! single-threaded [`sgemm`] per block on rayon; the blocks depend only on the matrix
//! sizes, and every element of `C` is still a sum over `k` in matrixmultiply's fixed
//! order, so the result does not depend on the thread count.

use rayon::prelude::*;

/// Largest offset `(rows−1)·rs + (cols−1)·cs` touched by a `rows × cols` matrix with
/// the given strides, checked: panics (naming the operand) on a negative stride or on
/// an offset past the end of the slice. Returns nothing when the matrix is empty.
fn check_operand(name: &str, rows: usize, cols: usize, rs: isize, cs: isize, len: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    // A negative stride would step before the start of the slice for some element
    // (element (0,0) sits at offset 0), unless its dimension is 1 and it is never used.
    assert!(
        (rs >= 0 || rows == 1) && (cs >= 0 || cols == 1),
        "sgemm: {name} ({rows} x {cols}) has a negative stride ({rs}, {cs})"
    );
    let span = |n: usize, s: isize| -> usize {
        if n <= 1 {
            0
        } else {
            (n - 1)
                .checked_mul(s as usize)
                .expect("sgemm: stride overflow")
        }
    };
    let last = span(rows, rs)
        .checked_add(span(cols, cs))
        .expect("sgemm: stride overflow");
    assert!(
        last < len,
        "sgemm: {name} ({rows} x {cols}, strides ({rs}, {cs})) reaches element {last} but \
         its slice holds {len}"
    );
}

/// `C ← α·A·B + β·C` with `A: (m, k)`, `B: (k, n)`, `C: (m, n)`, each given by a slice
/// and its (row, column) strides in elements. When `β = 0`, `C`'s old values are
/// ignored (they may be anything, even NaN).
///
/// Panics when an operand does not fit in its slice, when a stride is negative, or when
/// two different elements of `C` would share a memory location.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    beta: f32,
    c: &mut [f32],
    rsc: isize,
    csc: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_operand("C", m, n, rsc, csc, c.len());
    // Distinct elements of C must not overlap: with one stride at least 1 and the other
    // stepping over a whole row/column, (i, j) ↦ i·rsc + j·csc is one-to-one.
    let one_to_one = m == 1 && (n == 1 || csc >= 1)
        || n == 1 && rsc >= 1
        || csc >= 1 && rsc >= n as isize * csc
        || rsc >= 1 && csc >= m as isize * rsc;
    assert!(
        one_to_one,
        "sgemm: C ({m} x {n}) with strides ({rsc}, {csc}) maps two elements to one place"
    );
    if k == 0 {
        // A·B is the empty sum: C ← β·C (matrixmultiply expects k ≥ 1).
        for i in 0..m {
            for j in 0..n {
                let at = i * rsc as usize + j * csc as usize;
                c[at] = if beta == 0.0 { 0.0 } else { beta * c[at] };
            }
        }
        return;
    }
    check_operand("A", m, k, rsa, csa, a.len());
    check_operand("B", k, n, rsb, csb, b.len());
    // SAFETY: matrixmultiply reads A[i·rsa + l·csa] for i < m, l < k, B[l·rsb + j·csb]
    // for l < k, j < n, and reads/writes C[i·rsc + j·csc] for i < m, j < n, and nothing
    // else. All strides are non-negative (or belong to a dimension of size 1, whose
    // stride is multiplied by 0 only), so the smallest offset of each operand is 0 and
    // the largest is (rows−1)·rs + (cols−1)·cs, which check_operand proved to be inside
    // the slice. `a` and `b` are shared borrows and `c` an exclusive one, so C cannot
    // alias A or B, and no other thread can touch any of them during the call; the
    // one-to-one check above guarantees that matrixmultiply's own threads (with the
    // `threading` feature) never write the same element of C.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            rsc,
            csc,
        );
    }
}

/// Rows of `C` per parallel block in [`sgemm_rows_par`]: a multiple of matrixmultiply's
/// row panels (MR = 8 with AVX/FMA, 16 with AVX-512, and its MC = 64 row blocks), and
/// large enough that each block amortises packing all of B once.
pub const ROW_BLOCK: usize = 128;

/// [`sgemm`] for a row-major `C` (`rsc = n`, `csc = 1`, `c.len() = m·n`), split into
/// blocks of [`ROW_BLOCK`] rows that run in parallel, each a single-threaded `sgemm`.
///
/// Each element of `C` is computed by exactly one block, with the same sum over `k`, so
/// the result is the same for any thread count (and the same as one `sgemm` call).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_rows_par(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    beta: f32,
    c: &mut [f32],
) {
    assert_eq!(
        c.len(),
        m * n,
        "sgemm_rows_par: C must be a row-major ({m} x {n}) buffer, got {} elements",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        check_operand("A", m, k, rsa, csa, a.len());
        check_operand("B", k, n, rsb, csb, b.len());
    }
    let block_elems = ROW_BLOCK * n;
    let run = |(blk, c_blk): (usize, &mut [f32])| {
        let i0 = blk * ROW_BLOCK;
        let rows = c_blk.len() / n;
        let a_blk = if k == 0 { a } else { &a[i0 * rsa as usize..] };
        sgemm(
            rows, k, n, alpha, a_blk, rsa, csa, b, rsb, csb, beta, c_blk, n as isize, 1,
        );
    };
    if m <= ROW_BLOCK || 2 * m * k * n < 1 << 22 {
        // One block, or too little work to pay for spawning tasks.
        sgemm(
            m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, n as isize, 1,
        );
    } else {
        c.par_chunks_mut(block_elems).enumerate().for_each(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_by_hand() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [0.0; 4];
        sgemm(2, 2, 2, 1.0, &a, 2, 1, &b, 2, 1, 0.0, &mut c, 2, 1);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // Aᵀ·B through strides: [1 3; 2 4] · [5 6; 7 8] = [26 30; 38 44]
        sgemm(2, 2, 2, 1.0, &a, 1, 2, &b, 2, 1, 0.0, &mut c, 2, 1);
        assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
        // β = 1 accumulates, α scales.
        sgemm(2, 2, 2, 0.5, &a, 1, 2, &b, 2, 1, 1.0, &mut c, 2, 1);
        assert_eq!(c, [39.0, 45.0, 57.0, 66.0]);
    }

    #[test]
    fn k_zero_scales_c() {
        let mut c = [1.0, 2.0];
        sgemm(1, 0, 2, 1.0, &[], 1, 1, &[], 1, 1, 3.0, &mut c, 2, 1);
        assert_eq!(c, [3.0, 6.0]);
        let mut c = [f32::NAN, 2.0];
        sgemm(1, 0, 2, 1.0, &[], 1, 1, &[], 1, 1, 0.0, &mut c, 2, 1);
        assert_eq!(c, [0.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "sgemm: B (3 x 2, strides (2, 1)) reaches element 5")]
    fn out_of_bounds_operand_is_rejected() {
        let mut c = [0.0; 4];
        sgemm(
            2, 3, 2, 1.0, &[0.0; 6], 3, 1, &[0.0; 5], 2, 1, 0.0, &mut c, 2, 1,
        );
    }

    #[test]
    #[should_panic(expected = "maps two elements to one place")]
    fn overlapping_c_is_rejected() {
        let mut c = [0.0; 4];
        sgemm(
            2, 1, 2, 1.0, &[0.0; 2], 1, 1, &[0.0; 2], 2, 1, 0.0, &mut c, 1, 1,
        );
    }

    #[test]
    #[should_panic(expected = "negative stride")]
    fn negative_stride_is_rejected() {
        let mut c = [0.0; 4];
        sgemm(
            2, 2, 2, 1.0, &[0.0; 4], -2, 1, &[0.0; 4], 2, 1, 0.0, &mut c, 2, 1,
        );
    }
}
