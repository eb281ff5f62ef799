//! How `focal train` was started: as one process, or as one of N processes started by
//! an MPI launcher (`mpirun -np N`, `srun --mpi=pmix` under Slurm) to train one model
//! together. [`World::start`] finds out, initialises MPI when it is one of N (built with
//! `--features mpi`), refuses the launches that would silently train N separate models,
//! and sets how many threads each process uses.
//!
//! A launcher announces itself through its environment: Open MPI's `mpirun` sets
//! `OMPI_COMM_WORLD_SIZE`, MPICH's Hydra `PMI_SIZE`, PMIx (Slurm's `--mpi=pmix`, Open MPI
//! 5) `PMIX_RANK`, and Slurm's `srun` `SLURM_NTASKS`. Without any of them `focal train` is
//! one process and does not touch MPI at all, even in an MPI build.

use std::sync::Arc;

use anyhow::{bail, Result};
use focal_retinanet::train::{Comm, Local};

/// The processes of this run, as seen from this one.
pub struct World {
    comm: Arc<dyn Comm>,
    /// Processes of the run on this machine.
    local_size: usize,
    /// Keeps MPI initialised until the command is over (finalised when dropped).
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// The launcher variables that give the number of processes, in the order they are
/// looked at.
const SIZE_VARIABLES: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The number of processes an MPI launcher says it started, and which variable says so;
/// `Some((0, "PMIX_RANK"))` when a PMIx launch does not give the number.
fn launched_as() -> Option<(usize, &'static str)> {
    for name in SIZE_VARIABLES {
        if let Some(n) = env_usize(name) {
            return Some((n, name));
        }
    }
    std::env::var_os("PMIX_RANK").map(|_| (0, "PMIX_RANK"))
}

/// Under Slurm, the number of tasks of this job step must be the number of MPI
/// processes: `srun` without working PMI support starts N copies that each see a world of
/// one, and would train N separate models into one folder.
fn check_slurm(world_size: usize) -> Result<()> {
    let Some(tasks) = env_usize("SLURM_NTASKS") else {
        return Ok(());
    };
    if tasks != world_size {
        bail!(
            "Slurm gives this job {tasks} tasks (SLURM_NTASKS={tasks}) but MPI sees {world_size} \
             process{}: the tasks were started as separate runs. Launch with \
             `srun --mpi=pmix focal train ...` (see `srun --mpi=list`) or mpirun, with a focal \
             built with --features mpi; to train in one process inside this allocation, run it \
             as a single task (srun -n 1) or unset SLURM_NTASKS",
            if world_size == 1 { "" } else { "es" }
        );
    }
    Ok(())
}

impl World {
    /// One process, no MPI.
    pub fn alone() -> World {
        World {
            comm: Arc::new(Local),
            local_size: 1,
            #[cfg(feature = "mpi")]
            _universe: None,
        }
    }

    /// The processes `focal train` runs among; see the module docs.
    pub fn start() -> Result<World> {
        let launched = launched_as();
        #[cfg(feature = "mpi")]
        if launched.is_some() {
            let (universe, comm) = crate::mpi_comm::init()?;
            check_slurm(comm.size())?;
            let local_size = comm.local_size();
            let world = World {
                comm: Arc::new(comm),
                local_size,
                _universe: Some(universe),
            };
            if world.size() > 1 {
                abort_on_panic(world.rank(), world.size());
            }
            return Ok(world);
        }
        #[cfg(not(feature = "mpi"))]
        if let Some((n, var)) = launched.filter(|(n, _)| *n > 1) {
            bail!(
                "focal was started as one of {n} processes ({var}={n}), but this focal was \
                 built without MPI: each process would train a model of its own. Build it \
                 with `cargo build --release --features mpi` (README, \"Training on several \
                 machines\"), or start one process"
            );
        }
        let _ = launched;
        check_slurm(1)?;
        Ok(World::alone())
    }

    /// Whether MPI was initialised (this process was started by an MPI launcher).
    #[cfg(feature = "mpi")]
    pub fn uses_mpi(&self) -> bool {
        self._universe.is_some()
    }

