//! A dataset's fingerprint: enough to notice, when a run is resumed, that the data it
//! trains on is no longer what it was (an annotation file edited or replaced, images
//! added or removed), without storing the dataset in the checkpoint.
//!
//! It holds where the data is (the annotation file and images folder as absolute paths,
//! or the synthetic dataset's parameters), the number of images and annotations, and a
//! 64-bit FNV-1a hash of everything training reads from the annotation file: each
//! image's id, file name, width and height, each annotation's id, image, category, box
//! and crowd flag, and each category's id and name, in file order. A file rewritten with
//! other whitespace or key order keeps its fingerprint; any change of content changes it.

use serde::{Deserialize, Serialize};

use crate::coco_format::CocoFile;

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Where the data is.
    pub source: String,
    pub images: usize,
    pub annotations: usize,
    /// FNV-1a 64 of the content, 16 hexadecimal digits.
    pub hash: String,
}

impl Fingerprint {
    /// The fingerprint of `coco`, found at `source`.
    pub fn of(source: String, coco: &CocoFile) -> Fingerprint {
        let mut h = Fnv::new();
        for im in &coco.images {
            h.i64(im.id);
            h.str(&im.file_name);
            h.u64(im.width as u64);
            h.u64(im.height as u64);
        }
        h.u64(u64::MAX);
        for a in &coco.annotations {
            h.i64(a.id);
            h.i64(a.image_id);
            h.i64(a.category_id);
            for v in a.bbox {
                h.u64(v.to_bits());
            }
            h.u64(a.iscrowd as u64);
        }
        h.u64(u64::MAX);
        for c in &coco.categories {
            h.i64(c.id);
            h.str(&c.name);
        }
        Fingerprint {
            source,
            images: coco.images.len(),
            annotations: coco.annotations.len(),
            hash: format!("{:016x}", h.0),
        }
    }

    /// What differs from `earlier`, one phrase per difference ("2 images instead of 4");
    /// empty when they are the same.
    pub fn differences(&self, earlier: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.source != earlier.source {
            out.push(format!(
                "it is {} instead of {}",
                self.source, earlier.source
            ));
        }
        if self.images != earlier.images {
            out.push(format!(
                "{} images instead of {}",
                self.images, earlier.images
            ));
        }
        if self.annotations != earlier.annotations {
            out.push(format!(
                "{} annotations instead of {}",
                self.annotations, earlier.annotations
            ));
        }
        if self.hash != earlier.hash && out.len() <= usize::from(self.source != earlier.source) {
            out.push(format!(
                "its content changed (hash {} instead of {})",
                self.hash, earlier.hash
            ));
        }
        out
    }
}

/// FNV-1a, 64 bits, over a stream of bytes: h = 0xcbf29ce484222325, then for each byte b,
/// h = (h XOR b) · 0x100000001b3 mod 2^64. A few lines, and stable across Rust releases
/// and platforms (std's `DefaultHasher` is not), so a hash written today still matches
/// tomorrow: the dataset fingerprint here, the ranks' start-up check of a distributed
/// run, and the configuration hash of an ablation record all use it.
#[derive(Clone, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

impl Fnv {
    /// The offset basis: the hash of no bytes.
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// `v` as 8 little-endian bytes.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// `v` as 8 little-endian bytes.
    pub fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    /// The length, then the bytes (so "ab","c" and "a","bc" differ).
    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FILE: &str = r#"{"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6},
        {"id": 2, "file_name": "b.png", "width": 8, "height": 6}],
      "annotations": [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 1, 3, 2]}],
      "categories": [{"id": 7, "name": "thing"}]}"#;

    fn fp(text: &str) -> Fingerprint {
        Fingerprint::of("x".into(), &CocoFile::parse(text, Path::new("x")).unwrap())
    }

    #[test]
    fn layout_does_not_count_content_does() {
        let a = fp(FILE);
        // FNV-1a of the empty input is its offset basis.
        assert_eq!(format!("{:016x}", Fnv::new().0), "cbf29ce484222325");
        assert_eq!(fp(&FILE.replace(", ", ",\n  ")), a);
        let renamed = fp(&FILE.replace("b.png", "c.png"));
        assert_eq!(renamed.images, 2);
        assert_ne!(renamed.hash, a.hash);
        let d = renamed.differences(&a);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("content changed"), "{d:?}");
        let fewer = fp(&FILE.replace(
            r#",
        {"id": 2, "file_name": "b.png", "width": 8, "height": 6}"#,
            "",
        ));
        assert_eq!(fewer.differences(&a), vec!["1 images instead of 2"]);
        let moved_box = fp(&FILE.replace("[1, 1, 3, 2]", "[1, 1, 3, 2.5]"));
        assert_ne!(moved_box.hash, a.hash);
        assert!(a.differences(&a).is_empty());
    }
}
