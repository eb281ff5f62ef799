//! The gradient checker, and every op checked with it.

use focal_engine::gradcheck::{self, check, Case};
use focal_engine::tape::{record, BackwardFn};
use focal_engine::{Op, Rng, Tensor};

#[test]
fn every_registered_case_passes() {
    let (table, reports) = gradcheck::run_table(None);
    let failed: Vec<_> = reports.iter().filter(|r| !r.passed).collect();
    assert!(
        failed.is_empty(),
        "{} gradient checks failed:\n{table}\nworst elements: {:?}",
        failed.len(),
        failed
            .iter()
            .map(|r| (&r.case, r.worst))
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_op_has_a_gradient_check() {
    // A case only counts for an op if running it really records that op on the tape.
    let mut missing = Vec::new();
    let reports: Vec<_> = gradcheck::cases_for(None).iter().map(check).collect();
    for &op in Op::ALL {
        let covered = reports
            .iter()
            .any(|r| r.op == op && r.recorded.contains(&op));
        if !covered {
            missing.push(op.name());
        }
    }
    assert!(
        missing.is_empty(),
        "ops without a gradient check: {missing:?}"
    );
}

/// `x * c` elementwise (c constant) with a backward that is wrong by `factor` at
/// element `bad` and right everywhere else.
fn scaled_with_faulty_backward(x: &Tensor, c: &Tensor, bad: usize, factor: f32) -> Tensor {
    let out = Tensor::from_vec(
        x.shape(),
        x.data().iter().zip(c.data()).map(|(a, b)| a * b).collect(),
    );
    let c = c.detach();
    record(Op::Mul, out, &[x], move |_| -> BackwardFn {
        Box::new(move |g| {
            let mut d: Vec<f32> = g.data().iter().zip(c.data()).map(|(a, b)| a * b).collect();
            d[bad] *= factor;
            vec![Some(Tensor::from_vec(g.shape(), d))]
        })
    })
}

#[test]
fn checker_accepts_a_correct_backward() {
    let mut r = Rng::new(3);
    let x = gradcheck::randn(&mut r, &[3, 4]);
    let c = Tensor::from_vec(&[3, 4], r.uniform_vec(12, 0.8, 1.2));
    let case = Case::new(Op::Mul, "exact", vec![x], move |x| {
        scaled_with_faulty_backward(&x[0], &c, 5, 1.0)
    });
    let rep = check(&case);
    assert!(rep.passed, "{rep:?}");
}

#[test]
fn checker_rejects_a_backward_wrong_by_one_percent_in_one_element() {
    let mut r = Rng::new(4);
    // Gradients here are c·r with |c| ≈ 1 and |r| ≥ 0.5, so a 1% error is ≥ 0.004,
    // above the tolerance of 1e-3 + 2e-3·|g| for every element.
    let x = gradcheck::randn(&mut r, &[3, 4]);
    let c = Tensor::from_vec(&[3, 4], r.uniform_vec(12, 0.8, 1.2));
    for bad in [0, 7, 11] {
        for factor in [1.01f32, 0.99] {
            let c = c.clone();
            let case = Case::new(Op::Mul, "faulty", vec![x.clone()], move |x| {
                scaled_with_faulty_backward(&x[0], &c, bad, factor)
            });
            let rep = check(&case);
            assert!(
                !rep.passed,
                "a {factor} error at element {bad} was accepted: {rep:?}"
            );
            assert_eq!(
                rep.worst.map(|w| w.1),
                Some(bad),
                "worst element should be {bad}"
            );
        }
    }
}
