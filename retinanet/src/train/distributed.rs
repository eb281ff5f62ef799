//! What a run over several processes needs besides the distributed step
//! ([`super::data_parallel::distributed_pass`]): which images each rank loads, the check
//! at start that every rank is about to train the same model, keeping the ranks' BatchNorm
//! statistics equal, and the rule for how many ranks a run can use.
//!
//! Every rank builds the same model from the seed (or reads the same checkpoint or
//! weights), takes the same optimiser step from the same summed gradient with the same
//! deterministic kernels, and so holds the same parameters at every step without ever
//! sending them. [`check_agreement`] makes sure of it at the start, where a mistake would
//! otherwise go unnoticed (a different command line or data file on one machine).

use std::path::PathBuf;
use std::sync::Arc;

use focal_data::{Dataset, Fnv, ImageProblem, PartRange};
use focal_engine::Tensor;
use focal_nn::{for_each_named, Slot};

use super::comm::Comm;
use super::config::TrainConfig;
use super::data_parallel::rank_images;
use crate::error::{Error, Result};
use crate::model::RetinaNet;

/// The images of each training batch that rank `rank` of `size` loads: those of its
/// shards ([`rank_images`]), as the `range` of a [`focal_data::BatchPart`].
pub fn train_part(shards: usize, rank: usize, size: usize) -> PartRange {
    Arc::new(move |_batch, n| rank_images(n, shards, rank, size))
}

/// Refuses a number of ranks that does not divide the shards of every batch: each rank
/// runs `shards / size` of them.
pub fn check_rank_count(shards: usize, size: usize) -> Result<()> {
    if size > 1 && !shards.is_multiple_of(size) {
        let divisors: Vec<String> = (1..=shards)
            .filter(|d| shards.is_multiple_of(*d))
            .map(|d| d.to_string())
            .collect();
        return Err(Error::config(format!(
            "shards: this run cuts every batch into {shards} shards, which {size} processes \
             cannot share equally; run it on {} processes (or choose --shards as a multiple \
             of {size} when starting a run)",
            divisors.join(", ")
        )));
    }
    Ok(())
}

/// Whether `size` ranks sharing `shards` shards give the same bits as one process with
/// `shards` shards: when each rank runs a power of two of them (see
/// [`super::comm::pairwise_tree`]). Otherwise the run is still the same on every repeat,
/// but agrees with one process only to rounding.
pub fn equal_to_one_process(shards: usize, size: usize) -> bool {
    size <= 1 || (shards.is_multiple_of(size) && (shards / size).is_power_of_two())
}

/// A tensor into the hash: its shape, then every value's bits.
fn hash_tensor(h: &mut Fnv, t: &Tensor) {
    for &d in t.shape() {
        h.u64(d as u64);
    }
    for v in t.data().iter() {
        h.bytes(&v.to_bits().to_le_bytes());
    }
}

/// Fingerprints of what every rank must share: the configuration (its thread count
/// aside: it never changes a result; every other setting is in its TOML, the fine-tuning
/// ones included: frozen layers, training sizes, anchor style), the datasets as their
/// files describe them (image ids and sizes, and the fingerprint a resumed run compares:
/// the annotation file's whole content), and every parameter, buffer and counter of the
/// model (so the weights `--init` or `--resume` loaded).
fn fingerprints(
    config: &TrainConfig,
    datasets: [&dyn Dataset; 2],
    model: &mut RetinaNet,
) -> [u64; 3] {
    let mut c = config.clone();
    c.threads = 0;
    let mut h = Fnv::new();
    h.bytes(c.to_toml().as_bytes());
    let config_hash = h.value();

    let mut h = Fnv::new();
    for d in datasets {
        let f = d.fingerprint();
        h.u64(f.images as u64);
        h.u64(f.annotations as u64);
        h.bytes(f.hash.as_bytes());
        h.u64(d.len() as u64);
        for i in 0..d.len() {
            let (w, ht) = d.image_size(i);
            h.u64(d.image_id(i) as u64);
            h.u64(((w as u64) << 32) | ht as u64);
        }
    }
    let data_hash = h.value();

    let mut h = Fnv::new();
    for_each_named(model, |name, slot| {
        h.bytes(name.as_bytes());
        match slot {
            Slot::Param(p) => hash_tensor(&mut h, &p.value),
            Slot::Buffer(t) => hash_tensor(&mut h, t),
            Slot::Counter(c) => h.u64(*c),
        }
    });
    [config_hash, data_hash, h.value()]
}

