//! Figures with plotters: PNG and SVG side by side.
//!
//! A figure is described as data ([`Chart`]: series of points, axis labels with units, log
//! scales) and drawn by one generic function for both backends. Text uses a vendored font (DejaVu
//! Sans, `experiments/assets`), so the output does not depend on the fonts a machine has and the
//! same data gives the same bytes. Files are rendered to temporary names and renamed into place.

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            // Only a corrupt vendored file can cause this; figures would then lack text.
            eprintln!("warning: the vendored font could not be loaded; figure text is missing");
        }
    });
}

/// Pixel size of a single chart.
pub const SIZE: (u32, u32) = (960, 600);

/// Okabe-Ito palette: distinguishable for colour-blind readers and in print.
pub const COLORS: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(120, 120, 120),
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Line,
    LinePoints,
    Points,
    /// Vertical bars (confidence intervals): the points taken in pairs, each pair one segment
    /// (`(x, low)`, `(x, high)`). Drawn in the colour of the series before it, without a
    /// legend entry of its own.
    ErrorBars,
}

/// Where a chart's legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legend {
    LowerRight,
    UpperRight,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
}

/// A 2-D chart: labelled axes (with units), optional log scales, a legend.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    /// Fixed axis ranges (in data units); computed from the data when absent.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Categorical x axis: point x = i is labelled `x_categories[i]`.
    pub x_categories: Option<Vec<String>>,
    /// Legend position (lower right unless set).
    pub legend: Legend,
    pub series: Vec<Series>,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.to_owned(),
            x_label: x_label.to_owned(),
            y_label: y_label.to_owned(),
            x_log: false,
            y_log: false,
            x_range: None,
            y_range: None,
            x_categories: None,
            legend: Legend::LowerRight,
            series: Vec::new(),
        }
    }
}

/// Empirical CDF points of `values` (sorted copy), thinned to at most `max_points`.
pub fn cdf_points(values: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max_points.max(2)).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if pts.last().is_some_and(|p| p.1 < 1.0) {
        pts.push((v[n - 1], 1.0));
    }
    pts
}

/// Renders `charts` in a grid of `cols` columns to `<stem>.png` and `<stem>.svg`.
pub fn render(stem: &Path, charts: &[Chart], cols: usize) -> Result<[PathBuf; 2]> {
    register_font();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cols = cols.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(cols).max(1);
    let size = (SIZE.0 * cols as u32, SIZE.1 * rows as u32);
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let tmp_png = stem.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp_png, size).into_drawing_area();
        draw_grid(&root, charts, rows, cols)?;
        root.present()
            .map_err(|e| anyhow!("rendering {}: {e}", png.display()))?;
    }
    std::fs::rename(&tmp_png, &png).with_context(|| format!("writing {}", png.display()))?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw_grid(&root, charts, rows, cols)?;
        root.present()
            .map_err(|e| anyhow!("rendering {}: {e}", svg.display()))?;
    }
    crate::output::write_atomic(&svg, text.as_bytes())?;
    Ok([png, svg])
}

fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    charts: &[Chart],
    rows: usize,
    cols: usize,
) -> Result<()> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((rows, cols));
    for (chart, area) in charts.iter().zip(areas.iter()) {
        draw_chart(area, chart)?;
    }
    Ok(())
}

fn axis(v: f64, log: bool) -> f64 {
    if log {
        v.max(f64::MIN_POSITIVE).log10()
    } else {
        v
    }
}

fn range(points: impl Iterator<Item = f64>, log: bool, fixed: Option<(f64, f64)>) -> (f64, f64) {
    let (lo, hi) = match fixed {
        Some((a, b)) => (axis(a, log), axis(b, log)),
        None => {
            let vals: Vec<f64> = points
                .filter(|v| v.is_finite() && (!log || *v > 0.0))
                .map(|v| axis(v, log))
                .collect();
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                (0.0, 1.0)
            } else {
                (lo, hi)
            }
        }
    };
    if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else if log && fixed.is_none() {
        // Whole decades, so ticks fall on 1, 10, 100, ...
        (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
    } else if fixed.is_some() {
        (lo, hi)
    } else {
        let pad = (hi - lo) * 0.03;
        (lo - pad, hi + pad)
    }
}

