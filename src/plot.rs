//! Line charts rendered to PNG with [`crate::draw`]: the loss curves and the AP-per-
//! evaluation chart of a training run, and the cumulative loss curves of `focal loss-cdf`.

use image::RgbImage;

use crate::draw::{self, Color, PALETTE};

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: Color,
}

impl Series {
    /// A series coloured by its position in the chart.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, index: usize) -> Series {
        Series {
            name: name.into(),
            points,
            color: PALETTE[index % PALETTE.len()],
        }
    }
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Plot log10(y) (non-positive values are dropped).
    pub log_y: bool,
    /// Fixed y range instead of the data's.
    pub y_range: Option<(f64, f64)>,
    /// Legend in the top-left corner instead of the top right (for curves that end in
    /// the top right, such as cumulative distributions).
    pub legend_left: bool,
    pub width: u32,
    pub height: u32,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            log_y: false,
            y_range: None,
            legend_left: false,
            width: 800,
            height: 500,
        }
    }
}

/// About `n` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k).
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    // (NaN fails is_finite, so `hi <= lo` only has to handle ordered values.)
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

impl Chart {
    pub fn render(&self) -> RgbImage {
        let (w, h) = (self.width as i64, self.height as i64);
        let mut img = RgbImage::from_pixel(self.width, self.height, image::Rgb([255, 255, 255]));
        let black = [0, 0, 0];
        let grey = [225, 225, 225];
        let (left, right, top, bottom) = (80i64, 20i64, 40i64, 60i64);
        let (pw, ph) = (w - left - right, h - top - bottom);

        let ty = |y: f64| if self.log_y { y.log10() } else { y };
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0))
            .map(|(x, y)| (x, ty(y)))
            .collect();
        let (mut x0, mut x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(p.0), a.1.max(p.0))
        });
        let (mut y0, mut y1) = match self.y_range {
            Some((a, b)) => (ty(a), ty(b)),
            None => pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.1), a.1.max(p.1))
            }),
        };
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
            y0 -= pad;
            y1 += pad;
        }
        let px = |x: f64| left as f64 + (x - x0) / (x1 - x0) * pw as f64;
        let py = |y: f64| (top + ph) as f64 - (y - y0) / (y1 - y0) * ph as f64;

        // grid and tick labels
        for t in nice_ticks(y0, y1, 6) {
            let y = py(t);
            draw::line(&mut img, left as f64, y, (left + pw) as f64, y, 1, grey);
            let label = if self.log_y {
                fmt_tick(10f64.powf(t))
            } else {
                fmt_tick(t)
            };
            let tw = draw::text_width(&label, 1);
            draw::text(&mut img, left - 6 - tw, y as i64 - 4, &label, 1, black);
        }
        for t in nice_ticks(x0, x1, 8) {
            let x = px(t);
            draw::line(&mut img, x, top as f64, x, (top + ph) as f64, 1, grey);
            let label = fmt_tick(t);
            let tw = draw::text_width(&label, 1);
            draw::text(&mut img, x as i64 - tw / 2, top + ph + 8, &label, 1, black);
        }
        draw::rect(
            &mut img,
            left as f64,
            top as f64,
            (left + pw) as f64,
            (top + ph) as f64,
            1,
            black,
        );
        // titles
        let tw = draw::text_width(&self.title, 2);
        draw::text(&mut img, (w - tw) / 2, 10, &self.title, 2, black);
        let xw = draw::text_width(&self.x_label, 1);
        draw::text(
            &mut img,
            left + (pw - xw) / 2,
            h - 24,
            &self.x_label,
            1,
            black,
        );
        let yl = if self.log_y {
            format!("{} (log scale)", self.y_label)
        } else {
            self.y_label.clone()
        };
        let yw = draw::text_width(&yl, 1);
        draw::text_vertical(&mut img, 8, top + (ph + yw) / 2, &yl, 1, black);

        // series
        for s in &self.series {
            let mut prev: Option<(f64, f64)> = None;
            for &(x, y) in &s.points {
                if !x.is_finite() || !y.is_finite() || (self.log_y && y <= 0.0) {
                    prev = None;
                    continue;
                }
                let p = (px(x), py(ty(y).clamp(y0, y1)));
                match prev {
                    Some(q) => draw::line(&mut img, q.0, q.1, p.0, p.1, 2, s.color),
                    None => {
                        draw::fill_rect(&mut img, p.0 as i64 - 1, p.1 as i64 - 1, 3, 3, s.color)
                    }
                }
                prev = Some(p);
            }
        }
        // legend, top right (or top left)
        let mut ly = top + 8;
        for s in &self.series {
            let lw = draw::text_width(&s.name, 1);
            let lx = if self.legend_left {
                left + 10
            } else {
                left + pw - lw - 30
            };
            draw::fill_rect(&mut img, lx, ly + 2, 16, 4, s.color);
            draw::text(&mut img, lx + 22, ly, &s.name, 1, black);
            ly += 14;
        }
        img
    }

    /// Renders and writes the chart as PNG, atomically.
    pub fn save_png(&self, path: &std::path::Path) -> anyhow::Result<()> {
        crate::files::write_png(path, &self.render())
    }
}

