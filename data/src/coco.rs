//! A COCO detection dataset for training and evaluation: an instances annotation file plus
//! the folder its `file_name`s are relative to.
//!
//! The rules (docs/design-choices.md, "Labels" and "Training boxes"):
//! - Labels are contiguous `0..K` in ascending category-id order; [`Dataset::categories`]
//!   maps them back to COCO ids.
//! - Boxes go from COCO `[x, y, w, h]` to `[x1, y1, x2, y2]` with `x2 = x + w` (no +1), are
//!   clipped to the image, and are dropped when their width or height is below 1 pixel
//!   after clipping. The number dropped is reported once, when the dataset is opened.
//! - Crowd regions (`iscrowd = 1`) are not training targets; they stay in
//!   [`Dataset::ground_truth`], where COCOeval uses them as ignore regions.
//! - Images without any box stay in: they are pure negatives for training.
//! - A `file_name` must stay inside the images folder: absolute paths and `..` are refused
//!   when the file is opened, and so is a symbolic link that leads outside the folder
//!   (links that stay inside are followed).
//! - An image may have at most [`MAX_BOXES_PER_IMAGE`] training boxes: matching anchors
//!   costs time in proportion to boxes × anchors, and no real dataset comes near.
//! - [`Dataset::check_images`] finds every missing, unreadable, truncated or mislabelled
//!   image at once, before training ([`crate::check`]); an image that still fails when it
//!   is loaded (a corrupt JPEG whose end is intact) is an error naming the image file and
//!   the annotation file, unless [`CocoOptions::skip_bad_images`] is set: then the image
//!   is reported once on stderr, counted ([`CocoDataset::skipped_images`]) and left out.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::check::ImageProblem;
use crate::coco_format::CocoFile;
use crate::dataset::{Category, Dataset, Sample};
use crate::decode_budget::DecodeBudget;
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::image_io::{decode, ends_completely, read_header, read_image_file, read_rgb_sized};

/// The most training boxes one image may have (crowd regions not counted). Matching
/// costs time in proportion to boxes × anchors; COCO's busiest image has under 100.
pub const MAX_BOXES_PER_IMAGE: usize = 1000;

/// How to open a COCO dataset.
#[derive(Clone, Debug, Default)]
pub struct CocoOptions {
    /// Leave out images that are missing or cannot be decoded (or whose size differs from
    /// the annotation file) instead of failing. Default: off, the first one is an error.
    pub skip_bad_images: bool,
}

/// One image's training view: where its file is and its targets in its own pixels.
#[derive(Clone, Debug)]
struct Entry {
    id: i64,
    path: PathBuf,
    width: u32,
    height: u32,
    boxes: Vec<[f32; 4]>,
    labels: Vec<usize>,
}

/// A COCO annotation file with its images folder. See the module documentation.
#[derive(Debug)]
pub struct CocoDataset {
    annotation_file: PathBuf,
    images_dir: PathBuf,
    /// The images folder with every symbolic link resolved (`None` when it does not
    /// exist): an image's real path must lie under it.
    images_root: Option<PathBuf>,
    coco: CocoFile,
    categories: Vec<Category>,
    entries: Vec<Entry>,
    crowd_regions: usize,
    dropped_boxes: usize,
    options: CocoOptions,
    /// Images skipped so far (index -> reason); only ever filled with `skip_bad_images`.
    skipped: Mutex<BTreeMap<usize, String>>,
}

impl CocoDataset {
    /// Opens `annotation_file` with images under `images_dir`, failing on the first bad
    /// image.
    pub fn open(annotation_file: &Path, images_dir: &Path) -> Result<CocoDataset> {
        CocoDataset::open_with(annotation_file, images_dir, CocoOptions::default())
    }

    /// Opens split `split` of a COCO folder laid out as the COCO team (and `focal synth`)
    /// lay it out: `root/annotations/instances_{split}.json` and `root/{split}/`.
    /// For example `open_split(root, "val2017", CocoOptions::default())`.
    pub fn open_split(root: &Path, split: &str, options: CocoOptions) -> Result<CocoDataset> {
        let ann = root
            .join("annotations")
            .join(format!("instances_{split}.json"));
        CocoDataset::open_with(&ann, &root.join(split), options)
    }

    /// Opens `annotation_file` with images under `images_dir`.
    pub fn open_with(
        annotation_file: &Path,
        images_dir: &Path,
        options: CocoOptions,
    ) -> Result<CocoDataset> {
        let coco = CocoFile::load(annotation_file)?;
        CocoDataset::from_coco(coco, annotation_file, images_dir, options)
    }

