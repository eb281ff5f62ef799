//! From a decoded [`Sample`] to what the network reads: an optional horizontal flip, the
//! resize, and the normalisation (docs/design-choices.md, "Pixels", "Resize" and
//! "Augmentation"; the paper's only augmentation is the flip, §4.1). Padding to a
//! multiple of 32 happens when images are put together into a batch ([`crate::batch`]).
//! Together they are torchvision's `GeneralizedRCNNTransform`, so that weights trained
//! with torchvision see the inputs they were trained on:
//! `data/tests/torchvision_preprocess.rs` checks the network input against torchvision's
//! on photographs of several shapes, to 1e-5.
//!
//! - **Resize**: `scale = min(min_size / short side, max_size / long side)` in f64; each
//!   output side is `floor(side * scale)` (torchvision's rounding, which truncates).
//!   Pixels are interpolated bilinearly with half-pixel centres (PyTorch's
//!   `align_corners = False`, no antialiasing) from the output/input size ratio, boxes are
//!   scaled per axis by `output side / input side`.
//! - **Normalise**: RGB to [0, 1], then `(x - mean) / std` per channel with the ImageNet
//!   mean and std (what torchvision's weights expect). The bilinear weights of a pixel sum
//!   to 1, so normalising before or after resizing gives the same values (up to float
//!   rounding); we resize first, on 0-255 values.
//! - **Flip**: mirror the image left-right and map a box `[x1, y1, x2, y2]` of an image
//!   of width `W` to `[W - x2, y1, W - x1, y2]`. The loader decides when (p = 0.5, training
//!   only).

use crate::dataset::Sample;
use crate::image_io::RgbImage;

/// ImageNet channel means of RGB in [0, 1].
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations of RGB in [0, 1].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The resize factor: the short side to `min_size` unless the long side would then exceed
/// `max_size`, computed in f64 (as torchvision computes it in Python floats).
pub fn resize_scale(width: u32, height: u32, min_size: usize, max_size: usize) -> f64 {
    let short = width.min(height) as f64;
    let long = width.max(height) as f64;
    (min_size as f64 / short).min(max_size as f64 / long)
}

/// `(width, height)` after resizing: each side `floor(side * scale)` in f64, at least 1,
/// as torchvision's `GeneralizedRCNNTransform` (through `interpolate` with
/// `recompute_scale_factor = True`) computes it. The product can land a hair under the
/// integer it stands for: 107 · (128 / 107) = 127.99999999999999, so a 160 × 107 image at
/// min size 128 becomes 191 × 127, in torchvision as here.
pub fn resized_size(width: u32, height: u32, min_size: usize, max_size: usize) -> (usize, usize) {
    let scale = resize_scale(width, height, min_size, max_size);
    let side = |s: u32| ((s as f64 * scale).floor() as usize).max(1);
    (side(width), side(height))
}

