//! "shapes": a synthetic detection dataset generated from a seed, so that focal can be
//! trained and evaluated end to end without downloading anything.
//!
//! Each image (default 256 x 256) has a textured, noisy background and 0 to 6 objects of
//! five classes — circle, square, triangle, ring, cross — in random saturated colours.
//! Object sizes are log-uniform between 12 px and 70% of the image side (with a mild
//! random aspect ratio), so every octave of sizes, and so every pyramid level, gets about
//! the same number of objects.
//!
//! ## Occlusion and boxes
//! Objects are drawn one after the other, a later one on top of earlier ones. A new object
//! is only placed where it leaves every earlier object at least two thirds of its own
//! pixels visible (up to 20 random positions are tried, else the object is left out), so
//! objects overlap and hide each other partly but never mostly. Each box is then tight
//! around the object's *visible* pixels — the COCO convention, where boxes come from the
//! visible mask: `[x1, y1, x2, y2]` with `x2 = 1 + the last visible column`. Shapes are
//! drawn with hard edges (a pixel belongs to a shape when its centre is inside), so the
//! boxes are exact integers.
//!
//! ## Determinism and laziness
//! Image `i` of a split is a pure function of `(seed, split, i)`: its layout comes from
//! `Rng::derive(seed, [split, i, 0])` and its pixels from `Rng::derive(seed, [split, i,
//! 1])`. Nothing is stored: [`ShapesDataset::load`](Dataset::load) draws the image when
//! asked (a fraction of a millisecond), and the train and val splits, having different
//! keys, never share an image. [`ShapesDataset::write_coco`] writes the same images as
//! PNG with a COCO annotation file, and reading that folder back with
//! [`crate::coco::CocoDataset`] gives exactly the same pixels and boxes.

use std::path::Path;

use focal_engine::Rng;
use rayon::prelude::*;

use crate::atomic::write_atomic;
use crate::coco_format::{CocoAnnotation, CocoCategory, CocoFile, CocoImage};
use crate::dataset::{Category, Dataset, Sample};
use crate::error::{Error, Result};
use crate::image_io::{write_png, RgbImage};

/// The object classes, in label order; category id = label + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Ring,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Ring,
        Shape::Cross,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
        }
    }

    /// Contiguous label (0..5).
    pub fn label(self) -> usize {
        self as usize
    }

    /// Whether the point `(u, v)` of the unit square (the shape's box scaled to 1 x 1,
    /// `v` pointing down) is inside the shape.
    fn contains(self, u: f32, v: f32) -> bool {
        let (du, dv) = (2.0 * u - 1.0, 2.0 * v - 1.0); // in [-1, 1]
        match self {
            Shape::Circle => du * du + dv * dv <= 1.0,
            // A ring's hole is 55% of its outer diameter.
            Shape::Ring => {
                let d2 = du * du + dv * dv;
                (0.55 * 0.55..=1.0).contains(&d2)
            }
            Shape::Square => true,
            // Apex at the top centre, base along the bottom edge.
            Shape::Triangle => du.abs() <= v,
            // A plus sign whose arms are a third of the box wide.
            Shape::Cross => du.abs() <= 1.0 / 3.0 || dv.abs() <= 1.0 / 3.0,
        }
    }
}

/// Which split: the two use different random streams, so they never share an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    fn key(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Val => 2,
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapesConfig {
    /// Number of images.
    pub images: usize,
    /// Width and height of every image in pixels (default 256).
    pub size: u32,
    /// The seed; with `split` and the image index it fixes every pixel.
    pub seed: u64,
    pub split: Split,
    /// At most this many objects per image; the count is uniform in 0..=max (default 6).
    pub max_objects: usize,
    /// The largest object side in pixels (at least 12); `None`: 0.7 of the image side.
    /// Small objects on a large image give few positive anchors among many: the class
    /// imbalance of `focal ablate --preset imbalance` (and `imbalance-sweep`).
    pub max_object_side: Option<u32>,
}

impl ShapesConfig {
    /// `images` images of 256 x 256 with 0-6 objects.
    pub fn new(split: Split, images: usize, seed: u64) -> ShapesConfig {
        ShapesConfig {
            images,
            size: 256,
            seed,
            split,
            max_objects: 6,
            max_object_side: None,
        }
    }
}