fn tick(v: f64, log: bool, span: f64) -> String {
    let x = if log { 10f64.powf(v) } else { v };
    let a = x.abs();
    if !log && span > 0.0 && span < 1.0 && a >= 1.0 {
        // A narrow range far from zero: enough decimals to tell the ticks apart.
        let decimals = (-(span / 10.0).log10()).ceil().clamp(0.0, 8.0) as usize;
        format!("{x:.decimals$}")
    } else if a == 0.0 {
        "0".to_owned()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{x:.0e}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Whether a point can be drawn: finite, and positive on a log axis.
fn drawable(p: &(f64, f64), x_log: bool, y_log: bool) -> bool {
    p.0.is_finite() && p.1.is_finite() && (!x_log || p.0 > 0.0) && (!y_log || p.1 > 0.0)
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Chart) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing '{}': {e}", c.title);
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = match &c.x_categories {
        Some(cats) => (-0.5, cats.len().max(1) as f64 - 0.5),
        None => range(xs, c.x_log, c.x_range),
    };
    let (y0, y1) = range(ys, c.y_log, c.y_range);
    // On a log axis (drawn as log10 on a linear axis), one label per decade.
    let labels = |log: bool, lo: f64, hi: f64| {
        if log {
            ((hi - lo).round() as usize + 1).clamp(2, 12)
        } else {
            10
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, ("sans-serif", 24))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let (xl, yl) = (c.x_log, c.y_log);
    let cats = c.x_categories.clone();
    let x_fmt = move |v: &f64| match &cats {
        Some(names) => {
            let i = v.round();
            if (v - i).abs() < 0.05 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None => tick(*v, xl, x1 - x0),
    };
    let x_labels = match &c.x_categories {
        Some(names) => names.len() * 2 + 1,
        None => labels(c.x_log, x0, x1),
    };
    chart
        .configure_mesh()
        .x_labels(x_labels)
        .y_labels(labels(c.y_log, y0, y1))
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| tick(*v, yl, y1 - y0))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    // Error bars share the colour of the series they belong to (the one before them).
    let mut k = 0usize;
    for s in &c.series {
        if s.mark != Mark::ErrorBars {
            k += 1;
        }
        let color = COLORS[k.saturating_sub(1) % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| drawable(p, xl, yl))
            .map(|&(x, y)| (axis(x, xl), axis(y, yl)))
            .collect();
        // Thick polylines draw miter spikes at sharp corners: dense series get a 1 px line.
        let width = if pts.len() > 300 { 1 } else { 2 };
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: true,
            stroke_width: width,
        };
        let anno = match s.mark {
            Mark::Line => chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(err)?,
            Mark::LinePoints => {
                chart
                    .draw_series(PointSeries::of_element(
                        pts.clone(),
                        4,
                        style,
                        &|c, s, st| EmptyElement::at(c) + Circle::new((0, 0), s, st),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(LineSeries::new(pts, style))
                    .map_err(err)?
            }
            Mark::Points => chart
                .draw_series(PointSeries::of_element(pts, 3, style, &|c, s, st| {
                    EmptyElement::at(c) + Circle::new((0, 0), s, st)
                }))
                .map_err(err)?,
            Mark::ErrorBars => {
                // Pairs from the unfiltered points, so a dropped point cannot shift the pairing.
                let segments: Vec<Vec<(f64, f64)>> = s
                    .points
                    .chunks_exact(2)
                    .filter(|pair| pair.iter().all(|p| drawable(p, xl, yl)))
                    .map(|pair| {
                        pair.iter()
                            .map(|&(x, y)| (axis(x, xl), axis(y, yl)))
                            .collect()
                    })
                    .collect();
                chart
                    .draw_series(segments.into_iter().map(|seg| PathElement::new(seg, style)))
                    .map_err(err)?;
                continue;
            }
        };
        anno.label(s.name.clone()).legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                ShapeStyle {
                    color: color.to_rgba(),
                    filled: true,
                    stroke_width: 3,
                },
            )
        });
    }
    if c.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .position(match c.legend {
                Legend::LowerRight => SeriesLabelPosition::LowerRight,
                Legend::UpperRight => SeriesLabelPosition::UpperRight,
            })
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_ends_at_one_and_is_monotone() {
        let p = cdf_points(&[3.0, 1.0, 2.0, 2.0], 100);
        assert_eq!(p.first(), Some(&(1.0, 0.25)));
        assert_eq!(p.last(), Some(&(3.0, 1.0)));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let big: Vec<f64> = (0..10_000).map(f64::from).collect();
        let p = cdf_points(&big, 500);
        assert!(p.len() <= 502 && p.last().unwrap().1 == 1.0);
    }

    #[test]
    fn renders_png_and_svg_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Chart::new("Slowdown CDF", "slowdown (x)", "CDF");
        c.x_log = true;
        c.series.push(Series {
            name: "a".into(),
            points: cdf_points(&[1.0, 2.0, 10.0], 10),
            mark: Mark::Line,
        });
        let [png, svg] = render(&dir.path().join("f"), &[c.clone()], 1).unwrap();
        let (a, b) = (
            std::fs::read(&png).unwrap(),
            std::fs::read_to_string(&svg).unwrap(),
        );
        assert!(a.starts_with(b"\x89PNG"));
        assert!(b.contains("<svg") && b.contains("Slowdown CDF") && b.contains("slowdown (x)"));
        render(&dir.path().join("f"), &[c], 1).unwrap();
        assert_eq!(a, std::fs::read(&png).unwrap());
        assert!(!dir.path().join("f.tmp.png").exists());
    }
}
