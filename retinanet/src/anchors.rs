//! Anchors: the reference boxes every prediction of the heads is relative to.
//!
//! On pyramid level P_l (l = 3..7, stride 2^l = 8..128) each cell of the feature map has
//! A = |ratios|·|scales| anchors (9 by default). For base size s_l (32..512), octave
//! scale c and aspect ratio r = h/w, the anchor has area (s_l·c)² and
//!
//! ```text
//!     w = s_l·c / √r,    h = s_l·c · √r,
//! ```
//!
//! centred on the cell's top-left corner (x·stride, y·stride) — torchvision's and
//! Detectron2's offset of 0. Corners stay floats (Detectron2 and focal's default), or,
//! with [`AnchorStyle::Torchvision`], are computed as torchvision computes them (integer
//! sizes, rounded corners, strides from the padded size) for weights trained there.
//!
//! **Order.** Anchors are listed level by level (P3 first), within a level cell by cell
//! in row-major order (y, then x), and within a cell `a = ratio_index·|scales| +
//! scale_index` (torchvision's ratio-major order, so its head weights load unchanged).
//! The anchor of cell (x, y) with index a on a level of width W is number
//! `(y·W + x)·A + a` of that level, which is exactly the row the heads' output layout
//! (N, A·K, H, W) → (N, H·W·A, K) puts its prediction in.
//!
//! **Feature sizes.** The sizes of P3..P7 are computed the way the network computes
//! them, by applying the output-size formula of every strided layer in turn (see
//! [`level_sizes`]); for the ResNet stride pattern this equals ⌈H / stride⌉.

use std::ops::Range;

use crate::boxes::Box4;
use crate::config::{AnchorConfig, AnchorStyle};

/// Output length of a convolution or pooling window along one axis:
/// ⌊(input + 2·padding − kernel) / stride⌋ + 1.
pub fn conv_output_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    assert!(
        input + 2 * padding >= kernel,
        "conv_output_size: input {input} with padding {padding} is smaller than the kernel {kernel}"
    );
    (input + 2 * padding - kernel) / stride + 1
}

/// The (height, width) of P3, P4, P5, P6, P7 for an input of `height × width` pixels,
/// following the layers that change the size:
///
/// | layer            | kernel | stride | padding | gives          |
/// |------------------|--------|--------|---------|----------------|
/// | conv1            | 7      | 2      | 3       | stride 2       |
/// | max-pool         | 3      | 2      | 1       | stride 4 (C2)  |
/// | layer2 first 3×3 | 3      | 2      | 1       | C3 → P3        |
/// | layer3 first 3×3 | 3      | 2      | 1       | C4 → P4        |
/// | layer4 first 3×3 | 3      | 2      | 1       | C5 → P5        |
/// | P6 conv          | 3      | 2      | 1       | P6 (from C5 or P5, same size) |
/// | P7 conv          | 3      | 2      | 1       | P7             |
///
/// (The 1×1 stride-2 shortcut of a downsampling block gives the same size as its 3×3.)
pub fn level_sizes(height: usize, width: usize) -> [(usize, usize); 5] {
    let down = |(h, w): (usize, usize), k: usize, p: usize| {
        (conv_output_size(h, k, 2, p), conv_output_size(w, k, 2, p))
    };
    let c1 = down((height, width), 7, 3);
    let c2 = down(c1, 3, 1);
    let c3 = down(c2, 3, 1);
    let c4 = down(c3, 3, 1);
    let c5 = down(c4, 3, 1);
    let p6 = down(c5, 3, 1);
    let p7 = down(p6, 3, 1);
    [c3, c4, c5, p6, p7]
}

/// The A zero-centred anchors of one cell for base size `size`, in the order
/// `a = ratio_index·|scales| + scale_index`, as [`AnchorStyle`] computes them.
pub fn cell_anchors_styled(
    size: f32,
    scales: &[f32],
    ratios: &[f32],
    style: AnchorStyle,
) -> Vec<Box4> {
    match style {
        AnchorStyle::Exact => cell_anchors(size, scales, ratios),
        AnchorStyle::Torchvision => torchvision_cell_anchors(size, scales, ratios),
    }
}

