//! COCO results files: the JSON list of detections that pycocotools' `loadRes` reads and
//! that focal writes after inference,
//!
//! ```json
//! [{"image_id": 139, "category_id": 1, "bbox": [x, y, w, h], "score": 0.93}, ...]
//! ```
//!
//! Boxes are `[x, y, width, height]` in pixels of the original image; `category_id` is the
//! COCO category id (not focal's contiguous label). Other keys in an entry (`id`, `area`,
//! `segmentation`) are accepted and ignored, as pycocotools recomputes them.
//!
//! Reading is strict: every problem is an error naming the file and the entry (0-based
//! position in the list): malformed JSON (with line and column), an entry that is not an
//! object, a missing field or one of the wrong type, a bbox that is not four numbers, and
//! non-finite numbers. JSON has no NaN, but Python's `json.dump` writes `NaN`, `Infinity`
//! and `-Infinity` for non-finite floats, so those tokens are recognised and reported as
//! such. An empty list is a valid (if unpromising) results file.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::coco_format::CocoFile;
use crate::error::{Error, Result};

/// One detection in COCO results form.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, width, height]`, origin at the top-left corner of the image.
    pub bbox: [f64; 4],
    pub score: f64,
}

/// Reads a COCO results file. Does not check image ids: see [`load_results_for`].
pub fn load_results(path: &Path) -> Result<Vec<Detection>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "read the results file", e))?;
    parse_results(&text, path)
}

/// Reads a COCO results file and checks that every detection names an image of `gt`
/// (pycocotools asserts the same in `loadRes`).
pub fn load_results_for(path: &Path, gt: &CocoFile) -> Result<Vec<Detection>> {
    let dets = load_results(path)?;
    check_image_ids(&dets, gt, path)?;
    Ok(dets)
}

/// Parses COCO results JSON text; `path` is only used in error messages.
pub fn parse_results(text: &str, path: &Path) -> Result<Vec<Detection>> {
    // Fast path: a well-formed file deserialises straight into detections. Valid JSON
    // cannot hold NaN or infinities (serde_json rejects overflowing literals), so the
    // values are finite once this succeeds.
    if let Ok(dets) = serde_json::from_str::<Vec<Detection>>(text) {
        return Ok(dets);
    }
    // Slow path, only for broken files: find and describe the first problem.
    Err(diagnose(text, path))
}

/// Checks every detection names an image id present in the ground truth; the error names
/// the first offending entry and says how many there are.
pub fn check_image_ids(dets: &[Detection], gt: &CocoFile, path: &Path) -> Result<()> {
    let images: HashSet<i64> = gt.images.iter().map(|im| im.id).collect();
    let mut bad = dets
        .iter()
        .enumerate()
        .filter(|(_, d)| !images.contains(&d.image_id));
    if let Some((pos, d)) = bad.next() {
        let others = bad.count();
        let more = if others > 0 {
            format!(" ({others} more entries name unknown images)")
        } else {
            String::new()
        };
        return Err(Error::in_file(
            path,
            format!(
                "entry {pos} names image id {}, which is not in the ground truth ({} images){more}",
                d.image_id,
                images.len()
            ),
        ));
    }
    Ok(())
}

/// Writes detections as a COCO results file, one detection per line, atomically (a
/// temporary file in the same directory, then a rename). Non-finite values are refused:
/// they have no JSON form.
pub fn write_results(path: &Path, dets: &[Detection]) -> Result<()> {
    let mut text = String::with_capacity(80 * dets.len() + 4);
    text.push('[');
    for (pos, d) in dets.iter().enumerate() {
        if !d.score.is_finite() || d.bbox.iter().any(|v| !v.is_finite()) {
            return Err(Error::in_file(
                path,
                format!(
                    "cannot write detection {pos}: non-finite value (bbox {:?}, score {})",
                    d.bbox, d.score
                ),
            ));
        }
        text.push_str(if pos == 0 { "\n" } else { ",\n" });
        text.push_str(&serde_json::to_string(d).expect("a detection always serialises"));
    }
    text.push_str("\n]\n");
    crate::atomic::write_atomic(path, text.as_bytes())
}

