//! Matrix product, 2-D and batched, through [`crate::gemm`].
//!
//! | a          | b          | out        | computed as                                   |
//! |------------|------------|------------|-----------------------------------------------|
//! | (M, K)     | (K, N)     | (M, N)     | one GEMM                                      |
//! | (B, M, K)  | (K, N)     | (B, M, N)  | one GEMM on a seen as (B·M, K)                |
//! | (B, M, K)  | (B, K, N)  | (B, M, N)  | one GEMM per batch item, in parallel          |
//!
//! Backward, for `C = A·B` and upstream gradient `G = ∂L/∂C`:
//! `∂L/∂A = G·Bᵀ` and `∂L/∂B = Aᵀ·G`. The transposes are never materialised: a
//! row-major `(K, N)` matrix read with strides `(1, N)` *is* its `(N, K)` transpose.
//! With a shared `b` (the middle row of the table), `∂L/∂B = Σ_b A_bᵀ·G_b`, which is the
//! single GEMM `(B·M, K)ᵀ · (B·M, N)`.

use rayon::prelude::*;

use crate::gemm::{gemm, MatMut, MatRef};
use crate::gradcheck::case::{randn, Case};
use crate::op::Op;
use crate::rng::Rng;
use crate::shape::ShapeFmt;
use crate::tape::record;
use crate::tensor::Tensor;

/// How the two operands line up.
#[derive(Clone, Copy)]
enum Layout {
    /// `a: (rows, k)` (rows = M, or B·M for a shared b), `b: (k, n)`.
    Shared { rows: usize, k: usize, n: usize },
    /// `a: (batch, m, k)`, `b: (batch, k, n)`.
    Batched {
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
    },
}

fn layout(a: &[usize], b: &[usize]) -> (Layout, Vec<usize>) {
    let bad = || -> ! {
        panic!(
            "matmul: cannot multiply {} by {}; expected (M,K)x(K,N), (B,M,K)x(K,N) or \
             (B,M,K)x(B,K,N)",
            ShapeFmt(a),
            ShapeFmt(b)
        )
    };
    match (a.len(), b.len()) {
        (2, 2) if a[1] == b[0] => (
            Layout::Shared {
                rows: a[0],
                k: a[1],
                n: b[1],
            },
            vec![a[0], b[1]],
        ),
        (3, 2) if a[2] == b[0] => (
            Layout::Shared {
                rows: a[0] * a[1],
                k: a[2],
                n: b[1],
            },
            vec![a[0], a[1], b[1]],
        ),
        (3, 3) if a[0] == b[0] && a[2] == b[1] => (
            Layout::Batched {
                batch: a[0],
                m: a[1],
                k: a[2],
                n: b[2],
            },
            vec![a[0], a[1], b[2]],
        ),
        _ => bad(),
    }
}

/// `(rows, cols)` row-major matrix view of a slice.
fn rm(d: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
    MatRef::row_major(d, rows, cols)
}

/// `C = A·B` into a row-major `(rows, cols)` output.
fn product(a: MatRef, b: MatRef, out: &mut [f32]) {
    let (rows, cols) = (a.rows(), b.cols());
    gemm(1.0, a, b, 0.0, MatMut::row_major(out, rows, cols));
}

fn forward(l: Layout, a: &[f32], b: &[f32], out: &mut [f32]) {
    match l {
        // (rows, K) · (K, N) -> (rows, N)
        Layout::Shared { rows, k, n } => product(rm(a, rows, k), rm(b, k, n), out),
        Layout::Batched { batch, m, k, n } => {
            if m * n == 0 {
                return;
            }
            out.par_chunks_mut(m * n)
                .take(batch)
                .enumerate()
                .for_each(|(i, c)| {
                    // (M, K) · (K, N) -> (M, N), batch item i
                    product(rm(&a[i * m * k..], m, k), rm(&b[i * k * n..], k, n), c)
                });
        }
    }
}

/// `∂L/∂A = G·Bᵀ`.
fn grad_a(l: Layout, g: &[f32], b: &[f32], out: &mut [f32]) {
    match l {
        // (rows, N) · (N, K) -> (rows, K); Bᵀ is b read transposed
        Layout::Shared { rows, k, n } => product(rm(g, rows, n), rm(b, k, n).t(), out),
        Layout::Batched { m, k, n, .. } => {
            if m * k == 0 {
                return;
            }
            out.par_chunks_mut(m * k).enumerate().for_each(|(i, c)| {
                // (M, N) · (N, K) -> (M, K), batch item i
                product(rm(&g[i * m * n..], m, n), rm(&b[i * k * n..], k, n).t(), c)
            });
        }
    }
}