/// Checks that every rank has the same configuration, datasets and model (weights and
/// buffers): a rank launched with another command line, another data file or other
/// weights would otherwise train something else in lockstep. Collective; every rank
/// returns the same error, naming the first rank that differs from rank 0.
pub fn check_agreement(
    comm: &dyn Comm,
    config: &TrainConfig,
    datasets: [&dyn Dataset; 2],
    model: &mut RetinaNet,
) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mine = fingerprints(config, datasets, model);
    let bytes: Vec<u8> = mine.iter().flat_map(|h| h.to_le_bytes()).collect();
    let all = comm.all_gather(&bytes)?;
    let what = [
        "configuration (flags and --config file)",
        "datasets (their annotation files)",
        "model (the starting weights: --init or --resume files)",
    ];
    for (rank, theirs) in all.iter().enumerate().skip(1) {
        for (k, what) in what.iter().enumerate() {
            if theirs[8 * k..8 * k + 8] != all[0][8 * k..8 * k + 8] {
                return Err(Error::invalid(format!(
                    "rank {rank} of {} has another {what} than rank 0: every process must \
                     be started with the same command line and see the same files",
                    comm.size()
                )));
            }
        }
    }
    Ok(())
}

/// Whether any rank failed, and the first failing rank's message: `failure` is this
/// rank's (`None` when it did not fail). Collective; with one rank, no message is sent.
/// It doubles as a barrier: no rank gets the answer before every rank has asked.
pub fn first_failure(comm: &dyn Comm, failure: Option<String>) -> Result<Option<(usize, String)>> {
    if comm.size() == 1 {
        return Ok(failure.map(|f| (0, f)));
    }
    // One byte (0: fine, 1: failed) and the message.
    let mut bytes = vec![failure.is_some() as u8];
    bytes.extend(failure.unwrap_or_default().into_bytes());
    let all = comm.all_gather(&bytes)?;
    Ok(all.iter().enumerate().find_map(|(rank, theirs)| {
        (theirs.first() == Some(&1))
            .then(|| (rank, String::from_utf8_lossy(&theirs[1..]).into_owned()))
    }))
}

/// Rank 0's `problems` (the images its check before step 1 found bad) on every rank.
/// Collective; with one rank, `problems` itself.
pub fn share_problems(comm: &dyn Comm, problems: Vec<ImageProblem>) -> Result<Vec<ImageProblem>> {
    if comm.size() == 1 {
        return Ok(problems);
    }
    // Per problem: index, image id, then the path and the sentence, each as a length and
    // UTF-8 bytes (a path that is not UTF-8 travels as its lossy form: it is only shown).
    let mut bytes = Vec::new();
    for p in &problems {
        bytes.extend((p.index as u64).to_le_bytes());
        bytes.extend(p.image_id.to_le_bytes());
        for text in [p.path.to_string_lossy().into_owned(), p.problem.clone()] {
            bytes.extend((text.len() as u64).to_le_bytes());
            bytes.extend(text.into_bytes());
        }
    }
    comm.broadcast(&mut bytes)?;
    decode_problems(&bytes)
        .ok_or_else(|| Error::invalid("rank 0 sent a malformed list of images left out"))
}