/// The smallest object side in pixels, and the largest as a fraction of the image side.
const MIN_OBJECT: f64 = 12.0;
const MAX_OBJECT_FRACTION: f64 = 0.7;
/// An earlier object must keep at least 2/3 of its pixels visible.
const MIN_VISIBLE_NUM: usize = 2;
const MIN_VISIBLE_DEN: usize = 3;
const PLACEMENT_TRIES: usize = 20;

/// One placed object.
#[derive(Clone, Debug)]
struct Object {
    shape: Shape,
    /// The shape's nominal box (its drawn pixels lie inside): left, top, width, height.
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    colour: [f32; 3],
    /// Shading: colour change per unit of u and v across the object.
    shade: [f32; 2],
}

/// The geometry of one image: which object owns each pixel and the objects' boxes.
struct Layout {
    /// The background's mean colour.
    background: [f32; 3],
    objects: Vec<Object>,
    /// `owner[y * size + x]` = 0 for background, k + 1 for object k (the topmost one).
    owner: Vec<u8>,
    /// Tight boxes around each object's visible pixels, with its label.
    boxes: Vec<[f32; 4]>,
    labels: Vec<usize>,
}

/// The synthetic shapes dataset. See the module documentation.
#[derive(Clone, Debug)]
pub struct ShapesDataset {
    config: ShapesConfig,
    categories: Vec<Category>,
}

impl ShapesDataset {
    pub fn new(config: ShapesConfig) -> Result<ShapesDataset> {
        if !(32..=8192).contains(&config.size) {
            return Err(Error::new(format!(
                "shapes: image size {} is out of range (32 to 8192 pixels)",
                config.size
            )));
        }
        if config.max_objects > 250 {
            return Err(Error::new(format!(
                "shapes: at most 250 objects per image, asked for {}",
                config.max_objects
            )));
        }
        let categories = Shape::ALL
            .iter()
            .map(|s| Category {
                id: s.label() as i64 + 1,
                name: s.name().to_string(),
            })
            .collect();
        Ok(ShapesDataset { config, categories })
    }

    pub fn config(&self) -> &ShapesConfig {
        &self.config
    }

    /// The file name image `index` gets on disk: `000001.png` for index 0.
    pub fn file_name(&self, index: usize) -> String {
        format!("{:06}.png", index + 1)
    }

    /// The boxes (tight around visible pixels, xyxy) and labels of image `index`, without
    /// drawing its pixels.
    pub fn annotations(&self, index: usize) -> (Vec<[f32; 4]>, Vec<usize>) {
        let l = self.layout(index);
        (l.boxes, l.labels)
    }

    /// Image `index` with its boxes and labels.
    pub fn sample(&self, index: usize) -> Sample {
        let layout = self.layout(index);
        let image = self.render(index, &layout);
        Sample {
            image,
            boxes: layout.boxes,
            labels: layout.labels,
            image_id: index as i64 + 1,
        }
    }

    /// The whole split as a COCO file (file names as [`ShapesDataset::file_name`],
    /// `area` = box area, `iscrowd` = 0, annotation ids from 1).
    pub fn to_coco(&self) -> CocoFile {
        let s = self.config.size;
        let mut images = Vec::with_capacity(self.config.images);
        let mut annotations = Vec::new();
        // Layouts in parallel (each is independent), then numbered in index order.
        let per_image: Vec<(Vec<[f32; 4]>, Vec<usize>)> = (0..self.config.images)
            .into_par_iter()
            .map(|i| self.annotations(i))
            .collect();
        for (i, (boxes, labels)) in per_image.into_iter().enumerate() {
            let image_id = i as i64 + 1;
            images.push(CocoImage {
                id: image_id,
                file_name: self.file_name(i),
                width: s,
                height: s,
            });
            for (b, &label) in boxes.iter().zip(&labels) {
                let (w, h) = ((b[2] - b[0]) as f64, (b[3] - b[1]) as f64);
                annotations.push(CocoAnnotation {
                    id: annotations.len() as i64 + 1,
                    image_id,
                    category_id: self.categories[label].id,
                    bbox: [b[0] as f64, b[1] as f64, w, h],
                    area: Some(w * h),
                    iscrowd: 0,
                });
            }
        }
        let categories = self
            .categories
            .iter()
            .map(|c| CocoCategory {
                id: c.id,
                name: c.name.clone(),
                supercategory: Some("shape".to_string()),
            })
            .collect();
        CocoFile {
            images,
            annotations,
            categories,
        }
    }

