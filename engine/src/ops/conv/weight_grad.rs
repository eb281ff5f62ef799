//! The weight gradient as one implicit GEMM per group, over every pixel of the batch.
//!
//! ```text
//!   ∂W_g (O/G, K) = ∂y_g (O/G, N·P) · colsᵀ (N·P, K)
//!
//!   ∂y_g  packed from gy (im2col.rs GradT), colsᵀ packed straight from the saved input
//!   (Im2colT): no column buffer, no partial sums. The inner dimension N·P is cut into
//!   KC blocks whose tiles continue their FMA chains, so every entry of ∂W is one chain
//!   over (sample, pixel) in order; threads split the entries (rows and columns of
//!   ∂W), never that chain.
//! ```

use super::geometry::Geom;
use super::im2col::{Grad, GradT, Im2col, Im2colT};
use crate::gemm::{gemm_panels, Isa, MatMut, Start};

/// `∂W` into `gw` (`O·K` floats, every one written), on the GEMM path `isa`.
pub(crate) fn weight_grad(g: &Geom, x: &[f32], gy: &[f32], gw: &mut [f32], isa: Isa) {
    let (cg, og, k, p) = (g.cg(), g.og(), g.k(), g.p());
    let win = g.window();
    for (grp, gw_g) in gw.chunks_mut(og * k).enumerate() {
        let gy_t = GradT(Grad {
            gy,
            o_total: g.o,
            o0: grp * og,
            og,
            p,
            n0: 0,
            samples: g.n,
        });
        let cols_t = Im2colT(Im2col::new(win, x, g.c, (grp * cg, cg), (0, g.n)));
        // (O/G, N·P) · (N·P, C/G·KH·KW) -> (O/G, C/G·KH·KW)
        gemm_panels(
            isa,
            1.0,
            &gy_t,
            &cols_t,
            Start::Beta(0.0),
            MatMut::row_major(gw_g, og, k),
        );
    }
}