/// One output coordinate's two source pixels and their weights.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// Bilinear taps for resizing `input` pixels to `output` along one axis, as PyTorch's
/// `upsample_bilinear2d` with `align_corners = False` computes them: the output pixel
/// centre `d + 0.5` maps to input coordinate `(d + 0.5) * input / output - 0.5`, clamped
/// below at 0; the right neighbour is clamped to the last pixel.
///
/// The coordinate is computed in f32 with one rounding, `ratio · (d + 0.5) − 0.5` as a
/// fused multiply-add, because that is what PyTorch's CPU kernels compute (their compiler
/// fuses the expression): at coordinates near 100 an f32 step is 8e-6, so the two
/// roundings of a plain multiply and subtract move a weight by that much and an output
/// value by up to 1.4e-5, while the fused form agrees with torchvision to 1e-6
/// (`data/tests/torchvision_preprocess.rs`). `mul_add` is exact by definition, so the
/// result is the same on every machine.
fn taps(input: usize, output: usize) -> Vec<Tap> {
    let ratio = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = ratio.mul_add(d as f32 + 0.5, -0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let w1 = src - i0 as f32;
            Tap {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// Resizes `img` to `out_w` x `out_h` bilinearly and normalises it, returning the three
/// planes (R, G, B) of `out_h * out_w` floats each, one after the other (CHW order).
pub fn resize_normalize(img: &RgbImage, out_w: usize, out_h: usize) -> Vec<f32> {
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let xt = taps(in_w, out_w);
    let yt = taps(in_h, out_h);

    // (v / 255 - mean) / std = v * scale + shift, per channel.
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * IMAGENET_STD[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| -IMAGENET_MEAN[c] / IMAGENET_STD[c]);
    let plane = out_w * out_h;
    let mut out = vec![0.0f32; 3 * plane];
    // One output row at a time: first blend the two input rows it falls between (along y,
    // on interleaved RGB, a contiguous loop the compiler vectorises), then interpolate
    // that row along x into the three output planes. The order of the two 1-D passes does
    // not change the result beyond float rounding.
    let mut row = vec![0.0f32; 3 * in_w];
    for (y, ty) in yt.iter().enumerate() {
        let above = &img.data[3 * in_w * ty.i0..][..3 * in_w];
        let below = &img.data[3 * in_w * ty.i1..][..3 * in_w];
        for ((r, &a), &b) in row.iter_mut().zip(above).zip(below) {
            *r = ty.w0 * a as f32 + ty.w1 * b as f32;
        }
        for (x, tx) in xt.iter().enumerate() {
            let left = &row[3 * tx.i0..][..3];
            let right = &row[3 * tx.i1..][..3];
            for c in 0..3 {
                let v = tx.w0 * left[c] + tx.w1 * right[c];
                out[c * plane + y * out_w + x] = v * scale[c] + shift[c];
            }
        }
    }
    out
}

/// Mirrors boxes of an image `width` pixels wide: `[x1, y1, x2, y2] -> [W - x2, y1, W - x1, y2]`.
pub fn flip_boxes(boxes: &mut [[f32; 4]], width: f32) {
    for b in boxes {
        *b = [width - b[2], b[1], width - b[0], b[3]];
    }
}

/// Scales boxes per axis: x by `scale[0]`, y by `scale[1]`.
pub fn scale_boxes(boxes: &mut [[f32; 4]], scale: [f32; 2]) {
    for b in boxes {
        *b = [
            b[0] * scale[0],
            b[1] * scale[1],
            b[2] * scale[0],
            b[3] * scale[1],
        ];
    }
}

/// `n` rounded up to a multiple of `multiple`.
pub fn round_up(n: usize, multiple: usize) -> usize {
    n.div_ceil(multiple) * multiple
}

/// One image after flip, resize and normalisation, before padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Transformed {
    /// Normalised pixels, CHW: 3 planes of `height * width`.
    pub pixels: Vec<f32>,
    /// Size after resizing (the network-input size before padding).
    pub width: usize,
    pub height: usize,
    /// Boxes xyxy in network-input pixels (flipped if `flipped`, then scaled).
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<usize>,
    pub image_id: i64,
    /// Size of the image as decoded.
    pub orig_width: u32,
    pub orig_height: u32,
    /// Per-axis factor from original to network-input pixels: `[width / orig_width,
    /// height / orig_height]`.
    pub scale: [f32; 2],
    pub flipped: bool,
}

/// Flips (when `flip`), resizes with `min_size` / `max_size` ([`resized_size`]), and
/// normalises.
pub fn transform(sample: Sample, min_size: usize, max_size: usize, flip: bool) -> Transformed {
    let Sample {
        image,
        mut boxes,
        labels,
        image_id,
    } = sample;
    let (orig_width, orig_height) = (image.width, image.height);
    let mut image = image;
    if flip {
        // In place: a huge image is not held twice.
        flip_boxes(&mut boxes, orig_width as f32);
        image.flip_horizontal_in_place();
    }
    let (width, height) = resized_size(orig_width, orig_height, min_size, max_size);
    let scale = [
        width as f32 / orig_width as f32,
        height as f32 / orig_height as f32,
    ];
    scale_boxes(&mut boxes, scale);
    Transformed {
        pixels: resize_normalize(&image, width, height),
        width,
        height,
        boxes,
        labels,
        image_id,
        orig_width,
        orig_height,
        scale,
        flipped: flip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_floored_as_torchvision_does() {
        // 640 x 480 at 800 / 1333: scale = min(800/480, 1333/640) = 1.6667 -> 1066.67 -> 1066.
        assert_eq!(resized_size(640, 480, 800, 1333), (1066, 800));
        // A panorama is capped by max_size: scale = 1333/2000 -> 1333 x 333.25 -> 333.
        assert_eq!(resized_size(2000, 500, 800, 1333), (1333, 333));
        // Already the right size: unchanged.
        assert_eq!(resized_size(256, 256, 256, 1000), (256, 256));
        // Truncated, not rounded: 451 * 256/300 = 384.85 -> 384.
        assert_eq!(resized_size(300, 451, 256, 1000), (256, 384));
        // Portrait 427 x 640 at 512 / 853: scale = 512/427, 640 * 1.19906 = 767.4 -> 767.
        assert_eq!(resized_size(427, 640, 512, 853), (512, 767));
        // 107 * (128/107) is 127.99999999999999 in f64: the short side becomes 127.
        assert_eq!(resized_size(160, 107, 128, 213), (191, 127));
    }

    #[test]
    fn same_size_resize_only_normalises() {
        let img = RgbImage {
            width: 2,
            height: 1,
            data: vec![0, 128, 255, 10, 20, 30],
        };
        let out = resize_normalize(&img, 2, 1);
        // Channel c of pixel p lands at out[c * 2 + p]; value (v/255 - mean) / std.
        let expect = |v: f32, c: usize| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        let want = [
            expect(0.0, 0),
            expect(10.0, 0),
            expect(128.0, 1),
            expect(20.0, 1),
            expect(255.0, 2),
            expect(30.0, 2),
        ];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{o} vs {w}");
        }
    }

    /// The reference figures come from PyTorch 2 (torch.nn.functional.interpolate,
    /// bilinear, align_corners=False, antialias off), on the image normalised first, with
    /// a Python with torch (pip install torch):
    ///
    /// ```text
    /// python -c "
    /// import torch, torch.nn.functional as F
    /// x = torch.tensor([[(37*(3*i+c)+11) % 256 for i in range(12)] for c in range(3)], dtype=torch.float32)
    /// x = x.reshape(3, 3, 4) / 255          # C, H=3, W=4; pixel i = y*4 + x
    /// m = torch.tensor([0.485,0.456,0.406]).view(3,1,1); s = torch.tensor([0.229,0.224,0.225]).view(3,1,1)
    /// x = ((x - m) / s)[None]
    /// for size in [(5, 7), (2, 3)]:
    ///     print([round(v, 5) for v in F.interpolate(x, size=size, mode='bilinear', align_corners=False).flatten().tolist()])
    /// "
    /// ```
    #[test]
    fn bilinear_matches_pytorch() {
        let data: Vec<u8> = (0..12)
            .flat_map(|i| (0..3).map(move |c| ((37 * (3 * i + c) + 11) % 256) as u8))
            .collect();
        let img = RgbImage {
            width: 4,
            height: 3,
            data,
        };
        let up = resize_normalize(&img, 7, 5);
        let down = resize_normalize(&img, 3, 2);
        check(&up, &UP_7X5);
        check(&down, &DOWN_3X2);

        fn check(got: &[f32], want: &[f32]) {
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() < 2e-5, "entry {i}: {g} vs {w}");
            }
        }
    }

    #[rustfmt::skip]
    const UP_7X5: [f32; 105] = [
        -1.92953, -1.25066, -0.16446, 0.92174, 1.69480, 0.27589, -0.61093,
        -0.64175, -0.58915, -0.50500, 0.45595, 1.22901, -0.18990, -1.07672,
        1.28992, 0.40310, -1.01580, -0.24274, 0.53032, -0.88859, -1.77541,
        0.59123, 0.64383, 0.72799, 0.37375, 0.01951, 0.10367, 0.15626,
        0.12544, 0.80431, 1.89051, 0.78474, -0.32103, 0.76517, 1.44404,
        -1.19538, -0.50135, 0.60909, -0.52136, -1.65181, -0.54137, 0.15266,
        0.12115, 0.17492, 0.26095, -0.10119, -0.46334, -0.37730, -0.32353,
        2.09594, 1.18933, -0.26125, 0.52906, 1.31938, -0.13120, -1.03782,
        1.38165, 0.47504, -0.97554, -0.18522, 0.79717, 0.88320, 0.93698,
        0.90546, -0.00115, -1.45173, -0.66141, 0.44903, 1.55947, 2.25350,
        -0.32296, 0.36798, 1.47349, 0.34806, -0.77737, 0.32814, 1.01909,
        -0.79704, -0.10609, 0.99942, 0.76636, 0.40583, 0.49148, 0.54501,
        -1.50815, -0.81720, 0.28830, 1.39381, 2.18062, 0.73648, -0.16610,
        0.45787, 0.19269, -0.23158, 0.68270, 1.46950, 0.02537, -0.87721,
        1.76854, 0.86596, -0.57818, 0.20863, 0.99543, -0.44870, -1.35129,
    ];
    #[rustfmt::skip]
    const DOWN_3X2: [f32; 18] = [
        -0.99052, 0.63062, -0.48820, 0.55070, 0.52787, 0.50504,
        -0.23541, -0.25875, -0.28210, 0.78000, -0.36380, 1.29353,
        -0.29682, 0.60950, 0.58626, 0.71407, 0.50492, -0.63378,
    ];

    #[test]
    fn flipping_twice_gives_the_box_back() {
        // Quarter pixels are exact in f32, so W - (W - x) == x exactly.
        let original = vec![[0.0, 1.0, 10.25, 20.0], [100.5, 3.75, 639.0, 479.0]];
        let mut b = original.clone();
        flip_boxes(&mut b, 640.0);
        assert_eq!(b[0], [629.75, 1.0, 640.0, 20.0]);
        flip_boxes(&mut b, 640.0);
        assert_eq!(b, original);
    }

    #[test]
    fn flipped_box_stays_tight_around_the_flipped_pixels() {
        // A white 3 x 2 rectangle at x 1..4, y 2..4 on a black 10 x 6 image.
        let mut img = RgbImage::new(10, 6);
        for y in 2..4 {
            for x in 1..4 {
                img.data[3 * (y * 10 + x)..][..3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let flipped = img.flip_horizontal();
        let mut b = [[1.0, 2.0, 4.0, 4.0]];
        flip_boxes(&mut b, 10.0);
        assert_eq!(b[0], [6.0, 2.0, 9.0, 4.0]);
        for y in 0..6u32 {
            for x in 0..10u32 {
                let inside = (6..9).contains(&x) && (2..4).contains(&y);
                assert_eq!(flipped.pixel(x, y)[0] == 255, inside, "pixel {x},{y}");
            }
        }
        assert_eq!(flipped.flip_horizontal(), img);
    }
}
