//! Checkpoints: everything needed to continue a run exactly, in one file.
//!
//! # File format (version 1)
//!
//! ```text
//! offset  size  content
//! 0       8     magic "FOCALCKP"
//! 8       4     format version, u32 little-endian
//! 12      8     payload length in bytes, u64 little-endian
//! 20      4     CRC-32 (IEEE) of the payload, u32 little-endian
//! 24      n     payload: a [`Checkpoint`] encoded with bincode 1.x
//!               (fixed-width little-endian integers, lengths as u64)
//! ```
//!
//! Reading checks, in this order, that the file is long enough for the header, the magic,
//! the version, that the payload length equals the rest of the file, and the CRC; only
//! then is the payload decoded, with bincode's byte limit set to the payload's size so that
//! no length field inside it can make the decoder allocate more than the file holds. Every
//! failure is an error naming the file, never a panic.
//!
//! Files are written atomically ([`focal_engine::write_atomic`]), so a crash while saving
//! leaves the previous checkpoint intact.
//!
//! # Resuming
//!
//! A checkpoint holds the model's parameters and buffers (by name, with shapes), the
//! optimiser's state (moments and step counts, by parameter name), the step and epoch, the
//! random generator's state, the model configuration and free-form metadata. Restoring all
//! of them into freshly built objects continues the run bit for bit: see
//! [`save_checkpoint`] and [`load_checkpoint`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use bincode::Options;
use focal_engine::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::module::{duplicate_names, for_each_named, Module, Slot};
use crate::optim::{OptimState, Optimizer};
use crate::record::TensorRecord;

pub const MAGIC: &[u8; 8] = b"FOCALCKP";
pub const VERSION: u32 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// The contents of a checkpoint file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The model configuration, as written by the caller (e.g. TOML). Loading into a model
    /// compares it with the configuration of the model being restored.
    pub config: String,
    /// Free-form text for the trainer (e.g. JSON with the best AP so far).
    pub metadata: String,
    /// Optimiser steps completed.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// [`focal_engine::Rng::state`] of the run's generator.
    pub rng_state: u64,
    /// Parameters and buffers, in the model's visiting order.
    pub tensors: Vec<TensorRecord>,
    /// Integer buffers (BatchNorm's `num_batches_tracked`).
    pub counters: Vec<(String, u64)>,
    pub optimizer: Option<OptimState>,
}

/// Where the run stands, apart from the model and optimiser.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    pub step: u64,
    pub epoch: u64,
    pub rng_state: u64,
    pub metadata: String,
}

fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

impl Checkpoint {
    /// Copies the current state of `model` (and `optimizer`) into a checkpoint.
    /// Panics if two entries of the model share a name (a bug in some `visit`).
    pub fn capture(
        model: &mut dyn Module,
        optimizer: Option<&dyn Optimizer>,
        state: &TrainState,
        config: &str,
    ) -> Checkpoint {
        let dups = duplicate_names(model);
        assert!(dups.is_empty(), "the model has duplicate names: {dups:?}");
        let mut tensors = Vec::new();
        let mut counters = Vec::new();
        for_each_named(model, |name, slot| match slot {
            Slot::Param(p) => tensors.push(TensorRecord::new(name, &p.value)),
            Slot::Buffer(t) => tensors.push(TensorRecord::new(name, t)),
            Slot::Counter(c) => counters.push((name.to_string(), *c)),
        });
        Checkpoint {
            config: config.to_string(),
            metadata: state.metadata.clone(),
            step: state.step,
            epoch: state.epoch,
            rng_state: state.rng_state,
            tensors,
            counters,
            optimizer: optimizer.map(|o| o.state()),
        }
    }

    pub fn train_state(&self) -> TrainState {
        TrainState {
            step: self.step,
            epoch: self.epoch,
            rng_state: self.rng_state,
            metadata: self.metadata.clone(),
        }
    }

