//! Typed GEMM operands: a matrix is a slice, its `rows × cols` size and its strides.
//!
//! Element `(i, j)` of a [`MatRef`] is `data[i·rs + j·cs]`. A row-major `(M, K)`
//! matrix has strides `(K, 1)`; its transpose, [`MatRef::t`], is the *same slice* with
//! the sizes and strides swapped, `(K, M)` with strides `(1, K)`. That is how every
//! backward pass multiplies by a transpose without copying it:
//!
//! ```
//! use focal_engine::gemm::{gemm, MatMut, MatRef};
//! let a = [1.0, 2.0, 3.0, 4.0]; // [1 2; 3 4]
//! let b = [5.0, 6.0, 7.0, 8.0]; // [5 6; 7 8]
//! let mut c = [0.0; 4];
//! // Aᵀ·B = [1 3; 2 4]·[5 6; 7 8]
//! gemm(1.0, MatRef::row_major(&a, 2, 2).t(), MatRef::row_major(&b, 2, 2), 0.0,
//!      MatMut::row_major(&mut c, 2, 2));
//! assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
//! ```
//!
//! Both constructors check, once, that every element lies inside the slice, and
//! [`MatMut`] also that no two elements share a place, so the kernels can address
//! elements without further checks.

use std::marker::PhantomData;

/// Largest offset `(rows−1)·rs + (cols−1)·cs` of a non-empty matrix, checked against
/// the slice length (panics naming the operand).
fn check_fits(what: &str, rows: usize, cols: usize, rs: usize, cs: usize, len: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    match last {
        Some(last) if last < len => {}
        _ => panic!(
            "gemm: {what} ({rows} x {cols}, strides ({rs}, {cs})) does not fit in its slice \
             of {len} elements"
        ),
    }
}

/// A read-only strided f32 matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// `rows × cols` with element `(i, j)` at `data[i·rs + j·cs]`.
    ///
    /// # Panics
    /// When an element would lie past the end of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check_fits("operand", rows, cols, rs, cs, data.len());
        MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A row-major `rows × cols` matrix (strides `(cols, 1)`).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transpose: the same elements, sizes and strides swapped.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The block of `rows × cols` elements starting at `(r0, c0)`.
    pub fn block(self, r0: usize, rows: usize, c0: usize, cols: usize) -> Self {
        assert!(
            r0 + rows <= self.rows && c0 + cols <= self.cols,
            "gemm: block ({r0}.., {c0}..) of {rows} x {cols} outside a {} x {} matrix",
            self.rows,
            self.cols
        );
        if rows == 0 || cols == 0 {
            return MatRef {
                data: &[],
                rows,
                cols,
                ..self
            };
        }
        MatRef {
            data: &self.data[r0 * self.rs + c0 * self.cs..],
            rows,
            cols,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// (row stride, column stride) in elements.
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }
    /// The slice the matrix lives in (element `(0, 0)` first).
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        debug_assert!(i < self.rows && j < self.cols);
        self.data[i * self.rs + j * self.cs]
    }
}