/// torchvision's `AnchorGenerator.generate_anchors` for the sizes `int(size · scale)`
/// (Python's truncation of the f64 product, as torchvision's RetinaNet builds its sizes
/// tuple): in f32, √r and its inverse, the sides `w = s/√r`, `h = s·√r`, halved and
/// rounded to the nearest integer, ties to even (`torch.round`).
pub fn torchvision_cell_anchors(size: f32, scales: &[f32], ratios: &[f32]) -> Vec<Box4> {
    let mut out = Vec::with_capacity(scales.len() * ratios.len());
    for &r in ratios {
        let h_ratio = r.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &c in scales {
            let s = (size as f64 * c as f64).trunc() as f32;
            let half_w = (w_ratio * s / 2.0).round_ties_even();
            let half_h = (h_ratio * s / 2.0).round_ties_even();
            out.push([-half_w, -half_h, half_w, half_h]);
        }
    }
    out
}

/// The A zero-centred anchors of one cell for base size `size`, in the order
/// `a = ratio_index·|scales| + scale_index`, exact to f32.
pub fn cell_anchors(size: f32, scales: &[f32], ratios: &[f32]) -> Vec<Box4> {
    let mut out = Vec::with_capacity(scales.len() * ratios.len());
    for &r in ratios {
        for &c in scales {
            // f64 so that the corners are the correctly rounded f32 of the exact values.
            let s = size as f64 * c as f64;
            let half_w = 0.5 * s / (r as f64).sqrt();
            let half_h = 0.5 * s * (r as f64).sqrt();
            out.push([-half_w as f32, -half_h as f32, half_w as f32, half_h as f32]);
        }
    }
    out
}

/// Every anchor of an input size, with the layout of the levels.
#[derive(Clone, Debug, PartialEq)]
pub struct Anchors {
    /// All anchors, P3 first (see the module documentation for the order).
    pub boxes: Vec<Box4>,
    /// (height, width) of the feature map of P3..P7.
    pub level_sizes: Vec<(usize, usize)>,
    /// Anchors on each level: H_l·W_l·A.
    pub level_counts: Vec<usize>,
    /// A, anchors per cell.
    pub per_cell: usize,
}

impl Anchors {
    /// The anchors of a (padded) input of `height × width` pixels.
    pub fn generate(config: &AnchorConfig, height: usize, width: usize) -> Anchors {
        let sizes = level_sizes(height, width);
        let per_cell = config.anchors_per_cell();
        let mut boxes = Vec::new();
        let mut level_counts = Vec::with_capacity(sizes.len());
        for (l, &(h, w)) in sizes.iter().enumerate() {
            let cell = cell_anchors_styled(
                config.sizes[l],
                &config.scales,
                &config.ratios,
                config.style,
            );
            let (stride_y, stride_x) = match config.style {
                AnchorStyle::Exact => (config.strides[l], config.strides[l]),
                // torchvision: the padded input's size over the feature map's, rounded down.
                AnchorStyle::Torchvision => (height / h, width / w),
            };
            for y in 0..h {
                for x in 0..w {
                    let (cx, cy) = ((x * stride_x) as f32, (y * stride_y) as f32);
                    for b in &cell {
                        boxes.push([cx + b[0], cy + b[1], cx + b[2], cy + b[3]]);
                    }
                }
            }
            level_counts.push(h * w * per_cell);
        }
        Anchors {
            boxes,
            level_sizes: sizes.to_vec(),
            level_counts,
            per_cell,
        }
    }