// ---------------------------------------------------------------------------------------
// Diagnosing a broken file
// ---------------------------------------------------------------------------------------

/// Describes the first problem of a results file the fast path refused.
fn diagnose(text: &str, path: &Path) -> Error {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return syntax_error(text, path, e),
    };
    let entries = match value {
        Value::Array(entries) => entries,
        other => {
            return Error::in_file(
                path,
                format!(
                    "a COCO results file is a JSON list of detections, but this one holds {}",
                    kind(&other)
                ),
            )
        }
    };
    for (pos, entry) in entries.iter().enumerate() {
        if let Err(problem) = check_entry(entry) {
            return Error::in_file(path, format!("entry {pos}: {problem}"));
        }
    }
    // Every entry checked out, so the typed parse should have succeeded; report its error.
    match serde_json::from_str::<Vec<Detection>>(text) {
        Err(e) => Error::json(path, "not a valid COCO results file", e),
        Ok(_) => Error::in_file(path, "not a valid COCO results file"),
    }
}

/// Checks one entry's fields; the error is a phrase naming the field.
fn check_entry(entry: &Value) -> std::result::Result<(), String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("expected a detection object, found {}", kind(entry)))?;
    let field = |name: &str| {
        obj.get(name)
            .ok_or_else(|| format!("missing field `{name}`"))
    };
    for name in ["image_id", "category_id"] {
        let v = field(name)?;
        if v.as_i64().is_none() {
            return Err(format!("`{name}` must be an integer, found {}", kind(v)));
        }
    }
    let bbox = field("bbox")?;
    let coords = bbox
        .as_array()
        .filter(|a| a.len() == 4 && a.iter().all(Value::is_number))
        .ok_or_else(|| format!("`bbox` must be a list of 4 numbers [x, y, w, h], found {bbox}"))?;
    debug_assert_eq!(coords.len(), 4);
    let score = field("score")?;
    if !score.is_number() {
        return Err(format!("`score` must be a number, found {}", kind(score)));
    }
    Ok(())
}

/// What a JSON value is, for messages ("a string \"7\"", "an object", ...).
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A JSON syntax error, located by line and column and, when it lies inside the top-level
/// list, by entry and field. Python's non-finite tokens get a message of their own.
fn syntax_error(text: &str, path: &Path, e: serde_json::Error) -> Error {
    let offset = byte_offset(text, e.line(), e.column());
    let place = locate(text, offset);
    let mut at = String::new();
    if let Some(entry) = place.entry {
        at = format!("entry {entry}");
        if let Some(key) = &place.key {
            at.push_str(&format!(", field `{key}`"));
        }
        at.push_str(": ");
    }
    if let Some(token) = non_finite_token(text, offset) {
        return Error::in_file(
            path,
            format!(
                "{at}the value is {token} (line {}, column {}); detections must hold finite \
                 numbers (JSON has no {token}; Python's json module writes it for a \
                 non-finite float)",
                e.line(),
                e.column()
            ),
        );
    }
    let what = format!(
        "{at}malformed JSON at line {}, column {}",
        e.line(),
        e.column()
    );
    Error::json(path, what, e)
}

/// The byte offset of serde_json's 1-based (line, column) position; column 0 means the
/// error is at the end of the line.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    (start + column.saturating_sub(1)).min(text.len())
}

/// `NaN`, `Infinity` or `-Infinity` when the text around `offset` is one of those tokens.
/// serde_json stops on the token's first or second character, so a few bytes back are
/// searched.
fn non_finite_token(text: &str, offset: usize) -> Option<&'static str> {
    let bytes = text.as_bytes();
    for back in (0..3).rev() {
        let Some(start) = offset.checked_sub(back) else {
            break;
        };
        for token in ["-Infinity", "Infinity", "NaN"] {
            if bytes[start..].starts_with(token.as_bytes()) {
                return Some(token);
            }
        }
    }
    None
}

