//! `focal bench train-step|infer`: timings of the whole detector, for comparison with torchvision
//! (`retinanet/scripts/torchvision_bench.py` measures the same thing in PyTorch).
//!
//! - `focal bench train-step`: one full SGD step (forward, loss with a few ground-truth
//!   boxes per image, backward, update) on random images;
//! - `focal bench infer`: detection (no-grad forward in evaluation mode and
//!   post-processing) on the same batch.
//!
//! Each prints the median over `--steps` timed steps after `--warmup` untimed ones, a
//! breakdown by phase, and the peak resident memory of the process (VmHWM of
//! /proc/self/status). With `--json` the last line is one JSON object with at least `ms`
//! (median wall time), `min_ms`, `cpu_ms` (median CPU time of all threads per step, the
//! steadier figure on a shared machine), `peak_rss_mb` and `output_digest`.
//!
//! **`output_digest`** is a 64-bit FNV-1a hash of the bits of what the steps computed:
//! the total loss of every step for `train-step` (each step's loss depends on the
//! gradients and updates of the steps before it), the class logits and box deltas of
//! the last step for `infer`. The images and weights are drawn from fixed seeds, so two
//! builds, thread counts or machines that compute the same bits print the same digest:
//! a speed change can be checked to leave every result as it was with one command
//! each side. It is computed after each step's timing stops.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use focal_engine::{backward, clear_tape, no_grad, profile, Rng, Tensor};
use focal_nn::{Optimizer, Sgd};
use focal_retinanet::loss::retinanet_loss;
use focal_retinanet::postprocess::postprocess;
use focal_retinanet::targets::assign_targets;
use focal_retinanet::{
    BackboneName, BackboneNorm, GroundTruth, ImageSize, RetinaNet, RetinaNetConfig,
};

#[derive(ClapArgs, Clone)]
pub struct Options {
    /// Backbone: any registered one (`focal train --help` lists them).
    #[arg(long, value_name = "NAME", default_value = "resnet18", help = backbone_help())]
    backbone: String,
    /// Backbone normalisation: gn, bn or frozen-bn.
    #[arg(long, default_value = "gn")]
    norm: String,
    /// Side of the square input images, in pixels (a multiple of 32).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Number of classes K.
    #[arg(long, default_value_t = 80)]
    classes: usize,
    /// Channels of every FPN level (default: the config's, 256). `focal train`'s
    /// default model: `--size 128 --batch 8 --classes 5 --fpn-channels 64
    /// --head-width 64 --head-depth 2`.
    #[arg(long, value_name = "F")]
    fpn_channels: Option<usize>,
    /// Width of the class and box towers (default: the config's, 256).
    #[arg(long, value_name = "W")]
    head_width: Option<usize>,
    /// 3x3 convs in each tower (default: the config's, 4).
    #[arg(long, value_name = "D")]
    head_depth: Option<usize>,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seed of the model and the random batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Also print where the time goes, per op kind, over the timed steps: calls,
    /// forward and backward ms, GFLOP and GFLOP/s (convolutions and matrix products),
    /// and each kind's share of the step (the analogue of torch.profiler's key
    /// averages; `focal_engine::profile`). Profiling costs little but is not free: time
    /// without it for the step's speed.
    #[arg(long)]
    profile: bool,
}

/// The help of `--backbone`: every registered backbone, by name.
fn backbone_help() -> String {
    format!("Backbone: {}", focal_retinanet::backbone::names())
}

/// Peak resident set size of this process in MiB (VmHWM), if the system reports it.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Setup {
    model: RetinaNet,
    images: Tensor,
    ground_truth: Vec<GroundTruth>,
}

fn setup(o: &Options) -> Result<Setup> {
    if o.size == 0 || !o.size.is_multiple_of(32) {
        bail!("--size must be a positive multiple of 32, got {}", o.size);
    }
    if o.batch == 0 || o.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let mut config = RetinaNetConfig::default();
    config.model.depth = BackboneName::parse(&o.backbone)?;
    config.model.norm = BackboneNorm::parse(&o.norm)?;
    config.model.num_classes = o.classes;
    if let Some(f) = o.fpn_channels {
        config.model.fpn_channels = f;
    }
    if let Some(w) = o.head_width {
        config.model.head_width = w;
    }
    if let Some(d) = o.head_depth {
        config.model.head_depth = d;
    }
    config.model.validate()?;
    let mut rng = Rng::new(o.seed);
    let model = RetinaNet::new(&config, &mut rng)?;
    let n = o.batch * 3 * o.size * o.size;
    let images = Tensor::from_vec(&[o.batch, 3, o.size, o.size], rng.normal_vec(n, 0.0, 1.0));
    // Four boxes per image, 16 px to 35% of the side, inside the image.
    let s = o.size as f32;
    let ground_truth = (0..o.batch)
        .map(|_| {
            let mut g = GroundTruth::default();
            for _ in 0..4 {
                let (x, y) = (
                    rng.uniform_range(0.0, 0.6 * s),
                    rng.uniform_range(0.0, 0.6 * s),
                );
                let (w, h) = (
                    rng.uniform_range(16.0, 0.35 * s),
                    rng.uniform_range(16.0, 0.35 * s),
                );
                g.boxes.push([x, y, x + w, y + h]);
                g.labels.push(rng.below(o.classes));
            }
            g
        })
        .collect();
    Ok(Setup {
        model,
        images,
        ground_truth,
    })
}

