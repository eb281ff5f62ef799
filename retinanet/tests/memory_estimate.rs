//! The memory estimate of a run against what the engine counts: the peak of tensor bytes
//! over training steps (`focal_engine::peak_bytes`, every tensor's storage) must lie
//! under the estimate of the model, its gradients and optimiser state and the saved
//! activations, and not far under it. (Its own test binary: the count is process-wide.)

use focal_data::{Dataset, Loader, LoaderConfig, ShapesConfig, ShapesDataset, Split};
use focal_engine::Rng;
use focal_retinanet::config::{BackboneName, BackboneNorm};
use focal_retinanet::train::memory::estimate;
use focal_retinanet::train::step::optimizer_step;
use focal_retinanet::train::{build_optimizer, TrainConfig};
use focal_retinanet::RetinaNet;
use std::sync::Arc;

/// Peak tensor bytes over two steps (the first creates the optimiser's state).
fn measured_peak(c: &TrainConfig) -> usize {
    let side = c.data.min_size as u32;
    let ds = ShapesDataset::new(ShapesConfig {
        size: side,
        ..ShapesConfig::new(Split::Train, c.batch_size, 0)
    })
    .unwrap();
    let ds: Arc<dyn Dataset> = Arc::new(ds);
    let loader = Loader::new(
        ds,
        LoaderConfig::train(c.batch_size, c.data.min_size, c.data.max_size, 0),
    )
    .unwrap();
    let batch = loader
        .load_batch(0, &(0..c.batch_size).collect::<Vec<_>>())
        .unwrap()
        .unwrap();
    let mut model = RetinaNet::new(&c.retinanet(), &mut Rng::new(0)).unwrap();
    let mut opt = build_optimizer(c);
    focal_engine::reset_peak_bytes();
    for _ in 0..2 {
        optimizer_step(&mut model, opt.as_mut(), &batch, 1e-4, 1, 0.0).unwrap();
    }
    focal_engine::peak_bytes()
}

#[test]
fn estimate_bounds_the_measured_peak() {
    let mut small = TrainConfig::shapes();
    small.batch_size = 2;
    small.data.min_size = 256;
    small.data.max_size = 256;
    let mut bottleneck = small.clone();
    bottleneck.data.min_size = 160;
    bottleneck.data.max_size = 160;
    bottleneck.model.depth = BackboneName::RESNET50;
    bottleneck.model.norm = BackboneNorm::BatchNorm;
    bottleneck.model.fpn_channels = 64;
    bottleneck.model.head_width = 64;
    bottleneck.model.head_depth = 4;
    bottleneck.model.head_norm = false;
    bottleneck.optimizer.kind = focal_retinanet::train::OptimizerKind::Sgd;
    bottleneck.anchors.ratios = vec![0.5, 1.0, 2.0];
    bottleneck.model.num_classes = 5;
    for (name, c) in [
        ("resnet18 gn adamw", small),
        ("resnet50 bn sgd", bottleneck),
    ] {
        let e = estimate(&c, 0);
        let predicted = (e.model_bytes + e.activation_bytes) as f64;
        let measured = measured_peak(&c) as f64;
        eprintln!(
            "{name}: estimate {:.1} MB (model {:.1}, activations {:.1}), engine peak {:.1} MB, \
             ratio {:.2}",
            predicted / 1e6,
            e.model_bytes as f64 / 1e6,
            e.activation_bytes as f64 / 1e6,
            measured / 1e6,
            predicted / measured
        );
        assert!(measured <= predicted, "{name}: the estimate is too low");
        assert!(
            predicted <= 1.6 * measured,
            "{name}: the estimate is far too high"
        );
    }
}
