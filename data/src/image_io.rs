//! Images in and out: decoding JPEG and PNG files into 8-bit RGB, and writing PNG files
//! atomically.
//!
//! Whatever the file holds — grayscale, grayscale + alpha, RGBA, 16 bits per channel, or a
//! CMYK / YCCK JPEG — the result is an [`RgbImage`]: 8-bit R, G, B, row-major, no alpha.
//! Alpha is dropped (not blended), 16-bit values are rounded to 8 bits, and CMYK is
//! converted by the JPEG decoder. EXIF orientation is ignored, as COCO's own tools do: the
//! annotation boxes are in the coordinates of the stored pixels.

use std::io::Cursor;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};

/// An 8-bit RGB image, row-major: the pixel at column `x`, row `y` is
/// `data[3 * (y * width + x)..][..3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: u32, height: u32) -> RgbImage {
        RgbImage {
            width,
            height,
            data: vec![0; 3 * width as usize * height as usize],
        }
    }

    /// The `[r, g, b]` of the pixel at column `x`, row `y`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The image mirrored left-right (column `x` becomes column `width - 1 - x`).
    pub fn flip_horizontal(&self) -> RgbImage {
        let mut out = self.clone();
        out.flip_horizontal_in_place();
        out
    }

    /// Mirrors the image left-right where it is, without a second copy of its pixels.
    pub fn flip_horizontal_in_place(&mut self) {
        let w = self.width as usize;
        if w == 0 {
            return;
        }
        for row in self.data.chunks_exact_mut(3 * w) {
            for x in 0..w / 2 {
                let (left, right) = row.split_at_mut(3 * (w - 1 - x));
                left[3 * x..3 * x + 3].swap_with_slice(&mut right[..3]);
            }
        }
    }
}

/// The most bytes one image may take once decoded, in its stored format or as RGB,
/// whichever is larger (512 MiB: a 13 000 x 13 000 RGB image just fits). A file claiming
/// more is refused from its header, before any pixel is decoded; the same limit the
/// `image` crate applies by default, stated in the error with the image's size.
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// The two formats focal reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

impl Format {
    /// The format the first bytes announce, if it is one focal reads.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else {
            None
        }
    }
}

/// What an image file's header says, read without decoding a pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// Bytes per pixel in the decoder's own buffer: 3 for JPEG (decoded straight to RGB),
    /// 1 to 8 for PNG (gray 8-bit to RGBA 16-bit).
    pub stored_bytes_per_pixel: u32,
}

impl ImageHeader {
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// Bytes of the decoded image as RGB.
    pub fn rgb_bytes(&self) -> u64 {
        3 * self.pixels()
    }

    /// The most memory decoding takes at once: for a PNG its own buffer plus the RGB
    /// copy; for a JPEG the RGB output plus, for a progressive file, its coefficients
    /// (two bytes per sample), counted always to stay on the safe side.
    pub fn decode_bytes(&self) -> u64 {
        match self.format {
            Format::Jpeg => self.pixels() * (3 + 6),
            Format::Png => self.pixels() * (self.stored_bytes_per_pixel as u64 + 3),
        }
    }

    /// Refuses an image over [`MAX_IMAGE_BYTES`], naming its size and the limit.
    pub fn check_limit(&self, path: &Path) -> Result<()> {
        let bytes = self
            .rgb_bytes()
            .max(self.pixels() * self.stored_bytes_per_pixel as u64);
        if bytes > MAX_IMAGE_BYTES {
            return Err(Error::in_file(
                path,
                format!(
                    "the image is {}x{} pixels, {} once decoded: over focal's limit of {} \
                     per image",
                    self.width,
                    self.height,
                    human_bytes(bytes),
                    human_bytes(MAX_IMAGE_BYTES)
                ),
            ));
        }
        Ok(())
    }
}

/// `1.2 GB`, `507.0 MB`, `512 MiB` (whole powers of two are written as such).
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        return format!("{} MiB", bytes >> 20);
    }
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} bytes"),
    }
}

/// The JPEG decoder, strict: a file that ends before its last scan, or whose entropy-coded
/// data is corrupt, is an error. (The `image` crate runs the same decoder, zune-jpeg, in
/// its lenient mode, which fills what it cannot decode with grey and reports nothing: a
/// JPEG cut in half decoded "fine", its lower half grey.) Every colour space is decoded
/// to RGB, CMYK and YCCK included.
fn jpeg_decoder(bytes: &[u8]) -> zune_jpeg::JpegDecoder<zune_core::bytestream::ZCursor<&[u8]>> {
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options)
}

fn jpeg_error(path: &Path, action: &'static str, e: zune_jpeg::errors::DecodeErrors) -> Error {
    Error::Image {
        path: Some(path.to_path_buf()),
        action,
        source: image::ImageError::Decoding(image::error::DecodingError::new(
            image::ImageFormat::Jpeg.into(),
            e,
        )),
    }
}

fn png_error(path: &Path, action: &'static str, e: image::ImageError) -> Error {
    Error::Image {
        path: Some(path.to_path_buf()),
        action,
        source: e,
    }
}

fn unrecognised(path: &Path) -> Error {
    Error::in_file(path, "not a JPEG or PNG image (unrecognised file contents)")
}

