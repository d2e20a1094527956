//! PNG plots drawn with plotters into a memory buffer, encoded with `image` and written atomically: training and
//! validation curves (the paper's Figures 3–4), accuracy vs ε, and a confusion-matrix heat map. Text uses the
//! DejaVu Sans font embedded in the binary, so plots look the same on machines without fonts installed.
use crate::core::eval::Confusion;
use crate::core::fsutil;
use crate::core::train::History;
use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
/// The family name plots ask for; the embedded font is registered under it.
const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters once per process.
fn ensure_font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A labelled line of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Size and title of a plot.
#[derive(Debug, Clone)]
pub struct PlotOpts {
    pub width: u32,
    pub height: u32,
    /// Shown on top; empty for none.
    pub title: String,
}

impl Default for PlotOpts {
    fn default() -> Self {
        PlotOpts { width: 1000, height: 600, title: String::new() }
    }
}

/// Which series of a `History` the curve plot draws.
#[derive(Debug, Clone)]
pub struct CurveOpts {
    pub plot: PlotOpts,
    /// Metrics to draw per network (default: clean and adversarial accuracy, as in Figures 3–4).
    pub metrics: Vec<String>,
    /// Networks to draw; empty = every network in the history.
    pub nets: Vec<String>,
    /// Panels, one per split (default: train and val; splits with no points are left out).
    pub splits: Vec<String>,
}

impl Default for CurveOpts {
    fn default() -> Self {
        CurveOpts {
            plot: PlotOpts { width: 1400, height: 550, title: String::new() },
            metrics: vec!["clean_acc".into(), "adv_acc".into()],
            nets: vec![],
            splits: vec!["train".into(), "val".into()],
        }
    }
}

/// Draws into an RGB buffer of `width` × `height`, encodes PNG and writes it atomically to `path`.
fn render_png(
    path: &Path,
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    ensure_font()?;
    if !(32..=8192).contains(&width) || !(32..=8192).contains(&height) {
        bail!("plot size {width}×{height} is outside 32..=8192 pixels");
    }
    let mut buf = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        draw(&root)?;
        root.present().map_err(perr)?;
    }
    let img = image::RgbImage::from_raw(width, height, buf).context("plot buffer has the wrong size")?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).context("encoding PNG")?;
    fsutil::atomic_write(path, bytes.get_ref()).with_context(|| format!("writing plot {}", path.display()))
}

/// plotters' errors borrow nothing but are not always `Send`; keep their text.
fn perr<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