    /// The whole file: header and payload, encoded into one buffer (tensors are not copied
    /// on the way: the checkpoint shares the model's storage).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = bincode_options()
            .serialized_size(self)
            .expect("sizing a checkpoint in memory cannot fail") as usize;
        let mut out = Vec::with_capacity(HEADER_LEN + size);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled in below
        bincode_options()
            .serialize_into(&mut out, self)
            .expect("encoding a checkpoint in memory cannot fail");
        let crc = crc32fast::hash(&out[HEADER_LEN..]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a whole file (see the module documentation for the checks).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        if bytes.is_empty() {
            return Err(Error::invalid("the file is empty"));
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::invalid(format!(
                "the file is {} bytes long, shorter than the {HEADER_LEN}-byte header \
                 (truncated, or not a focal checkpoint)",
                bytes.len()
            )));
        }
        if &bytes[0..8] != MAGIC {
            return Err(Error::invalid(format!(
                "not a focal checkpoint (the first 8 bytes are {:?}, expected {:?})",
                String::from_utf8_lossy(&bytes[0..8]),
                std::str::from_utf8(MAGIC).unwrap()
            )));
        }
        let le_u32 = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        let version = le_u32(&bytes[8..12]);
        if version != VERSION {
            return Err(Error::invalid(format!(
                "format version {version}, but this focal reads version {VERSION}"
            )));
        }
        let declared = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        let actual = (bytes.len() - HEADER_LEN) as u64;
        if declared != actual {
            return Err(Error::invalid(format!(
                "the header announces a payload of {declared} bytes but the file holds \
                 {actual} (truncated or damaged)"
            )));
        }
        let payload = &bytes[HEADER_LEN..];
        let crc = le_u32(&bytes[20..24]);
        let computed = crc32fast::hash(payload);
        if crc != computed {
            return Err(Error::invalid(format!(
                "checksum mismatch (stored {crc:08x}, computed {computed:08x}): the file is damaged"
            )));
        }
        bincode_options()
            .with_limit(payload.len() as u64)
            .deserialize(payload)
            .map_err(|e| match *e {
                bincode::ErrorKind::Io(ref io)
                    if io.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    Error::invalid(
                        "cannot decode the payload: a length field points past the end of \
                         the payload",
                    )
                }
                bincode::ErrorKind::SizeLimit => Error::invalid(
                    "cannot decode the payload: a length field exceeds the size of the payload",
                ),
                _ => Error::Decode { source: e },
            })
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        focal_engine::write_atomic(path, &self.to_bytes()).map_err(|e| {
            Error::in_checkpoint(
                path,
                Error::Io {
                    action: "write",
                    source: e,
                },
            )
        })
    }

    /// Reads and checks a checkpoint file (format only; see [`Checkpoint::restore_model`]
    /// for the model).
    pub fn read(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::in_checkpoint(
                path,
                Error::Io {
                    action: "read",
                    source: e,
                },
            )
        })?;
        Checkpoint::from_bytes(&bytes).map_err(|e| Error::in_checkpoint(path, e))
    }

    /// Checks that the checkpoint was written for the configuration `expected`. A mismatch
    /// names the differing lines (for TOML, the differing keys).
    pub fn check_config(&self, expected: &str) -> Result<()> {
        config_diff(&self.config, expected)
    }

    /// Checks every name and shape against `model` and, only if all match, copies the
    /// parameters, buffers and counters into it. On error the model is untouched.
    pub fn restore_model(&self, model: &mut dyn Module) -> Result<()> {
        let dups = duplicate_names(model);
        if !dups.is_empty() {
            return Err(Error::invalid(format!(
                "the model has duplicate names: {}",
                list(&dups)
            )));
        }
        let mut tensors: HashMap<&str, &TensorRecord> = HashMap::new();
        for t in &self.tensors {
            if tensors.insert(&t.name, t).is_some() {
                return Err(Error::invalid(format!(
                    "the checkpoint holds {} twice",
                    t.name
                )));
            }
        }
        let counters: HashMap<&str, u64> = self
            .counters
            .iter()
            .map(|(n, c)| (n.as_str(), *c))
            .collect();
        // Pass 1: compare.
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut seen = HashSet::new();
        for_each_named(model, |name, slot| {
            seen.insert(name.to_string());
            let shape = match slot {
                Slot::Param(p) => p.value.shape().to_vec(),
                Slot::Buffer(t) => t.shape().to_vec(),
                Slot::Counter(_) => {
                    if !counters.contains_key(name) {
                        missing.push(name.to_string());
                    }
                    return;
                }
            };
            match tensors.get(name) {
                None => missing.push(name.to_string()),
                Some(t) if t.shape() != &shape[..] => mismatched.push(format!(
                    "{name}: checkpoint has shape {:?}, model has {:?}",
                    t.shape(),
                    shape
                )),
                Some(_) => {}
            }
        });
        let unexpected: Vec<String> = self
            .tensors
            .iter()
            .map(|t| &t.name)
            .chain(self.counters.iter().map(|(n, _)| n))
            .filter(|n| !seen.contains(n.as_str()))
            .cloned()
            .collect();
        let mut problems = Vec::new();
        if !mismatched.is_empty() {
            problems.push(format!("shape mismatch: {}", mismatched.join("; ")));
        }
        if !missing.is_empty() {
            problems.push(format!("missing from the checkpoint: {}", list(&missing)));
        }
        if !unexpected.is_empty() {
            problems.push(format!("not in the model: {}", list(&unexpected)));
        }
        if !problems.is_empty() {
            return Err(Error::invalid(format!(
                "does not fit the model ({})",
                problems.join("; ")
            )));
        }
        let values: HashMap<&str, Tensor> = self
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.to_tensor()))
            .collect();
        // Pass 2: copy.
        for_each_named(model, |name, slot| match slot {
            Slot::Param(p) => p.value = values[name].clone(),
            Slot::Buffer(t) => *t = values[name].clone(),
            Slot::Counter(c) => *c = counters[name],
        });
        Ok(())
    }

    /// Restores the optimiser's state, after checking that every entry names a trainable
    /// parameter of `model` with the right shape.
    pub fn restore_optimizer(
        &self,
        model: &mut dyn Module,
        optimizer: &mut dyn Optimizer,
    ) -> Result<()> {
        let Some(state) = &self.optimizer else {
            return Err(Error::invalid("the checkpoint holds no optimiser state"));
        };
        let mut shapes = HashMap::new();
        for_each_named(model, |name, slot| {
            if let Slot::Param(p) = slot {
                shapes.insert(name.to_string(), p.value.shape().to_vec());
            }
        });
        for p in &state.params {
            let Some(shape) = shapes.get(&p.param) else {
                return Err(Error::invalid(format!(
                    "the optimiser state names {}, which is not a parameter of the model",
                    p.param
                )));
            };
            for t in &p.tensors {
                if t.shape() != &shape[..] {
                    return Err(Error::invalid(format!(
                        "optimiser state {} of {}: checkpoint has shape {:?}, model has {:?}",
                        t.name,
                        p.param,
                        t.shape(),
                        shape
                    )));
                }
            }
        }
        optimizer.load_state(state)
    }
}

