//! `focal_engine::profile` on a tiny training step: its table has a row for every op kind
//! the step recorded, counts their calls and the GEMM-shaped ops' FLOPs exactly, and its
//! shares add up to the step (no timing is asserted: the machine is shared).
//!
//! One test in its own binary: the profile is process-wide.

use std::time::Instant;

use focal_engine::gradcheck::randn;
use focal_engine::profile::{self, ProfileRow};
use focal_engine::tape::recorded_ops;
use focal_engine::{backward, conv2d, Conv2dOptions, Op, ParamId, Rng};

#[test]
fn the_table_covers_every_op_of_a_step_and_adds_up_to_it() {
    let mut r = Rng::new(1);
    let x = randn(&mut r, &[2, 3, 8, 8]);
    let w_id = ParamId::fresh();
    let w = randn(&mut r, &[4, 3, 3, 3]);
    let v = randn(&mut r, &[4 * 8 * 8, 5]);
    let steps = 3;
    profile::reset();
    profile::enable(true);
    let mut ms = 0.0;
    let mut ops = Vec::new();
    for _ in 0..steps {
        profile::mark();
        let t = Instant::now();
        // The parameters are leaves of each step's tape.
        let (wt, vt) = (w.track(w_id), v.track(ParamId::fresh()));
        // conv (2, 4, 8, 8) -> relu -> + itself -> (2, 256) · (256, 5) -> sum
        let y = conv2d(&x, &wt, None, Conv2dOptions::sp(1, 1)).relu();
        let y = y.add(&y).reshape(&[2, 4 * 8 * 8]);
        let loss = y.matmul(&vt).sum_all();
        ops = recorded_ops();
        let grads = backward(&loss);
        assert!(grads.get(w_id).is_some());
        ms += t.elapsed().as_secs_f64() * 1e3;
    }
    profile::enable(false);
    let totals = profile::totals();
    let rows = profile::table(&totals, steps, ms / steps as f64);
    let row = |op: Op| -> &ProfileRow {
        rows.iter()
            .find(|r| r.name == op.name())
            .unwrap_or_else(|| panic!("no row for {}: {rows:?}", op.name()))
    };
    // Every op kind of the step has a row, with its calls per step.
    for &op in &ops {
        let n = ops.iter().filter(|&&o| o == op).count() as f64;
        assert_eq!(row(op).calls, n, "{}", op.name());
    }
    assert!(rows.len() > 5, "{rows:?}");
    // FLOPs: conv 2·(2·4·8·8)·27 forward, its weight gradient alone backward (the image
    // needs none); matmul 2·(2·5)·256 forward, its two gradients backward.
    let conv = 2.0 * 512.0 * 27.0 * 2.0;
    let mm = 2.0 * 10.0 * 256.0 * 3.0;
    assert!(
        (row(Op::Conv2d).gflop * 1e9 - conv).abs() < 1e-3,
        "{rows:?}"
    );
    assert!((row(Op::Matmul).gflop * 1e9 - mm).abs() < 1e-3, "{rows:?}");
    assert_eq!(row(Op::Relu).gflop, 0.0);
    // The last row is the rest of the step; the shares add up to 100 % and none of the
    // ops' is negative.
    assert_eq!(rows.last().unwrap().name, "(outside ops)");
    let total: f64 = rows.iter().map(|r| r.share).sum();
    assert!((total - 100.0).abs() < 1e-6, "{total}");
    let in_ops: f64 = rows[..rows.len() - 1].iter().map(|r| r.share).sum();
    assert!(rows[..rows.len() - 1].iter().all(|r| r.share >= 0.0));
    assert!(
        in_ops <= 100.0 + 1e-6,
        "the ops took more than the step: {rows:?}"
    );
    // Nothing is collected while it is off.
    let _ = conv2d(&x, &w, None, Conv2dOptions::sp(1, 1));
    assert_eq!(profile::totals(), totals);
}