    /// Total number of anchors (A_total).
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The index range of each level's anchors in [`Anchors::boxes`].
    pub fn level_ranges(&self) -> Vec<Range<usize>> {
        let mut start = 0;
        self.level_counts
            .iter()
            .map(|&n| {
                start += n;
                start - n..start
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Box4, b: &Box4) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
    }

    #[test]
    fn level_sizes_follow_the_convolutions() {
        // 64: conv1 ⌊(64+6−7)/2⌋+1 = 32, pool 16, C3 8, C4 4, C5 2, P6 1, P7 1.
        assert_eq!(
            level_sizes(64, 64),
            [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
        );
        // 800×1216: 100×152, 50×76, 25×38, 13×19, 7×10 (182 403 anchors: the paper's
        // "∼100k" is at 600 px).
        assert_eq!(
            level_sizes(800, 1216),
            [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
        );
        // The ResNet stride pattern gives ⌈H/stride⌉ for any size, padded or not.
        for h in 1..300 {
            let s = level_sizes(h, h + 7);
            for (l, stride) in [8, 16, 32, 64, 128].into_iter().enumerate() {
                assert_eq!(
                    s[l],
                    (h.div_ceil(stride), (h + 7).div_ceil(stride)),
                    "h={h}"
                );
            }
        }
    }

    #[test]
    fn anchors_of_a_64x64_input_by_hand() {
        let a = Anchors::generate(&AnchorConfig::default(), 64, 64);
        // 8·8·9, 4·4·9, 2·2·9, 1·9, 1·9.
        assert_eq!(a.level_counts, vec![576, 144, 36, 9, 9]);
        assert_eq!(a.len(), 774);
        assert_eq!(a.per_cell, 9);
        // First P3 cell, centre (0, 0), base size 32. Sizes s = 32·c for c = 1, 2^(1/3),
        // 2^(2/3): 32, 40.3175, 50.7968; half sides s/2 = 16, 20.1587, 25.3984.
        // Ratio r = h/w: half-width (s/2)/√r, half-height (s/2)·√r, √0.5 = 0.707107:
        //   r = 0.5: 16·√2 = 22.6274, 16/√2 = 11.3137; 20.1587·√2 = 28.5088,
        //            20.1587/√2 = 14.2544; 25.3984·√2 = 35.9188, 25.3984/√2 = 17.9594
        //   r = 1:   16, 20.1587, 25.3984 on both axes
        //   r = 2:   the r = 0.5 values with width and height swapped.
        let expected: [Box4; 9] = [
            [-22.6274, -11.3137, 22.6274, 11.3137],
            [-28.5088, -14.2544, 28.5088, 14.2544],
            [-35.9188, -17.9594, 35.9188, 17.9594],
            [-16.0000, -16.0000, 16.0000, 16.0000],
            [-20.1587, -20.1587, 20.1587, 20.1587],
            [-25.3984, -25.3984, 25.3984, 25.3984],
            [-11.3137, -22.6274, 11.3137, 22.6274],
            [-14.2544, -28.5088, 14.2544, 28.5088],
            [-17.9594, -35.9188, 17.9594, 35.9188],
        ];
        for (k, e) in expected.iter().enumerate() {
            assert!(
                close(&a.boxes[k], e),
                "anchor {k}: {:?} vs {e:?}",
                a.boxes[k]
            );
        }
        // The next cell (x = 1, y = 0) is shifted by the stride 8 in x.
        let b = a.boxes[9 + 3];
        assert!(close(&b, &[-8.0, -16.0, 24.0, 16.0]), "{b:?}");
        // Cell (x = 0, y = 1) is row 1: index (1·8 + 0)·9.
        let b = a.boxes[72 + 3];
        assert!(close(&b, &[-16.0, -8.0, 16.0, 24.0]), "{b:?}");
        // The last P3 cell (7, 7) is centred at (56, 56).
        let b = a.boxes[575 - 5]; // a = 3 (ratio 1, scale 1) of the last cell
        assert!(close(&b, &[40.0, 40.0, 72.0, 72.0]), "{b:?}");
        // First P4 anchor with ratio 1, scale 1: size 64 at (0, 0); P7's at (0, 0), 512.
        let r = a.level_ranges();
        assert_eq!(r[1], 576..720);
        assert!(close(&a.boxes[r[1].start + 3], &[-32.0, -32.0, 32.0, 32.0]));
        assert!(close(
            &a.boxes[r[4].start + 3],
            &[-256.0, -256.0, 256.0, 256.0]
        ));
    }

    /// torchvision 0.29's `_default_anchorgen()` (RetinaNet's anchor generator) on a
    /// padded input of 800 × 1088 with the feature maps P3..P7 of a ResNet FPN, with a
    /// Python with torch and torchvision (pip install torch torchvision):
    ///
    /// ```text
    /// g = torchvision.models.detection.retinanet._default_anchorgen()
    /// sizes = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    /// a = g(ImageList(torch.zeros(1, 3, 800, 1088), [(800, 1088)]),
    ///       [torch.zeros(1, 1, h, w) for h, w in sizes])[0]
    /// ```
    ///
    /// 163 206 anchors; the first cell's nine of each level and the level's last anchor
    /// are pasted below (P6 and P7 cells are 61 × 64 and 114 × 120 apart: 800 // 13,
    /// 1088 // 17, 800 // 7, 1088 // 9).
    #[test]
    fn torchvision_style_anchors_are_torchvisions() {
        let cfg = AnchorConfig {
            style: AnchorStyle::Torchvision,
            ..AnchorConfig::default()
        };
        let a = Anchors::generate(&cfg, 800, 1088);
        assert_eq!(a.len(), 163_206);
        assert_eq!(a.level_counts, vec![122_400, 30_600, 7_650, 1_989, 567]);
        #[rustfmt::skip]
        let first: [[f32; 36]; 5] = [
            [-23., -11., 23., 11., -28., -14., 28., 14., -35., -18., 35., 18., -16., -16., 16., 16., -20., -20., 20., 20., -25., -25., 25., 25., -11., -23., 11., 23., -14., -28., 14., 28., -18., -35., 18., 35.],
            [-45., -23., 45., 23., -57., -28., 57., 28., -71., -36., 71., 36., -32., -32., 32., 32., -40., -40., 40., 40., -50., -50., 50., 50., -23., -45., 23., 45., -28., -57., 28., 57., -36., -71., 36., 71.],
            [-91., -45., 91., 45., -114., -57., 114., 57., -144., -72., 144., 72., -64., -64., 64., 64., -80., -80., 80., 80., -102., -102., 102., 102., -45., -91., 45., 91., -57., -114., 57., 114., -72., -144., 72., 144.],
            [-181., -91., 181., 91., -228., -114., 228., 114., -287., -144., 287., 144., -128., -128., 128., 128., -161., -161., 161., 161., -203., -203., 203., 203., -91., -181., 91., 181., -114., -228., 114., 228., -144., -287., 144., 287.],
            [-362., -181., 362., 181., -456., -228., 456., 228., -574., -287., 574., 287., -256., -256., 256., 256., -322., -322., 322., 322., -406., -406., 406., 406., -181., -362., 181., 362., -228., -456., 228., 456., -287., -574., 287., 574.],
        ];
        let last: [Box4; 5] = [
            [1062., 757., 1098., 827.],
            [1036., 713., 1108., 855.],
            [984., 624., 1128., 912.],
            [880., 445., 1168., 1019.],
            [673., 110., 1247., 1258.],
        ];
        for (l, range) in a.level_ranges().into_iter().enumerate() {
            let got: Vec<f32> = a.boxes[range.start..range.start + 9].concat();
            assert_eq!(got, first[l], "level P{}", l + 3);
            assert_eq!(a.boxes[range.end - 1], last[l], "level P{}", l + 3);
        }
    }

    #[test]
    fn configurable_scales_and_ratios() {
        let cfg = AnchorConfig {
            scales: vec![1.0],
            ratios: vec![1.0, 4.0],
            ..AnchorConfig::default()
        };
        let a = Anchors::generate(&cfg, 32, 32);
        assert_eq!(a.per_cell, 2);
        assert_eq!(a.level_counts, vec![32, 8, 2, 2, 2]);
        // r = 4: w = 32/2 = 16, h = 32·2 = 64.
        assert!(close(&a.boxes[1], &[-8.0, -32.0, 8.0, 32.0]));
    }
}