    /// Writes every image as `images_dir/<file_name>` (PNG) and the COCO file as
    /// `annotation_file`, all atomically, creating the folders. Images are encoded in
    /// parallel; `progress(done)` is called after each block of images.
    pub fn write_coco(
        &self,
        images_dir: &Path,
        annotation_file: &Path,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<()> {
        std::fs::create_dir_all(images_dir)
            .map_err(|e| Error::io(images_dir, "create the folder", e))?;
        if let Some(parent) = annotation_file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(parent, "create the folder", e))?;
        }
        const BLOCK: usize = 64;
        let n = self.config.images;
        for start in (0..n).step_by(BLOCK) {
            (start..(start + BLOCK).min(n))
                .into_par_iter()
                .try_for_each(|i| {
                    write_png(&images_dir.join(self.file_name(i)), &self.sample(i).image)
                })?;
            progress((start + BLOCK).min(n));
        }
        let json = serde_json::to_vec(&self.to_coco())
            .map_err(|e| Error::json(annotation_file, "cannot encode JSON", e))?;
        write_atomic(annotation_file, &json)
    }

    /// Places the objects of image `index` and finds their visible boxes.
    fn layout(&self, index: usize) -> Layout {
        let cfg = &self.config;
        let size = cfg.size as usize;
        let mut rng = Rng::derive(cfg.seed, &[cfg.split.key(), index as u64, 0]);
        let background = background_colour(&mut rng);
        let count = rng.below(cfg.max_objects + 1);

        let mut objects: Vec<Object> = Vec::with_capacity(count);
        let mut owner = vec![0u8; size * size];
        // Pixels each object had when drawn, and how many are still visible.
        let mut drawn: Vec<usize> = Vec::new();
        let mut visible: Vec<usize> = Vec::new();
        let max_side = match cfg.max_object_side {
            Some(side) => (side as f64).min(MAX_OBJECT_FRACTION * size as f64),
            None => MAX_OBJECT_FRACTION * size as f64,
        }
        .max(MIN_OBJECT);
        for _ in 0..count {
            let shape = Shape::ALL[rng.below(Shape::ALL.len())];
            // Log-uniform size, aspect ratio w/h log-uniform in [3/4, 4/3].
            let side = MIN_OBJECT * (max_side / MIN_OBJECT).powf(rng.uniform_f64());
            let aspect = (4.0f64 / 3.0).powf(2.0 * rng.uniform_f64() - 1.0);
            let w = ((side * aspect.sqrt()).round() as usize).clamp(8, size);
            let h = ((side / aspect.sqrt()).round() as usize).clamp(8, size);
            let colour = object_colour(&mut rng, background, &objects);
            let shade = [
                rng.uniform_range(-30.0, 30.0),
                rng.uniform_range(-30.0, 30.0),
            ];
            let mask = shape_mask(shape, w, h);

            for _ in 0..PLACEMENT_TRIES {
                let x0 = rng.below(size - w + 1);
                let y0 = rng.below(size - h + 1);
                let obj = Object {
                    shape,
                    x0,
                    y0,
                    w,
                    h,
                    colour,
                    shade,
                };
                let pixels = || mask.iter().map(|&(dx, dy)| (y0 + dy) * size + x0 + dx);
                let mut covered = vec![0usize; objects.len()];
                for p in pixels() {
                    if owner[p] > 0 {
                        covered[owner[p] as usize - 1] += 1;
                    }
                }
                let keeps_enough = (0..objects.len()).all(|k| {
                    MIN_VISIBLE_DEN * (visible[k] - covered[k]) >= MIN_VISIBLE_NUM * drawn[k]
                });
                if !keeps_enough || mask.is_empty() {
                    continue;
                }
                for (k, c) in covered.iter().enumerate() {
                    visible[k] -= c;
                }
                let id = objects.len() as u8 + 1;
                for p in pixels() {
                    owner[p] = id;
                }
                drawn.push(mask.len());
                visible.push(mask.len());
                objects.push(obj);
                break;
            }
        }

        // Tight boxes around the visible pixels: [min x, min y, max x + 1, max y + 1].
        let mut extent = vec![[usize::MAX, usize::MAX, 0, 0]; objects.len()];
        for y in 0..size {
            for x in 0..size {
                let o = owner[y * size + x];
                if o > 0 {
                    let e = &mut extent[o as usize - 1];
                    e[0] = e[0].min(x);
                    e[1] = e[1].min(y);
                    e[2] = e[2].max(x + 1);
                    e[3] = e[3].max(y + 1);
                }
            }
        }
        let boxes = extent
            .iter()
            .map(|e| [e[0] as f32, e[1] as f32, e[2] as f32, e[3] as f32])
            .collect();
        let labels = objects.iter().map(|o| o.shape.label()).collect();
        Layout {
            background,
            objects,
            owner,
            boxes,
            labels,
        }
    }

    /// Paints the pixels: background texture, flat shaded objects, then noise on all.
    fn render(&self, index: usize, layout: &Layout) -> RgbImage {
        let cfg = &self.config;
        let size = cfg.size as usize;
        let background = layout.background;
        let mut rng = Rng::derive(cfg.seed, &[cfg.split.key(), index as u64, 1]);

        // Two octaves of value noise: a coarse lattice of random values, interpolated
        // smoothly; the fine octave has half the cell and half the amplitude.
        let cell = [16.0, 24.0, 32.0, 48.0][rng.below(4)] * size as f32 / 256.0;
        let amplitude = rng.uniform_range(15.0, 35.0);
        let coarse = ValueNoise::new(&mut rng, size, cell.max(4.0));
        let fine = ValueNoise::new(&mut rng, size, (cell / 2.0).max(3.0));
        let tint = [
            rng.uniform_range(0.6, 1.4),
            rng.uniform_range(0.6, 1.4),
            rng.uniform_range(0.6, 1.4),
        ];
        let noise_amplitude = rng.uniform_range(6.0, 16.0);

        let mut data = vec![0u8; 3 * size * size];
        let inverse: Vec<[f32; 2]> = layout
            .objects
            .iter()
            .map(|o| [1.0 / o.w as f32, 1.0 / o.h as f32])
            .collect();
        let mut coarse_row = Vec::new();
        let mut fine_row = Vec::new();
        for y in 0..size {
            coarse.row(y, &mut coarse_row);
            fine.row(y, &mut fine_row);
            for x in 0..size {
                let p = y * size + x;
                let base: [f32; 3] = match layout.owner[p] {
                    0 => {
                        let t = amplitude * (coarse_row[x] + 0.5 * fine_row[x]);
                        [
                            background[0] + t * tint[0],
                            background[1] + t * tint[1],
                            background[2] + t * tint[2],
                        ]
                    }
                    o => {
                        let obj = &layout.objects[o as usize - 1];
                        let [iw, ih] = inverse[o as usize - 1];
                        let u = (x - obj.x0) as f32 * iw - 0.5;
                        let v = (y - obj.y0) as f32 * ih - 0.5;
                        let s = obj.shade[0] * u + obj.shade[1] * v;
                        [obj.colour[0] + s, obj.colour[1] + s, obj.colour[2] + s]
                    }
                };
                // Triangular noise in (-1, 1) from two random bytes per channel.
                let r = rng.next_u64().to_le_bytes();
                for c in 0..3 {
                    let n = (r[2 * c] as f32 + r[2 * c + 1] as f32 - 255.0) / 255.0;
                    let v = base[c] + noise_amplitude * n;
                    // Round half up (`as` truncates, v + 0.5 >= 0 after the clamp).
                    data[3 * p + c] = (v.clamp(0.0, 255.0) + 0.5) as u8;
                }
            }
        }
        RgbImage {
            width: cfg.size,
            height: cfg.size,
            data,
        }
    }
}

