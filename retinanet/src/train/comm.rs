//! The seam between a training run and the processes that run it together.
//!
//! A run is one process (the default) or N processes, *ranks* 0..N−1, that train one model
//! together: each runs the forward and backward passes of its part of every batch, and
//! the gradients are summed across ranks before every rank takes the same optimiser step
//! ([`super::data_parallel::distributed_pass`]). [`Comm`] is all the trainer asks of the
//! group of processes:
//!
//! - who am I ([`Comm::rank`]) and how many are we ([`Comm::size`]);
//! - an elementwise sum of one `f32` buffer per rank, **in a fixed order**
//!   ([`Comm::sum_in_rank_order`]);
//! - every rank's bytes on every rank ([`Comm::all_gather`]), rank 0's bytes on every rank
//!   ([`Comm::broadcast`]), and a [`Comm::barrier`].
//!
//! Three implementations:
//! - [`Local`]: one process, every call a no-op;
//! - [`ThreadRanks`]: N ranks as threads of one process, exchanging through memory: the
//!   tests use it to check the distributed path against one process without MPI;
//! - the MPI one, in the `focal` binary behind its `mpi` cargo feature (so that this
//!   library, and a default build, need no MPI): a reduce-scatter built from MPI's
//!   all-to-all, the ordered sum of each rank's slice, then an all-gather.
//!
//! ## Why the sum has a fixed order
//! Floating-point addition is not associative: `(a + b) + c` and `a + (b + c)` can differ
//! in the last bit. MPI's own `MPI_Allreduce(MPI_SUM)` lets the library choose the order,
//! and Open MPI's choice depends on the algorithm it picks for the message size and the
//! number of ranks. focal promises that a run gives the same bits every time, and the
//! same bits as one process cutting its batches into the same shards, so every sum over
//! shards and over ranks follows one tree, [`pairwise_tree`], fixed by the number of
//! terms alone.

use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

/// What a training run needs from the group of processes that run it; see the module
/// docs. Every method is collective: every rank calls it, in the same order.
pub trait Comm: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// Rank 0 writes the run folder and draws the progress bar.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Replaces `buf` on every rank by the elementwise sum over ranks of each rank's
    /// `buf` (all of one length), added in the order of [`pairwise_tree`] over the ranks:
    /// the same bits on every rank, every time, with any MPI library.
    fn sum_in_rank_order(&self, buf: &mut [f32]) -> Result<()>;

    /// Every rank's `bytes`, in rank order, on every rank (the lengths may differ).
    fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Rank 0's `bytes` on every rank (the other ranks' `bytes` are replaced).
    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// A few words for logs, e.g. "one process" or "MPI, rank 1 of 4".
    fn describe(&self) -> String;
}

/// The order of every sum over shards and ranks: calls `add(i, j)`, meaning "term `i` +=
/// term `j`", so that term 0 ends up holding the sum of terms `0..n`. Adjacent terms are
/// added in pairs, level by level — `(t0 + t1)`, `(t2 + t3)`, …, then `(t0 + t1) +
/// (t2 + t3)`, … — an odd last term going up a level unchanged:
///
/// ```text
///   n = 6:   t0 t1  t2 t3  t4 t5
///             \ /    \ /    \ /
///             01     23     45
///               \   /       |
///               0123        45
///                   \      /
///                   012345
/// ```
///
/// The partial sums are those of the aligned blocks `[i·2^L, (i+1)·2^L)`. So when `n`
/// terms are split into consecutive groups of `k` and `k` is a power of two, summing each
/// group with this tree and then the groups' sums with this tree is the same sequence of
/// additions as summing all `n` terms at once: N ranks running `k` shards each give the
/// bits of one process running all `N·k` shards.
pub fn pairwise_tree(n: usize, mut add: impl FnMut(usize, usize)) {
    let mut stride = 1;
    while stride < n {
        for i in (0..n).step_by(2 * stride) {
            if i + stride < n {
                add(i, i + stride);
            }
        }
        stride *= 2;
    }
}