    /// Builds the dataset from an already parsed (and validated) file; `annotation_file`
    /// is used in messages.
    pub fn from_coco(
        coco: CocoFile,
        annotation_file: &Path,
        images_dir: &Path,
        options: CocoOptions,
    ) -> Result<CocoDataset> {
        let ann_name = annotation_file.display();
        // Labels: position in ascending category-id order.
        let mut categories: Vec<Category> = coco
            .categories
            .iter()
            .map(|c| Category {
                id: c.id,
                name: c.name.clone(),
            })
            .collect();
        categories.sort_by_key(|c| c.id);
        let label_of: HashMap<i64, usize> = categories
            .iter()
            .enumerate()
            .map(|(label, c)| (c.id, label))
            .collect();

        let mut entries = Vec::with_capacity(coco.images.len());
        let mut index_of = HashMap::with_capacity(coco.images.len());
        for im in &coco.images {
            if im.width == 0 || im.height == 0 {
                return Err(Error::in_file(
                    annotation_file,
                    format!(
                        "image id {} ({}) has size {}x{}",
                        im.id, im.file_name, im.width, im.height
                    ),
                ));
            }
            let path = resolve_file_name(images_dir, &im.file_name).map_err(|why| {
                Error::in_file(
                    annotation_file,
                    format!("image id {}: file_name {:?} {why}", im.id, im.file_name),
                )
            })?;
            index_of.insert(im.id, entries.len());
            entries.push(Entry {
                id: im.id,
                path,
                width: im.width,
                height: im.height,
                boxes: Vec::new(),
                labels: Vec::new(),
            });
        }

        // Training targets, in annotation-file order within each image.
        let mut crowd_regions = 0;
        let mut dropped_boxes = 0;
        for a in &coco.annotations {
            if a.iscrowd != 0 {
                crowd_regions += 1;
                continue;
            }
            // `validate` guaranteed that both ids are known.
            let e = &mut entries[index_of[&a.image_id]];
            match clip_xywh(a.bbox, e.width, e.height) {
                Some(b) => {
                    e.boxes.push(b);
                    e.labels.push(label_of[&a.category_id]);
                }
                None => dropped_boxes += 1,
            }
        }
        if dropped_boxes > 0 {
            eprintln!(
                "warning: {ann_name}: dropped {dropped_boxes} box(es) narrower or shorter than \
                 1 pixel after clipping to the image"
            );
        }
        if let Some(e) = entries.iter().find(|e| e.boxes.len() > MAX_BOXES_PER_IMAGE) {
            return Err(Error::in_file(
                annotation_file,
                format!(
                    "image id {} has {} boxes, more than the {MAX_BOXES_PER_IMAGE} per image \
                     focal trains on (matching anchors to that many boxes would take too \
                     long)",
                    e.id,
                    e.boxes.len()
                ),
            ));
        }

        Ok(CocoDataset {
            annotation_file: annotation_file.to_path_buf(),
            images_dir: images_dir.to_path_buf(),
            images_root: std::fs::canonicalize(images_dir).ok(),
            coco,
            categories,
            entries,
            crowd_regions,
            dropped_boxes,
            options,
            skipped: Mutex::new(BTreeMap::new()),
        })
    }

    /// The annotation file this dataset was read from.
    pub fn annotation_file(&self) -> &Path {
        &self.annotation_file
    }

    /// The parsed annotation file, as read (crowd regions and all images included).
    pub fn coco(&self) -> &CocoFile {
        &self.coco
    }

    /// The image file of image `index`.
    pub fn image_path(&self, index: usize) -> &Path {
        &self.entries[index].path
    }

    /// Number of training boxes (crowd and dropped boxes excluded).
    pub fn num_boxes(&self) -> usize {
        self.entries.iter().map(|e| e.boxes.len()).sum()
    }

    /// Number of crowd regions (kept for evaluation only).
    pub fn num_crowd_regions(&self) -> usize {
        self.crowd_regions
    }

    /// Number of boxes dropped because they were under 1 pixel wide or high after clipping.
    pub fn num_dropped_boxes(&self) -> usize {
        self.dropped_boxes
    }

    /// The images skipped so far as `(index, reason)`, in index order (empty unless
    /// [`CocoOptions::skip_bad_images`] is set).
    pub fn skipped_images(&self) -> Vec<(usize, String)> {
        let skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        skipped.iter().map(|(&i, r)| (i, r.clone())).collect()
    }

