//! Weight exchange with PyTorch through safetensors files.
//!
//! [`export_safetensors`] writes every parameter and buffer of a model as an F32 tensor under
//! its name (integer counters such as `num_batches_tracked` as I64 scalars, as PyTorch stores
//! them), so that `model.load_state_dict(safetensors.torch.load_file(path))` works on the
//! PyTorch side when the names follow torchvision's.
//!
//! [`import_safetensors`] reads a file written by
//! `safetensors.torch.save_file(model.state_dict(), path)` and copies each tensor into the
//! model entry of the same name:
//!
//! - a *name map* turns a file name into a model name, or `None` to skip the tensor;
//! - a *transform* may reshape or slice a tensor before its shape is checked (RetinaNet
//!   uses it to remap torchvision's 91 COCO class ids to 80 labels in the classifier);
//! - F16, BF16 and F64 values are converted to f32; integer tensors load only into integer
//!   counters (otherwise they are noted and skipped);
//! - the returned [`ImportReport`] lists what was loaded, what in the file matched nothing
//!   (`unexpected`), what in the model received nothing (`missing`), and shape mismatches,
//!   by name. In strict mode any of the last three is an error, and nothing is loaded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use focal_engine::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::module::{duplicate_names, for_each_named, Module, Slot};

/// A tensor in the file whose shape differs from the model entry it maps to.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeMismatch {
    /// The model's name.
    pub name: String,
    pub file_shape: Vec<usize>,
    pub model_shape: Vec<usize>,
}

/// What an import did, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Model entries that received a value.
    pub loaded: Vec<String>,
    /// File tensors (file names) that match no model entry.
    pub unexpected: Vec<String>,
    /// Model entries (model names) that nothing in the file matched.
    pub missing: Vec<String>,
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// File tensors deliberately not loaded, with the reason (skipped by the name map, an
    /// integer tensor with no integer counter to receive it, an unsupported type).
    pub skipped: Vec<(String, String)>,
    /// File tensors converted to f32 from another float type, with that type.
    pub converted: Vec<(String, String)>,
}

impl ImportReport {
    /// True when every file tensor found its model entry and every model entry was loaded.
    pub fn is_complete(&self) -> bool {
        self.unexpected.is_empty() && self.missing.is_empty() && self.shape_mismatches.is_empty()
    }

    /// The problems as one line each (empty when complete).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.shape_mismatches.is_empty() {
            let s: Vec<String> = self
                .shape_mismatches
                .iter()
                .map(|m| {
                    format!(
                        "{}: file {:?}, model {:?}",
                        m.name, m.file_shape, m.model_shape
                    )
                })
                .collect();
            out.push(format!("shape mismatch: {}", s.join("; ")));
        }
        if !self.missing.is_empty() {
            out.push(format!(
                "missing from the file: {}",
                self.missing.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            out.push(format!("not in the model: {}", self.unexpected.join(", ")));
        }
        out
    }
}

type RenameFn<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;
type TransformFn<'a> = Box<dyn Fn(&str, Tensor, &[usize]) -> Result<Tensor> + 'a>;

/// How to import: name map, transform, strictness.
#[derive(Default)]
pub struct ImportOptions<'a> {
    rename: Option<RenameFn<'a>>,
    transform: Option<TransformFn<'a>>,
    strict: bool,
}

impl<'a> ImportOptions<'a> {
    pub fn new() -> ImportOptions<'a> {
        ImportOptions::default()
    }

    /// Maps each file name to a model name; `None` skips the tensor.
    pub fn rename(mut self, f: impl Fn(&str) -> Option<String> + 'a) -> ImportOptions<'a> {
        self.rename = Some(Box::new(f));
        self
    }

    /// Called with (model name, file tensor as f32, model shape) for every float tensor that
    /// maps to a model entry, before the shape check; returns the tensor to load. Return the
    /// tensor unchanged for names it does not handle.
    pub fn transform(
        mut self,
        f: impl Fn(&str, Tensor, &[usize]) -> Result<Tensor> + 'a,
    ) -> ImportOptions<'a> {
        self.transform = Some(Box::new(f));
        self
    }

    /// Fail, loading nothing, if anything is unexpected, missing or mismatched.
    pub fn strict(mut self, on: bool) -> ImportOptions<'a> {
        self.strict = on;
        self
    }
}

/// A tensor read from a safetensors file.
#[derive(Clone, Debug)]
pub enum FileTensor {
    /// A float tensor, converted to f32.
    Float(Tensor),
    /// An integer tensor's values (as i64) and shape.
    Int(Vec<usize>, Vec<i64>),
    /// A type focal does not read.
    Unsupported(String),
}

/// The bytes of the weights file at `path`, or "weights PATH: cannot read: ...".
fn read_weights_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::in_weights(
            path,
            Error::Io {
                action: "read",
                source: e,
            },
        )
    })
}

