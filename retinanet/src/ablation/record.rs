//! The record of a finished cell: one JSON file per cell in the output folder, written
//! atomically when the cell's training and evaluation are done. Its presence (with the
//! right configuration hash) is what makes a rerun skip the cell.
//!
//! ```json
//! {"gamma": 2.0, "alpha": 0.25, "config_hash": "fnv1a64:…", "seconds": 201.5,
//!  "AP": 0.41, "AP50": 0.78, "AP75": 0.39, "APs": …, …, "ARl": …}
//! ```

use std::path::{Path, PathBuf};

use focal_data::CocoStats;
use serde::{Deserialize, Serialize};

use super::setting::Setting;
use crate::error::Error;

/// A finished cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub gamma: f32,
    pub alpha: f32,
    /// The cell's seed when the grid repeats cells over seeds (absent otherwise, so
    /// records of earlier versions read and are written the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// [`config_hash`] of the cell's complete training configuration.
    pub config_hash: String,
    /// Wall time of the cell (training and evaluation), in seconds.
    pub seconds: f64,
    /// The 12 COCO numbers on the validation set, by name.
    #[serde(flatten)]
    pub stats: CocoStats,
}

impl CellRecord {
    pub fn setting(&self) -> Setting {
        Setting {
            seed: self.seed,
            ..Setting::new(self.gamma, self.alpha)
        }
    }

    /// Where the record of `setting` lives in the output folder `out`.
    pub fn path(out: &Path, setting: &Setting) -> PathBuf {
        out.join(format!("{}.json", setting.file_stem()))
    }

    /// Reads a record; `Ok(None)` when the file does not exist. A file that exists but is
    /// not a record of `setting` is an error naming it.
    pub fn read(out: &Path, setting: &Setting) -> Result<Option<CellRecord>, Error> {
        let path = CellRecord::path(out, setting);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let record: CellRecord = serde_json::from_str(&text).map_err(|e| Error::Json {
            what: format!(
                "{} is not a cell record of focal ablate; delete it to train the cell again",
                path.display()
            ),
            source: e,
        })?;
        if record.setting() != *setting {
            return Err(Error::invalid(format!(
                "{} holds the record of {}, not of {}; delete it to train the cell again",
                path.display(),
                record.setting(),
                setting
            )));
        }
        Ok(Some(record))
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn write(&self, out: &Path) -> Result<(), Error> {
        let path = CellRecord::path(out, &self.setting());
        let mut text = serde_json::to_string_pretty(self).map_err(|e| Error::Json {
            what: format!("cannot encode the record of {}", self.setting()),
            source: e,
        })?;
        text.push('\n');
        focal_engine::write_atomic(&path, text.as_bytes()).map_err(|e| Error::io("write", &path, e))
    }
}

/// A stable fingerprint of a configuration text: FNV-1a, 64 bits, as 16 hex digits with
/// the prefix `fnv1a64:`. (std's `DefaultHasher` may change between Rust releases; this
/// may not, since records written today must still match tomorrow.)
///
/// FNV-1a ([`focal_data::Fnv`]) of the text's bytes.
pub fn config_hash(text: &str) -> String {
    let mut h = focal_data::Fnv::new();
    h.bytes(text.as_bytes());
    format!("fnv1a64:{:016x}", h.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (Fowler/Noll/Vo): FNV-1a 64 of "" is the
        // offset basis, of "a" 0xaf63dc4c8601ec8c, of "foobar" 0x85944171f73967e8.
        assert_eq!(config_hash(""), "fnv1a64:cbf29ce484222325");
        assert_eq!(config_hash("a"), "fnv1a64:af63dc4c8601ec8c");
        assert_eq!(config_hash("foobar"), "fnv1a64:85944171f73967e8");
    }

    #[test]
    fn records_round_trip_and_a_wrong_or_damaged_file_is_named() {
        let dir = std::env::temp_dir().join(format!("focal-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Setting::new(2.0, 0.25);
        assert_eq!(CellRecord::read(&dir, &s).unwrap(), None);
        let mut stats = [0.0; 12];
        for (i, v) in stats.iter_mut().enumerate() {
            *v = i as f64 / 100.0;
        }
        stats[5] = -1.0;
        let r = CellRecord {
            gamma: 2.0,
            alpha: 0.25,
            seed: None,
            config_hash: config_hash("x"),
            seconds: 12.5,
            stats: CocoStats::from_array(stats),
        };
        r.write(&dir).unwrap();
        let text = std::fs::read_to_string(CellRecord::path(&dir, &s)).unwrap();
        assert!(
            text.contains("\"AP50\": 0.01") && text.contains("\"APl\": -1.0"),
            "{text}"
        );
        assert_eq!(CellRecord::read(&dir, &s).unwrap(), Some(r.clone()));
        assert_eq!(
            CellRecord::read(&dir, &s)
                .unwrap()
                .unwrap()
                .stats
                .to_array(),
            stats
        );

        // The record of another cell under this cell's name.
        let other = CellRecord { alpha: 0.5, ..r };
        std::fs::write(
            CellRecord::path(&dir, &s),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        let e = CellRecord::read(&dir, &s).unwrap_err().chain();
        assert!(
            e.contains("gamma2_alpha0.25.json") && e.contains("α = 0.5"),
            "{e}"
        );
        std::fs::write(CellRecord::path(&dir, &s), "{\"gamma\": 2").unwrap();
        let e = CellRecord::read(&dir, &s).unwrap_err().chain();
        assert!(
            e.contains("not a cell record") && e.contains("delete it"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A record as focal ablate wrote it before the COCO numbers had a type of their own
    /// (the numbers of the γ = 0, α = 0.25 cell of docs/ablation-table.csv): it reads, and
    /// is written back byte for byte, so a rerun over an old output folder skips the cell.
    #[test]
    fn a_record_of_an_earlier_version_reads_and_is_written_identically() {
        let old = r#"{
  "gamma": 0.0,
  "alpha": 0.25,
  "config_hash": "fnv1a64:bab1eb4a7faa38aa",
  "seconds": 230.326872742,
  "AP": 0.20423963204880383,
  "AP50": 0.3913851316202787,
  "AP75": 0.1816850479119105,
  "APs": 0.19918180069561497,
  "APm": 0.25995566022638145,
  "APl": -1.0,
  "AR1": 0.2594373673968073,
  "AR10": 0.37423390837393733,
  "AR100": 0.37423390837393733,
  "ARs": 0.3661418061812693,
  "ARm": 0.40338091605826165,
  "ARl": -1.0
}
"#;
        let dir = std::env::temp_dir().join(format!("focal-record-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Setting::new(0.0, 0.25);
        std::fs::write(CellRecord::path(&dir, &s), old).unwrap();
        let r = CellRecord::read(&dir, &s).unwrap().unwrap();
        assert_eq!(r.stats.ap, 0.20423963204880383);
        assert_eq!(r.stats.ap_large, -1.0);
        assert_eq!(r.stats.ar_medium, 0.40338091605826165);
        assert_eq!(r.config_hash, "fnv1a64:bab1eb4a7faa38aa");
        std::fs::remove_file(CellRecord::path(&dir, &s)).unwrap();
        r.write(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(CellRecord::path(&dir, &s)).unwrap(),
            old
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