    /// Adds "image id N listed in FILE" to an error about image `index`.
    fn image_error(&self, index: usize, err: Error) -> Error {
        Error::InImage {
            id: self.entries[index].id,
            annotation_file: self.annotation_file.clone(),
            source: Box::new(err),
        }
    }

    /// With `skip_bad_images`, records (and reports, once) that image `index` is left out;
    /// otherwise returns the error.
    fn fail_or_skip(&self, index: usize, err: Error) -> Result<()> {
        if !self.options.skip_bad_images {
            return Err(err);
        }
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::btree_map::Entry::Vacant(slot) = skipped.entry(index) {
            let reason = err.chain();
            eprintln!("warning: skipping an image: {reason}");
            slot.insert(reason);
        }
        Ok(())
    }

    /// The image's file, if it is a regular file that lies inside the images folder once
    /// symbolic links are resolved.
    fn checked_path(&self, index: usize) -> Result<&Path> {
        let path = &self.entries[index].path;
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(Error::in_file(path, "is a folder, not an image file"));
            }
            Ok(m) if !m.is_file() => {
                return Err(Error::in_file(
                    path,
                    "is not a regular file (a device, pipe or socket)",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::in_file(path, "cannot read the image: no such file"));
            }
            Err(e) => return Err(Error::io(path, "read the image", e)),
        }
        if let Some(root) = &self.images_root {
            let real =
                std::fs::canonicalize(path).map_err(|e| Error::io(path, "read the image", e))?;
            if !real.starts_with(root) {
                return Err(Error::in_file(
                    path,
                    format!(
                        "is a symbolic link that leads outside the images folder {} (to {}); \
                         file names must stay inside it",
                        self.images_dir.display(),
                        real.display()
                    ),
                ));
            }
        }
        Ok(path)
    }

    /// Checks image `index` as [`Dataset::load`] will read it, decoding its pixels only
    /// when the file does not end as a complete file does (see [`crate::check`]).
    fn check_image(&self, index: usize) -> Result<()> {
        let e = &self.entries[index];
        let path = self.checked_path(index)?;
        let bytes = read_image_file(path)?;
        let header = read_header(&bytes, path)?;
        header.check_limit(path)?;
        if (header.width, header.height) != (e.width, e.height) {
            return Err(Error::in_file(
                path,
                format!(
                    "the image is {}x{} but the annotation file gives {}x{}",
                    header.width, header.height, e.width, e.height
                ),
            ));
        }
        if !ends_completely(&bytes, header.format) {
            let _pixels = DecodeBudget::global().reserve(header.decode_bytes());
            decode(&bytes, path)?;
        }
        Ok(())
    }

    fn is_skipped(&self, index: usize) -> bool {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&index)
    }
}

impl Dataset for CocoDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn load(&self, index: usize) -> Result<Option<Sample>> {
        if self.is_skipped(index) {
            return Ok(None);
        }
        let e = &self.entries[index];
        let image = self
            .checked_path(index)
            .and_then(|path| read_rgb_sized(path, e.width, e.height));
        match image {
            Ok(image) => Ok(Some(Sample {
                image,
                boxes: e.boxes.clone(),
                labels: e.labels.clone(),
                image_id: e.id,
            })),
            Err(err) => {
                self.fail_or_skip(index, self.image_error(index, err))?;
                Ok(None)
            }
        }
    }

    fn targets(&self, index: usize) -> Result<Option<crate::dataset::Targets>> {
        if self.is_skipped(index) {
            return Ok(None);
        }
        let e = &self.entries[index];
        Ok(Some((e.boxes.clone(), e.labels.clone())))
    }

    fn categories(&self) -> &[Category] {
        &self.categories
    }

    fn image_id(&self, index: usize) -> i64 {
        self.entries[index].id
    }

    fn image_size(&self, index: usize) -> (u32, u32) {
        (self.entries[index].width, self.entries[index].height)
    }

    /// The annotation file as read, less the images skipped so far (call it after the
    /// evaluation pass so that images found unreadable during it are left out too).
    fn ground_truth(&self) -> CocoFile {
        let skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        if skipped.is_empty() {
            return self.coco.clone();
        }
        let gone: std::collections::HashSet<i64> =
            skipped.keys().map(|&i| self.entries[i].id).collect();
        let mut gt = self.coco.clone();
        gt.images.retain(|im| !gone.contains(&im.id));
        gt.annotations.retain(|a| !gone.contains(&a.image_id));
        gt
    }

    fn check_images(&self, tick: &(dyn Fn() + Sync)) -> Vec<ImageProblem> {
        (0..self.entries.len())
            .into_par_iter()
            .filter_map(|i| {
                let result = self.check_image(i);
                tick();
                result.err().map(|err| ImageProblem {
                    index: i,
                    image_id: self.entries[i].id,
                    path: self.entries[i].path.clone(),
                    problem: err.chain(),
                })
            })
            .collect()
    }

    fn leave_out(&self, problems: &[ImageProblem]) {
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        for p in problems {
            skipped.insert(p.index, format!("{p}"));
        }
    }

    /// The absolute paths of the annotation file and images folder, and the annotation
    /// file's content (all of it, images left out or not).
    fn fingerprint(&self) -> Fingerprint {
        let abs = |p: &Path| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        Fingerprint::of(
            format!(
                "{} (images in {})",
                abs(&self.annotation_file),
                abs(&self.images_dir)
            ),
            &self.coco,
        )
    }

    fn describe(&self) -> String {
        let skipped = self.skipped_images().len();
        let mut s = format!(
            "COCO {}: {} images, {} categories, {} training boxes ({} crowd regions for \
             evaluation only, {} boxes dropped as under 1 px after clipping)",
            self.annotation_file.display(),
            self.entries.len(),
            self.categories.len(),
            self.num_boxes(),
            self.crowd_regions,
            self.dropped_boxes,
        );
        if skipped > 0 {
            s.push_str(&format!(", {skipped} unusable images left out"));
        }
        s
    }
}