/// A writable strided f32 matrix whose elements are distinct places.
///
/// It holds the exclusive borrow of its slice as a pointer, so that it can be cut into
/// disjoint blocks handed to different threads ([`MatMut::split_rows`],
/// [`MatMut::split_cols`]) even when its rows interleave in memory.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a MatMut is an exclusive borrow of the distinct elements it addresses (the
// constructor checked they are distinct and inside one `&mut [f32]`; splitting yields
// views of disjoint element sets). Moving it to another thread is moving that
// exclusive borrow, as for `&mut [f32]`, which is Send; f32 has no thread affinity.
unsafe impl Send for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// `rows × cols` with element `(i, j)` at `data[i·rs + j·cs]`.
    ///
    /// # Panics
    /// When an element would lie past the end of `data`, or when two different
    /// elements would share one place.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check_fits("C", rows, cols, rs, cs, data.len());
        // (i, j) ↦ i·rs + j·cs is one-to-one when one stride is at least 1 and the other
        // steps over a whole row or column of it (or a dimension has a single index).
        let one_to_one = rows <= 1 && (cols <= 1 || cs >= 1)
            || cols <= 1 && rs >= 1
            || cs >= 1 && rs >= cols * cs
            || rs >= 1 && cs >= rows * rs;
        assert!(
            one_to_one,
            "gemm: C ({rows} x {cols}) with strides ({rs}, {cs}) maps two elements to one place"
        );
        MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs,
            cs,
            _borrow: PhantomData,
        }
    }

    /// A row-major `rows × cols` matrix (strides `(cols, 1)`).
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut::new(data, rows, cols, cols, 1)
    }

    /// The transpose: the same elements, sizes and strides swapped.
    pub fn t(self) -> Self {
        MatMut {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// A shorter-lived view of the same elements.
    pub fn rb(&mut self) -> MatMut<'_> {
        MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
            _borrow: PhantomData,
        }
    }

    /// Rows `0..at` and `at..`, as two views of disjoint elements.
    pub fn split_rows(self, at: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(at <= self.rows, "gemm: split at row {at} of {}", self.rows);
        let rest = self.rows - at;
        let offset = if at == self.rows || self.cols == 0 {
            0
        } else {
            at * self.rs
        };
        let top = MatMut { rows: at, ..self };
        // SAFETY: when rows `at..` exist and cols ≥ 1, element (at, 0) is inside the
        // checked slice, so the offset stays in the same allocation; otherwise the
        // offset is 0. The two views address rows 0..at and at.. of a one-to-one map:
        // disjoint places.
        let bottom = MatMut {
            ptr: unsafe { self.ptr.add(offset) },
            rows: rest,
            ..self
        };
        (top, bottom)
    }

    /// Columns `0..at` and `at..`, as two views of disjoint elements.
    pub fn split_cols(self, at: usize) -> (MatMut<'a>, MatMut<'a>) {
        let (l, r) = self.t().split_rows(at);
        (l.t(), r.t())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// (row stride, column stride) in elements.
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }

    /// Pointer to element `(i, j)`, `i < rows`, `j < cols` (checked).
    pub(crate) fn ptr_at(&self, i: usize, j: usize) -> *mut f32 {
        assert!(
            i < self.rows && j < self.cols,
            "gemm: element ({i}, {j}) outside C"
        );
        // SAFETY (of the arithmetic): (i, j) is an element of the matrix, whose offset
        // i·rs + j·cs the constructor proved to be inside the borrowed slice.
        unsafe { self.ptr.add(i * self.rs + j * self.cs) }
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols);
        // SAFETY: an element of the matrix, inside the borrowed slice (see ptr_at), read
        // through the exclusive borrow this view holds.
        unsafe { *self.ptr_at(i, j) }
    }

    /// Copies the `rows × cols` block at `(i, j)` into `out` (row `r` at `out[r·ld..]`).
    pub(crate) fn read_block(
        &self,
        (i, j): (usize, usize),
        (rows, cols): (usize, usize),
        out: &mut [f32],
        ld: usize,
    ) {
        assert!(i + rows <= self.rows && j + cols <= self.cols && cols <= ld);
        assert!(rows == 0 || (rows - 1) * ld + cols <= out.len());
        for r in 0..rows {
            let dst = &mut out[r * ld..r * ld + cols];
            for (q, d) in dst.iter_mut().enumerate() {
                // SAFETY: (i + r, j + q) is an element of the matrix (asserted above),
                // inside the borrowed slice (see ptr_at); read through `&self`, which
                // no writer can hold at the same time.
                *d = unsafe { *self.ptr.add((i + r) * self.rs + (j + q) * self.cs) };
            }
        }
    }

    /// Writes `src` (row `r` at `src[r·ld..]`) over the `rows × cols` block at `(i, j)`.
    pub(crate) fn write_block(
        &mut self,
        (i, j): (usize, usize),
        (rows, cols): (usize, usize),
        src: &[f32],
        ld: usize,
    ) {
        assert!(i + rows <= self.rows && j + cols <= self.cols && cols <= ld);
        assert!(rows == 0 || (rows - 1) * ld + cols <= src.len());
        for r in 0..rows {
            for (q, v) in src[r * ld..r * ld + cols].iter().enumerate() {
                // SAFETY: as in read_block; `&mut self` makes this the only access.
                unsafe { *self.ptr.add((i + r) * self.rs + (j + q) * self.cs) = *v };
            }
        }
    }

    /// Sets element `(i, j)`.
    pub fn set(&mut self, i: usize, j: usize, v: f32) {
        assert!(i < self.rows && j < self.cols);
        // SAFETY: as in `at`; `&mut self` makes this the only access.
        unsafe { *self.ptr_at(i, j) = v }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_block_address_the_same_elements() {
        let d: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let a = MatRef::row_major(&d, 3, 4);
        assert_eq!(a.at(1, 2), 6.0);
        assert_eq!(a.t().at(2, 1), 6.0);
        assert_eq!((a.t().rows(), a.t().cols()), (4, 3));
        let b = a.block(1, 2, 1, 3);
        assert_eq!(b.at(0, 0), 5.0);
        assert_eq!(b.at(1, 2), 11.0);
    }

    #[test]
    fn splits_are_disjoint_and_cover_the_matrix() {
        let mut d = vec![0.0f32; 12];
        let c = MatMut::row_major(&mut d, 3, 4);
        let (top, bottom) = c.split_rows(1);
        let (mut bl, mut br) = bottom.split_cols(3);
        let mut top = top;
        top.set(0, 3, 1.0);
        bl.set(1, 2, 2.0);
        br.set(0, 0, 3.0);
        assert_eq!(d, [0., 0., 0., 1., 0., 0., 0., 3., 0., 0., 2., 0.]);
    }

    #[test]
    #[should_panic(expected = "does not fit in its slice of 5 elements")]
    fn an_operand_past_its_slice_is_rejected() {
        MatRef::new(&[0.0; 5], 3, 2, 2, 1);
    }

    #[test]
    #[should_panic(expected = "maps two elements to one place")]
    fn overlapping_c_is_rejected() {
        MatMut::new(&mut [0.0; 4], 2, 2, 1, 1);
    }
}
