//! The [`Comm`] of MPI processes (built with `--features mpi`): rsmpi, the Rust binding
//! of the MPI standard, over whatever MPI library the binary was built against (Open MPI
//! or MPICH).
//!
//! MPI is initialised once, by [`init`], with `MPI_THREAD_FUNNELED`: focal's kernels run
//! on many threads, but only the thread that initialised MPI (the main thread, which runs
//! the trainer) calls it; every collective checks that it is that thread. The returned
//! [`mpi::environment::Universe`] finalises MPI when dropped, so `main` keeps it until
//! the command is over.
//!
//! ## The ordered sum
//! `MPI_Allreduce` with `MPI_SUM` on floats adds in an order the library chooses, which
//! depends on the algorithm it picks for the message size and the number of ranks, so
//! its bits are not fixed. [`Comm::sum_in_rank_order`] is instead a reduce-scatter with an
//! order of our own, then an all-gather:
//!
//! ```text
//!   buf on every rank, cut into N slices:      [ s0 | s1 | … | sN-1 ]
//!   MPI_Alltoallv: rank r receives slice r of every rank, in rank order
//!   rank r adds the N copies of its slice with the fixed tree (pairwise_sum_slices)
//!   MPI_Allgatherv: every rank receives every summed slice
//! ```
//!
//! Each rank sends and receives (N−1)/N of the buffer in each phase, 2(N−1)/N in all: the
//! traffic of a ring all-reduce, so the order costs nothing on the wire.

use std::thread::ThreadId;

use anyhow::{bail, Result};
use focal_retinanet::train::comm::pairwise_sum_slices;
use focal_retinanet::train::Comm;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

/// This process's view of `MPI_COMM_WORLD`. Holds no MPI handle itself (each call takes
/// the world communicator afresh), only the figures read once at start.
pub struct MpiComm {
    rank: usize,
    size: usize,
    /// Processes of the world on this machine (this one included).
    local_size: usize,
    thread: ThreadId,
    library: String,
}

/// Initialises MPI (once per process) and returns the universe, to be kept alive until
/// the end, and this process's communicator.
pub fn init() -> Result<(Universe, MpiComm)> {
    let Some((universe, threading)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
    else {
        bail!("MPI was already initialised in this process");
    };
    if threading < mpi::Threading::Funneled {
        bail!(
            "the MPI library offers only {threading:?} threading; focal needs at least \
             MPI_THREAD_FUNNELED (its kernels run on threads, only the main thread calls MPI)"
        );
    }
    let world = universe.world();
    let local = world.split_shared(world.rank());
    let library = mpi::environment::library_version()
        .ok()
        // "Open MPI v4.1.4, package: ...": the name and version.
        .and_then(|v| v.split([',', '\n']).next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "MPI".into());
    let comm = MpiComm {
        rank: world.rank() as usize,
        size: world.size() as usize,
        local_size: local.size() as usize,
        thread: std::thread::current().id(),
        library,
    };
    Ok((universe, comm))
}

/// Ends every process of the run with `code` (`MPI_Abort`): what a failing rank does so
/// that the others, possibly waiting for it in a collective, do not wait forever.
pub fn abort(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

impl MpiComm {
    /// Processes of the world on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// The world communicator, after checking that this is the thread that initialised
    /// MPI (`MPI_THREAD_FUNNELED`).
    fn world(&self) -> focal_retinanet::Result<SimpleCommunicator> {
        if std::thread::current().id() != self.thread {
            return Err(focal_retinanet::Error::invalid(
                "MPI was called from a thread other than the one that initialised it",
            ));
        }
        Ok(SimpleCommunicator::world())
    }
}

/// `n` counted as MPI counts them (a C int).
fn count(n: usize, what: &str) -> focal_retinanet::Result<Count> {
    Count::try_from(n).map_err(|_| {
        focal_retinanet::Error::invalid(format!(
            "{what} of {n} elements is more than one MPI message can carry"
        ))
    })
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_in_rank_order(&self, buf: &mut [f32]) -> focal_retinanet::Result<()> {
        let world = self.world()?;
        let (n, len) = (self.size, buf.len());
        count(len, "a gradient")?;
        // Slice r of the buffer: [r·len/n, (r+1)·len/n).
        let bounds: Vec<usize> = (0..=n).map(|r| r * len / n).collect();
        let counts: Vec<Count> = (0..n)
            .map(|r| (bounds[r + 1] - bounds[r]) as Count)
            .collect();
        let displs: Vec<Count> = bounds[..n].iter().map(|&b| b as Count).collect();
        let mine = counts[self.rank] as usize;
        // Every rank's copy of my slice, in rank order.
        let mut received = vec![0f32; n * mine];
        {
            let send = Partition::new(&*buf, &counts[..], &displs[..]);
            let recv_displs: Vec<Count> = (0..n).map(|r| (r * mine) as Count).collect();
            let mut recv =
                PartitionMut::new(&mut received[..], vec![mine as Count; n], recv_displs);
            world.all_to_all_varcount_into(&send, &mut recv);
        }
        pairwise_sum_slices(&mut received, n);
        let mut all = PartitionMut::new(buf, &counts[..], &displs[..]);
        world.all_gather_varcount_into(&received[..mine], &mut all);
        Ok(())
    }

    fn all_gather(&self, bytes: &[u8]) -> focal_retinanet::Result<Vec<Vec<u8>>> {
        let world = self.world()?;
        let n = self.size;
        let mine = count(bytes.len(), "a message")?;
        let mut lens = vec![0 as Count; n];
        world.all_gather_into(&mine, &mut lens[..]);
        let mut displs = Vec::with_capacity(n);
        let mut total = 0usize;
        for &l in &lens {
            displs.push(count(total, "the gathered messages")?);
            total += l as usize;
        }
        count(total, "the gathered messages")?;
        let mut all = vec![0u8; total];
        if total > 0 {
            let mut recv = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            world.all_gather_varcount_into(bytes, &mut recv);
        }
        Ok((0..n)
            .map(|r| all[displs[r] as usize..][..lens[r] as usize].to_vec())
            .collect())
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> focal_retinanet::Result<()> {
        let world = self.world()?;
        let root = world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let len = count(len as usize, "a broadcast")? as usize;
        bytes.resize(len, 0);
        // (An empty buffer is not sent: MPI refuses the dangling pointer of an empty Vec.)
        if len > 0 {
            root.broadcast_into(&mut bytes[..]);
        }
        Ok(())
    }

    fn barrier(&self) -> focal_retinanet::Result<()> {
        self.world()?.barrier();
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{}, rank {} of {}", self.library, self.rank, self.size)
    }
}
