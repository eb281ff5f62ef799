//! The tape's contract: what it records, what backward returns, what it frees.

use focal_engine::{
    backward, clear_tape, live_bytes, no_grad, tape_len, tape_summary, ParamId, Tensor,
};

/// A two-layer perceptron step built only from elementwise and reduction ops:
/// loss = mean((relu(x·w1 + b1) summed with w2 weights − y)²).
fn mlp_loss(x: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor, y: &Tensor) -> Tensor {
    // (4, 3) * (1, 3) -> (4, 3), then sum over features -> (4, 1)
    let h = x.mul(w1).add(b1).relu();
    let out = h.mul(w2).sum(&[1], true);
    out.sub(y).pow_scalar(2.0).mean_all()
}

#[test]
fn backward_returns_only_parameter_gradients_and_clears_the_tape() {
    let ids = [ParamId::fresh(), ParamId::fresh(), ParamId::fresh()];
    let x = Tensor::from_vec(&[4, 3], (0..12).map(|v| v as f32 * 0.1 - 0.5).collect());
    let y = Tensor::from_vec(&[4, 1], vec![0.1, -0.2, 0.3, 0.4]);
    let w1 = Tensor::from_vec(&[1, 3], vec![0.5, -1.0, 2.0]).track(ids[0]);
    let b1 = Tensor::from_vec(&[1, 3], vec![0.1, 0.2, -0.3]).track(ids[1]);
    let w2 = Tensor::from_vec(&[1, 3], vec![1.0, 0.5, -0.5]).track(ids[2]);
    let loss = mlp_loss(&x, &w1, &b1, &w2, &y);
    assert!(tape_len() > 3);
    let summary = tape_summary();
    assert!(
        summary.contains("relu") && summary.contains("param"),
        "{summary}"
    );
    assert!(summary.contains("<- #"), "parents are printed: {summary}");
    let grads = backward(&loss);
    assert_eq!(grads.len(), 3);
    for id in ids {
        assert_eq!(grads.get(id).unwrap().shape(), &[1, 3]);
    }
    assert_eq!(tape_len(), 0, "backward clears the tape");
}

#[test]
fn shared_parameter_gradients_are_summed() {
    // loss = sum(w * a) + sum(w * b) with the same leaf used twice → dw = a + b
    let id = ParamId::fresh();
    let w = Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]);
    let a = Tensor::from_vec(&[3], vec![1.0, 10.0, 100.0]);
    let b = Tensor::from_vec(&[3], vec![2.0, 20.0, 200.0]);
    let l1 = w.track(id).mul(&a).sum_all();
    let l2 = w.track(id).mul(&b).sum_all();
    let g = backward(&l1.add(&l2));
    assert_eq!(g.get(id).unwrap().to_vec(), vec![3.0, 30.0, 300.0]);
}

#[test]
fn no_grad_records_nothing() {
    clear_tape();
    let id = ParamId::fresh();
    let w = Tensor::from_vec(&[2], vec![1.0, 2.0]);
    let out = no_grad(|| w.track(id).exp().mul_scalar(3.0).sum_all());
    assert!(!out.is_tracked());
    assert_eq!(tape_len(), 0);
    // and recording resumes afterwards
    let out = w.track(id).exp().sum_all();
    assert!(out.is_tracked());
    clear_tape();
}

#[test]
#[should_panic(expected = "after the tape was cleared")]
fn a_tensor_from_a_cleared_tape_is_refused() {
    let id = ParamId::fresh();
    let h = Tensor::from_vec(&[2], vec![1.0, 2.0]).track(id).exp();
    clear_tape();
    let _ = h.sum_all();
}

#[test]
fn no_activation_buffer_survives_a_training_step() {
    // Parameters and data exist before the step; everything the forward pass allocates
    // (activations, saved tensors, intermediate gradients) must be gone after backward,
    // leaving exactly the parameters, the data and the returned parameter gradients.
    // Other tests run on other threads concurrently and also allocate, so this test runs
    // the check in a child process where it is alone.
    if std::env::var("FOCAL_TAPE_MEMORY_CHILD").is_err() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "no_activation_buffer_survives_a_training_step",
                "--nocapture",
            ])
            .env("FOCAL_TAPE_MEMORY_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(
            text.contains("memory check done"),
            "child did not run the check:\n{text}"
        );
        return;
    }
    let n = 64 * 1024;
    let ids = [ParamId::fresh(), ParamId::fresh()];
    let w = Tensor::from_vec(&[1, n], vec![0.01; n]);
    let b = Tensor::from_vec(&[1, n], vec![0.02; n]);
    let x = Tensor::from_vec(&[8, n], vec![0.5; 8 * n]);
    let before = live_bytes();
    {
        let h = x.mul(&w.track(ids[0])).add(&b.track(ids[1])).relu().exp();
        let loss = h.sum(&[1], false).log().mean_all();
        let during = live_bytes();
        // relu saves its output and exp saves its output (h): two (8, n) buffers. The
        // mul and add outputs are already gone, since no backward needs them. Plus the
        // row sums (8 values, saved by log) and the loss itself.
        assert_eq!(
            during - before,
            2 * 8 * n * 4 + 8 * 4 + 4,
            "activations alive during the step"
        );
        let grads = backward(&loss);
        drop(loss);
        drop(h);
        let after = live_bytes();
        // exactly the two gradients remain: 2 × n floats
        assert_eq!(
            after - before,
            2 * n * 4,
            "only the parameter gradients survive"
        );
        drop(grads);
    }
    assert_eq!(live_bytes(), before);
    println!("memory check done");
}