fn percent_label(v: &f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// A y range covering `values` with a small margin; [0, 1] when every metric is a rate.
fn y_range(values: impl Iterator<Item = f64>, rates: bool) -> (f64, f64) {
    if rates {
        return (0.0, 1.0);
    }
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

fn is_rate_metric(m: &str) -> bool {
    m.ends_with("acc") || m.ends_with("accuracy") || m.ends_with("one_off")
}

/// Training/validation curves: one panel per split, one colour per network, solid for the first metric and dashed
/// for the second (clean vs adversarial accuracy by default), x = training step.
pub fn plot_curves(history: &History, path: &Path, opts: &CurveOpts) -> Result<()> {
    let nets: Vec<String> = if opts.nets.is_empty() { history.nets() } else { opts.nets.clone() };
    if opts.metrics.is_empty() {
        bail!("plot_curves: no metrics to draw");
    }
    // (split, [(net index, metric index, points)]) for splits that have data.
    let mut panels = vec![];
    for split in &opts.splits {
        let mut series = vec![];
        for (ni, net) in nets.iter().enumerate() {
            for (mi, metric) in opts.metrics.iter().enumerate() {
                let pts: Vec<(f64, f64)> = history
                    .series(split, net, metric)
                    .into_iter()
                    .map(|(s, v)| (s as f64, v))
                    .filter(|p| p.1.is_finite())
                    .collect();
                if !pts.is_empty() {
                    series.push((ni, mi, pts));
                }
            }
        }
        if !series.is_empty() {
            panels.push((split.clone(), series));
        }
    }
    if panels.is_empty() {
        bail!(
            "plot_curves: the history has no points for splits {:?}, metrics {:?}, networks {:?} (it has metrics {:?})",
            opts.splits,
            opts.metrics,
            nets,
            history.metrics()
        );
    }
    let rates = opts.metrics.iter().all(|m| is_rate_metric(m));
    let all_pts = || panels.iter().flat_map(|(_, s)| s.iter().flat_map(|(_, _, p)| p.iter()));
    let (y0, y1) = y_range(all_pts().map(|p| p.1), rates);
    let x1 = all_pts().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    render_png(path, opts.plot.width, opts.plot.height, |root| {
        let area = if opts.plot.title.is_empty() {
            root.clone()
        } else {
            root.titled(&opts.plot.title, (FAMILY, 22)).map_err(perr)?
        };
        let cells = area.split_evenly((1, panels.len()));
        for ((split, series), cell) in panels.iter().zip(cells) {
            let mut chart = ChartBuilder::on(&cell)
                .caption(split, (FAMILY, 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(0.0..x1, y0..y1)
                .map_err(perr)?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc("step")
                .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                .label_style((FAMILY, 13))
                .light_line_style(RGBColor(235, 235, 235));
            if rates {
                mesh.y_label_formatter(&percent_label).y_desc("classification rate");
            }
            mesh.draw().map_err(perr)?;
            for (ni, mi, pts) in series {
                let color = Palette99::pick(*ni).to_rgba();
                let style = color.stroke_width(2);
                let label = format!("{} {}", nets[*ni], opts.metrics[*mi]);
                let anno = if mi % 2 == 0 {
                    chart.draw_series(LineSeries::new(pts.iter().copied(), style)).map_err(perr)?
                } else {
                    chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style)).map_err(perr)?
                };
                let dashed = mi % 2 == 1;
                // Two segments, touching for a solid line and with a gap for a dashed one.
                let gap = if dashed { 4 } else { 0 };
                anno.label(label).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (8, 0)], color.stroke_width(2))
                        + PathElement::new(vec![(8 + gap, 0), (20, 0)], color.stroke_width(2))
                });
            }
            chart
                .configure_series_labels()
                .label_font((FAMILY, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(perr)?;
        }
        Ok(())
    })
}

/// Accuracy vs ε: one line per labelled series of (ε, rate) points. ε values that are multiples of 1/256 are labelled
/// "k/256" like the paper's tables.
pub fn plot_eps(series: &[Series], path: &Path, opts: &PlotOpts) -> Result<()> {
    let pts = || series.iter().flat_map(|(_, p)| p.iter());
    if pts().next().is_none() {
        bail!("plot_eps: no points");
    }
    let x0 = pts().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let mut x1 = pts().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if !(x0.is_finite() && x1.is_finite()) {
        bail!("plot_eps: ε values must be finite");
    }
    if x1 <= x0 {
        x1 = x0 + 1.0 / 256.0;
    }
    // Multiples of 1/256 are drawn on a 1/256 scale so that ticks fall on whole k/256 values.
    let per_256 = pts().all(|p| ((p.0 * 256.0) - (p.0 * 256.0).round()).abs() < 1e-6);
    let scale = if per_256 { 256.0 } else { 1.0 };
    let (x0, x1) = (x0 * scale, x1 * scale);
    render_png(path, opts.width, opts.height, |root| {
        let title = if opts.title.is_empty() { "accuracy vs ε" } else { opts.title.as_str() };
        let pad = (x1 - x0) * 0.03;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..1.0)
            .map_err(perr)?;
        let fmt_x = move |v: &f64| {
            if per_256 { format!("{v:.0}/256") } else { format!("{v:.3}") }
        };
        chart
            .configure_mesh()
            .x_desc("ε (L∞)")
            .y_desc("classification rate")
            .y_label_formatter(&percent_label)
            .x_label_formatter(&fmt_x)
            .label_style((FAMILY, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(perr)?;
        for (i, (label, p)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut p: Vec<(f64, f64)> = p.iter().map(|&(x, y)| (x * scale, y)).collect();
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(p.iter().copied(), color.stroke_width(2)))
                .map_err(perr)?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(p.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled()))).map_err(perr)?;
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(perr)?;
        Ok(())
    })
}

