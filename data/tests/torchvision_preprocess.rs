//! focal's preprocessing against torchvision's `GeneralizedRCNNTransform` (eval mode:
//! ImageNet normalisation, bilinear resize with `align_corners=False` and no antialiasing,
//! torchvision's size rounding, zero padding to a multiple of 32).
//!
//! The figures were made by `tests/fixtures/preprocess/make_torchvision_preprocess.py`
//! (run with a Python with torch and torchvision, pip install torch torchvision; torch
//! 2.15, torchvision 0.29) from crops of tiny-COCO val2017 photographs: the crops are
//! stored as PNG files (decoded by Pillow once, so both sides read the same RGB bytes and
//! no JPEG decoder takes part), and torchvision's network input at about 8 000-28 000
//! positions of each case (whole rows and columns, edges and padding included, and 4096
//! scattered indices) is stored in `torchvision_preprocess.safetensors`, with the image
//! sizes torchvision chose and a table of the sizes it resizes every image shape of tiny
//! COCO to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use focal_data::batch::collate;
use focal_data::image_io::read_rgb;
use focal_data::transforms::{resized_size, transform};
use focal_data::Sample;
use safetensors::SafeTensors;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

#[derive(Deserialize)]
struct Case {
    images: Vec<String>,
    min_size: usize,
    max_size: usize,
    /// (height, width) of each image after resizing.
    image_sizes: Vec<[usize; 2]>,
    /// (N, 3, Hp, Wp).
    shape: [usize; 4],
}

struct Fixture {
    cases: HashMap<String, Case>,
    /// (width, height, min_size, max_size, out_width, out_height).
    sizes: Vec<[usize; 6]>,
    values: HashMap<String, Vec<f32>>,
}

fn read_fixture() -> Fixture {
    let bytes = std::fs::read(fixtures().join("torchvision_preprocess.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().expect("metadata");
    let cases: HashMap<String, Case> = serde_json::from_str(&meta["cases"]).unwrap();
    let sizes: Vec<[usize; 6]> = serde_json::from_str(&meta["sizes"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let values = cases
        .keys()
        .map(|name| {
            let v = st.tensor(name).unwrap();
            let floats = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name.clone(), floats)
        })
        .collect();
    Fixture {
        cases,
        sizes,
        values,
    }
}

fn fnv1a64(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The flat indices the script sampled (see its docstring).
fn positions(name: &str, sizes: &[[usize; 2]], shape: [usize; 4]) -> Vec<usize> {
    let [n, c, hp, wp] = shape;
    let mut out = Vec::new();
    for (i, &[h, w]) in sizes.iter().enumerate() {
        for ch in 0..c {
            let base = (i * c + ch) * hp * wp;
            for y in [0, h / 2, h - 1, hp - 1] {
                out.extend((0..wp).map(|x| base + y * wp + x));
            }
            for x in [0, w / 2, w - 1, wp - 1] {
                out.extend((0..hp).map(|y| base + y * wp + x));
            }
        }
    }
    let total = (n * c * hp * wp) as u64;
    let key = fnv1a64(name);
    out.extend((0..4096u64).map(|i| (splitmix64(key.wrapping_add(i)) % total) as usize));
    out
}

#[test]
fn network_input_equals_torchvisions_to_1e5() {
    let fx = read_fixture();
    assert_eq!(fx.cases.len(), 5);
    let mut names: Vec<&String> = fx.cases.keys().collect();
    names.sort();
    for name in names {
        let case = &fx.cases[name];
        let items = case
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let sample = Sample {
                    image: read_rgb(&fixtures().join(format!("{image}.png"))).unwrap(),
                    boxes: vec![],
                    labels: vec![],
                    image_id: i as i64,
                };
                (i, transform(sample, case.min_size, case.max_size, false))
            })
            .collect();
        let batch = collate(items);
        // The sizes torchvision chose, and its padded shape.
        let sizes: Vec<[usize; 2]> = batch
            .targets
            .iter()
            .map(|t| [t.input_height, t.input_width])
            .collect();
        assert_eq!(sizes, case.image_sizes, "{name}: resized sizes");
        assert_eq!(batch.images.shape(), &case.shape, "{name}: padded shape");
        let data = batch.images.data();
        let want = &fx.values[name];
        let at = positions(name, &case.image_sizes, case.shape);
        assert_eq!(at.len(), want.len(), "{name}: sample count");
        let (mut max, mut sum) = (0f32, 0f64);
        for (&i, &w) in at.iter().zip(want) {
            let d = (data[i] - w).abs();
            max = max.max(d);
            sum += d as f64;
        }
        println!(
            "{name:<10} {:?} at {}/{}: {} values, max |focal - torchvision| = {max:.2e}, \
             mean {:.2e}",
            case.image_sizes,
            case.min_size,
            case.max_size,
            at.len(),
            sum / at.len() as f64
        );
        assert!(max <= 1e-5, "{name}: focal differs by {max:e}");
    }
}

/// torchvision's sizes for every image shape of tiny COCO at min sizes 480..800 (step 32)
/// and max size 1333 (495 cases, from the fixture), and the ones among them where
/// flooring and rounding to nearest disagree, pasted here from the same table.
#[test]
fn resized_sizes_are_torchvisions() {
    let fx = read_fixture();
    assert_eq!(fx.sizes.len(), 495);
    for &[w, h, min, max, ow, oh] in &fx.sizes {
        assert_eq!(
            resized_size(w as u32, h as u32, min, max),
            (ow, oh),
            "{w}x{h} at {min}/{max}"
        );
    }
    // (width, height, min size) -> torchvision's (width, height), at max size 1333.
    for (w, h, min, out) in [
        (640, 480, 800, (1066, 800)),
        (427, 640, 800, (800, 1199)),
        (640, 427, 512, (767, 512)),
        (500, 375, 608, (810, 608)),
        (352, 230, 800, (1224, 800)),
    ] {
        assert_eq!(resized_size(w, h, min, 1333), out, "{w}x{h} at {min}");
    }
}
