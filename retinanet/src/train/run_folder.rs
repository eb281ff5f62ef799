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
//! | `focal.lock`   | who is running in the folder (pid and host), while it runs       |
//!
//! Every file is written atomically (a temporary file `.NAME.tmp-PID-N`, then a rename);
//! `metrics.jsonl` is rewritten whole (every few steps and at each checkpoint), so it is
//! never seen half-written either. A process killed during a write leaves its temporary
//! file behind: a run removes such leftovers of its folder when it starts and after each
//! checkpoint it writes ([`RunFolder::remove_stale_temp_files`]).
//!
//! **One run per folder.** A run holds an exclusive lock on `focal.lock` for its whole
//! life ([`RunFolder::lock`]): an advisory lock of the operating system (`flock` on
//! Linux), which the system releases when the process ends however it ends, so a lock
//! file left by a killed run is recognised as stale simply by being lockable again. A
//! second run in the same folder is refused with the holder's pid and host.
//!
//! **Which folder a run may use.** A fresh run refuses a folder that holds a checkpoint
//! (`last.ckpt`: resume it; `best.ckpt` alone: move it away), and restarts one that holds
//! only the logs of a run that never saved a checkpoint, replacing them
//! ([`RunFolder::prepare_fresh`]). A resumed run writes into its checkpoint's own folder
//! or into an empty (or new) one, never over another run.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
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

    /// Makes the folder ready for a fresh run (call it holding the lock): refuses one
    /// that holds a checkpoint, and removes the logs and plots of a run that never saved
    /// one (a crash before its first checkpoint), which could not be continued. Returns
    /// the names of the files removed.
    pub fn prepare_fresh(&self) -> Result<Vec<String>> {
        self.check_fresh()?;
        let mut removed = Vec::new();
        for name in RUN_LOGS {
            let path = self.dir.join(name);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                removed.push(name.to_string());
            }
        }
        Ok(removed)
    }

    /// Refuses a folder that holds a checkpoint, without changing anything (the first
    /// half of [`RunFolder::prepare_fresh`], done before the long checks of a start).
    pub fn check_fresh(&self) -> Result<()> {
        let last = self.last_checkpoint();
        if last.exists() {
            return Err(Error::invalid(format!(
                "{} already holds a run (last.ckpt); continue it with --resume {}, or choose \
                 another output folder",
                self.dir.display(),
                last.display()
            )));
        }
        if self.best_checkpoint().exists() {
            return Err(Error::invalid(format!(
                "{} holds best.ckpt but no last.ckpt to resume from; move best.ckpt away to \
                 start a new run there, or choose another output folder",
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Takes the folder's lock for the life of the returned [`RunLock`], creating the
    /// folder if needed; refuses a folder another run holds, naming it.
    pub fn lock(&self) -> Result<RunLock> {
        let created = !self.dir.exists();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create the run folder", &self.dir, e))?;
        let path = self.dir.join(LOCK_FILE);
        let lock = take_lock(&path, created, &self.dir);
        if lock.is_err() && created {
            let _ = std::fs::remove_dir(&self.dir);
        }
        lock
    }

    /// Removes the temporary files that writes of other processes left in the folder
    /// when they were killed (`.NAME.tmp-PID-N`, focal's pattern; nothing else is
    /// touched). Call it holding the lock, so that no other run can be writing them.
    /// Returns how many were removed.
    pub fn remove_stale_temp_files(&self) -> Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("list", &self.dir, e)),
        };
        let me = std::process::id();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(focal_engine::fsio::temp_file_pid) else {
                continue;
            };
            if pid == me || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Whether `dir` does not exist or is an empty folder.
    pub fn is_empty_or_missing(dir: &Path) -> bool {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
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

/// The lock file of a run folder.
pub const LOCK_FILE: &str = "focal.lock";

/// The files of a run other than its checkpoints and configuration, removed when a
/// folder whose run never saved a checkpoint is started afresh.
const RUN_LOGS: [&str; 4] = ["metrics.jsonl", "metrics.json", "loss.png", "ap.png"];

/// The lock on a run folder, held until dropped: the open, locked `focal.lock`, which
/// says who holds it. Dropping it removes the file (and the folder, if the lock created
/// it and nothing else was written there) and releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: Option<File>,
    path: PathBuf,
    dir: PathBuf,
    created_dir: bool,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other process can lock the old file.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
        if self.created_dir {
            // Only succeeds when the folder is empty.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Who this process is, as written in the lock file: "pid 1234 on host NAME".
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".into());
    format!("pid {} on host {host}", std::process::id())
}

fn take_lock(path: &Path, created_dir: bool, dir: &Path) -> Result<RunLock> {
    // A run that ends removes the file while holding its lock; another process may have
    // opened the old file just before. It would then hold a lock on a removed file, so
    // after locking, check that the file is still the one at `path` (else try again).
    for _ in 0..100 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open the lock file", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::invalid(format!(
                    "{} is in use by another run ({}); wait for it to finish, or choose \
                     another output folder",
                    dir.display(),
                    if holder.is_empty() {
                        "a process that has not written its name yet"
                    } else {
                        holder
                    }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("lock", path, e));
            }
        }
        if !same_file(&file, path) {
            continue;
        }
        let text = format!("focal run: {}\n", holder_text());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io("write the lock file", path, e))?;
        return Ok(RunLock {
            file: Some(file),
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            created_dir,
        });
    }
    Err(Error::invalid(format!(
        "cannot lock {}: it keeps being replaced",
        path.display()
    )))
}

/// Whether the open `file` is the file now at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    focal_engine::write_atomic(path, bytes).map_err(|e| Error::io("write", path, e))
}
