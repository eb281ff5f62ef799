//! A small CNN (conv, group norm, ReLU, max-pool, linear) learns a synthetic three-class
//! image task (horizontal bars, vertical bars, blobs, with noise) to at least 95% accuracy
//! on held-out images, once with SGD and once with AdamW.

mod common;

use common::{accuracy, dataset, train, SmallCnn};
use focal_engine::Rng;
use focal_nn::{AdamW, Optimizer, Schedule, Sgd};

fn learn(opt: &mut dyn Optimizer, schedule: Schedule, steps: u64) -> (f32, f32, Vec<f32>) {
    let train_set = dataset(600, &mut Rng::new(1));
    let test_set = dataset(300, &mut Rng::new(2));
    let mut model = SmallCnn::new(&mut Rng::new(3));
    let before = accuracy(&mut model, &test_set);
    let losses = train(
        &mut model,
        opt,
        &schedule,
        &train_set,
        &mut Rng::new(4),
        0,
        steps,
        32,
    );
    (before, accuracy(&mut model, &test_set), losses)
}

fn report(name: &str, before: f32, after: f32, losses: &[f32]) {
    let head: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let tail: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    println!(
        "{name}: accuracy {before:.3} -> {after:.3}, mean loss of first 10 steps {head:.4}, last 10 {tail:.4}"
    );
    assert!(after >= 0.95, "{name}: held-out accuracy {after} < 0.95");
    assert!(
        tail < head / 2.0,
        "{name}: loss did not fall ({head} -> {tail})"
    );
}

#[test]
fn small_cnn_learns_with_sgd() {
    let mut opt = Sgd::new(0.9, 1e-4);
    let (before, after, losses) = learn(
        &mut opt,
        Schedule::multi_step(0.1, vec![250]).with_warmup(20, 0.1),
        300,
    );
    report("sgd", before, after, &losses);
}

#[test]
fn small_cnn_learns_with_adamw() {
    let mut opt = AdamW::new(1e-4);
    let (before, after, losses) = learn(
        &mut opt,
        Schedule::cosine(3e-3, 300, 1e-4).with_warmup(20, 0.1),
        300,
    );
    report("adamw", before, after, &losses);
}

#[test]
fn training_is_bitwise_identical_whatever_the_thread_count() {
    // Eight AdamW steps of the CNN on a batch of 32, in pools of 1 and 3 threads.
    let run = |threads: usize| {
        focal_engine::threads::with_threads(threads, || {
            let data = dataset(96, &mut Rng::new(1));
            let mut model = SmallCnn::new(&mut Rng::new(3));
            let mut opt = AdamW::new(1e-4);
            let schedule = Schedule::constant(3e-3);
            let losses = train(
                &mut model,
                &mut opt,
                &schedule,
                &data,
                &mut Rng::new(4),
                0,
                8,
                32,
            );
            let weights = focal_nn::named_params(&mut model)
                .into_iter()
                .flat_map(|(_, p)| p.value.to_vec())
                .map(f32::to_bits)
                .collect::<Vec<_>>();
            (
                losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
                weights,
            )
        })
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one.0, three.0, "losses differ");
    assert!(one.1 == three.1, "weights differ");
}
