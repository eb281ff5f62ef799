//! `mpirun -np N focal bench reduce`: the sum of a gradient across N MPI processes, as
//! a training step does it — focal's sum in a fixed order ([`Comm::sum_in_rank_order`]:
//! all-to-all, each rank's slice added with the fixed tree, all-gather) — against MPI's
//! own `MPI_Allreduce(MPI_SUM)`, on gradients of the sizes of real models:
//!
//! - `default`: the model `focal train` trains by default (ResNet-18, FPN and heads 64
//!   wide, 2 deep, 5 classes, 1 anchor shape);
//! - `r18-fpn`: the COCO recipe on ResNet-18 (FPN and heads 256 wide, 4 deep, 80
//!   classes, 9 anchors).
//!
//! Every rank fills its gradient with its own values (normal values scaled by
//! 10^−4..10^0, as gradients spread), and rank 0 recomputes the exact rank-order sum
//! itself to check focal's sum against it bit for bit and to count the elements where
//! MPI's sum differs from it. Times are rank 0's, each call started after a barrier;
//! the median and the best of `--repeats` calls are printed (others' jobs on a shared
//! machine only ever add time).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use focal_engine::Rng;
use focal_retinanet::train::comm::pairwise_sum_slices;
use focal_retinanet::train::{CocoData, TrainConfig};
use focal_retinanet::{BackboneName, RetinaNet};

use crate::launch::World;

#[derive(ClapArgs, Clone)]
pub struct Options {
    /// Gradients to sum: default, r18-fpn (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ["default".to_string(), "r18-fpn".to_string()])]
    models: Vec<String>,
    /// Timed calls of each sum (the median and the best are printed).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// The number of trainable values of a model, i.e. of its gradient.
fn gradient_len(model: &str) -> Result<usize> {
    let config = match model {
        "default" => TrainConfig::shapes(),
        "r18-fpn" => {
            let mut c = TrainConfig::coco(CocoData::from_root(std::path::Path::new(".")));
            c.model.depth = BackboneName::RESNET18;
            c.model.num_classes = 80;
            c
        }
        other => bail!("unknown model {other:?}: expected default or r18-fpn"),
    };
    config.validate()?;
    let mut net = RetinaNet::new(&config.retinanet(), &mut Rng::new(0))?;
    Ok(focal_nn::trainable_param_count(&mut net))
}

/// Rank `rank`'s gradient of `len` values: the same on every call.
fn gradient(rank: usize, len: usize) -> Vec<f32> {
    let mut rng = Rng::derive(18, &[rank as u64]);
    (0..len)
        .map(|_| rng.normal() * 10f32.powf(-4.0 * rng.uniform()))
        .collect()
}

fn median_and_best(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0])
}

pub fn run(o: Options, world: &World) -> Result<ExitCode> {
    let comm = world.comm();
    let (rank, n) = (world.rank(), world.size());
    if o.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if !world.uses_mpi() {
        bail!(
            "focal bench reduce measures a sum across MPI processes: start it with mpirun, \
             e.g. `mpirun -np 2 --bind-to none focal bench reduce`"
        );
    }
    if world.is_root() && !o.json {
        println!(
            "# {n} processes ({}); median and best of {} calls, ms",
            comm.describe(),
            o.repeats
        );
        println!(
            "{:<8} {:>10} {:>8} {:>15} {:>15} {:>14} {:>14}",
            "model", "floats", "MB", "ordered med", "ordered best", "MPI sum med", "MPI sum best"
        );
    }
    for model in &o.models {
        let len = gradient_len(model)?;
        let mine = gradient(rank, len);
        let mut ordered_ms = Vec::new();
        let mut mpi_ms = Vec::new();
        let mut ordered = Vec::new();
        let mut mpi_sum = vec![0f32; len];
        for _ in 0..o.repeats {
            ordered = mine.clone();
            comm.barrier()?;
            let t = Instant::now();
            comm.sum_in_rank_order(&mut ordered)?;
            ordered_ms.push(t.elapsed().as_secs_f64() * 1e3);

            comm.barrier()?;
            let t = Instant::now();
            all_reduce_sum(&mine, &mut mpi_sum);
            mpi_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if !world.is_root() {
            continue;
        }
        // The exact sums in focal's tree order and as a left fold over ranks
        // (((g0 + g1) + g2) + ...), computed here from every rank's values.
        let mut stacked = Vec::with_capacity(n * len);
        let mut fold = vec![0f32; len];
        for r in 0..n {
            let g = gradient(r, len);
            if r == 0 {
                fold.copy_from_slice(&g);
            } else {
                fold.iter_mut().zip(&g).for_each(|(a, b)| *a += *b);
            }
            stacked.extend(g);
        }
        pairwise_sum_slices(&mut stacked, n);
        let tree = &stacked[..len];
        let differ = |got: &[f32], expected: &[f32]| {
            got.iter()
                .zip(expected)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count()
        };
        let ordered_differ = differ(&ordered, tree);
        let (mpi_differ, mpi_fold_differ) = (differ(&mpi_sum, tree), differ(&mpi_sum, &fold));
        if ordered_differ != 0 {
            bail!(
                "focal's ordered sum differs from the rank-order sum in {ordered_differ} elements"
            );
        }
        let (om, ob) = median_and_best(ordered_ms);
        let (mm, mb) = median_and_best(mpi_ms);
        let mb_size = len as f64 * 4.0 / 1e6;
        if o.json {
            println!(
                "{{\"name\": \"reduce-{model}\", \"ranks\": {n}, \"floats\": {len}, \"mb\": \
                 {mb_size:.1}, \"ms\": {om:.2}, \"best_ms\": {ob:.2}, \"mpi_allreduce_ms\": \
                 {mm:.2}, \"mpi_allreduce_best_ms\": {mb:.2}, \"mpi_differs_from_tree\": \
                 {mpi_differ}, \"mpi_differs_from_fold\": {mpi_fold_differ}}}"
            );
        } else {
            println!(
                "{model:<8} {len:>10} {mb_size:>8.1} {om:>15.1} {ob:>15.1} {mm:>14.1} {mb:>14.1}"
            );
            let pct = |k: usize| 100.0 * k as f64 / len as f64;
            println!(
                "         MPI_Allreduce(MPI_SUM) differs from focal's tree order in {mpi_differ} \
                 of the {len} elements ({:.1} %) and from the left fold over ranks in \
                 {mpi_fold_differ} ({:.1} %); focal's sum equals the tree order in all",
                pct(mpi_differ),
                pct(mpi_fold_differ)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `MPI_Allreduce(MPI_SUM)` of `send` into `recv`, in whatever order the MPI library
/// chooses: the comparison.
fn all_reduce_sum(send: &[f32], recv: &mut [f32]) {
    use mpi::collective::SystemOperation;
    use mpi::traits::*;
    mpi::topology::SimpleCommunicator::world().all_reduce_into(send, recv, SystemOperation::sum());
}