/// Saves `model`, `optimizer`, the train state and the configuration to `path`, atomically.
pub fn save_checkpoint(
    path: &Path,
    model: &mut dyn Module,
    optimizer: Option<&dyn Optimizer>,
    state: &TrainState,
    config: &str,
) -> Result<()> {
    Checkpoint::capture(model, optimizer, state, config).save(path)
}

/// Loads `path` into freshly built objects: checks the file, the configuration (against
/// `config`), every name and shape, then restores the model and, when given, the optimiser.
/// Returns the step, epoch, RNG state and metadata to continue from.
pub fn load_checkpoint(
    path: &Path,
    config: &str,
    model: &mut dyn Module,
    optimizer: Option<&mut dyn Optimizer>,
) -> Result<TrainState> {
    let ckpt = Checkpoint::read(path)?;
    let err = |e: Error| Error::in_checkpoint(path, e);
    ckpt.check_config(config).map_err(err)?;
    ckpt.restore_model(model).map_err(err)?;
    if let Some(opt) = optimizer {
        ckpt.restore_optimizer(model, opt).map_err(err)?;
    }
    Ok(ckpt.train_state())
}

/// Compares two configurations line by line (ignoring blank lines and surrounding spaces)
/// and describes the lines found in only one of them.
fn config_diff(saved: &str, expected: &str) -> Result<()> {
    if saved == expected {
        return Ok(());
    }
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let (a, b) = (lines(saved), lines(expected));
    if a == b {
        return Ok(());
    }
    let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    let show = |v: &[&String]| {
        if v.is_empty() {
            "(nothing)".to_string()
        } else {
            v.iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    Err(Error::invalid(format!(
        "written for another model configuration: the checkpoint has {}; this model has {}",
        show(&only_a),
        show(&only_b)
    )))
}

/// A list of names, cut after 20.
fn list(names: &[String]) -> String {
    const MAX: usize = 20;
    let mut s = names
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX {
        s.push_str(&format!(" and {} more", names.len() - MAX));
    }
    s
}
