//! The 12 COCO summary numbers as one type, [`CocoStats`]: what the evaluator returns, what
//! a run's `metrics.json` and `metrics.jsonl` evaluation rows hold, and what a cell record
//! of `focal ablate` holds. Serialised (serde) as an object keyed by pycocotools' names:
//!
//! ```json
//! {"AP": 0.41, "AP50": 0.78, "AP75": 0.39, "APs": 0.2, "APm": 0.45, "APl": 0.55,
//!  "AR1": 0.33, "AR10": 0.5, "AR100": 0.52, "ARs": 0.3, "ARm": 0.56, "ARl": 0.66}
//! ```
//!
//! A number is −1 where pycocotools gives −1 (no ground truth in that slice). A value that
//! is not finite (never produced by the evaluator) is written as JSON `null`, as
//! serde_json writes it, and `null` reads back as NaN, so every file focal writes reads
//! back.

use serde::{Deserialize, Deserializer, Serialize};

/// Names of the 12 summary numbers, in pycocotools' `stats` order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// The 12 numbers of pycocotools' `COCOeval.summarize()` (bbox), by name. Each is
/// described in [`super::summary`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoStats {
    /// AP at IoU 0.50:0.95, all areas, 100 detections per image: *the* COCO AP.
    #[serde(rename = "AP", deserialize_with = "number_or_null")]
    pub ap: f64,
    /// AP at IoU 0.50.
    #[serde(rename = "AP50", deserialize_with = "number_or_null")]
    pub ap50: f64,
    /// AP at IoU 0.75.
    #[serde(rename = "AP75", deserialize_with = "number_or_null")]
    pub ap75: f64,
    /// AP of small objects (area < 32²).
    #[serde(rename = "APs", deserialize_with = "number_or_null")]
    pub ap_small: f64,
    /// AP of medium objects (32² to 96²).
    #[serde(rename = "APm", deserialize_with = "number_or_null")]
    pub ap_medium: f64,
    /// AP of large objects (area > 96²).
    #[serde(rename = "APl", deserialize_with = "number_or_null")]
    pub ap_large: f64,
    /// AR with 1 detection per image.
    #[serde(rename = "AR1", deserialize_with = "number_or_null")]
    pub ar1: f64,
    /// AR with 10 detections per image.
    #[serde(rename = "AR10", deserialize_with = "number_or_null")]
    pub ar10: f64,
    /// AR with 100 detections per image.
    #[serde(rename = "AR100", deserialize_with = "number_or_null")]
    pub ar100: f64,
    /// AR of small objects.
    #[serde(rename = "ARs", deserialize_with = "number_or_null")]
    pub ar_small: f64,
    /// AR of medium objects.
    #[serde(rename = "ARm", deserialize_with = "number_or_null")]
    pub ar_medium: f64,
    /// AR of large objects.
    #[serde(rename = "ARl", deserialize_with = "number_or_null")]
    pub ar_large: f64,
}

impl CocoStats {
    /// From the 12 numbers in pycocotools' order.
    pub fn from_array(s: [f64; 12]) -> CocoStats {
        CocoStats {
            ap: s[0],
            ap50: s[1],
            ap75: s[2],
            ap_small: s[3],
            ap_medium: s[4],
            ap_large: s[5],
            ar1: s[6],
            ar10: s[7],
            ar100: s[8],
            ar_small: s[9],
            ar_medium: s[10],
            ar_large: s[11],
        }
    }

    /// The 12 numbers in pycocotools' order ([`STAT_NAMES`]).
    pub fn to_array(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// The 12 numbers with their names, in pycocotools' order.
    pub fn named(&self) -> [(&'static str, f64); 12] {
        let values = self.to_array();
        std::array::from_fn(|i| (STAT_NAMES[i], values[i]))
    }

    /// One number by its name ("AP", "AP50", ..., "ARl"); `None` for an unknown name.
    pub fn get(&self, name: &str) -> Option<f64> {
        STAT_NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| self.to_array()[i])
    }

    /// The object form, pretty-printed with two-space indents and a final newline: the
    /// text of a run's `metrics.json`.
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("COCO stats serialise");
        text.push('\n');
        text
    }
}

/// A JSON number, or `null` (what serde_json writes for a non-finite f64) read as NaN.
fn number_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CocoStats {
        CocoStats::from_array(std::array::from_fn(|i| i as f64 / 100.0 - 0.005))
    }

    #[test]
    fn names_order_and_lookup_agree() {
        let s = sample();
        assert_eq!(CocoStats::from_array(s.to_array()), s);
        assert_eq!(s.named()[4], ("APm", s.ap_medium));
        assert_eq!(s.get("AR100"), Some(s.ar100));
        assert_eq!(s.get("ARl"), Some(s.ar_large));
        assert_eq!(s.get("mAP"), None);
    }

    #[test]
    fn serialises_under_pycocotools_names_in_order_and_reads_back() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        let keys: Vec<usize> = STAT_NAMES
            .iter()
            .map(|n| json.find(&format!("\"{n}\":")).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert_eq!(serde_json::from_str::<CocoStats>(&json).unwrap(), s);
    }

    #[test]
    fn metrics_json_text_is_the_format_focal_has_always_written() {
        // metrics.json as focal train wrote it before this type existed (hand-assembled,
        // two-space indents, a final newline).
        let old = "{\n  \"AP\": 0.0,\n  \"AP50\": 0.0,\n  \"AP75\": 0.0,\n  \"APs\": 0.0,\n  \
                   \"APm\": 0.0,\n  \"APl\": -1.0,\n  \"AR1\": 0.0,\n  \"AR10\": 0.0,\n  \
                   \"AR100\": 0.0,\n  \"ARs\": 0.0,\n  \"ARm\": 0.0,\n  \"ARl\": -1.0\n}\n";
        let s: CocoStats = serde_json::from_str(old).unwrap();
        assert_eq!(s.ap_large, -1.0);
        assert_eq!(s.to_json_pretty(), old);
    }

    #[test]
    fn a_non_finite_number_is_written_as_null_and_reads_back_as_nan() {
        let mut s = sample();
        s.ap75 = f64::NAN;
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"AP75\":null"), "{json}");
        let back: CocoStats = serde_json::from_str(&json).unwrap();
        assert!(back.ap75.is_nan());
        assert_eq!(back.ap50, s.ap50);
    }
}
