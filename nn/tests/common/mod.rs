//! A small CNN and a synthetic image classification task, shared by the tests.

#![allow(dead_code)]

use focal_engine::{backward, bce_with_logits, no_grad, Reduction, Rng, Tensor};
use focal_nn::{
    BatchNorm2d, Conv2d, Flatten, GroupNorm, Layer, Linear, MaxPool2d, Module, Optimizer, ReLU,
    Schedule, Sequential, Visitor,
};

/// A model that maps images `(N, 1, 16, 16)` to class logits `(N, CLASSES)`.
pub trait Classifier: Module {
    fn logits(&mut self, x: &Tensor) -> Tensor;
}

impl Classifier for SmallCnn {
    fn logits(&mut self, x: &Tensor) -> Tensor {
        self.forward(x)
    }
}

impl Classifier for Sequential {
    fn logits(&mut self, x: &Tensor) -> Tensor {
        Layer::forward(self, x)
    }
}

/// A network with a training-mode BatchNorm (running statistics and a counter to restore):
/// conv 3x3 (1→width) · BN · ReLU · pool 4 · flatten · linear.
pub fn bn_net(width: usize, rng: &mut Rng) -> Sequential {
    Sequential::new()
        .push(Conv2d::new(1, width, 3, rng).padding(1).no_bias())
        .push(BatchNorm2d::new(width))
        .push(ReLU)
        .push(MaxPool2d::new(4, 4, 0))
        .push(Flatten)
        .push(Linear::new(width * 16, CLASSES, rng))
}

pub const SIZE: usize = 16;
pub const CLASSES: usize = 3;

/// conv 3x3 (1→8) · GN(2) · ReLU · pool 2 · conv 3x3 (8→16) · GN(4) · ReLU · pool 2 · linear.
pub struct SmallCnn {
    pub conv1: Conv2d,
    pub gn1: GroupNorm,
    pub conv2: Conv2d,
    pub gn2: GroupNorm,
    pub fc: Linear,
}

impl SmallCnn {
    pub fn new(rng: &mut Rng) -> SmallCnn {
        SmallCnn {
            conv1: Conv2d::new(1, 8, 3, rng).padding(1),
            gn1: GroupNorm::new(2, 8),
            conv2: Conv2d::new(8, 16, 3, rng).padding(1),
            gn2: GroupNorm::new(4, 16),
            fc: Linear::new(16 * 4 * 4, CLASSES, rng),
        }
    }

    /// Class logits `(N, CLASSES)` for images `(N, 1, 16, 16)`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let pool = MaxPool2d::new(2, 2, 0);
        let x = pool.forward(&self.gn1.forward(&self.conv1.forward(x)).relu());
        let x = pool.forward(&self.gn2.forward(&self.conv2.forward(&x)).relu());
        self.fc.forward(&Flatten.forward(&x))
    }
}

impl Module for SmallCnn {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("conv1", &mut self.conv1);
        v.child("gn1", &mut self.gn1);
        v.child("conv2", &mut self.conv2);
        v.child("gn2", &mut self.gn2);
        v.child("fc", &mut self.fc);
    }
}

/// `n` noisy 16x16 images: class 0 horizontal bars, class 1 vertical bars, class 2 a
/// Gaussian blob; labels cycle 0, 1, 2. Returns (images as one tensor, labels).
pub fn dataset(n: usize, rng: &mut Rng) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut images = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % CLASSES;
        let mut img = vec![0f32; SIZE * SIZE];
        match label {
            0 | 1 => {
                let bars = 1 + rng.below(3);
                for _ in 0..bars {
                    let at = rng.below(SIZE);
                    let (from, len) = (rng.below(6), 8 + rng.below(8));
                    for k in from..(from + len).min(SIZE) {
                        let (r, c) = if label == 0 { (at, k) } else { (k, at) };
                        img[r * SIZE + c] = 1.0;
                    }
                }
            }
            _ => {
                let (cy, cx) = (rng.uniform_range(3.0, 13.0), rng.uniform_range(3.0, 13.0));
                let s = rng.uniform_range(1.5, 3.0);
                for r in 0..SIZE {
                    for c in 0..SIZE {
                        let d2 = (r as f32 - cy).powi(2) + (c as f32 - cx).powi(2);
                        img[r * SIZE + c] = (-d2 / (2.0 * s * s)).exp();
                    }
                }
            }
        }
        for v in &mut img {
            *v += 0.3 * rng.normal();
        }
        images.push(img);
        labels.push(label);
    }
    (images, labels)
}

/// Stacks the images `idx` into `(B, 1, 16, 16)` and their one-hot targets `(B, 3)`.
pub fn batch(images: &[Vec<f32>], labels: &[usize], idx: &[usize]) -> (Tensor, Tensor) {
    let mut x = Vec::with_capacity(idx.len() * SIZE * SIZE);
    let mut t = vec![0f32; idx.len() * CLASSES];
    for (b, &i) in idx.iter().enumerate() {
        x.extend_from_slice(&images[i]);
        t[b * CLASSES + labels[i]] = 1.0;
    }
    (
        Tensor::from_vec(&[idx.len(), 1, SIZE, SIZE], x),
        Tensor::from_vec(&[idx.len(), CLASSES], t),
    )
}

/// One training step: forward, sigmoid cross-entropy on one-hot targets, backward, update.
/// Returns the loss.
pub fn train_step(
    model: &mut dyn Classifier,
    opt: &mut dyn Optimizer,
    x: &Tensor,
    t: &Tensor,
    lr: f32,
) -> f32 {
    let loss = bce_with_logits(&model.logits(x), t, Reduction::Mean);
    let value = loss.item();
    let grads = backward(&loss);
    opt.step(model, &grads, lr);
    value
}

/// Trains for `steps` steps from the state (`step`, `rng`) and returns the losses. Batches
/// are drawn with `rng`, so the generator's state is part of what a resume must restore.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut dyn Classifier,
    opt: &mut dyn Optimizer,
    schedule: &Schedule,
    data: &(Vec<Vec<f32>>, Vec<usize>),
    rng: &mut Rng,
    first_step: u64,
    steps: u64,
    batch_size: usize,
) -> Vec<f32> {
    let mut losses = Vec::new();
    for step in first_step..first_step + steps {
        let idx: Vec<usize> = (0..batch_size).map(|_| rng.below(data.0.len())).collect();
        let (x, t) = batch(&data.0, &data.1, &idx);
        let lr = schedule.lr_at(step);
        losses.push(train_step(model, opt, &x, &t, lr));
    }
    losses
}

/// Fraction of `data` whose highest logit is the true class.
pub fn accuracy(model: &mut dyn Classifier, data: &(Vec<Vec<f32>>, Vec<usize>)) -> f32 {
    let idx: Vec<usize> = (0..data.0.len()).collect();
    let (x, _) = batch(&data.0, &data.1, &idx);
    let logits = no_grad(|| model.logits(&x));
    let mut right = 0;
    for (i, row) in logits.data().chunks(CLASSES).enumerate() {
        let best = (0..CLASSES)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        right += (best == data.1[i]) as usize;
    }
    right as f32 / data.0.len() as f32
}