/// `∂L/∂B = Aᵀ·G`.
fn grad_b(l: Layout, a: &[f32], g: &[f32], out: &mut [f32]) {
    match l {
        // (K, rows) · (rows, N) -> (K, N); Aᵀ is a read transposed
        Layout::Shared { rows, k, n } => product(rm(a, rows, k).t(), rm(g, rows, n), out),
        Layout::Batched { m, k, n, .. } => {
            if k * n == 0 {
                return;
            }
            out.par_chunks_mut(k * n).enumerate().for_each(|(i, c)| {
                // (K, M) · (M, N) -> (K, N), batch item i
                product(rm(&a[i * m * k..], m, k).t(), rm(&g[i * m * n..], m, n), c)
            });
        }
    }
}

impl Tensor {
    /// Matrix product: `(M,K)·(K,N)`, `(B,M,K)·(K,N)` or `(B,M,K)·(B,K,N)`.
    ///
    /// ```
    /// use focal_engine::Tensor;
    /// let a = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    /// let b = Tensor::from_vec(&[2, 1], vec![5.0, 6.0]);
    /// assert_eq!(a.matmul(&b).to_vec(), vec![17.0, 39.0]); // 1·5+2·6, 3·5+4·6
    /// ```
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        let (l, out_shape) = layout(self.shape(), other.shape());
        let mut out = vec![0.0f32; out_shape.iter().product()];
        forward(l, self.data(), other.data(), &mut out);
        let out = Tensor::from_vec(&out_shape, out);
        record(Op::Matmul, out, &[self, other], |needs| {
            let (need_a, need_b) = (needs[0], needs[1]);
            // dA needs B, dB needs A: save only those.
            let a = need_b.then(|| self.detach());
            let b = need_a.then(|| other.detach());
            let (a_shape, b_shape) = (self.shape().to_vec(), other.shape().to_vec());
            Box::new(move |g| {
                let da = b.map(|b| {
                    let mut d = vec![0.0f32; a_shape.iter().product()];
                    grad_a(l, g.data(), b.data(), &mut d);
                    Tensor::from_vec(&a_shape, d)
                });
                let db = a.map(|a| {
                    let mut d = vec![0.0f32; b_shape.iter().product()];
                    grad_b(l, a.data(), g.data(), &mut d);
                    Tensor::from_vec(&b_shape, d)
                });
                vec![da, db]
            })
        })
    }
}

pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(21);
    vec![
        Case::new(
            Op::Matmul,
            "(3,4)x(4,5)",
            vec![randn(&mut r, &[3, 4]), randn(&mut r, &[4, 5])],
            |x| x[0].matmul(&x[1]),
        ),
        Case::new(
            Op::Matmul,
            "(1,3)x(3,1) vectors",
            vec![randn(&mut r, &[1, 3]), randn(&mut r, &[3, 1])],
            |x| x[0].matmul(&x[1]),
        ),
        Case::new(
            Op::Matmul,
            "batched (2,3,4)x(2,4,2)",
            vec![randn(&mut r, &[2, 3, 4]), randn(&mut r, &[2, 4, 2])],
            |x| x[0].matmul(&x[1]),
        ),
        Case::new(
            Op::Matmul,
            "shared b (2,3,4)x(4,3)",
            vec![randn(&mut r, &[2, 3, 4]), randn(&mut r, &[4, 3])],
            |x| x[0].matmul(&x[1]),
        ),
        Case::new(
            Op::Matmul,
            "transposed operands aᵀ·bᵀ",
            vec![randn(&mut r, &[4, 3]), randn(&mut r, &[5, 4])],
            |x| x[0].transpose(0, 1).matmul(&x[1].transpose(0, 1)),
        ),
        Case::new(
            Op::Matmul,
            "only b differentiated",
            vec![randn(&mut r, &[3, 2]), randn(&mut r, &[2, 4])],
            |x| x[0].matmul(&x[1]),
        )
        .wrt(&[false, true]),
        Case::new(
            Op::Matmul,
            "only a differentiated",
            vec![randn(&mut r, &[3, 2]), randn(&mut r, &[2, 4])],
            |x| x[0].matmul(&x[1]),
        )
        .wrt(&[true, false]),
    ]
}