/// `images_dir/file_name`, refusing names that could leave the folder: absolute paths,
/// drive prefixes and `..` components. The error is the reason, for the caller's message.
pub fn resolve_file_name(
    images_dir: &Path,
    file_name: &str,
) -> std::result::Result<PathBuf, String> {
    if file_name.is_empty() {
        return Err("is empty".into());
    }
    let rel = Path::new(file_name);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err("contains `..`; file names must stay inside the images folder".into())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(
                    "is an absolute path; file names must be relative to the images folder".into(),
                )
            }
        }
    }
    Ok(images_dir.join(rel))
}

/// COCO `[x, y, w, h]` to `[x1, y1, x2, y2]` (x2 = x + w), clipped to a `width` x `height`
/// image; `None` when the clipped box is under 1 pixel wide or high.
pub fn clip_xywh(bbox: [f64; 4], width: u32, height: u32) -> Option<[f32; 4]> {
    let [x, y, w, h] = bbox;
    let (wf, hf) = (width as f64, height as f64);
    let x1 = x.clamp(0.0, wf);
    let y1 = y.clamp(0.0, hf);
    let x2 = (x + w).clamp(0.0, wf);
    let y2 = (y + h).clamp(0.0, hf);
    if x2 - x1 < 1.0 || y2 - y1 < 1.0 {
        return None;
    }
    Some([x1 as f32, y1 as f32, x2 as f32, y2 as f32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_and_dropping() {
        // Inside: unchanged, x2 = x + w.
        assert_eq!(
            clip_xywh([1.0, 2.0, 3.0, 4.0], 10, 10),
            Some([1.0, 2.0, 4.0, 6.0])
        );
        // Sticks out on every side: clipped to [0, 10] x [0, 8].
        assert_eq!(
            clip_xywh([-5.0, -1.0, 20.0, 20.0], 10, 8),
            Some([0.0, 0.0, 10.0, 8.0])
        );
        // 0.5 px wide: dropped. Exactly 1 px after clipping: kept.
        assert_eq!(clip_xywh([2.0, 2.0, 0.5, 4.0], 10, 10), None);
        assert_eq!(
            clip_xywh([9.0, 2.0, 5.0, 4.0], 10, 10),
            Some([9.0, 2.0, 10.0, 6.0])
        );
        // Entirely outside: dropped.
        assert_eq!(clip_xywh([12.0, 2.0, 5.0, 4.0], 10, 10), None);
    }

    #[test]
    fn file_names_must_stay_inside() {
        let dir = Path::new("/data/images");
        assert_eq!(
            resolve_file_name(dir, "a/b.jpg").unwrap(),
            PathBuf::from("/data/images/a/b.jpg")
        );
        assert!(resolve_file_name(dir, "./b.jpg").is_ok());
        assert!(resolve_file_name(dir, "../b.jpg")
            .unwrap_err()
            .contains(".."));
        assert!(resolve_file_name(dir, "a/../../b.jpg")
            .unwrap_err()
            .contains(".."));
        assert!(resolve_file_name(dir, "/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(resolve_file_name(dir, "").is_err());
    }
}