/// Reads the header of JPEG or PNG bytes: format, size, and how many bytes a pixel takes
/// in the decoder. `path` is only used in error messages.
pub fn read_header(bytes: &[u8], path: &Path) -> Result<ImageHeader> {
    match Format::sniff(bytes).ok_or_else(|| unrecognised(path))? {
        Format::Jpeg => {
            let mut d = jpeg_decoder(bytes);
            d.decode_headers()
                .map_err(|e| jpeg_error(path, "read the image's header", e))?;
            let (w, h) = d.dimensions().expect("the headers were decoded");
            Ok(ImageHeader {
                format: Format::Jpeg,
                width: w as u32,
                height: h as u32,
                stored_bytes_per_pixel: 3,
            })
        }
        Format::Png => {
            use image::ImageDecoder;
            let d = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
                .map_err(|e| png_error(path, "read the image's header", e))?;
            let (w, h) = d.dimensions();
            Ok(ImageHeader {
                format: Format::Png,
                width: w,
                height: h,
                stored_bytes_per_pixel: d.color_type().bytes_per_pixel() as u32,
            })
        }
    }
}

/// Whether `bytes` end the way a complete file of `format` ends: a JPEG with its
/// end-of-image marker (0xFFD9, possibly followed by padding), a PNG with its IEND chunk.
/// A file cut short fails this, so the image check decodes it in full to confirm; a
/// complete file passes it at the cost of reading two bytes.
pub fn ends_completely(bytes: &[u8], format: Format) -> bool {
    match format {
        Format::Jpeg => {
            // Some writers pad after the marker with zeros or 0xFF fill bytes.
            let end = bytes
                .iter()
                .rposition(|&b| b != 0x00 && b != 0xFF)
                .map_or(0, |i| i + 1);
            end >= 2 && bytes[end - 2..end] == [0xFF, 0xD9]
        }
        Format::Png => {
            bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82])
        }
    }
}

/// Decodes JPEG or PNG bytes (the format is read from the bytes, not the file name) into
/// RGB. `path` is only used in error messages. The header is read first: an image over
/// [`MAX_IMAGE_BYTES`] is refused before any pixel memory is taken, and a truncated or
/// corrupt file is an error, never an image with grey where the data stopped.
pub fn decode(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let header = read_header(bytes, path)?;
    decode_with_header(bytes, &header, path)
}

fn decode_with_header(bytes: &[u8], header: &ImageHeader, path: &Path) -> Result<RgbImage> {
    header.check_limit(path)?;
    match header.format {
        Format::Jpeg => {
            let mut d = jpeg_decoder(bytes);
            let data = d
                .decode()
                .map_err(|e| jpeg_error(path, "decode the image", e))?;
            let (w, h) = d.dimensions().expect("the headers were decoded");
            let (width, height) = (w as u32, h as u32);
            if data.len() != 3 * width as usize * height as usize {
                return Err(Error::in_file(
                    path,
                    "cannot decode the image: the decoder returned a buffer of the wrong size",
                ));
            }
            Ok(RgbImage {
                width,
                height,
                data,
            })
        }
        Format::Png => {
            let mut decoder = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
                .map_err(|e| png_error(path, "decode the image", e))?;
            // Our own limit was checked above; the crate's would only repeat it.
            image::ImageDecoder::set_limits(&mut decoder, image::Limits::no_limits())
                .map_err(|e| png_error(path, "decode the image", e))?;
            let decoded = image::DynamicImage::from_decoder(decoder)
                .map_err(|e| png_error(path, "decode the image", e))?;
            // `into_rgb8` handles every colour type the decoder produces: it drops alpha,
            // repeats gray into the three channels and rounds 16-bit values (v / 257) to 8
            // bits; an RGB image is handed over without a copy.
            let rgb = decoded.into_rgb8();
            let (width, height) = rgb.dimensions();
            Ok(RgbImage {
                width,
                height,
                data: rgb.into_raw(),
            })
        }
    }
}

/// Reads a file that should be an image: a folder, or anything but a regular file, is
/// named as such (not "no such file").
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(Error::in_file(path, "is a folder, not an image file"));
        }
        Ok(m) if !m.is_file() => {
            return Err(Error::in_file(
                path,
                "is not a regular file (a device, pipe or socket), not an image file",
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(Error::io(path, "read the image", e)),
    }
    std::fs::read(path).map_err(|e| Error::io(path, "read the image", e))
}

/// Reads and decodes an image file into RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    decode(&read_image_file(path)?, path)
}

/// Reads and decodes an image file whose size is known (from an annotation file): a
/// header giving another size is an error before any pixel is decoded, so a budget taken
/// for the announced size ([`crate::decode_budget`]) is never exceeded.
pub fn read_rgb_sized(path: &Path, width: u32, height: u32) -> Result<RgbImage> {
    let bytes = read_image_file(path)?;
    let header = read_header(&bytes, path)?;
    if (header.width, header.height) != (width, height) {
        return Err(Error::in_file(
            path,
            format!(
                "the image is {}x{} but the annotation file gives {width}x{height}",
                header.width, header.height
            ),
        ));
    }
    decode_with_header(&bytes, &header, path)
}

/// Encodes an RGB image as PNG bytes.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    image::ImageEncoder::write_image(
        encoder,
        &img.data,
        img.width,
        img.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Image {
        path: None,
        action: "encode a PNG",
        source: e,
    })?;
    Ok(bytes)
}

/// Writes `img` as a PNG file atomically (a temporary file in the same folder, then a
/// rename), so a crash never leaves a half-written image behind.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let bytes = encode_png(img).map_err(|e| match e {
        Error::Image { action, source, .. } => Error::Image {
            path: Some(path.to_path_buf()),
            action,
            source,
        },
        other => other,
    })?;
    write_atomic(path, &bytes)
}
