//! Collation: several transformed images become one `(N, 3, H, W)` tensor, each image in
//! the top-left corner of its slot, padded with 0 on the bottom and right (0 is the mean
//! colour after normalisation) to the batch's largest height and width rounded up to a
//! multiple of 32 (the stride of C5, so that every FPN level is exactly half the one above;
//! docs/design-choices.md, "Batch padding"). The boxes need no change: padding adds
//! pixels only after the image.

use focal_engine::Tensor;
use rayon::prelude::*;

use crate::transforms::{round_up, Transformed};

/// Height and width of a batch are multiples of this (the stride of the coarsest level
/// the FPN builds top-down, P5).
pub const SIZE_DIVISIBILITY: usize = 32;

/// The targets and bookkeeping of one image of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Boxes `[x1, y1, x2, y2]` in network-input pixels (resized, flipped if `flipped`).
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous labels `0..K`, one per box.
    pub labels: Vec<usize>,
    /// The COCO image id.
    pub image_id: i64,
    /// The image's index in its dataset.
    pub index: usize,
    /// Size of the original image.
    pub orig_width: u32,
    pub orig_height: u32,
    /// Size of the resized image inside the padded batch (its valid region).
    pub input_width: usize,
    pub input_height: usize,
    /// `[sx, sy]`: network-input = original x `sx` (resp. `sy`).
    pub scale: [f32; 2],
    /// Whether the image (and its boxes) were mirrored left-right.
    pub flipped: bool,
}

impl Target {
    /// Maps a box in network-input pixels back to the original image: divides by the
    /// per-axis scale, undoes the flip if there was one, and clips to the original image.
    /// This is how detections are reported in the coordinates of the COCO file.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let (w, h) = (self.orig_width as f32, self.orig_height as f32);
        let [mut x1, y1, mut x2, y2] = [
            b[0] / self.scale[0],
            b[1] / self.scale[1],
            b[2] / self.scale[0],
            b[3] / self.scale[1],
        ];
        if self.flipped {
            (x1, x2) = (w - x2, w - x1);
        }
        [
            x1.clamp(0.0, w),
            y1.clamp(0.0, h),
            x2.clamp(0.0, w),
            y2.clamp(0.0, h),
        ]
    }
}

/// A batch: the images as one tensor and one [`Target`] per image, in the same order.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `(N, 3, H, W)`, normalised, zero-padded; `H` and `W` are multiples of 32.
    pub images: Tensor,
    pub targets: Vec<Target>,
    /// The images of the whole batch: [`Batch::len`], except for one process's part of a
    /// batch in a distributed run ([`crate::Loader::epoch_part`]), which holds only some.
    pub whole_len: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// `(H, W)` of the padded batch.
    pub fn padded_size(&self) -> (usize, usize) {
        let s = self.images.shape();
        (s[2], s[3])
    }
}

/// Pads and stacks transformed images (with their dataset indices) into a batch.
///
/// Panics on an empty list (the loader never makes one).
pub fn collate(items: Vec<(usize, Transformed)>) -> Batch {
    collate_raw(items).into_batch()
}

/// A collated batch whose pixels are not a tensor yet. The loader's queue holds these, so
/// that batches waiting there are not counted as live tensor memory
/// (`focal_engine::live_bytes`) until the consumer takes them.
pub(crate) struct RawBatch {
    data: Vec<f32>,
    shape: [usize; 4],
    targets: Vec<Target>,
    whole_len: usize,
}

impl RawBatch {
    pub(crate) fn into_batch(self) -> Batch {
        Batch {
            images: Tensor::from_vec(&self.shape, self.data),
            targets: self.targets,
            whole_len: self.whole_len,
        }
    }
}

/// [`collate`] without making the tensor.
pub(crate) fn collate_raw(items: Vec<(usize, Transformed)>) -> RawBatch {
    assert!(!items.is_empty(), "collate: no images");
    let n = items.len();
    collate_raw_to(items, (1, 1), n)
}

/// `(H, W)` of a batch holding images of these network-input sizes `(height, width)`:
/// the largest of each, rounded up to a multiple of [`SIZE_DIVISIBILITY`].
pub fn padded_size(sizes: impl IntoIterator<Item = (usize, usize)>) -> (usize, usize) {
    let (h, w) = sizes
        .into_iter()
        .fold((1, 1), |(h, w), (ih, iw)| (h.max(ih), w.max(iw)));
    (
        round_up(h, SIZE_DIVISIBILITY),
        round_up(w, SIZE_DIVISIBILITY),
    )
}