impl Dataset for ShapesDataset {
    fn len(&self) -> usize {
        self.config.images
    }

    fn load(&self, index: usize) -> Result<Option<Sample>> {
        Ok(Some(self.sample(index)))
    }

    fn targets(&self, index: usize) -> Result<Option<crate::dataset::Targets>> {
        Ok(Some(self.annotations(index)))
    }

    fn categories(&self) -> &[Category] {
        &self.categories
    }

    fn image_id(&self, index: usize) -> i64 {
        index as i64 + 1
    }

    fn image_size(&self, _index: usize) -> (u32, u32) {
        (self.config.size, self.config.size)
    }

    fn ground_truth(&self) -> CocoFile {
        self.to_coco()
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let sides = match c.max_object_side {
            Some(side) => format!(" of at most {side} px"),
            None => String::new(),
        };
        format!(
            "shapes ({} split, seed {}): {} images of {}x{}, 0-{} objects{sides} of {} classes",
            c.split.name(),
            c.seed,
            c.images,
            c.size,
            c.size,
            c.max_objects,
            self.categories.len()
        )
    }
}

/// The offsets `(dx, dy)` inside a `w` x `h` box of the pixels whose centres are inside
/// `shape` drawn to fill that box.
fn shape_mask(shape: Shape, w: usize, h: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for dy in 0..h {
        let v = (dy as f32 + 0.5) / h as f32;
        for dx in 0..w {
            let u = (dx as f32 + 0.5) / w as f32;
            if shape.contains(u, v) {
                out.push((dx, dy));
            }
        }
    }
    out
}