/// Reads every tensor of a safetensors file, in name order. Float types are converted to
/// f32; the second value is the original type.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, FileTensor, Dtype)>> {
    let err = |e: Error| Error::in_weights(path, e);
    let bytes = read_weights_file(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        err(Error::Safetensors {
            what: "not a valid safetensors file".into(),
            source: e,
        })
    })?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| {
            err(Error::Safetensors {
                what: name.clone(),
                source: e,
            })
        })?;
        let dtype = view.dtype();
        out.push((name, decode(&view), dtype));
    }
    Ok(out)
}

/// One entry of a safetensors file's table of contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// "F32", "F16", "I64", ...
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// The table of contents of a safetensors file: every tensor's name, type and shape (in
/// name order) and the file's metadata. The whole file is read and checked (a truncated
/// or malformed file is an error naming it), but no tensor is decoded.
pub fn read_safetensors_info(path: &Path) -> Result<(Vec<TensorInfo>, HashMap<String, String>)> {
    let err = |e: Error| Error::in_weights(path, e);
    let bytes = read_weights_file(path)?;
    let not_safetensors = |e| {
        err(Error::Safetensors {
            what: "not a valid safetensors file".into(),
            source: e,
        })
    };
    // deserialize checks that every tensor's bytes lie inside the file.
    let st = SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let mut infos: Vec<TensorInfo> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| TensorInfo {
            name,
            dtype: view.dtype().to_string(),
            shape: view.shape().to_vec(),
        })
        .collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((infos, header.metadata().clone().unwrap_or_default()))
}

/// Whether `path` starts as a safetensors file does: an 8-byte little-endian header
/// length that fits in the file, then `{`. Cheap (reads 9 bytes); a file that passes may
/// still be malformed further on.
pub fn looks_like_safetensors(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 9];
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    head[8] == b'{' && n >= 2 && n <= len.saturating_sub(8)
}