    pub fn comm(&self) -> Arc<dyn Comm> {
        Arc::clone(&self.comm)
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn size(&self) -> usize {
        self.comm.size()
    }

    pub fn is_root(&self) -> bool {
        self.comm.is_root()
    }

    /// Sets the kernels' thread pool when neither `--threads` nor `FOCAL_THREADS` nor
    /// `RAYON_NUM_THREADS` did: with several processes on one machine, each takes its
    /// share of the cores it may run on (all of them / processes here, when the launcher
    /// did not bind it to some). Then warns, on rank 0, when the pool is larger than the
    /// cores this process may run on: Open MPI binds each rank to one core unless told
    /// `--bind-to none`, which would leave all but one thread waiting.
    pub fn set_threads(&self, explicit: bool) -> Result<()> {
        let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
        let machine = online_cpus().unwrap_or(allowed);
        let bound = allowed < machine;
        let explicit = explicit || std::env::var_os("RAYON_NUM_THREADS").is_some();
        if !explicit && self.size() > 1 && !bound && self.local_size > 1 {
            let share = (allowed / self.local_size).max(1);
            focal_engine::threads::set_num_threads(share).map_err(anyhow::Error::msg)?;
        }
        let pool = focal_engine::threads::num_threads();
        if !self.is_root() {
            return Ok(());
        }
        if pool > allowed {
            eprintln!(
                "warning: {pool} threads but this process may run on only {allowed} of the \
                 machine's {machine} cores{}",
                if self.size() > 1 {
                    " (the MPI launcher bound it to them: give mpirun --bind-to none, or \
                     --map-by ppr:1:node:PE=N to give each process N cores)"
                } else {
                    ""
                }
            );
        } else if self.size() > 1 && bound && allowed == 1 && machine > 1 {
            eprintln!(
                "warning: the MPI launcher bound this process to 1 of the machine's {machine} \
                 cores, so its kernels run on one thread: give mpirun --bind-to none (or \
                 --map-by ppr:1:node:PE=N)"
            );
        } else if self.local_size > machine {
            eprintln!(
                "warning: {} processes share this machine's {machine} cores: each waits for \
                 the others; start at most {machine} per machine",
                self.local_size
            );
        } else if self.size() > 1 && !bound && pool * self.local_size > machine {
            eprintln!(
                "warning: {} processes of {pool} threads each share this machine's {machine} \
                 cores: set --threads {} (or FOCAL_THREADS)",
                self.local_size,
                (machine / self.local_size).max(1)
            );
        }
        Ok(())
    }

    /// Ends the run after `error` on this process: with several processes, prints it
    /// naming the rank and stops every process (MPI abort), since the others may be
    /// waiting for this one; alone, returns so that `main` prints it as usual.
    ///
    /// Many errors reach every rank at once (the trainer shares them: a NaN loss, an image
    /// that failed, rank 0's folder); then rank 0 still has its plots to write and its
    /// message to print, so the other ranks wait a few seconds before stopping the run.
    pub fn fail(&self, error: &anyhow::Error) {
        if self.size() == 1 {
            return;
        }
        eprintln!(
            "error on rank {} of {}: {error:#}\nstopping every process of the run",
            self.rank(),
            self.size()
        );
        if !self.is_root() {
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        #[cfg(feature = "mpi")]
        crate::mpi_comm::abort(1);
    }
}

/// With several processes a panic (a bug) on one must not leave the others waiting for
/// it: after the usual panic message, every process is stopped.
#[cfg(feature = "mpi")]
fn abort_on_panic(rank: usize, size: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("rank {rank} of {size} panicked: stopping every process of the run");
        crate::mpi_comm::abort(101);
    }));
}

/// The number of CPUs the machine has online (`/sys/devices/system/cpu/online`, e.g.
/// "0-15" or "0-3,8-11"); `None` where that file does not exist.
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(text.trim())
}

fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().ok()?,
                    b.trim().parse::<usize>().ok()?,
                );
                b.checked_sub(a)? + 1
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(parse_cpu_list("0-15"), Some(16));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2,4-5"), Some(4));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("5-2"), None);
        assert_eq!(parse_cpu_list(""), None);
    }
}