/// Where the heat map's grid sits in a `width` × `height` plot with `classes` classes: (left, top, cell size) in
/// pixels. The grid is square, below a title band and right of the row labels.
pub fn confusion_grid(width: u32, height: u32, classes: usize) -> (i32, i32, i32) {
    let (left, top, right, bottom) = (110i32, 60i32, 20i32, 80i32);
    let avail = (width as i32 - left - right).min(height as i32 - top - bottom).max(classes as i32);
    (left, top, avail / classes.max(1) as i32)
}

/// The colour of a row-normalised fraction in [0, 1]: white to dark blue.
fn heat(frac: f64) -> RGBColor {
    let f = frac.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// Confusion-matrix heat map: rows are true classes, columns predictions; colour is the row-normalised fraction
/// (per-class recall on the diagonal), the number in each cell the count. `labels` names the classes (default 0..C).
pub fn plot_confusion(conf: &Confusion, labels: &[String], path: &Path, opts: &PlotOpts) -> Result<()> {
    let c = conf.classes;
    if c == 0 {
        bail!("plot_confusion: the matrix has no classes");
    }
    if !labels.is_empty() && labels.len() != c {
        bail!("plot_confusion: {} labels for {c} classes", labels.len());
    }
    let names: Vec<String> = if labels.is_empty() { (0..c).map(|i| i.to_string()).collect() } else { labels.to_vec() };
    let (left, top, cell) = confusion_grid(opts.width, opts.height, c);
    if cell < 4 {
        bail!("plot_confusion: {}×{} pixels is too small for {c} classes", opts.width, opts.height);
    }
    render_png(path, opts.width, opts.height, |root| {
        let title = if opts.title.is_empty() {
            format!(
                "confusion (n = {}, accuracy {:.2}%, one-off {:.2}%)",
                conf.total(),
                conf.accuracy() * 100.0,
                conf.one_off() * 100.0
            )
        } else {
            opts.title.clone()
        };
        let center = Pos::new(HPos::Center, VPos::Center);
        root.draw_text(
            &title,
            &(FAMILY, 18).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
            (opts.width as i32 / 2, 12),
        )
        .map_err(perr)?;
        let font_px = (cell as f64 * 0.3).clamp(8.0, 18.0);
        for (i, row) in conf.counts.iter().enumerate() {
            let n: u64 = row.iter().sum();
            for (j, &k) in row.iter().enumerate() {
                let frac = if n > 0 { k as f64 / n as f64 } else { 0.0 };
                let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], heat(frac).filled())).map_err(perr)?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(200, 200, 200).stroke_width(1)))
                    .map_err(perr)?;
                let ink = if frac > 0.5 { WHITE } else { BLACK };
                root.draw_text(
                    &k.to_string(),
                    &(FAMILY, font_px).into_font().color(&ink).pos(center),
                    (x + cell / 2, y + cell / 2),
                )
                .map_err(perr)?;
            }
        }
        let label_font = (FAMILY, 13).into_font().color(&BLACK);
        for (i, name) in names.iter().enumerate() {
            let mid = i as i32 * cell + cell / 2;
            root.draw_text(name, &label_font.pos(Pos::new(HPos::Right, VPos::Center)), (left - 6, top + mid))
                .map_err(perr)?;
            root.draw_text(
                name,
                &label_font.pos(Pos::new(HPos::Center, VPos::Top)),
                (left + mid, top + c as i32 * cell + 6),
            )
            .map_err(perr)?;
        }
        root.draw_text("true ↓ / predicted →", &label_font.pos(Pos::new(HPos::Left, VPos::Bottom)), (6, top - 6))
            .map_err(perr)?;
        root.draw_text(
            "predicted class",
            &(FAMILY, 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
            (left + c as i32 * cell / 2, top + c as i32 * cell + 30),
        )
        .map_err(perr)?;
        Ok(())
    })
}