fn decode(view: &TensorView<'_>) -> FileTensor {
    let shape = view.shape().to_vec();
    let d = view.data();
    let floats: Option<Vec<f32>> = match view.dtype() {
        Dtype::F32 => Some(
            d.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        Dtype::F64 => Some(
            d.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
        ),
        Dtype::F16 => Some(
            d.chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
        ),
        Dtype::BF16 => Some(
            d.chunks_exact(2)
                .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
        ),
        _ => None,
    };
    if let Some(v) = floats {
        return FileTensor::Float(Tensor::from_vec(&shape, v));
    }
    let ints: Option<Vec<i64>> = match view.dtype() {
        Dtype::I64 => Some(
            d.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I32 => Some(
            d.chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
        ),
        Dtype::U8 => Some(d.iter().map(|&b| b as i64).collect()),
        _ => None,
    };
    match ints {
        Some(v) => FileTensor::Int(shape, v),
        None => FileTensor::Unsupported(view.dtype().to_string()),
    }
}

/// IEEE half precision to f32 (exact: every f16 is an f32).
/// Layout: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
pub fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let magnitude = match exp {
        // Zero or subnormal: mant · 2^-24.
        0 => mant as f32 * (1.0 / 16_777_216.0),
        // Infinity or NaN: keep the payload in the top of the f32 mantissa.
        31 => f32::from_bits(0x7f80_0000 | (mant << 13)),
        // Normal: re-bias the exponent from 15 to 127.
        _ => f32::from_bits(((exp + 127 - 15) << 23) | (mant << 13)),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// bfloat16 to f32: bf16 is the top half of an f32.
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// What a model entry can receive.
enum Target {
    Float(Vec<usize>),
    Counter,
}

/// Loads a safetensors file into `model` (see the module documentation).
pub fn import_safetensors(
    model: &mut dyn Module,
    path: &Path,
    opts: &ImportOptions<'_>,
) -> Result<ImportReport> {
    let err = |message: String| Error::in_weights(path, Error::Invalid(message));
    let dups = duplicate_names(model);
    if !dups.is_empty() {
        return Err(err(format!("the model has duplicate names: {dups:?}")));
    }
    let file = read_safetensors(path)?;
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut order = Vec::new();
    for_each_named(model, |name, slot| {
        let t = match slot {
            Slot::Param(p) => Target::Float(p.value.shape().to_vec()),
            Slot::Buffer(t) => Target::Float(t.shape().to_vec()),
            Slot::Counter(_) => Target::Counter,
        };
        targets.insert(name.to_string(), t);
        order.push(name.to_string());
    });

    let mut report = ImportReport::default();
    let mut floats: HashMap<String, Tensor> = HashMap::new();
    let mut counters: HashMap<String, u64> = HashMap::new();
    for (file_name, tensor, dtype) in file {
        let model_name = match &opts.rename {
            Some(f) => match f(&file_name) {
                Some(n) => n,
                None => {
                    report
                        .skipped
                        .push((file_name, "skipped by the name map".into()));
                    continue;
                }
            },
            None => file_name.clone(),
        };
        if floats.contains_key(&model_name) || counters.contains_key(&model_name) {
            return Err(err(format!(
                "two tensors of the file map to {model_name} (the second is {file_name})"
            )));
        }
        match (tensor, targets.get(&model_name)) {
            (FileTensor::Unsupported(ty), _) => report
                .skipped
                .push((file_name, format!("unsupported type {ty}"))),
            (FileTensor::Int(..), None) => report.skipped.push((
                file_name,
                "integer tensor with no integer counter of that name in the model".into(),
            )),
            (_, None) => report.unexpected.push(file_name),
            (FileTensor::Int(_, values), Some(Target::Counter)) => {
                if values.len() != 1 || values[0] < 0 {
                    return Err(err(format!(
                        "{file_name}: expected one non-negative integer for {model_name}"
                    )));
                }
                counters.insert(model_name, values[0] as u64);
            }
            (FileTensor::Int(..), Some(Target::Float(_))) => report.skipped.push((
                file_name,
                format!("integer tensor, but {model_name} holds floats"),
            )),
            (FileTensor::Float(_), Some(Target::Counter)) => report.skipped.push((
                file_name,
                format!("float tensor, but {model_name} is an integer counter"),
            )),
            (FileTensor::Float(t), Some(Target::Float(shape))) => {
                if dtype != Dtype::F32 {
                    report
                        .converted
                        .push((file_name.clone(), dtype.to_string()));
                }
                let t = match &opts.transform {
                    Some(f) => f(&model_name, t, shape).map_err(|e| {
                        Error::in_weights(
                            path,
                            Error::InTensor {
                                name: file_name.clone(),
                                source: Box::new(e),
                            },
                        )
                    })?,
                    None => t,
                };
                if t.shape() != &shape[..] {
                    report.shape_mismatches.push(ShapeMismatch {
                        name: model_name,
                        file_shape: t.shape().to_vec(),
                        model_shape: shape.clone(),
                    });
                } else {
                    floats.insert(model_name, t);
                }
            }
        }
    }
    let mismatched: Vec<&str> = report
        .shape_mismatches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for name in &order {
        if floats.contains_key(name) || counters.contains_key(name) {
            report.loaded.push(name.clone());
        } else if !mismatched.contains(&name.as_str()) {
            report.missing.push(name.clone());
        }
    }
    if opts.strict && !report.is_complete() {
        return Err(err(format!(
            "does not fit the model (strict): {}",
            report.problems().join("; ")
        )));
    }
    for_each_named(model, |name, slot| match slot {
        Slot::Param(p) => {
            if let Some(t) = floats.remove(name) {
                p.value = t;
            }
        }
        Slot::Buffer(b) => {
            if let Some(t) = floats.remove(name) {
                *b = t;
            }
        }
        Slot::Counter(c) => {
            if let Some(v) = counters.remove(name) {
                *c = v;
            }
        }
    });
    Ok(report)
}

/// The bytes of a safetensors file holding every parameter and buffer of `model` as F32
/// and every counter as an I64 scalar, by name.
pub fn safetensors_bytes(
    model: &mut dyn Module,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let dups = duplicate_names(model);
    if !dups.is_empty() {
        return Err(Error::invalid(format!(
            "the model has duplicate names: {dups:?}"
        )));
    }
    let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for_each_named(model, |name, slot| {
        let (dtype, shape, bytes) = match slot {
            Slot::Param(p) => (Dtype::F32, p.value.shape().to_vec(), f32_bytes(&p.value)),
            Slot::Buffer(t) => (Dtype::F32, t.shape().to_vec(), f32_bytes(t)),
            Slot::Counter(c) => (Dtype::I64, vec![], (*c as i64).to_le_bytes().to_vec()),
        };
        entries.push((name.to_string(), dtype, shape, bytes));
    });
    let views = entries
        .iter()
        .map(|(n, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (n.as_str(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Safetensors {
            what: "cannot lay out a tensor".into(),
            source: e,
        })?;
    safetensors::serialize(views, metadata).map_err(|e| Error::Safetensors {
        what: "cannot serialise".into(),
        source: e,
    })
}

fn f32_bytes(t: &Tensor) -> Vec<u8> {
    t.data().iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `model`'s parameters, buffers and counters to a safetensors file, atomically.
pub fn export_safetensors(
    model: &mut dyn Module,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = safetensors_bytes(model, metadata).map_err(|e| Error::in_weights(path, e))?;
    focal_engine::write_atomic(path, &bytes).map_err(|e| {
        Error::in_weights(
            path,
            Error::Io {
                action: "write",
                source: e,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        // f16: 0x3c00 = 1.0, 0xc000 = −2.0, 0x7bff = 65504 (largest), 0x0001 = 2^-24
        // (smallest subnormal), 0x0400 = 2^-14 (smallest normal), 0x7c00 = +∞.
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95); // 1365/4096
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        // bf16: 0x3f80 = 1.0, 0x4049 = 3.140625, 0xc2f7 = −123.5.
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0x4049), 3.140625);
        assert_eq!(bf16_to_f32(0xc2f7), -123.5);
    }
}
