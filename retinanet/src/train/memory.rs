//! How much memory a training run will take, worked out from its configuration before
//! anything is allocated, so that a run too large for the machine is refused with the
//! figure instead of being killed an hour in (or trying to allocate 360 GB).
//!
//! # The estimate
//!
//! ```text
//!   total = weights + gradients + optimiser state      4 bytes × P × (2 + m)
//!         + activations                                 4 bytes × N × Σ saved tensors × 3/5
//!         + batches in the loader                       4 bytes × 4 × N × 3 × H × W
//!         + decoded images in flight                    ≤ the decoding budget
//!         + a fixed base                                 BASE_BYTES
//! ```
//!
//! - **P**, the parameters, counted from the architecture (ResNet without its classifier,
//!   FPN, the two subnets); m = 1 for SGD's momentum, 2 for AdamW's two moments.
//! - **H × W**, the largest network input the configuration allows: the short side at
//!   most `min_size` and the long side at most `max_size`, each padded to a multiple of
//!   32. **N**, the batch.
//! - **Saved tensors**: every tensor the forward pass makes and the tape keeps for the
//!   backward pass, per image, at each layer's resolution: a convolution's output, a
//!   norm's output and normalised input (two tensors), a ReLU's output, a residual sum;
//!   the FPN's laterals, upsampled maps, sums and outputs; each subnet's tower on all
//!   five levels, its output and the two copies that flatten and concatenate it; and the
//!   loss's gathered logits and probabilities. Nothing else of a step is as large. This
//!   count is an upper bound of the tensors a step makes; the engine never keeps some
//!   of them at once (a ReLU's input once its output exists, a norm's input beside its
//!   normalised copy): at the peak of a step, `focal_engine::peak_bytes` found 31–37% of
//!   the count alive, and the allocator's retained memory adds to that in the process's
//!   resident size. [`ACTIVATION_SHARE`] = 60% of the count was above the measured peak
//!   resident size of every configuration we measured (docs/memory.md).
//! - **Loader**: two prefetched batches, one being built and one being trained on.
//! - **Decoding**: the images decoded at once, as many as there are threads (or images
//!   in a batch, if fewer), each as large as the dataset's largest, and never more than
//!   the decoding budget ([`focal_data::decode_budget`]).
//!
//! The formula was checked against the engine's own count of tensor bytes
//! (`focal_engine::peak_bytes`) over a training step, and against the peak resident size
//! of `focal train`; see the test `estimate_bounds_the_measured_peak` and
//! docs/memory.md for the figures.

use crate::backbone::BackboneMemory;
use crate::config::P6Input;
use crate::train::config::{OptimizerKind, TrainConfig};

/// What does not scale with the configuration: the program, thread stacks, the
/// allocator's slack.
pub const BASE_BYTES: u64 = 256 << 20;

/// The share of the saved-tensor count taken as the activations' memory (see the module
/// documentation), as a fraction (numerator, denominator).
pub const ACTIVATION_SHARE: (u64, u64) = (3, 5);

/// The estimate of a training run, by part (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// P, the model's parameters.
    pub parameters: u64,
    /// Weights, gradients and optimiser state.
    pub model_bytes: u64,
    /// Tensors saved for the backward pass of one step.
    pub activation_bytes: u64,
    /// Batches held by the loader.
    pub loader_bytes: u64,
    /// Images being decoded at once.
    pub decode_bytes: u64,
    /// The network input assumed: (height, width), padded.
    pub input: (usize, usize),
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.model_bytes
            + self.activation_bytes
            + self.loader_bytes
            + self.decode_bytes
            + BASE_BYTES
    }

    /// "3.1 GB (model 0.4 GB with 23.5 M parameters, activations 2.5 GB for 2 images of
    /// 800x1344, loader 0.1 GB, decoding 0.0 GB)".
    pub fn describe(&self, batch: usize) -> String {
        let gb = |b: u64| b as f64 / 1e9;
        format!(
            "{:.1} GB (model {:.2} GB with {:.1} M parameters, activations {:.2} GB for {} \
             of {}x{}, loader {:.2} GB, image decoding {:.2} GB, base {:.2} GB)",
            gb(self.total()),
            gb(self.model_bytes),
            self.parameters as f64 / 1e6,
            gb(self.activation_bytes),
            if batch == 1 {
                "1 image".to_string()
            } else {
                format!("{batch} images")
            },
            self.input.0,
            self.input.1,
            gb(self.loader_bytes),
            gb(self.decode_bytes),
            gb(BASE_BYTES)
        )
    }
}