/// [`collate_raw`] padded to at least `(H, W)` = `at_least` (itself rounded up to a
/// multiple of 32): the part of a batch that one process of a distributed run loads is
/// padded to the size of the whole batch, so that its images see exactly the tensor they
/// would see in one process. `items` may be empty then (a `(0, 3, H, W)` batch);
/// `whole_len` is the number of images of the whole batch.
pub(crate) fn collate_raw_to(
    items: Vec<(usize, Transformed)>,
    at_least: (usize, usize),
    whole_len: usize,
) -> RawBatch {
    let n = items.len();
    let (h, w) = padded_size(
        items
            .iter()
            .map(|(_, t)| (t.height, t.width))
            .chain([at_least]),
    );
    // Each image's slot is filled by one task (a plain copy, so the thread count cannot
    // change the result).
    let mut data = vec![0.0f32; n * 3 * h * w];
    data.par_chunks_mut(3 * h * w)
        .zip(items.par_iter())
        .for_each(|(slot, (_, t))| {
            let plane = t.height * t.width;
            for c in 0..3 {
                let src = &t.pixels[c * plane..][..plane];
                let dst = &mut slot[c * h * w..][..h * w];
                for (y, row) in src.chunks_exact(t.width).enumerate() {
                    dst[y * w..y * w + t.width].copy_from_slice(row);
                }
            }
        });
    let mut targets = Vec::with_capacity(n);
    for (index, t) in items {
        targets.push(Target {
            boxes: t.boxes,
            labels: t.labels,
            image_id: t.image_id,
            index,
            orig_width: t.orig_width,
            orig_height: t.orig_height,
            input_width: t.width,
            input_height: t.height,
            scale: t.scale,
            flipped: t.flipped,
        });
    }
    RawBatch {
        data,
        shape: [n, 3, h, w],
        targets,
        whole_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(width: usize, height: usize, value: f32) -> Transformed {
        Transformed {
            pixels: vec![value; 3 * width * height],
            width,
            height,
            boxes: vec![[1.0, 1.0, 2.0, 2.0]],
            labels: vec![0],
            image_id: 1,
            orig_width: width as u32,
            orig_height: height as u32,
            scale: [1.0, 1.0],
            flipped: false,
        }
    }

    #[test]
    fn pads_bottom_right_to_multiples_of_32() {
        let b = collate(vec![(0, item(40, 30, 1.0)), (5, item(33, 64, 2.0))]);
        // Max width 40 -> 64, max height 64 -> 64.
        assert_eq!(b.images.shape(), &[2, 3, 64, 64]);
        let d = b.images.data();
        let at = |n: usize, c: usize, y: usize, x: usize| d[((n * 3 + c) * 64 + y) * 64 + x];
        // Image 0 fills x < 40, y < 30; zeros elsewhere.
        assert_eq!(at(0, 2, 29, 39), 1.0);
        assert_eq!(at(0, 2, 30, 39), 0.0);
        assert_eq!(at(0, 2, 29, 40), 0.0);
        assert_eq!(at(1, 0, 63, 32), 2.0);
        assert_eq!(at(1, 0, 63, 33), 0.0);
        let sum: f32 = d.iter().sum();
        assert_eq!(sum, 3.0 * (40.0 * 30.0 + 2.0 * 33.0 * 64.0));
        assert_eq!(b.targets[1].index, 5);
        assert_eq!(
            (b.targets[1].input_width, b.targets[1].input_height),
            (33, 64)
        );
    }

    #[test]
    fn exact_multiples_are_not_padded_further() {
        let b = collate(vec![(0, item(64, 32, 1.0))]);
        assert_eq!(b.images.shape(), &[1, 3, 32, 64]);
    }

    #[test]
    fn to_original_undoes_scale_and_flip() {
        let t = Target {
            boxes: vec![],
            labels: vec![],
            image_id: 1,
            index: 0,
            orig_width: 100,
            orig_height: 50,
            input_width: 200,
            input_height: 100,
            scale: [2.0, 2.0],
            flipped: true,
        };
        // Input box x 20..60 -> original 10..30 -> unflipped 70..90.
        assert_eq!(
            t.to_original([20.0, 10.0, 60.0, 40.0]),
            [70.0, 5.0, 90.0, 20.0]
        );
        // Clipped to the original image.
        assert_eq!(
            t.to_original([-10.0, -4.0, 30.0, 400.0]),
            [85.0, 0.0, 100.0, 50.0]
        );
    }
}