/// The indices (`y * size + x`) of the pixels of `obj` as drawn (before occlusion).
#[cfg(test)]
fn object_pixels(obj: &Object, size: usize) -> Vec<usize> {
    shape_mask(obj.shape, obj.w, obj.h)
        .iter()
        .map(|&(dx, dy)| (obj.y0 + dy) * size + obj.x0 + dx)
        .collect()
}

/// A muted background colour: a gray level with a small random tint.
fn background_colour(rng: &mut Rng) -> [f32; 3] {
    let gray = rng.uniform_range(70.0, 180.0);
    [
        gray + rng.uniform_range(-20.0, 20.0),
        gray + rng.uniform_range(-20.0, 20.0),
        gray + rng.uniform_range(-20.0, 20.0),
    ]
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// A saturated colour far from the background and from earlier objects' colours (so an
/// object never melts into what it overlaps). Gives up after 50 tries and keeps the last.
fn object_colour(rng: &mut Rng, background: [f32; 3], earlier: &[Object]) -> [f32; 3] {
    let mut colour = [0.0; 3];
    for _ in 0..50 {
        colour = hsv_to_rgb(
            rng.uniform(),
            rng.uniform_range(0.55, 1.0),
            rng.uniform_range(0.5, 1.0),
        );
        if distance(colour, background) >= 110.0
            && earlier.iter().all(|o| distance(colour, o.colour) >= 90.0)
        {
            break;
        }
    }
    colour
}

/// HSV in [0, 1) x [0, 1] x [0, 1] to RGB in [0, 255].
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = h * 6.0;
    let sector = (h6.floor() as i32).rem_euclid(6);
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [255.0 * r, 255.0 * g, 255.0 * b]
}

/// Value noise: random values in [-1, 1] on a square lattice of spacing `cell`, blended
/// between the four surrounding lattice points with smoothstep weights.
struct ValueNoise {
    stride: usize,
    values: Vec<f32>,
    /// Per image column (and row, the image being square): the lattice index to the left
    /// (above) and the smoothstep weight of the next one.
    taps: Vec<(usize, f32)>,
}

impl ValueNoise {
    fn new(rng: &mut Rng, size: usize, cell: f32) -> ValueNoise {
        let stride = (size as f32 / cell).ceil() as usize + 2;
        let values = (0..stride * stride)
            .map(|_| rng.uniform_range(-1.0, 1.0))
            .collect();
        let taps = (0..size)
            .map(|x| {
                let f = x as f32 / cell;
                let i = f as usize;
                let t = f - i as f32;
                (i, t * t * (3.0 - 2.0 * t))
            })
            .collect();
        ValueNoise {
            stride,
            values,
            taps,
        }
    }