/// The estimate for `config`. `decode_bytes` is what decoding may hold at once (0 for a
/// dataset drawn in memory).
pub fn estimate(config: &TrainConfig, decode_bytes: u64) -> MemoryEstimate {
    let d = &config.data;
    let pad = |v: usize| v.div_ceil(32) * 32;
    let (h, w) = (pad(d.min_size.min(d.max_size)), pad(d.max_size));
    let p = parameter_count(config);
    let states = match config.optimizer.kind {
        OptimizerKind::Sgd => 1,
        OptimizerKind::AdamW => 2,
    };
    let n = config.batch_size as u64;
    MemoryEstimate {
        parameters: p,
        model_bytes: 4 * p * (2 + states),
        activation_bytes: 4
            * n
            * (saved_floats_per_image(config, h, w) * ACTIVATION_SHARE.0 / ACTIVATION_SHARE.1),
        loader_bytes: 4 * 4 * n * 3 * (h * w) as u64,
        decode_bytes,
        input: (h, w),
    }
}

/// The backbone's count for one `h` x `w` input (its registered [`BackboneSpec::memory`]).
///
/// [`BackboneSpec::memory`]: crate::backbone::BackboneSpec
fn backbone(config: &TrainConfig, h: usize, w: usize) -> BackboneMemory {
    let m = &config.model;
    (m.depth.spec().memory)(m.norm, h, w)
}

/// P: the parameters of the backbone (for a ResNet, torchvision's count less its
/// classifier), the FPN and the two subnets.
pub fn parameter_count(config: &TrainConfig) -> u64 {
    let m = &config.model;
    let body = backbone(config, 64, 64);
    let c = body.out_channels;
    let f = m.fpn_channels as u64;
    let conv = |cin: u64, cout: u64, k: u64| k * k * cin * cout + cout;
    let p6_in = match m.p6_input {
        P6Input::C5 => c[2] as u64,
        P6Input::P5 => f,
    };
    let fpn = c.iter().map(|&ci| conv(ci as u64, f, 1)).sum::<u64>()
        + 3 * conv(f, f, 3)
        + conv(p6_in, f, 3)
        + conv(f, f, 3);
    let wd = m.head_width as u64;
    let a = config.anchors.anchors_per_cell() as u64;
    let subnet = |outputs: u64| {
        let mut s = 0;
        for layer in 0..m.head_depth {
            let cin = if layer == 0 { f } else { wd };
            // With GroupNorm the conv has no bias; the norm has a weight and a bias.
            s += 9 * cin * wd + if m.head_norm { 2 * wd } else { wd };
        }
        let cin = if m.head_depth == 0 { f } else { wd };
        s + conv(cin, a * outputs, 3)
    };
    body.parameters + fpn + subnet(m.num_classes as u64) + subnet(4)
}

/// Floats the forward pass keeps for the backward pass, for one `h` x `w` input (see the
/// module documentation).
pub fn saved_floats_per_image(config: &TrainConfig, h: usize, w: usize) -> u64 {
    let m = &config.model;
    let area = |(a, b): (usize, usize)| (a * b) as u64;
    let levels = crate::anchors::level_sizes(h, w);
    let mut total = backbone(config, h, w).saved_floats;

    // FPN: laterals, upsampled maps and sums on P3, P4, outputs, P6, ReLU, P7.
    let f = m.fpn_channels as u64;
    let (p3, p4, p5, p6, p7) = (
        area(levels[0]),
        area(levels[1]),
        area(levels[2]),
        area(levels[3]),
        area(levels[4]),
    );
    total += f * (p3 + p4 + p5) * 2 + f * (p3 + p4) * 2 + f * (2 * p6 + p7);

    // Subnets on all five levels: tower (conv, norm, ReLU), output, and two copies of it
    // (permuted, concatenated); the loss gathers the logits and keeps probabilities.
    let cells = p3 + p4 + p5 + p6 + p7;
    let wd = m.head_width as u64;
    let tower = m.head_depth as u64 * wd * cells * (2 + if m.head_norm { 2 } else { 0 });
    let a = config.anchors.anchors_per_cell() as u64;
    let k = m.num_classes as u64;
    total += 2 * tower + 3 * a * (k + 4) * cells + 2 * a * k * cells;
    total
}