/// The sum of `terms` in the order of [`pairwise_tree`], where `None` is a term that adds
/// nothing (a shard of an empty part of a batch). `None` when every term is.
pub fn pairwise_sum<T>(mut terms: Vec<Option<T>>, mut add: impl FnMut(&mut T, T)) -> Option<T> {
    pairwise_tree(terms.len(), |i, j| {
        let Some(b) = terms[j].take() else { return };
        match &mut terms[i] {
            Some(a) => add(a, b),
            empty => *empty = Some(b),
        }
    });
    terms.into_iter().next().flatten()
}

/// Elementwise [`pairwise_tree`] over `n` equal slices laid end to end in `buf`; the sum
/// is left in the first slice. (What each rank does with its slice of the gradient after
/// the all-to-all of a reduce-scatter.)
pub fn pairwise_sum_slices(buf: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    assert_eq!(buf.len() % n, 0, "pairwise_sum_slices: uneven slices");
    let m = buf.len() / n;
    pairwise_tree(n, |i, j| {
        let (head, tail) = buf.split_at_mut(j * m);
        for (a, b) in head[i * m..(i + 1) * m].iter_mut().zip(&tail[..m]) {
            *a += *b;
        }
    });
}

/// The sum over ranks of some counts (exact: integers), through [`Comm::all_gather`].
pub fn sum_counts(comm: &dyn Comm, counts: &[u64]) -> Result<Vec<u64>> {
    let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    let mut total = vec![0u64; counts.len()];
    for (rank, theirs) in comm.all_gather(&bytes)?.iter().enumerate() {
        if theirs.len() != bytes.len() {
            return Err(Error::invalid(format!(
                "rank {rank} sent {} counts where {} were expected",
                theirs.len() / 8,
                counts.len()
            )));
        }
        for (t, c) in total.iter_mut().zip(theirs.chunks_exact(8)) {
            *t += u64::from_le_bytes(c.try_into().expect("8 bytes"));
        }
    }
    Ok(total)
}

/// Whether `flag` is true on any rank (so that every rank takes the same decision, e.g.
/// to stop after this step).
pub fn any(comm: &dyn Comm, flag: bool) -> Result<bool> {
    if comm.size() == 1 {
        return Ok(flag);
    }
    Ok(sum_counts(comm, &[flag as u64])?[0] > 0)
}

/// One process: rank 0 of 1, every collective a no-op.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Comm for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_in_rank_order(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
    fn broadcast(&self, _bytes: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "one process".into()
    }
}

/// N ranks as N threads of one process: each thread trains with its own `ThreadRanks`
/// (from [`ThreadRanks::world`]) and they exchange through shared memory. Collectives
/// block until every rank has called them. If a rank's thread panics (or drops its
/// handle) the others' collectives return an error instead of waiting forever.
pub struct ThreadRanks {
    rank: usize,
    exchange: Arc<Exchange>,
}

struct Exchange {
    size: usize,
    state: Mutex<ExchangeState>,
    wake: Condvar,
}

struct ExchangeState {
    /// Each rank's contribution to the collective in progress.
    slots: Vec<Option<Vec<u8>>>,
    /// Each rank's buffer (then its summed slice) in a sum, shared rather than copied.
    floats: Vec<Option<Arc<Vec<f32>>>>,
    /// Ranks waiting at the current barrier, and how many barriers have been passed.
    arrived: usize,
    generation: u64,
    /// Set when a rank left (its handle was dropped) while the others may still wait.
    left: Option<usize>,
}

