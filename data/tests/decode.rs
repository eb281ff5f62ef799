//! Every pixel format the COCO reader may meet decodes to 8-bit RGB. The fixtures are made
//! here at run time: PNGs with the `image` crate, the CMYK JPEG with `jpeg-encoder` (the
//! `image` crate cannot write CMYK).

use std::path::Path;

use focal_data::image_io::{decode, encode_png};
use focal_data::RgbImage;
use image::{ExtendedColorType, ImageEncoder};

fn png(width: u32, height: u32, bytes: &[u8], colour: ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(bytes, width, height, colour)
        .unwrap();
    out
}

fn decode_ok(bytes: &[u8]) -> RgbImage {
    decode(bytes, Path::new("fixture")).unwrap()
}

#[test]
fn grayscale_png() {
    let img = decode_ok(&png(2, 1, &[77, 200], ExtendedColorType::L8));
    assert_eq!(img.data, vec![77, 77, 77, 200, 200, 200]);
}

#[test]
fn grayscale_alpha_png() {
    let img = decode_ok(&png(1, 1, &[90, 10], ExtendedColorType::La8));
    assert_eq!(img.data, vec![90, 90, 90]);
}

#[test]
fn rgba_png_drops_alpha() {
    let img = decode_ok(&png(
        2,
        1,
        &[10, 20, 30, 0, 40, 50, 60, 255],
        ExtendedColorType::Rgba8,
    ));
    assert_eq!(img.data, vec![10, 20, 30, 40, 50, 60]);
}

#[test]
fn sixteen_bit_pngs() {
    // 16-bit v becomes round(v / 257): 65535 -> 255, 257 * 200 = 51400 -> 200,
    // 0x8080 = 32896 -> 128. PNG stores 16-bit samples big-endian.
    let rgb16: Vec<u8> = [65535u16, 51400, 32896, 0, 257, 514]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let img = decode_ok(&png(2, 1, &rgb16, ExtendedColorType::Rgb16));
    assert_eq!(img.data, vec![255, 200, 128, 0, 1, 2]);
    let gray16: Vec<u8> = 51400u16.to_be_bytes().to_vec();
    let img = decode_ok(&png(1, 1, &gray16, ExtendedColorType::L16));
    assert_eq!(img.data, vec![200, 200, 200]);
}

#[test]
fn rgb_png_round_trips_exactly() {
    let mut img = RgbImage::new(5, 3);
    img.data
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i * 17) as u8);
    assert_eq!(decode_ok(&encode_png(&img).unwrap()), img);
}

#[test]
fn grayscale_jpeg() {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 100)
        .write_image(&[120u8; 64], 8, 8, ExtendedColorType::L8)
        .unwrap();
    let img = decode_ok(&out);
    assert_eq!((img.width, img.height), (8, 8));
    assert!(
        img.data.iter().all(|&v| v.abs_diff(120) <= 2),
        "{:?}",
        &img.data[..6]
    );
}

#[test]
fn cmyk_jpeg() {
    // 32 x 16: the left half is pure red in CMYK (C 0, M 255, Y 255, K 0), the right half
    // blue (C 255, M 255, Y 0, K 0) darkened by K 128 to about half: (0, 0, 127).
    // Flat 8 x 8 blocks survive JPEG almost exactly.
    let (w, h) = (32u16, 16u16);
    let mut cmyk = Vec::new();
    for _y in 0..h {
        for x in 0..w {
            cmyk.extend_from_slice(if x < 16 {
                &[0, 255, 255, 0]
            } else {
                &[255, 255, 0, 128]
            });
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 100)
        .encode(&cmyk, w, h, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let img = decode_ok(&out);
    assert_eq!((img.width, img.height), (32, 16));
    let close = |got: [u8; 3], want: [u8; 3]| got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 3);
    assert!(close(img.pixel(4, 4), [255, 0, 0]), "{:?}", img.pixel(4, 4));
    assert!(
        close(img.pixel(28, 12), [0, 0, 127]),
        "{:?}",
        img.pixel(28, 12)
    );
}

#[test]
fn garbage_is_an_error_naming_the_file() {
    let e = decode(b"GIF89a....", Path::new("dir/x.gif")).unwrap_err();
    assert!(e.to_string().starts_with("dir/x.gif: "), "{e}");
}
