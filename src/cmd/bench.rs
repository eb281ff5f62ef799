//! `focal bench <kind>`: timed benchmarks (kernels: peak, gemm, conv; the detector:
//! train-step, infer), printed as a table or (with `--json`) as one
//! JSON object per line with at least `name`, `ms` and `gflops`. The kernel
//! benchmarks live in the engine (`focal_engine::bench`), shared with `cargo bench`.
//!
//! Each kind is one variant of [`Kind`] with its own arguments; adding a benchmark means
//! adding a variant and a match arm in [`run`].

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;

pub mod detector;
#[cfg(feature = "mpi")]
pub mod reduce;

use focal_engine::bench::{self as kernels, Budget, Row};
use focal_engine::ConvAlgo;

fn parse_algo(s: &str) -> Result<ConvAlgo, String> {
    ConvAlgo::from_name(s)
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
}

/// Options every benchmark kind accepts.
#[derive(clap::Args)]
pub struct Common {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds to spend repeating each case (the median run is reported).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    min_time: f64,
}

impl Common {
    fn budget(&self) -> Budget {
        Budget {
            min_secs: self.min_time,
            ..Budget::default()
        }
    }
}

#[derive(Subcommand)]
enum Kind {
    /// The measured f32 FMA peak (every thread running a register-resident FMA loop),
    /// the CPU model and the GEMM path in use (and every other path the CPU has).
    Peak {
        #[command(flatten)]
        common: Common,
    },
    /// Square GEMMs at 256, 512, 1024, 2048 on every GEMM path the CPU has (all
    /// threads), each rate also as a fraction of the measured peak.
    Gemm {
        #[command(flatten)]
        common: Common,
        /// Matrix sizes to run (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [256, 512, 1024, 2048])]
        sizes: Vec<usize>,
        /// Instead, compare the micro-kernel tile shapes (8x48, 14x32, 12x32, 6x64 with
        /// AVX-512; 6x16 with AVX2) through the full GEMM: the evidence for the shape in use.
        #[arg(long)]
        shapes: bool,
    },
    /// conv2d forward and forward+backward on the ResNet-18 layers at 512 px, batch 2,
    /// and the RetinaNet head convs (`--preset small`: the default training model's
    /// widths at 128 px, batch 8; `--preset 96`: its 3x3 stride-1 convs at the default
    /// 96 px), with the GEMM rate at the same sizes and each rate as a fraction of the
    /// measured peak. The algorithm is the global `--conv-algo`'s.
    Conv {
        #[command(flatten)]
        common: Common,
        /// Layer shapes: "512" (ResNet-18 at 512 px, batch 2, heads 256 wide), "small"
        /// (ResNet-18 at 128 px, batch 8, FPN and heads 64 wide on 16²..1² maps), "96"
        /// (the 3x3 stride-1 convs of `focal train`'s default model, 96 px, batch 8) or
        /// "grid" (3x3 stride-1, batch 2, 64..512 channels on 8²..64² planes).
        #[arg(long, default_value = "512")]
        preset: String,
        /// Only the cases whose name contains this text (for example "head", "layer3").
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        /// Instead, time these conv algorithms side by side (auto, direct, winograd,
        /// winograd-f2, winograd-f4) on the cases Winograd can run (3x3, stride 1), with
        /// each one's speed-up over the first and its output's difference from the
        /// first's.
        #[arg(long, value_delimiter = ',', value_name = "ALGO,ALGO,..", value_parser = parse_algo)]
        compare_algos: Option<Vec<ConvAlgo>>,
    },
    /// One full SGD step of RetinaNet (forward, loss, backward, update) on random images:
    /// median time, time per phase and peak resident memory.
    TrainStep(detector::Options),
    /// RetinaNet detection (no-grad forward and post-processing) on random images.
    Infer(detector::Options),
    /// The gradient sum across MPI processes: focal's sum in a fixed order against
    /// MPI_Allreduce(MPI_SUM), on the gradients of the default model and of ResNet-18 +
    /// FPN. Run as `mpirun -np N focal bench reduce` (needs a build with --features mpi).
    #[cfg(feature = "mpi")]
    Reduce(reduce::Options),
}

fn print(rows: &[Row], common: &Common) {
    if !common.json {
        println!("# {}", kernels::threading_note());
    }
    for r in rows {
        if common.json {
            println!("{}", r.json());
        } else {
            println!("{}", r.text());
        }
    }
}

impl Args {
    /// Whether this benchmark runs as one of several MPI processes (`bench reduce`).
    pub fn on_several_processes(&self) -> bool {
        #[cfg(feature = "mpi")]
        if let Kind::Reduce(_) = self.kind {
            return true;
        }
        false
    }
}

pub fn run(args: Args, world: &crate::launch::World) -> Result<ExitCode> {
    let _ = world;
    match args.kind {
        Kind::Peak { common } => {
            let rows = kernels::gemm::peak_rows();
            print(&rows, &common);
        }
        Kind::Gemm {
            common,
            sizes,
            shapes,
        } => {
            let peak = kernels::gemm::measured_peak();
            let rows = if shapes {
                kernels::gemm::shape_rows(&sizes, common.budget(), peak)
            } else {
                kernels::gemm::gemm_rows(&sizes, common.budget(), peak)
            };
            print(&rows, &common);
        }
        Kind::Conv {
            common,
            preset,
            filter,
            compare_algos,
        } => {
            let Some(cases) = kernels::conv::conv_preset(&preset) else {
                bail!(
                    "unknown --preset {preset:?}: expected {}",
                    kernels::conv::PRESETS
                );
            };
            let cases: Vec<_> = cases
                .into_iter()
                .filter(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str())))
                .collect();
            if cases.is_empty() {
                bail!("no conv case matches {filter:?}");
            }
            let rows = match compare_algos {
                Some(algos) => {
                    let cases: Vec<_> = cases
                        .into_iter()
                        .filter(kernels::conv::winograd_shape)
                        .collect();
                    if cases.is_empty() {
                        bail!("--compare-algos: no selected case is a 3x3 stride-1 conv");
                    }
                    kernels::conv::algo_rows(&cases, &algos, common.budget())
                }
                None => {
                    let peak = kernels::gemm::measured_peak();
                    kernels::conv::conv_rows(&cases, common.budget(), peak)
                }
            };
            print(&rows, &common);
        }
        Kind::TrainStep(o) => return detector::run("train-step", o),
        Kind::Infer(o) => return detector::run("infer", o),
        #[cfg(feature = "mpi")]
        Kind::Reduce(o) => return reduce::run(o, world),
    }
    Ok(ExitCode::SUCCESS)
}
