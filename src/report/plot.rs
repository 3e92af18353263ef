//! `progress.png` (and `progress.svg`): eval PPL per experiment, discarded ones in grey, kept
//! ones in green with their descriptions, and the running best as a step line, in the manner
//! of autoresearch's progress plot; behind them the baseline's noise band (±2σ, when the
//! baseline was repeated) and the full-precision teacher's PPL as a reference line.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use autoqat_research::results::{running_best, Row, Status};

/// Width of the plot in pixels.
pub const WIDTH: u32 = 1200;
/// Height of the plot in pixels.
pub const HEIGHT: u32 = 600;

pub(crate) const FONT: &str = "sans-serif";

/// Reference levels drawn behind the experiments.
#[derive(Debug, Clone, Copy, Default)]
pub struct References {
    /// Mean and σ of the repeated baseline: the band mean ± 2σ.
    pub noise: Option<(f64, f64)>,
    /// The full-precision teacher's eval PPL.
    pub fp_ppl: Option<f64>,
}

/// Colour of the noise band (opaque, so that the tests can find it).
pub const BAND: RGBColor = RGBColor(222, 235, 250);
/// Colour of the full-precision reference line.
pub const FP_LINE: RGBColor = RGBColor(60, 90, 200);

/// Writes the plot as PNG to `png` and as SVG to `svg`.
pub fn write(rows: &[Row], title: &str, refs: References, png: &Path, svg: &Path) -> anyhow::Result<()> {
    register_font();
    {
        let area = BitMapBackend::new(png, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&area, rows, title, refs)?;
        area.present().map_err(|e| anyhow!("cannot write {}: {e}", png.display()))?;
    }
    let area = SVGBackend::new(svg, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&area, rows, title, refs)?;
    area.present().map_err(|e| anyhow!("cannot write {}: {e}", svg.display()))?;
    Ok(())
}

