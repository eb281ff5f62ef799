//! The COCO instances JSON format, as written by the COCO team and read by pycocotools:
//! `images`, `annotations` and `categories` (other keys such as `info` and `licenses` are
//! ignored). This module only parses and checks consistency; turning a file into training
//! samples is [`crate::coco`]'s job, and evaluation is [`crate::cocoeval`]'s.
//!
//! Parsing errors name the file and the line and column serde_json stopped at; consistency
//! errors name the file and the offending id.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, width, height]` in pixels, origin at the top-left corner.
    pub bbox: [f64; 4],
    /// The annotation's area (the mask area in real COCO, not the box area); COCOeval
    /// uses it for the small / medium / large split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<f64>,
    /// 1 for a crowd region. Missing is read as 0.
    #[serde(default, deserialize_with = "crowd_flag")]
    pub iscrowd: u8,
}

/// `iscrowd` is 0/1 in COCO but some tools write `true`/`false`.
fn crowd_flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u8, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Int(u8),
        Bool(bool),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Int(v) => v,
        Flag::Bool(b) => b as u8,
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct CocoFile {
    pub images: Vec<CocoImage>,
    #[serde(default)]
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

impl CocoFile {
    /// Reads and checks a COCO instances file.
    pub fn load(path: &Path) -> Result<CocoFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, "read the annotation file", e))?;
        CocoFile::parse(&text, path)
    }

    /// Parses and checks COCO JSON text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<CocoFile> {
        let file: CocoFile = serde_json::from_str(text).map_err(|e| {
            let what = format!(
                "not a valid COCO instances file (line {}, column {})",
                e.line(),
                e.column()
            );
            Error::json(path, what, e)
        })?;
        file.validate(path)?;
        Ok(file)
    }

    /// Checks ids are unique, every annotation names a known image and category, and
    /// boxes are finite with non-negative sizes.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let mut images = HashSet::new();
        for im in &self.images {
            if !images.insert(im.id) {
                return Err(Error::in_file(
                    path,
                    format!("image id {} appears twice", im.id),
                ));
            }
        }
        let mut cats = HashSet::new();
        for c in &self.categories {
            if !cats.insert(c.id) {
                return Err(Error::in_file(
                    path,
                    format!("category id {} appears twice", c.id),
                ));
            }
        }
        let mut anns = HashSet::new();
        for (pos, a) in self.annotations.iter().enumerate() {
            if !anns.insert(a.id) {
                return Err(Error::in_file(
                    path,
                    format!("annotation id {} (entry {pos}) appears twice", a.id),
                ));
            }
            if !images.contains(&a.image_id) {
                return Err(Error::in_file(
                    path,
                    format!(
                        "annotation id {} (entry {pos}) names image id {}, which is not in `images`",
                        a.id, a.image_id
                    ),
                ));
            }
            if !cats.contains(&a.category_id) {
                return Err(Error::in_file(
                    path,
                    format!(
                        "annotation id {} (entry {pos}) names category id {}, which is not in `categories`",
                        a.id, a.category_id
                    ),
                ));
            }
            let [_, _, w, h] = a.bbox;
            if a.bbox.iter().any(|v| !v.is_finite()) || w < 0.0 || h < 0.0 {
                return Err(Error::in_file(
                    path,
                    format!(
                        "annotation id {} (entry {pos}) has an invalid bbox {:?} (need finite x, y and w, h >= 0)",
                        a.id, a.bbox
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Category ids in ascending order: label `k` (0-based, contiguous) is `sorted_category_ids()[k]`.
    pub fn sorted_category_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.categories.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Category name by id.
    pub fn category_names(&self) -> HashMap<i64, String> {
        self.categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"images":[{"id":1,"file_name":"a.png","width":10,"height":8}],
        "annotations":[{"id":5,"image_id":1,"category_id":3,"bbox":[1,2,3,4],"area":12,"iscrowd":0}],
        "categories":[{"id":3,"name":"cat"}]}"#;

    #[test]
    fn parses_a_minimal_file() {
        let f = CocoFile::parse(OK, Path::new("x.json")).unwrap();
        assert_eq!(f.annotations[0].bbox, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(f.annotations[0].area, Some(12.0));
    }

    #[test]
    fn errors_name_the_file_and_the_entry() {
        let e = CocoFile::parse("{\"images\": [", Path::new("bad.json")).unwrap_err();
        assert!(e.chain().starts_with("bad.json: not a valid COCO"), "{e}");
        let unknown_image = OK.replace("\"image_id\":1", "\"image_id\":9");
        let e = CocoFile::parse(&unknown_image, Path::new("f.json")).unwrap_err();
        assert!(
            e.chain().contains("annotation id 5") && e.chain().contains("image id 9"),
            "{e}"
        );
        let unknown_cat = OK.replace("\"category_id\":3", "\"category_id\":4");
        let e = CocoFile::parse(&unknown_cat, Path::new("f.json")).unwrap_err();
        assert!(e.chain().contains("category id 4"), "{e}");
        let wrong_type = OK.replace("\"width\":10", "\"width\":\"ten\"");
        let e = CocoFile::parse(&wrong_type, Path::new("f.json")).unwrap_err();
        assert!(e.chain().contains("line 1"), "{e}");
    }
}