    /// The noise along image row `y`, one value per column, into `out`.
    fn row(&self, y: usize, out: &mut Vec<f32>) {
        // Blend the two lattice rows around y first, then interpolate along x.
        let (iy, ty) = self.taps[y];
        let above = &self.values[iy * self.stride..][..self.stride];
        let below = &self.values[(iy + 1) * self.stride..][..self.stride];
        let blended: Vec<f32> = above
            .iter()
            .zip(below)
            .map(|(a, b)| a * (1.0 - ty) + b * ty)
            .collect();
        out.clear();
        out.extend(
            self.taps
                .iter()
                .map(|&(ix, tx)| blended[ix] * (1.0 - tx) + blended[ix + 1] * tx),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(split: Split, n: usize) -> ShapesDataset {
        ShapesDataset::new(ShapesConfig::new(split, n, 7)).unwrap()
    }

    #[test]
    fn same_seed_same_images_and_splits_differ() {
        let a = dataset(Split::Train, 3);
        let b = dataset(Split::Train, 3);
        let v = dataset(Split::Val, 3);
        for i in 0..3 {
            assert_eq!(a.sample(i), b.sample(i));
            assert_ne!(a.sample(i).image, v.sample(i).image);
        }
    }

    #[test]
    fn max_object_side_bounds_every_box_and_leaves_the_default_unchanged() {
        let small = ShapesDataset::new(ShapesConfig {
            size: 128,
            max_object_side: Some(24),
            ..ShapesConfig::new(Split::Train, 200, 3)
        })
        .unwrap();
        let mut sides = Vec::new();
        for i in 0..200 {
            for b in small.annotations(i).0 {
                sides.push((b[2] - b[0]).max(b[3] - b[1]));
            }
        }
        assert!(sides.len() > 300, "{} objects", sides.len());
        // The nominal side is at most 24 px; the aspect ratio (≤ 4/3) stretches one side
        // by at most sqrt(4/3): 24 × 1.155 = 27.7, rounded to 28.
        let largest = sides.iter().cloned().fold(0.0, f32::max);
        assert!(largest <= 28.0, "largest side {largest}");
        assert!(sides.iter().any(|&s| s < 14.0));
        // None keeps the generator of earlier versions: the same layouts as before the
        // field existed (the default draws sides up to 0.7 of the image).
        let d = dataset(Split::Train, 5);
        assert_eq!(d.config.max_object_side, None);
        let with_none = ShapesDataset::new(ShapesConfig {
            max_object_side: None,
            ..ShapesConfig::new(Split::Train, 5, 7)
        })
        .unwrap();
        for i in 0..5 {
            assert_eq!(d.annotations(i), with_none.annotations(i));
        }
    }

    #[test]
    fn boxes_are_tight_around_the_visible_pixels() {
        let d = dataset(Split::Train, 20);
        let size = d.config.size as usize;
        let mut objects = 0;
        for i in 0..20 {
            let layout = d.layout(i);
            for (k, b) in layout.boxes.iter().enumerate() {
                objects += 1;
                let id = k as u8 + 1;
                let mine = |x: usize, y: usize| layout.owner[y * size + x] == id;
                let [x1, y1, x2, y2] = b.map(|v| v as usize);
                assert!(x2 > x1 && y2 > y1);
                // Every visible pixel is inside the box ...
                for y in 0..size {
                    for x in 0..size {
                        if mine(x, y) {
                            assert!((x1..x2).contains(&x) && (y1..y2).contains(&y));
                        }
                    }
                }
                // ... and each of the box's four edges touches one.
                assert!((y1..y2).any(|y| mine(x1, y)) && (y1..y2).any(|y| mine(x2 - 1, y)));
                assert!((x1..x2).any(|x| mine(x, y1)) && (x1..x2).any(|x| mine(x, y2 - 1)));
            }
        }
        assert!(objects > 20, "only {objects} objects in 20 images");
    }

    #[test]
    fn objects_stay_mostly_visible_and_sizes_span_the_range() {
        let d = dataset(Split::Train, 300);
        let size = d.config.size as usize;
        let (mut smallest, mut largest) = (f32::MAX, 0.0f32);
        let mut per_class = [0usize; 5];
        let mut empty = 0;
        for i in 0..300 {
            let l = d.layout(i);
            empty += l.objects.is_empty() as usize;
            for (k, obj) in l.objects.iter().enumerate() {
                let drawn = object_pixels(obj, size).len();
                let visible = l.owner.iter().filter(|&&o| o as usize == k + 1).count();
                assert!(3 * visible >= 2 * drawn, "{visible} of {drawn} visible");
                let b = l.boxes[k];
                let side = (b[2] - b[0]).max(b[3] - b[1]);
                smallest = smallest.min(side);
                largest = largest.max(side);
                per_class[obj.shape.label()] += 1;
            }
        }
        assert!(smallest <= 14.0, "smallest object {smallest}");
        assert!(largest >= 0.6 * 256.0, "largest object {largest}");
        assert!(per_class.iter().all(|&n| n > 100), "{per_class:?}");
        assert!(empty > 10, "{empty} images without objects");
    }
}