/// The memory this machine can give a process: the smaller of `MemTotal` in
/// `/proc/meminfo` and a cgroup limit (`/sys/fs/cgroup/memory.max`, cgroup v2), and
/// `MemAvailable` (what is free now without swapping), in bytes; `None` where these files
/// do not exist (not Linux).
pub fn machine_memory() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let mut total = field("MemTotal:")?;
    let available = field("MemAvailable:").unwrap_or(total);
    if let Ok(text) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(limit) = text.trim().parse::<u64>() {
            total = total.min(limit);
        }
    }
    Some((total, available.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneName, BackboneNorm};
    use crate::model::RetinaNet;
    use focal_engine::Rng;

    /// P as counted from the architecture equals the parameters of the model built (with
    /// frozen BatchNorm, whose weights are buffers there, it counts them as parameters:
    /// a few thousand values more).
    #[test]
    fn parameter_count_matches_the_built_model() {
        let mut configs = Vec::new();
        let mut c = TrainConfig::shapes();
        configs.push(c.clone());
        c.model.head_norm = false;
        c.model.head_depth = 0;
        c.model.p6_input = P6Input::P5;
        configs.push(c.clone());
        let mut c = TrainConfig::shapes();
        c.model.depth = BackboneName::RESNET50;
        c.model.norm = BackboneNorm::BatchNorm;
        c.model.fpn_channels = 32;
        c.model.head_width = 32;
        c.model.head_depth = 1;
        c.anchors.ratios = vec![0.5, 1.0, 2.0];
        configs.push(c.clone());
        c.model.depth = BackboneName::RESNET34;
        c.model.norm = BackboneNorm::FrozenBatchNorm;
        configs.push(c.clone());
        c.model.depth = BackboneName::parse("resnet18-half").unwrap();
        c.model.norm = BackboneNorm::GroupNorm;
        configs.push(c);
        for c in configs {
            let mut model = RetinaNet::new(&c.retinanet(), &mut Rng::new(0)).unwrap();
            let built = focal_nn::module::param_count(&mut model) as u64;
            let p = parameter_count(&c);
            if c.model.norm == BackboneNorm::FrozenBatchNorm {
                let buffers: usize = focal_nn::module::named_buffers(&mut model)
                    .iter()
                    .map(|(_, t)| t.numel())
                    .sum();
                assert!(built < p && p <= built + buffers as u64, "{p} vs {built}");
            } else {
                assert_eq!(p, built, "{:?}", c.model);
            }
        }
    }

    #[test]
    fn the_estimate_grows_with_size_batch_and_width() {
        let c = TrainConfig::shapes();
        let e = estimate(&c, 0);
        assert_eq!(e.input, (96, 96));
        let mut big = c.clone();
        big.batch_size *= 2;
        assert_eq!(
            estimate(&big, 0).activation_bytes,
            2 * e.activation_bytes,
            "activations are linear in the batch"
        );
        big.model.fpn_channels = 100_000;
        // 100 000 FPN channels: the 3×3 convs alone have 9e10 weights × 4 bytes.
        assert!(estimate(&big, 0).total() > 1_000_000_000_000);
        let mut wide = c;
        wide.data.min_size = 800;
        wide.data.max_size = 1333;
        assert_eq!(estimate(&wide, 0).input, (800, 1344));
        assert!(estimate(&wide, 0).activation_bytes > 50 * e.activation_bytes);
    }
}
