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

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A JPEG cut in half is an error. (The `image` crate's lenient decoder returned an image
/// whose lower half was grey, 128 everywhere, and no error.)
#[test]
fn a_truncated_jpeg_is_an_error() {
    let whole = jpeg(64, 64);
    let img = decode_ok(&whole);
    assert_eq!((img.width, img.height), (64, 64));
    let e = decode(&whole[..whole.len() / 2], Path::new("cut.jpg"))
        .unwrap_err()
        .chain();
    assert!(
        e.starts_with("cut.jpg: cannot decode the image") && e.contains("Premature end"),
        "{e}"
    );
    assert!(!focal_data::image_io::ends_completely(
        &whole[..whole.len() / 2],
        focal_data::image_io::Format::Jpeg
    ));
    assert!(focal_data::image_io::ends_completely(
        &whole,
        focal_data::image_io::Format::Jpeg
    ));
}

/// Entropy-coded data overwritten with bytes that are no valid Huffman code: an error.
#[test]
fn a_corrupt_jpeg_is_an_error() {
    let mut bytes = jpeg(64, 64);
    let n = bytes.len();
    // The scan data lies between the headers and the final marker.
    for b in &mut bytes[n / 2..n / 2 + 40] {
        *b = 0xFF;
    }
    assert!(decode(&bytes, Path::new("bad.jpg")).is_err());
}

#[test]
fn a_truncated_png_is_an_error() {
    let mut img = RgbImage::new(40, 30);
    img.data
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i * 7) as u8);
    let png = encode_png(&img).unwrap();
    let e = decode(&png[..png.len() * 2 / 3], Path::new("cut.png")).unwrap_err();
    assert!(e.to_string().starts_with("cut.png: "), "{e}");
}

/// A PNG whose header says `w` x `h` (the pixel data is a stub: only the header is read
/// before the size is refused).
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
        out
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// An image over the limit is refused from its header, with its size and the limit in
/// the message (the `image` crate's said "Memory limit exceeded").
#[test]
fn the_memory_limit_error_states_the_size_and_the_limit() {
    let e = decode(&png_header_only(20_000, 20_000), Path::new("bomb.png"))
        .unwrap_err()
        .chain();
    assert!(
        e.contains("bomb.png")
            && e.contains("20000x20000 pixels")
            && e.contains("1.2 GB")
            && e.contains("512 MiB"),
        "{e}"
    );
    // Just under the limit, the header is accepted (decoding the stub then fails).
    let h = focal_data::image_io::read_header(&png_header_only(13_000, 13_000), Path::new("x"))
        .unwrap();
    assert_eq!(h.rgb_bytes(), 507_000_000);
    h.check_limit(Path::new("x")).unwrap();
}

#[test]
fn a_folder_is_named_as_a_folder() {
    let dir = std::env::temp_dir().join(format!("focal-data-folder-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("x.jpg")).unwrap();
    let e = focal_data::image_io::read_rgb(&dir.join("x.jpg"))
        .unwrap_err()
        .chain();
    assert!(e.contains("x.jpg: is a folder, not an image file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
