//! The record of a finished cell: one JSON file per cell in the output folder, written
//! atomically when the cell's training and evaluation are done. Its presence (with the
//! right configuration hash) is what makes a rerun skip the cell.
//!
//! ```json
//! {"gamma": 2.0, "alpha": 0.25, "config_hash": "fnv1a64:…", "seconds": 201.5,
//!  "AP": 0.41, "AP50": 0.78, "AP75": 0.39, "APs": …, …, "ARl": …}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::setting::Setting;

/// The COCO summary names, in pycocotools' order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// A finished cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub gamma: f32,
    pub alpha: f32,
    /// [`config_hash`] of the cell's complete training configuration.
    pub config_hash: String,
    /// Wall time of the cell (training and evaluation), in seconds.
    pub seconds: f64,
    /// The 12 COCO numbers on the validation set, by name ([`STAT_NAMES`]).
    #[serde(flatten)]
    pub stats: Stats,
}

/// The 12 COCO numbers, serialised under their names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Stats {
    pub AP: f64,
    pub AP50: f64,
    pub AP75: f64,
    pub APs: f64,
    pub APm: f64,
    pub APl: f64,
    pub AR1: f64,
    pub AR10: f64,
    pub AR100: f64,
    pub ARs: f64,
    pub ARm: f64,
    pub ARl: f64,
}

impl Stats {
    pub fn from_array(s: [f64; 12]) -> Stats {
        Stats {
            AP: s[0],
            AP50: s[1],
            AP75: s[2],
            APs: s[3],
            APm: s[4],
            APl: s[5],
            AR1: s[6],
            AR10: s[7],
            AR100: s[8],
            ARs: s[9],
            ARm: s[10],
            ARl: s[11],
        }
    }

    /// In pycocotools' order.
    pub fn to_array(&self) -> [f64; 12] {
        [
            self.AP, self.AP50, self.AP75, self.APs, self.APm, self.APl, self.AR1, self.AR10,
            self.AR100, self.ARs, self.ARm, self.ARl,
        ]
    }
}

impl CellRecord {
    pub fn setting(&self) -> Setting {
        Setting {
            gamma: self.gamma,
            alpha: self.alpha,
        }
    }

    /// Where the record of `setting` lives in the output folder `out`.
    pub fn path(out: &Path, setting: &Setting) -> PathBuf {
        out.join(format!("{}.json", setting.file_stem()))
    }

    /// Reads a record; `Ok(None)` when the file does not exist. A file that exists but is
    /// not a record of `setting` is an error naming it.
    pub fn read(out: &Path, setting: &Setting) -> Result<Option<CellRecord>, String> {
        let path = CellRecord::path(out, setting);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let record: CellRecord = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a cell record of focal ablate ({e}); delete it to train the cell \
                 again",
                path.display()
            )
        })?;
        if record.setting() != *setting {
            return Err(format!(
                "{} holds the record of γ = {}, α = {}, not of γ = {}, α = {}; delete it to \
                 train the cell again",
                path.display(),
                record.gamma,
                record.alpha,
                setting.gamma,
                setting.alpha
            ));
        }
        Ok(Some(record))
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn write(&self, out: &Path) -> Result<(), String> {
        let path = CellRecord::path(out, &self.setting());
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| format!("cannot encode the record of {}: {e}", self.setting()))?;
        text.push('\n');
        focal_engine::write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// A stable fingerprint of a configuration text: FNV-1a, 64 bits, as 16 hex digits with
/// the prefix `fnv1a64:`. (std's `DefaultHasher` may change between Rust releases; this
/// may not, since records written today must still match tomorrow.)
///
/// FNV-1a: h = 0xcbf29ce484222325; for each byte b: h = (h XOR b) · 0x100000001b3 mod 2^64.
pub fn config_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
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
        let s = Setting {
            gamma: 2.0,
            alpha: 0.25,
        };
        assert_eq!(CellRecord::read(&dir, &s).unwrap(), None);
        let mut stats = [0.0; 12];
        for (i, v) in stats.iter_mut().enumerate() {
            *v = i as f64 / 100.0;
        }
        stats[5] = -1.0;
        let r = CellRecord {
            gamma: 2.0,
            alpha: 0.25,
            config_hash: config_hash("x"),
            seconds: 12.5,
            stats: Stats::from_array(stats),
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
        let e = CellRecord::read(&dir, &s).unwrap_err();
        assert!(
            e.contains("gamma2_alpha0.25.json") && e.contains("α = 0.5"),
            "{e}"
        );
        std::fs::write(CellRecord::path(&dir, &s), "{\"gamma\": 2").unwrap();
        let e = CellRecord::read(&dir, &s).unwrap_err();
        assert!(
            e.contains("not a cell record") && e.contains("delete it"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
