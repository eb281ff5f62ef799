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
        let w = self.width as usize;
        let mut out = Vec::with_capacity(self.data.len());
        for row in self.data.chunks_exact(3 * w) {
            for x in (0..w).rev() {
                out.extend_from_slice(&row[3 * x..3 * x + 3]);
            }
        }
        RgbImage {
            width: self.width,
            height: self.height,
            data: out,
        }
    }
}

/// Decodes JPEG or PNG bytes (the format is read from the bytes, not the file name) into
/// RGB. `path` is only used in error messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, "read the image", e))?;
    if reader.format().is_none() {
        return Err(Error::in_file(
            path,
            "not a JPEG or PNG image (unrecognised file contents)",
        ));
    }
    let decoded = reader.decode().map_err(|e| Error::Image {
        path: Some(path.to_path_buf()),
        action: "decode the image",
        source: e,
    })?;
    // `to_rgb8` handles every colour type the decoders produce: it drops alpha, repeats
    // gray into the three channels and rounds 16-bit values (v / 257) to 8 bits.
    let rgb = decoded.to_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(RgbImage {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// Reads and decodes an image file into RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read the image", e))?;
    decode(&bytes, path)
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