fn decode_problems(mut bytes: &[u8]) -> Option<Vec<ImageProblem>> {
    fn word(bytes: &mut &[u8]) -> Option<[u8; 8]> {
        let (head, tail) = bytes.split_at_checked(8)?;
        *bytes = tail;
        head.try_into().ok()
    }
    fn text(bytes: &mut &[u8]) -> Option<String> {
        let n = usize::try_from(u64::from_le_bytes(word(bytes)?)).ok()?;
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        String::from_utf8(head.to_vec()).ok()
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let index = usize::try_from(u64::from_le_bytes(word(&mut bytes)?)).ok()?;
        let image_id = i64::from_le_bytes(word(&mut bytes)?);
        let path = PathBuf::from(text(&mut bytes)?);
        let problem = text(&mut bytes)?;
        out.push(ImageProblem {
            index,
            image_id,
            path,
            problem,
        });
    }
    Some(out)
}

/// Makes every rank's buffers and counters (BatchNorm's running statistics) rank 0's.
/// They are not learned from the gradient, and each rank's trainable BatchNorm layers
/// update them from its own shards, as one process keeps those of its first shard, which
/// is rank 0's. Called before every evaluation, so that every rank evaluates the model
/// rank 0 saves. Collective; nothing is sent for a model without buffers (GroupNorm).
pub fn sync_buffers(comm: &dyn Comm, model: &mut RetinaNet) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut bytes = Vec::new();
    for_each_named(model, |_, slot| match slot {
        Slot::Buffer(t) => bytes.extend(t.data().iter().flat_map(|v| v.to_le_bytes())),
        Slot::Counter(c) => bytes.extend(c.to_le_bytes()),
        Slot::Param(_) => {}
    });
    let expected = bytes.len();
    comm.broadcast(&mut bytes)?;
    if bytes.len() != expected {
        return Err(Error::invalid(format!(
            "rank 0 sent {} bytes of BatchNorm statistics where rank {} holds {expected}",
            bytes.len(),
            comm.rank()
        )));
    }
    let mut at = 0;
    for_each_named(model, |_, slot| match slot {
        Slot::Buffer(t) => {
            let n = t.numel();
            let values: Vec<f32> = bytes[at..at + 4 * n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            *t = Tensor::from_vec(t.shape(), values);
            at += 4 * n;
        }
        Slot::Counter(c) => {
            *c = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            at += 8;
        }
        Slot::Param(_) => {}
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_must_divide_the_shards() {
        assert!(check_rank_count(4, 1).is_ok());
        assert!(check_rank_count(4, 2).is_ok());
        assert!(check_rank_count(6, 3).is_ok());
        let e = check_rank_count(4, 3).unwrap_err().to_string();
        assert!(e.contains("run it on 1, 2, 4 processes"), "{e}");
        assert!(equal_to_one_process(8, 2) && equal_to_one_process(6, 3));
        assert!(equal_to_one_process(3, 1) && equal_to_one_process(12, 3));
        assert!(!equal_to_one_process(6, 2));
    }

    #[test]
    fn failures_and_left_out_images_reach_every_rank() {
        use super::super::comm::ThreadRanks;
        let problems = vec![
            ImageProblem {
                index: 3,
                image_id: 42,
                path: PathBuf::from("images/a b.jpg"),
                problem: "truncated: ends after 10 of 20 bytes".into(),
            },
            ImageProblem {
                index: 7,
                image_id: -1,
                path: PathBuf::from("images/é.png"),
                problem: String::new(),
            },
        ];
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadRanks::world(3)
                .into_iter()
                .map(|comm| {
                    let problems = problems.clone();
                    s.spawn(move || {
                        let mine = if comm.rank() == 0 {
                            problems
                        } else {
                            Vec::new()
                        };
                        let shared = share_problems(&comm, mine).unwrap();
                        let failure = (comm.rank() >= 1).then(|| format!("disk {}", comm.rank()));
                        let first = first_failure(&comm, failure).unwrap();
                        let none = first_failure(&comm, None).unwrap();
                        (shared, first, none)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (shared, first, none) in results {
            assert_eq!(shared, problems);
            assert_eq!(first, Some((1, "disk 1".to_string())));
            assert_eq!(none, None);
        }
        assert!(decode_problems(&[1, 2, 3]).is_none());
    }
}
