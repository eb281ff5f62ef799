//! The run folder: where a run keeps its files, and how each is written and read back.
//!
//! | file           | content                                                          |
//! |----------------|------------------------------------------------------------------|
//! | `config.toml`  | the full, resolved [`TrainConfig`]                               |
//! | `metrics.jsonl`| one JSON object per step, and one per evaluation ([`MetricRow`]) |
//! | `last.ckpt`    | model, optimiser, step, epoch, RNG, configuration, class names   |
//! | `best.ckpt`    | the model of the evaluation with the best AP                     |
//! | `metrics.json` | the final 12 COCO numbers under AP, AP50, ..., ARl               |
//!
//! Every file is written atomically (a temporary file, then a rename); `metrics.jsonl` is
//! rewritten whole (every few steps and at each checkpoint), so it is never seen
//! half-written either.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use focal_data::EvalResult;

use super::config::TrainConfig;
use super::records::MetricRow;
use crate::error::{Error, Result};

/// The folder of one run.
#[derive(Clone, Debug)]
pub struct RunFolder {
    dir: PathBuf,
}

impl RunFolder {
    /// The folder at `dir` (nothing is created or checked yet).
    pub fn new(dir: &Path) -> RunFolder {
        RunFolder {
            dir: dir.to_path_buf(),
        }
    }

    /// The folder of a fresh run: refuses one that already holds a run (`metrics.jsonl`
    /// or `last.ckpt`), which must be resumed instead.
    pub fn fresh(dir: &Path) -> Result<RunFolder> {
        for f in ["metrics.jsonl", "last.ckpt"] {
            if dir.join(f).exists() {
                return Err(Error::invalid(format!(
                    "{} already holds a run ({f}); continue it with --resume {}, or choose \
                     another output folder",
                    dir.display(),
                    dir.join("last.ckpt").display()
                )));
            }
        }
        Ok(RunFolder::new(dir))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn last_checkpoint(&self) -> PathBuf {
        self.dir.join("last.ckpt")
    }

    pub fn best_checkpoint(&self) -> PathBuf {
        self.dir.join("best.ckpt")
    }

    pub fn metrics_jsonl(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }

    pub fn metrics_json(&self) -> PathBuf {
        self.dir.join("metrics.json")
    }

    /// Creates the folder (if needed) and writes `config.toml`: the first thing a run,
    /// fresh or resumed, does once everything it needs has been checked.
    pub fn start(&self, config: &TrainConfig) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create the run folder", &self.dir, e))?;
        write_file(&self.dir.join("config.toml"), config.to_toml().as_bytes())
    }

    /// Rewrites `metrics.jsonl` from `rows`, atomically.
    pub fn write_metrics(&self, rows: &[MetricRow]) -> Result<()> {
        let mut text = Vec::with_capacity(200 * rows.len());
        for row in rows {
            serde_json::to_writer(&mut text, row).expect("metric rows serialise");
            text.write_all(b"\n").expect("writing to memory");
        }
        write_file(&self.metrics_jsonl(), &text)
    }

    /// The rows of `metrics.jsonl` up to and including `step` (a resumed run drops the
    /// rows written after its checkpoint); none when the file does not exist.
    pub fn read_metrics_until(&self, step: u64) -> Result<Vec<MetricRow>> {
        let path = self.metrics_jsonl();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut rows = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let row: MetricRow = serde_json::from_str(line).map_err(|e| Error::Json {
                what: format!("{} line {}", path.display(), i + 1),
                source: e,
            })?;
            if row.step() <= step {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// Writes `metrics.json`, the final 12 COCO numbers by name; returns its path.
    pub fn write_final_metrics(&self, result: &EvalResult) -> Result<PathBuf> {
        let path = self.metrics_json();
        write_file(&path, result.stats.to_json_pretty().as_bytes())?;
        Ok(path)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    focal_engine::write_atomic(path, bytes).map_err(|e| Error::io("write", path, e))
}