/// Several charts rendered next to each other, left to right, in one image (as tall as
/// the tallest; shorter ones are topped with white). For panels such as the positives
/// and negatives of `focal loss-cdf`.
pub fn side_by_side(charts: &[Chart]) -> RgbImage {
    let panels: Vec<RgbImage> = charts.iter().map(Chart::render).collect();
    let width = panels.iter().map(|p| p.width()).sum::<u32>().max(1);
    let height = panels.iter().map(|p| p.height()).max().unwrap_or(1);
    let mut img = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut x0 = 0;
    for p in &panels {
        image::imageops::replace(&mut img, p, x0 as i64, 0);
        x0 += p.width();
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = nice_ticks(0.0, 1.0, 5);
        let expect = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), expect.len());
        assert!(
            t.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        let t = nice_ticks(3.0, 97.0, 8);
        // raw step (97 - 3) / 8 = 11.75 rounds up to 20
        assert_eq!(t.first(), Some(&20.0));
        assert_eq!(t.last(), Some(&80.0));
    }

    #[test]
    fn a_chart_draws_its_series_in_its_colour() {
        let mut c = Chart::new("t", "x", "y");
        c.series
            .push(Series::new("a", vec![(0.0, 0.0), (10.0, 5.0)], 1));
        let img = c.render();
        let n = img.pixels().filter(|p| p.0 == PALETTE[1]).count();
        assert!(n > 100, "the series line is drawn ({n} pixels)");
    }

    #[test]
    fn side_by_side_puts_each_chart_in_its_own_panel() {
        let mut a = Chart::new("a", "x", "y");
        a.width = 300;
        a.height = 200;
        a.series
            .push(Series::new("s", vec![(0.0, 0.0), (1.0, 1.0)], 1));
        let mut b = Chart::new("b", "x", "y");
        b.width = 400;
        b.height = 250;
        b.series
            .push(Series::new("s", vec![(0.0, 0.0), (1.0, 1.0)], 2));
        let img = side_by_side(&[a, b]);
        assert_eq!((img.width(), img.height()), (700, 250));
        // Colour 1 only in the left 300 columns, colour 2 only in the right 400.
        for (x, _, p) in img.enumerate_pixels() {
            if p.0 == PALETTE[1] {
                assert!(x < 300, "series of the left chart at x = {x}");
            }
            if p.0 == PALETTE[2] {
                assert!(x >= 300, "series of the right chart at x = {x}");
            }
        }
        assert!(img.pixels().any(|p| p.0 == PALETTE[1]) && img.pixels().any(|p| p.0 == PALETTE[2]));
    }
}
