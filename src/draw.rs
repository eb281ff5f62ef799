//! Small raster drawing on RGB images: lines, rectangles and text in an 8×8 bitmap font
//! (the public-domain `font8x8` glyphs). Used for the detection overlays of `focal detect`
//! and for the charts of a training run; no font files, no system libraries.

use font8x8::{UnicodeFonts, BASIC_FONTS, GREEK_FONTS};
use image::{Rgb, RgbImage};

pub type Color = [u8; 3];

/// Distinct colours for classes and chart series (Okabe-Ito and Tableau-like).
pub const PALETTE: [Color; 10] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [240, 228, 66],
    [0, 114, 178],
    [213, 94, 0],
    [204, 121, 167],
    [120, 120, 120],
    [148, 103, 189],
    [23, 190, 207],
];

pub fn put(img: &mut RgbImage, x: i64, y: i64, c: Color) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// A line from (x0, y0) to (x1, y1), `thickness` pixels wide (Bresenham, square pen).
pub fn line(img: &mut RgbImage, x0: f64, y0: f64, x1: f64, y1: f64, thickness: u32, c: Color) {
    let (mut x, mut y) = (x0.round() as i64, y0.round() as i64);
    let (xe, ye) = (x1.round() as i64, y1.round() as i64);
    let dx = (xe - x).abs();
    let dy = -(ye - y).abs();
    let sx = if x < xe { 1 } else { -1 };
    let sy = if y < ye { 1 } else { -1 };
    let mut err = dx + dy;
    let r0 = -((thickness as i64 - 1) / 2);
    let r1 = thickness as i64 / 2;
    loop {
        for oy in r0..=r1 {
            for ox in r0..=r1 {
                put(img, x + ox, y + oy, c);
            }
        }
        if x == xe && y == ye {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// The outline of the box (x1, y1)–(x2, y2).
pub fn rect(img: &mut RgbImage, x1: f64, y1: f64, x2: f64, y2: f64, thickness: u32, c: Color) {
    line(img, x1, y1, x2, y1, thickness, c);
    line(img, x2, y1, x2, y2, thickness, c);
    line(img, x2, y2, x1, y2, thickness, c);
    line(img, x1, y2, x1, y1, thickness, c);
}

pub fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Color) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> i64 {
    text.chars().count() as i64 * 8 * scale as i64
}

/// The 8×8 glyph of `ch`: basic Latin or Greek (γ, α in chart legends); anything else
/// is drawn as '?'.
fn glyph(ch: char) -> [u8; 8] {
    BASIC_FONTS
        .get(ch)
        .or_else(|| GREEK_FONTS.get(ch))
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Draws `text` with its top-left corner at (x, y); each glyph is 8×8 pixels × `scale`.
/// Characters outside basic Latin and Greek are drawn as '?'.
pub fn text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, c: Color) {
    let s = scale as i64;
    for (i, ch) in text.chars().enumerate() {
        let glyph = glyph(ch);
        let gx = x + i as i64 * 8 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // bit 0 is the leftmost pixel of the row
                if bits >> col & 1 == 1 {
                    fill_rect(img, gx + col * s, y + row as i64 * s, s, s, c);
                }
            }
        }
    }
}

/// Text rotated by 90° counter-clockwise (reads bottom to top), its glyph tops facing
/// left; (x, y) is the bottom-left corner of the first glyph. For y-axis titles.
pub fn text_vertical(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, c: Color) {
    let s = scale as i64;
    for (i, ch) in text.chars().enumerate() {
        let glyph = glyph(ch);
        let gy = y - i as i64 * 8 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    fill_rect(img, x + row as i64 * s, gy - (col + 1) * s, s, s, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_lines_touch_the_expected_pixels() {
        let mut img = RgbImage::new(40, 20);
        text(&mut img, 0, 0, "I", 1, [255, 255, 255]);
        let lit = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert!(lit > 5, "glyph I lights some pixels");
        let mut img = RgbImage::new(10, 10);
        line(&mut img, 0.0, 0.0, 9.0, 9.0, 1, [1, 2, 3]);
        for i in 0..10 {
            assert_eq!(img.get_pixel(i, i).0, [1, 2, 3]);
        }
        assert_eq!(img.get_pixel(0, 9).0, [0, 0, 0]);
        rect(&mut img, 2.0, 2.0, 7.0, 5.0, 1, [9, 9, 9]);
        assert_eq!(img.get_pixel(7, 4).0, [9, 9, 9]);
        assert_eq!(img.get_pixel(5, 4).0, [0, 0, 0]);
    }

    #[test]
    fn greek_letters_have_their_own_glyphs() {
        let draw = |s: &str| {
            let mut img = RgbImage::new(8, 8);
            text(&mut img, 0, 0, s, 1, [255, 255, 255]);
            img
        };
        let (gamma, alpha, unknown) = (draw("γ"), draw("α"), draw("?"));
        assert!(
            gamma.pixels().any(|p| p.0 == [255, 255, 255]),
            "γ lights pixels"
        );
        assert_ne!(gamma, unknown, "γ is not drawn as '?'");
        assert_ne!(alpha, unknown, "α is not drawn as '?'");
        assert_ne!(gamma, alpha);
        // A character in neither set falls back to '?'.
        assert_eq!(draw("€"), unknown);
    }
}
