//! The gradient-check cases of conv2d with each Winograd tile (listed under `conv2d`
//! by `focal gradcheck`): padding 0, 1, 2 and 3 (an input-gradient offset of −1), edge
//! tiles cut by odd sizes, batch 2, with and without bias, and each gradient alone.

use super::ConvAlgo;
use crate::gradcheck::case::{randn, Case};
use crate::op::Op;
use crate::ops::conv::{conv2d_with, Conv2dOptions};
use crate::rng::Rng;

pub(crate) fn gradcheck_cases() -> Vec<Case> {
    let mut r = Rng::new(23);
    let mut v = Vec::new();
    for (algo, tile) in [
        (ConvAlgo::WinogradF2, "F(2x2,3x3)"),
        (ConvAlgo::WinogradF4, "F(4x4,3x3)"),
    ] {
        let mut case = |what: &str, x: &[usize], w: &[usize], bias: bool, pad: (usize, usize)| {
            let mut inputs = vec![randn(&mut r, x), randn(&mut r, w)];
            if bias {
                inputs.push(randn(&mut r, &[w[0]]));
            }
            let opts = Conv2dOptions {
                padding: pad,
                ..Conv2dOptions::default()
            };
            // A convolution is linear in each single input element, so the central
            // difference is exact for any step up to rounding; F(4x4)'s outputs carry
            // about 1e-5 of their scale in rounding noise (see the module doc), which the
            // default step of 0.01 would blow up to ~1e-3 in the estimate. A step of 0.5
            // divides it by 50.
            Case::new(
                Op::Conv2d,
                format!("winograd {tile} {what}"),
                inputs,
                move |t| conv2d_with(&t[0], &t[1], t.get(2), opts, algo),
            )
            .step(0.5)
        };
        v.push(case(
            "p1 + bias, batch 2",
            &[2, 3, 5, 6],
            &[4, 3, 3, 3],
            true,
            (1, 1),
        ));
        v.push(case(
            "p0, 7x9 (cut tiles)",
            &[1, 2, 7, 9],
            &[3, 2, 3, 3],
            false,
            (0, 0),
        ));
        v.push(case(
            "p2 rows, p0 columns",
            &[1, 2, 4, 6],
            &[2, 2, 3, 3],
            true,
            (2, 0),
        ));
        v.push(case(
            "p3 (dx offset -1)",
            &[1, 2, 3, 4],
            &[2, 2, 3, 3],
            false,
            (3, 3),
        ));
        v.push(
            case("weight only", &[2, 3, 6, 5], &[2, 3, 3, 3], true, (1, 1))
                .wrt(&[false, true, true]),
        );
        v.push(case("input only", &[1, 3, 6, 6], &[2, 3, 3, 3], false, (1, 1)).wrt(&[true, false]));
    }
    v
}