/// Times of the phases of one step, in ms.
#[derive(Default, Clone)]
struct Phases {
    names: Vec<&'static str>,
    ms: Vec<f64>,
}

impl Phases {
    fn lap(&mut self, name: &'static str, t: &mut Instant) {
        self.names.push(name);
        self.ms.push(t.elapsed().as_secs_f64() * 1e3);
        *t = Instant::now();
        // The work of a phase that is not an op ends here (for --profile).
        profile::mark();
    }
}

/// Folds the bits of `values` into the FNV-1a hash `h` (64-bit: offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`), byte by byte, little-endian.
fn fnv1a(mut h: u64, values: &[f32]) -> u64 {
    for v in values {
        for byte in v.to_bits().to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The FNV-1a offset basis: the hash of nothing.
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// One SGD step; its phases, and the total loss (for the digest).
fn train_step(s: &mut Setup, opt: &mut Sgd) -> (Phases, f32) {
    let mut p = Phases::default();
    let mut t = Instant::now();
    let (h, w) = (s.images.dim(2), s.images.dim(3));
    let anchors = s.model.anchors(h, w);
    let cfg = s.model.config.clone();
    let targets = assign_targets(
        &cfg.matcher,
        &anchors,
        &s.ground_truth,
        cfg.model.num_classes,
    )
    .expect("the benchmark's boxes are valid");
    p.lap("anchors+targets", &mut t);
    let c = s.model.body.forward(&s.images);
    p.lap("forward backbone", &mut t);
    let levels = s.model.fpn.forward(&c);
    drop(c);
    p.lap("forward fpn", &mut t);
    let (cls, deltas) = s.model.head.forward(&levels);
    drop(levels);
    p.lap("forward head", &mut t);
    let losses = retinanet_loss(&cfg.loss, &cls, &deltas, &targets);
    drop((cls, deltas));
    let total = losses.total();
    let loss = total.item();
    p.lap("loss", &mut t);
    let grads = backward(&total);
    drop((total, losses));
    p.lap("backward", &mut t);
    opt.step(&mut s.model, &grads, 0.01);
    drop(grads);
    clear_tape();
    p.lap("sgd update", &mut t);
    (p, loss)
}

/// One detection step; its phases, and the head's outputs (class logits, box deltas)
/// for the digest.
fn infer_step(s: &mut Setup, sizes: &[ImageSize]) -> (Phases, (Tensor, Tensor)) {
    let mut p = Phases::default();
    let mut t = Instant::now();
    let out = no_grad(|| {
        let c = s.model.body.forward(&s.images);
        p.lap("backbone", &mut t);
        let levels = s.model.fpn.forward(&c);
        drop(c);
        p.lap("fpn", &mut t);
        let out = s.model.head.forward(&levels);
        p.lap("head", &mut t);
        out
    });
    let anchors = s.model.anchors(s.images.dim(2), s.images.dim(3));
    let dets = postprocess(&s.model.config.inference, &anchors, &out.0, &out.1, sizes);
    std::hint::black_box(dets);
    p.lap("postprocess", &mut t);
    (p, out)
}

/// Runs `mode` ("train-step" or "infer") with options `o`.
pub fn run(mode: &str, o: Options) -> Result<ExitCode> {
    let mut s = setup(&o)?;
    let threads = focal_engine::threads::num_threads();
    eprintln!(
        "focal bench {mode}: {} ({}), {}x{}, batch {}, {} classes, FPN {}, towers {}x{}, \
         {threads} threads, conv algorithm {}, {} warm-up + {} timed steps",
        o.backbone,
        o.norm,
        o.size,
        o.size,
        o.batch,
        o.classes,
        s.model.config.model.fpn_channels,
        s.model.config.model.head_depth,
        s.model.config.model.head_width,
        focal_engine::conv_algo().name(),
        o.warmup,
        o.steps
    );
    let mut opt = Sgd::new(0.9, 1e-4);
    let sizes = vec![ImageSize::unscaled(o.size, o.size); o.batch];
    if mode == "infer" {
        s.model.set_train(false);
    }
    let mut totals = Vec::new();
    let mut cpu = Vec::new();
    let mut phases: Vec<Phases> = Vec::new();
    let mut digest = FNV_START;
    for i in 0..o.warmup + o.steps {
        if o.profile && i == o.warmup {
            profile::reset();
            profile::enable(true);
        }
        profile::mark();
        let cpu0 = focal_engine::bench::process_cpu_ns();
        let t = Instant::now();
        let (p, outputs) = if mode == "train-step" {
            let (p, loss) = train_step(&mut s, &mut opt);
            (p, Some(vec![loss]))
        } else {
            let (p, (cls, deltas)) = infer_step(&mut s, &sizes);
            let last = i + 1 == o.warmup + o.steps;
            (p, last.then(|| [cls.to_vec(), deltas.to_vec()].concat()))
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if let (Some(a), Some(b)) = (cpu0, focal_engine::bench::process_cpu_ns()) {
            if i >= o.warmup {
                cpu.push((b - a) as f64 / 1e6);
            }
        }
        if let Some(values) = outputs {
            digest = fnv1a(digest, &values);
        }
        if i >= o.warmup {
            totals.push(ms);
            phases.push(p);
            eprintln!("  step {}: {ms:.0} ms", i - o.warmup + 1);
        }
    }
    let ms = median(&mut totals.clone());
    // Median CPU time of the process per step (all threads), the steadier figure when
    // other jobs share the cores.
    let cpu_ms = (cpu.len() == totals.len()).then(|| median(&mut cpu));
    let peak = peak_rss_mb();
    let profile_rows = o.profile.then(|| {
        profile::enable(false);
        let mean = totals.iter().sum::<f64>() / totals.len() as f64;
        profile::table(&profile::totals(), o.steps, mean)
    });
    if let Some(rows) = &profile_rows {
        println!(
            "profile per step (mean over {} steps), by op kind:\n{}",
            o.steps,
            profile::table_text(rows)
        );
    }
    // Each phase's median over the timed steps, in the order the phases ran.
    let phase_ms: Vec<(&str, f64)> = phases[0]
        .names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let mut v: Vec<f64> = phases.iter().map(|p| p.ms[j]).collect();
            (*name, median(&mut v))
        })
        .collect();
    println!("phase medians:");
    for (name, ms) in &phase_ms {
        println!("  {name:<18} {ms:>9.1} ms");
    }
    let peak_text = peak.map_or("unknown".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "{mode}: median {ms:.0} ms over {} steps, peak RSS {peak_text}, output digest \
         {digest:016x}",
        o.steps
    );
    if o.json {
        let phase_json: Vec<String> = phase_ms
            .iter()
            .map(|(name, ms)| format!("\"{name}\": {ms:.1}"))
            .collect();
        let profile_json = profile_rows.as_ref().map_or(String::new(), |rows| {
            let items: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{{\"op\": \"{}\", \"calls\": {:.1}, \"forward_ms\": {:.3}, \
                         \"backward_ms\": {:.3}, \"gflop\": {:.4}, \"gflops\": {:.2}, \
                         \"share\": {:.3}}}",
                        r.name, r.calls, r.forward_ms, r.backward_ms, r.gflop, r.gflops, r.share
                    )
                })
                .collect();
            format!(", \"profile\": [{}]", items.join(", "))
        });
        println!(
            "{{\"bench\": \"{mode}\", \"backbone\": \"{}\", \"norm\": \"{}\", \"size\": {}, \
             \"batch\": {}, \"classes\": {}, \"fpn_channels\": {}, \"head_width\": {}, \
             \"head_depth\": {}, \"threads\": {threads}, \"conv_algo\": \"{}\", \"steps\": {}, \
             \"ms\": {ms:.1}, \"min_ms\": {:.1}, \"cpu_ms\": {}, \"peak_rss_mb\": {}, \
             \"output_digest\": \"{digest:016x}\", \"phases_ms\": {{{}}}{}}}",
            o.backbone,
            o.norm,
            o.size,
            o.batch,
            o.classes,
            s.model.config.model.fpn_channels,
            s.model.config.model.head_width,
            s.model.config.model.head_depth,
            focal_engine::conv_algo().name(),
            o.steps,
            totals.iter().copied().fold(f64::INFINITY, f64::min),
            cpu_ms.map_or("null".to_string(), |m| format!("{m:.1}")),
            peak.map_or("null".to_string(), |m| format!("{m:.1}")),
            phase_json.join(", "),
            profile_json
        );
    }
    Ok(ExitCode::SUCCESS)
}