impl ThreadRanks {
    /// The `size` ranks of one group, rank `r` at index `r`: hand one to each thread.
    pub fn world(size: usize) -> Vec<ThreadRanks> {
        assert!(size > 0, "ThreadRanks::world: no ranks");
        let exchange = Arc::new(Exchange {
            size,
            state: Mutex::new(ExchangeState {
                slots: vec![None; size],
                floats: vec![None; size],
                arrived: 0,
                generation: 0,
                left: None,
            }),
            wake: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadRanks {
                rank,
                exchange: Arc::clone(&exchange),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExchangeState> {
        // A poisoned lock means another rank panicked while holding it: its state is
        // still consistent (every update is a single assignment), and `left` reports it.
        self.exchange
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until every rank has reached this barrier.
    fn wait_all<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, ExchangeState>,
    ) -> Result<std::sync::MutexGuard<'a, ExchangeState>> {
        let generation = state.generation;
        state.arrived += 1;
        if state.arrived == self.exchange.size {
            state.arrived = 0;
            state.generation += 1;
            self.exchange.wake.notify_all();
            return Ok(state);
        }
        while state.generation == generation {
            if let Some(left) = state.left {
                return Err(Error::invalid(format!(
                    "rank {left} left the run while rank {} waited for it",
                    self.rank
                )));
            }
            state = self
                .exchange
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        Ok(state)
    }
}

impl Drop for ThreadRanks {
    fn drop(&mut self) {
        let mut state = self.lock();
        state.left.get_or_insert(self.rank);
        self.exchange.wake.notify_all();
    }
}

impl Comm for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.exchange.size
    }

    /// A reduce-scatter and an all-gather through shared memory, as the MPI one does
    /// through messages: each rank adds its slice of every rank's buffer, then every rank
    /// copies every summed slice.
    fn sum_in_rank_order(&self, buf: &mut [f32]) -> Result<()> {
        let n = self.exchange.size;
        let mut state = self.lock();
        state.floats[self.rank] = Some(Arc::new(buf.to_vec()));
        let state = self.wait_all(state)?;
        let buffers: Vec<Arc<Vec<f32>>> = state
            .floats
            .iter()
            .map(|f| Arc::clone(f.as_ref().expect("every rank shared its buffer")))
            .collect();
        drop(state);
        let len = buf.len();
        if let Some(r) = buffers.iter().position(|b| b.len() != len) {
            return Err(Error::invalid(format!(
                "rank {r} summed {} values where rank {} has {len}",
                buffers[r].len(),
                self.rank
            )));
        }
        let (lo, hi) = (self.rank * len / n, (self.rank + 1) * len / n);
        let mut stacked: Vec<f32> = Vec::with_capacity(n * (hi - lo));
        for b in &buffers {
            stacked.extend_from_slice(&b[lo..hi]);
        }
        drop(buffers);
        pairwise_sum_slices(&mut stacked, n);
        stacked.truncate(hi - lo);
        // Everyone has read the buffers: share the summed slices instead.
        let mut state = self.wait_all(self.lock())?;
        state.floats[self.rank] = Some(Arc::new(stacked));
        let state = self.wait_all(state)?;
        for (r, slice) in state.floats.iter().enumerate() {
            let slice = slice.as_ref().expect("every rank shared its slice");
            buf[r * len / n..(r + 1) * len / n].copy_from_slice(slice);
        }
        let mut state = self.wait_all(state)?;
        state.floats[self.rank] = None;
        Ok(())
    }

    fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut state = self.lock();
        state.slots[self.rank] = Some(bytes.to_vec());
        let state = self.wait_all(state)?;
        let all: Vec<Vec<u8>> = state
            .slots
            .iter()
            .map(|s| s.clone().expect("every rank filled its slot"))
            .collect();
        // Nobody may overwrite a slot until every rank has read them all.
        let mut state = self.wait_all(state)?;
        state.slots[self.rank] = None;
        Ok(all)
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<()> {
        let mine = if self.rank == 0 { &bytes[..] } else { &[] };
        let mut all = self.all_gather(mine)?;
        *bytes = std::mem::take(&mut all[0]);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let state = self.lock();
        self.wait_all(state).map(drop)
    }

    fn describe(&self) -> String {
        format!("thread rank {} of {}", self.rank, self.exchange.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as a string, e.g. "((0+1)+2)".
    fn tree(n: usize) -> String {
        let terms: Vec<Option<String>> = (0..n).map(|i| Some(i.to_string())).collect();
        pairwise_sum(terms, |a, b| *a = format!("({a}+{b})")).unwrap_or_default()
    }

    #[test]
    fn the_tree_pairs_neighbours_level_by_level() {
        assert_eq!(tree(1), "0");
        assert_eq!(tree(2), "(0+1)");
        assert_eq!(tree(3), "((0+1)+2)");
        assert_eq!(tree(4), "((0+1)+(2+3))");
        assert_eq!(tree(5), "(((0+1)+(2+3))+4)");
        assert_eq!(tree(6), "(((0+1)+(2+3))+(4+5))");
        // Missing terms add nothing.
        let terms = vec![Some(1), None, Some(3), None, None];
        assert_eq!(pairwise_sum(terms, |a, b| *a += b), Some(4));
        assert_eq!(pairwise_sum::<i32>(vec![None, None], |a, b| *a += b), None);
    }

    /// N groups of k terms, each summed with the tree and then the groups' sums with the
    /// tree, are the tree over all N·k terms whenever k is a power of two (any N).
    #[test]
    fn groups_of_a_power_of_two_compose_into_the_whole_tree() {
        for k in [1, 2, 4, 8] {
            for groups in 1..=7 {
                let whole = tree(groups * k);
                let sums: Vec<Option<String>> = (0..groups)
                    .map(|g| {
                        let t: Vec<Option<String>> =
                            (g * k..(g + 1) * k).map(|i| Some(i.to_string())).collect();
                        pairwise_sum(t, |a, b| *a = format!("({a}+{b})"))
                    })
                    .collect();
                let composed = pairwise_sum(sums, |a, b| *a = format!("({a}+{b})")).unwrap();
                assert_eq!(composed, whole, "{groups} groups of {k}");
            }
        }
        // Not for other group sizes: 2 groups of 3 regroup (2+3).
        assert_ne!(tree(6), "(((0+1)+2)+((3+4)+5))");
    }

    /// Values whose sum depends on the order, summed as slices: equal to the scalar tree.
    #[test]
    fn slices_are_summed_elementwise_in_tree_order() {
        let terms = [1e8f32, 1.0, -1e8, 1.0, 0.5];
        let mut buf: Vec<f32> = terms.iter().flat_map(|&t| [t, 2.0 * t]).collect();
        pairwise_sum_slices(&mut buf, terms.len());
        let scalar = pairwise_sum(terms.iter().map(|&t| Some(t)).collect(), |a, b| *a += b);
        assert_eq!(buf[0].to_bits(), scalar.unwrap().to_bits());
        // The left fold gives other bits here: the order matters.
        let fold = terms.iter().fold(0.0f32, |a, &b| a + b);
        assert_ne!(fold.to_bits(), buf[0].to_bits());
    }

    #[test]
    fn thread_ranks_gather_sum_broadcast_and_report_a_rank_that_left() {
        /// What each rank saw: gathered bytes, summed floats, broadcast bytes, counts.
        type Seen = (Vec<Vec<u8>>, Vec<f32>, Vec<u8>, Vec<u64>);
        let results: Vec<Seen> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadRanks::world(3)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank();
                        let gathered = c.all_gather(&vec![r as u8; r + 1]).unwrap();
                        let mut buf = vec![r as f32, 10.0 * r as f32];
                        c.sum_in_rank_order(&mut buf).unwrap();
                        let mut b = vec![r as u8 + 7];
                        c.broadcast(&mut b).unwrap();
                        c.barrier().unwrap();
                        let counts = sum_counts(&c, &[1, r as u64]).unwrap();
                        (gathered, buf, b, counts)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (gathered, buf, b, counts) in results {
            assert_eq!(gathered, vec![vec![0], vec![1, 1], vec![2, 2, 2]]);
            assert_eq!(buf, vec![3.0, 30.0]);
            assert_eq!(b, vec![7]);
            assert_eq!(counts, vec![3, 3]);
        }
        // Rank 1 goes away: rank 0's next collective fails instead of hanging.
        let mut world = ThreadRanks::world(2);
        drop(world.pop());
        let err = world[0].barrier().unwrap_err();
        assert!(err.to_string().contains("rank 1 left"), "{err}");
    }
}
