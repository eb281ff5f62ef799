//! The `focal` command: train, evaluate and run RetinaNet detectors, and the tools around
//! them. Each subcommand lives in its own file under `src/cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// See the comment on the dependency in Cargo.toml: large buffers are reused instead of
/// being returned to the kernel and faulted in again at every step; blocks of 1 MiB and
/// more are placed first fit in a range of their own (`large_blocks.rs`).
#[global_allocator]
static ALLOCATOR: large_blocks::Allocator = large_blocks::Allocator::new();

/// Tells mimalloc never to hand freed memory back to the kernel ("purge").
///
/// By default it purges pages a second after they are freed; a training step frees and
/// re-allocates the same activation buffers (several MiB each) every few milliseconds,
/// so each step faulted them in again and the kernel zeroed them, one 2 MiB huge page
/// at a time: measured on the default 96-px step, 0.3-0.75 s of system time per 6
/// steps (up to a third of the CPU time) against 0.06-0.1 s with purging off, for
/// 6 MiB more peak RSS (`MIMALLOC_SHOW_STATS=1 focal bench train-step --size 96 ...`).
/// `MIMALLOC_PURGE_DELAY` in the environment still overrides this.
fn keep_freed_memory() {
    // mimalloc's `mi_option_purge_delay`: position 15 of `mi_option_t` in the mimalloc 2
    // and 3 sources that libmimalloc-sys 0.1 builds.
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: both are plain C functions of the mimalloc library linked in as the global
    // allocator (through the mimalloc crate); they take an enum (a C int) and a long by
    // value, touch only mimalloc's own option table, and may be called at any time.
    unsafe {
        // Its default is 1000 (ms) in mimalloc 3 and 10 in mimalloc 2: anything else
        // means the option table is laid out differently, and nothing is changed.
        if matches!(mi_option_get(MI_OPTION_PURGE_DELAY), 10 | 1000) {
            mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

mod cmd;
mod draw;
mod files;
mod interrupt;
mod large_blocks;
mod launch;
#[cfg(feature = "mpi")]
mod mpi_comm;
mod plot;

#[derive(Parser)]
#[command(
    name = "focal",
    version,
    about = "RetinaNet object detection on the CPU, on a hand-written autodiff engine",
    long_about = "RetinaNet object detection on the CPU, on a hand-written autodiff engine.\n\n\
                  Run `focal <command> --help` for the options of each command."
)]
struct Cli {
    /// Worker threads for all kernels, at most four per core (default: every core; also
    /// FOCAL_THREADS). Results are bitwise identical whatever the count.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,

    /// How 3x3 stride-1 convolutions are computed: auto (Winograd where it measured
    /// faster), direct (implicit GEMM), winograd (everywhere it applies, tile chosen per
    /// shape), winograd-f2 or winograd-f4 (one tile size). Results are deterministic
    /// with each; they differ between algorithms by float rounding. `focal train`
    /// records the choice in the run's config, and a resumed run keeps it.
    #[arg(long, global = true, value_name = "ALGO", value_parser = parse_conv_algo)]
    conv_algo: Option<focal_engine::ConvAlgo>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a RetinaNet (on the built-in synthetic shapes by default, or a COCO dataset)
    /// and write a run folder: configuration, metrics, checkpoints, plots.
    Train(Box<cmd::train::Args>),
    /// Evaluate a trained checkpoint or pretrained weights (torchvision's RetinaNet
    /// state dict) on a COCO dataset: the 12 COCO numbers and a results file.
    Eval(cmd::eval::Args),
    /// Run a trained checkpoint or pretrained weights on images: PNG copies with the
    /// detections drawn, and a COCO results file.
    Detect(cmd::detect::Args),
    /// Safetensors weights: inspect a file (torchvision's RetinaNet, an ImageNet ResNet, a
    /// focal export) or export a checkpoint under torchvision's names.
    Weights(cmd::weights::Args),
    /// Check every op's backward against finite differences and print a table.
    Gradcheck(cmd::gradcheck::Args),
    /// Write the synthetic shapes dataset to disk as COCO (annotations + PNG images).
    Synth(cmd::synth::Args),
    /// Benchmarks: kernels (gemm, conv) and the detector (train-step, infer).
    Bench(cmd::bench::Args),
    /// Evaluate COCO detections against ground truth (AP, AR) exactly as pycocotools does.
    Cocoeval(cmd::cocoeval::Args),
    /// The focal loss paper's Table 1a/1b at small scale: train the same small synthetic
    /// configuration for a grid of γ and α (and α-balanced cross-entropy) and tabulate AP.
    Ablate(cmd::ablate::Args),
    /// The focal loss paper's Figure 4: how a trained model's loss spreads over easy and
    /// hard positives and negatives, for γ in {0, 0.5, 1, 2}.
    LossCdf(cmd::loss_cdf::Args),
    /// The class imbalance of a training configuration: anchors per image, positive,
    /// ignored and negative anchors per image, negatives per positive (an ablate preset,
    /// or the paper's configuration on a COCO folder).
    Imbalance(cmd::imbalance::Args),
}

fn parse_conv_algo(s: &str) -> Result<focal_engine::ConvAlgo, String> {
    focal_engine::ConvAlgo::from_name(s)
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // `focal train` may be one of several processes started by an MPI launcher: find out
    // (and initialise MPI) before any thread is started.
    let several = match &cli.command {
        Command::Train(_) => true,
        Command::Bench(b) => b.on_several_processes(),
        _ => false,
    };
    let world = if several {
        match launch::World::start() {
            Ok(world) => world,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        launch::World::alone()
    };
    let explicit_threads = cli.threads.is_some() || std::env::var_os("FOCAL_THREADS").is_some();
    let threads = match cli.threads {
        Some(n) => focal_engine::threads::set_num_threads(n as usize),
        None => focal_engine::threads::init_from_env(),
    };
    if let Err(e) = threads {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if several {
        if let Err(e) = world.set_threads(explicit_threads) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    // The GEMM path (FOCAL_ISA, or the best the CPU has), checked before any work.
    if let Err(e) = focal_engine::gemm::isa::init_from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(algo) = cli.conv_algo {
        focal_engine::set_conv_algo(algo);
    }
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(*a, cli.threads, cli.conv_algo, &world),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Detect(a) => cmd::detect::run(a),
        Command::Weights(a) => cmd::weights::run(a),
        Command::Gradcheck(a) => cmd::gradcheck::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Cocoeval(a) => cmd::cocoeval::run(a),
        Command::Bench(a) => cmd::bench::run(a, &world),
        Command::Ablate(a) => cmd::ablate::run(a, cli.threads, cli.conv_algo),
        Command::LossCdf(a) => cmd::loss_cdf::run(a),
        Command::Imbalance(a) => cmd::imbalance::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // With several processes, this one's error ends them all (MPI abort).
            world.fail(&e);
            // The whole chain, outermost first, joined by ": " (anyhow's alternate form):
            // "checkpoint runs/a/last.ckpt: cannot read: No such file or directory". The
            // library errors keep each cause as their source() for this.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