/// The bitmap backend has no system fonts here: the DejaVu Sans face is compiled in.
pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Y range: the kept runs fully, discards up to a margin above the worst kept run, so that one
/// diverged trial does not flatten everything else. Points above are drawn clipped at the top.
/// The references are part of the range, so that the teacher's line and the band stay visible.
fn y_range(rows: &[Row], refs: References) -> (f64, f64) {
    let kept: Vec<f64> = rows.iter().filter(|r| r.is_kept()).filter_map(|r| r.eval_ppl).collect();
    let mut all: Vec<f64> = rows.iter().filter_map(|r| r.eval_ppl).collect();
    all.extend(refs.fp_ppl.filter(|p| p.is_finite()));
    if let Some((m, s)) = refs.noise {
        all.extend([m - 2.0 * s, m + 2.0 * s].into_iter().filter(|p| p.is_finite()));
    }
    if all.is_empty() {
        return (1.0, 10.0);
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
    let ref_hi = if kept.is_empty() { lo } else { kept.iter().cloned().fold(f64::NEG_INFINITY, f64::max) };
    let cap = ref_hi + (ref_hi - lo).max(ref_hi * 0.05) * 1.5;
    let hi = all.iter().cloned().filter(|p| *p <= cap).fold(ref_hi, f64::max);
    let pad = ((hi - lo) * 0.08).max(hi * 0.005);
    ((lo - pad).max(0.0), hi + pad)
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[Row],
    title: &str,
    refs: References,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e}");
    area.fill(&WHITE).map_err(err)?;
    let n = rows.len().max(1) as f64;
    let (y0, y1) = y_range(rows, refs);
    let kept_n = rows.iter().filter(|r| r.status() == Status::Keep).count();
    let caption = format!("{title}: {} experiments, {kept_n} kept", rows.len());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..(n - 0.5), y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("experiment #")
        .x_labels(rows.len().clamp(2, 21))
        .x_label_formatter(&|x| format!("{:.0}", x))
        .y_desc("eval PPL (lower is better)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;

    // Behind everything: differences inside the band are within the measured noise.
    if let Some((m, s)) = refs.noise.filter(|(m, s)| m.is_finite() && s.is_finite() && *s > 0.0) {
        let (lo, hi) = ((m - 2.0 * s).max(y0), (m + 2.0 * s).min(y1));
        chart
            .draw_series(std::iter::once(Rectangle::new([(-0.5, lo), (n - 0.5, hi)], BAND.filled())))
            .map_err(err)?
            .label("baseline ± 2σ")
            .legend(move |(x, y)| Rectangle::new([(x - 8, y - 5), (x + 8, y + 5)], BAND.filled()));
    }
    if let Some(fp) = refs.fp_ppl.filter(|p| p.is_finite()) {
        chart
            .draw_series(LineSeries::new([(-0.5, fp), (n - 0.5, fp)], FP_LINE.stroke_width(2)))
            .map_err(err)?
            .label(format!("full-precision teacher ({fp:.3})"))
            .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], FP_LINE.stroke_width(2)));
    }
    let grey = RGBColor(170, 170, 170);
    let green = RGBColor(30, 160, 70);
    let red = RGBColor(200, 50, 50);
    let clip = |p: f64| p.min(y1);
    // Discarded and pruned trials: small grey dots; points above the range sit on the top edge.
    chart
        .draw_series(
            rows.iter().enumerate().filter(|(_, r)| !r.is_kept()).filter_map(|(i, r)| {
                r.eval_ppl.filter(|p| *p <= y1).map(|p| Circle::new((i as f64, p), 4, grey.filled()))
            }),
        )
        .map_err(err)?
        .label("discarded")
        .legend(move |(x, y)| Circle::new((x, y), 4, grey.filled()));
    // Off the top of the range: a grey triangle on the top edge.
    chart
        .draw_series(rows.iter().enumerate().filter(|(_, r)| !r.is_kept()).filter_map(|(i, r)| {
            r.eval_ppl.filter(|p| *p > y1).map(|_| TriangleMarker::new((i as f64, y1), 6, grey.filled()))
        }))
        .map_err(err)?;
    // Trials with no PPL (crash, timeout, invalid): red crosses along the bottom.
    chart
        .draw_series(
            rows.iter()
                .enumerate()
                .filter(|(_, r)| r.eval_ppl.is_none())
                .map(|(i, _)| Cross::new((i as f64, y0 + (y1 - y0) * 0.02), 5, red.stroke_width(2))),
        )
        .map_err(err)?
        .label("crash / invalid")
        .legend(move |(x, y)| Cross::new((x, y), 5, red.stroke_width(2)));
    // The running best as a step line.
    let best = running_best(rows);
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for (i, b) in best.iter().enumerate() {
        if let Some(b) = b {
            if let Some(&(_, prev)) = steps.last() {
                steps.push((i as f64, prev));
            }
            steps.push((i as f64, clip(*b)));
        }
    }
    if let Some(&(_, last)) = steps.last() {
        steps.push((n - 0.5, last));
    }
    chart
        .draw_series(LineSeries::new(steps, green.stroke_width(2)))
        .map_err(err)?
        .label("running best")
        .legend(move |(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], green.stroke_width(2)));
    // Kept trials and the baseline: large green dots with a short label.
    chart
        .draw_series(
            rows.iter()
                .enumerate()
                .filter(|(_, r)| r.is_kept())
                .filter_map(|(i, r)| r.eval_ppl.map(|p| Circle::new((i as f64, clip(p)), 7, green.filled()))),
        )
        .map_err(err)?
        .label("kept")
        .legend(move |(x, y)| Circle::new((x, y), 6, green.filled()));
    let label_font = (FONT, 12).into_font().color(&RGBColor(40, 90, 50));
    chart
        .draw_series(rows.iter().enumerate().filter(|(_, r)| r.is_kept()).filter_map(|(i, r)| {
            let text =
                if r.status() == Status::Baseline { "baseline".to_string() } else { truncate(&r.description, 40) };
            r.eval_ppl.map(|p| Text::new(text, (i as f64 + 0.08, clip(p)), label_font.clone()))
        }))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