/// Where a byte offset lies in the top-level list: which entry and which key of that entry.
struct Place {
    entry: Option<usize>,
    key: Option<String>,
}

/// Scans the JSON text up to `offset`, tracking strings, nesting depth, commas between
/// top-level entries and the last key written inside an entry.
fn locate(text: &str, offset: usize) -> Place {
    let bytes = &text.as_bytes()[..offset.min(text.len())];
    let mut depth = 0usize;
    let mut top_is_list = false;
    let mut entry = 0usize;
    let mut key: Option<String> = None;
    let mut last_string: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                last_string = Some((start, i.min(bytes.len())));
            }
            b':' if depth == 2 => {
                key = last_string.map(|(s, e)| String::from_utf8_lossy(&bytes[s..e]).into());
            }
            b'[' | b'{' => {
                if depth == 0 {
                    top_is_list = bytes[i] == b'[';
                } else if depth == 1 {
                    key = None;
                }
                depth += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                entry += 1;
                key = None;
            }
            _ => {}
        }
        i += 1;
    }
    if top_is_list && depth >= 1 {
        Place {
            entry: Some(entry),
            key: if depth >= 2 { key } else { None },
        }
    } else {
        Place {
            entry: None,
            key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_results(text, Path::new("dt.json"))
            .unwrap_err()
            .chain()
            .to_string()
    }

    #[test]
    fn parses_detections_and_ignores_extra_keys() {
        let text = r#"[{"image_id": 3, "category_id": 1, "bbox": [1, 2.5, 3, 4], "score": 0.5, "id": 9},
                       {"image_id": 4, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1}]"#;
        let dets = parse_results(text, Path::new("dt.json")).unwrap();
        assert_eq!(
            dets,
            vec![
                Detection {
                    image_id: 3,
                    category_id: 1,
                    bbox: [1.0, 2.5, 3.0, 4.0],
                    score: 0.5
                },
                Detection {
                    image_id: 4,
                    category_id: 2,
                    bbox: [0.0, 0.0, 1.0, 1.0],
                    score: 1.0
                },
            ]
        );
        assert_eq!(parse_results(" [ ] ", Path::new("e.json")).unwrap(), vec![]);
    }

    #[test]
    fn malformed_json_names_file_line_column_and_entry() {
        let e = err("[{\"image_id\": 1, \"category_id\": 1,\n \"bbox\": [0,0,1,1], \"score\": 0.5},\n {\"image_id\": 2 \"x\"}]");
        assert!(e.starts_with("dt.json: entry 1"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("");
        assert!(e.starts_with("dt.json: malformed JSON at line 1"), "{e}");
    }

    #[test]
    fn python_nan_and_infinity_are_named() {
        let good = r#"{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}"#;
        let e = err(&format!(
            "[{good}, {good},\n {{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": NaN}}]"
        ));
        assert!(
            e.starts_with("dt.json: entry 2, field `score`: the value is NaN (line 2"),
            "{e}"
        );
        let e = err(&format!(
            "[{good}, {{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, -Infinity, 1, 1], \"score\": 0.5}}]"
        ));
        assert!(
            e.starts_with("dt.json: entry 1, field `bbox`: the value is -Infinity"),
            "{e}"
        );
        let e = err("[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [Infinity, 0, 1, 1], \"score\": 0.5}]");
        assert!(
            e.starts_with("dt.json: entry 0, field `bbox`: the value is Infinity"),
            "{e}"
        );
        // A literal too large for f64 is infinite too; serde_json refuses it.
        let e = err(
            "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1e400}]",
        );
        assert!(
            e.starts_with("dt.json: entry 0, field `score`: malformed JSON"),
            "{e}"
        );
    }

    #[test]
    fn malformed_entries_are_named() {
        let cases = [
            (
                r#"{"detections": []}"#,
                "a COCO results file is a JSON list of detections, but this one holds an object",
            ),
            (
                r#"[{"image_id": 1, "category_id": 1, "bbox": [0,0,1,1], "score": 1}, 7]"#,
                "entry 1: expected a detection object, found the number 7",
            ),
            (
                r#"[{"category_id": 1, "bbox": [0,0,1,1], "score": 1}]"#,
                "entry 0: missing field `image_id`",
            ),
            (
                r#"[{"image_id": "a", "category_id": 1, "bbox": [0,0,1,1], "score": 1}]"#,
                "entry 0: `image_id` must be an integer, found the string \"a\"",
            ),
            (
                r#"[{"image_id": 1.5, "category_id": 1, "bbox": [0,0,1,1], "score": 1}]"#,
                "entry 0: `image_id` must be an integer, found the number 1.5",
            ),
            (
                r#"[{"image_id": 1, "category_id": 1, "bbox": [0,0,1], "score": 1}]"#,
                "entry 0: `bbox` must be a list of 4 numbers [x, y, w, h], found [0,0,1]",
            ),
            (
                r#"[{"image_id": 1, "category_id": 1, "bbox": [0,0,1,"1"], "score": 1}]"#,
                "entry 0: `bbox` must be a list of 4 numbers",
            ),
            (
                r#"[{"image_id": 1, "category_id": 1, "bbox": [0,0,1,1], "score": null}]"#,
                "entry 0: `score` must be a number, found null",
            ),
            (
                r#"[{"image_id": 1, "category_id": 1, "bbox": [0,0,1,1]}]"#,
                "entry 0: missing field `score`",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(
                e.starts_with(&format!("dt.json: {want}")),
                "{text}\n  gave {e}\n  want {want}"
            );
        }
    }

    #[test]
    fn unknown_images_are_named() {
        let gt = CocoFile::parse(
            r#"{"images":[{"id":1,"file_name":"a.png","width":10,"height":8}],"annotations":[],"categories":[]}"#,
            Path::new("gt.json"),
        )
        .unwrap();
        let det = |image_id| Detection {
            image_id,
            category_id: 1,
            bbox: [0.0, 0.0, 1.0, 1.0],
            score: 0.5,
        };
        assert!(check_image_ids(&[det(1)], &gt, Path::new("dt.json")).is_ok());
        let e = check_image_ids(&[det(1), det(5), det(6)], &gt, Path::new("dt.json")).unwrap_err();
        assert_eq!(
            e.chain(),
            "dt.json: entry 1 names image id 5, which is not in the ground truth (1 images) (1 more entries name unknown images)"
        );
    }

    #[test]
    fn write_then_read_round_trips_exactly() {
        let dir = std::env::temp_dir().join(format!("focal-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dets.json");
        let dets = vec![
            Detection {
                image_id: 7,
                category_id: 90,
                bbox: [0.1, 1e-7, 640.0 / 3.0, 5.0],
                score: 0.05000000000000001,
            },
            Detection {
                image_id: -2,
                category_id: 1,
                bbox: [1.0, 2.0, 3.0, 4.0],
                score: 1.0,
            },
        ];
        write_results(&path, &dets).unwrap();
        assert_eq!(load_results(&path).unwrap(), dets);
        write_results(&path, &[]).unwrap();
        assert_eq!(load_results(&path).unwrap(), vec![]);
        let mut bad = dets.clone();
        bad[1].score = f64::NAN;
        let e = write_results(&path, &bad).unwrap_err();
        assert!(e.chain().contains("cannot write detection 1"), "{e}");
        // The failed write left the previous (empty) file intact and no temporary behind.
        assert_eq!(load_results(&path).unwrap(), vec![]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
