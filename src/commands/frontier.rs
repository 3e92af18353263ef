//! `autoqat frontier`: size against PPL over compression runs, the dominated ones marked, the
//! traps of the track flagged (see `autoqat_compress::frontier`), and `frontier.png`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use autoqat_compress::artifact::sha256_file;
use autoqat_compress::frontier::{analyse, read_run, Point};
use plotters::prelude::*;

use crate::cli::FrontierArgs;
use crate::report::plot::{register_font, FONT};

/// Reads `runs`, marks the frontier and the traps (`reference`: the SHA-256 of the reference
/// tokenizer), writes `frontier.png` into `out`, and returns the points by size.
pub fn write(runs: &[PathBuf], reference: Option<&str>, out: &Path) -> anyhow::Result<Vec<Point>> {
    let mut points: Vec<Point> = runs.iter().map(|r| read_run(r)).collect();
    analyse(&mut points, reference);
    points.sort_by(|a, b| {
        let key = |p: &Point| {
            p.summary.as_ref().map(|s| (s.artifact_size_bytes(), s.eval_ppl())).unwrap_or((i64::MAX, f64::NAN))
        };
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    std::fs::create_dir_all(out)?;
    plot(&points, &out.join("frontier.png"))?;
    Ok(points)
}

/// Runs `autoqat frontier`.
pub fn run(args: FrontierArgs) -> anyhow::Result<()> {
    let runs = if args.runs.is_empty() { default_runs()? } else { args.runs.clone() };
    if runs.is_empty() {
        bail!("no run directories (hint: autoqat frontier runs/*, or run it in a workspace with runs/)");
    }
    let reference = match &args.tokenizer {
        Some(t) => {
            let file = if t.is_dir() { t.join("tokenizer.json") } else { t.clone() };
            Some(sha256_file(&file)?.0)
        }
        None => None,
    };
    let points = write(&runs, reference.as_deref(), &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&points)?);
        return Ok(());
    }
    println!("{:<32} {:>11} {:>10} {:>12} {:>10}  state", "run", "bytes", "bits/param", "eval_ppl", "weight_mse");
    for p in &points {
        let state = if p.on_frontier {
            "frontier".to_string()
        } else if let Some(d) = &p.dominated_by {
            format!("dominated by {}", d.display())
        } else {
            "not eligible".to_string()
        };
        match &p.summary {
            Some(s) => println!(
                "{:<32} {:>11} {:>10.4} {:>12.4} {:>10.5}  {state}",
                p.run.display(),
                s.artifact_size_bytes(),
                s.bits_per_param(),
                s.eval_ppl(),
                s.weight_rel_mse
            ),
            None => println!("{:<32} {:>11} {:>10} {:>12} {:>10}  {state}", p.run.display(), "-", "-", "-", "-"),
        }
        for f in &p.flags {
            println!("    ! {f}");
        }
    }
    println!("plot: {}", args.out.join("frontier.png").display());
    Ok(())
}

/// `runs/*` of the current workspace.
fn default_runs() -> anyhow::Result<Vec<PathBuf>> {
    runs_in(Path::new("runs"))
}

/// The run directories directly under `dir`, sorted (none when `dir` does not exist); the
/// logs of held-out scoring beside them are not runs.
pub fn runs_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let scoring = |p: &Path| {
        p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(autoqat_workspace::layout::HELDOUT_RUN_SUFFIX))
    };
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !scoring(p))
        .collect();
    out.sort();
    Ok(out)
}

fn plot(points: &[Point], png: &Path) -> anyhow::Result<()> {
    register_font();
    let pts: Vec<(&Point, f64, f64)> = points
        .iter()
        .filter_map(|p| {
            p.summary
                .as_ref()
                .filter(|s| s.eval_ppl().is_finite() && s.eval_ppl() > 0.0)
                .map(|s| (p, s.bits_per_param(), s.eval_ppl()))
        })
        .collect();
    let area = BitMapBackend::new(png, (1000, 600)).into_drawing_area();
    area.fill(&WHITE).map_err(perr)?;
    let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let mut budgets: Vec<f64> = points.iter().filter_map(|p| p.summary.as_ref().map(|s| s.budget_bpp)).collect();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    // The budget lines stay in view: how far below the gate a run is matters.
    let x1 = budgets.iter().fold(x1, |a, b| a.max(*b));
    let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.2), b.max(p.2)));
    // The full-precision PPL of the runs' source, drawn as the line no artifact can cross.
    let fp = pts.iter().filter_map(|p| p.0.summary.as_ref().map(|s| s.fp_ppl())).find(|f| f.is_finite() && *f > 0.0);
    let y0 = fp.map_or(y0, |f| y0.min(f));
    // Room on the right for the labels of the largest runs.
    let (x0, x1) = if pts.is_empty() { (0.0, 4.0) } else { (x0 - 0.05, x1 + 0.05 + 0.2 * (x1 - x0).max(0.1)) };
    let (y0, y1) = if pts.is_empty() { (1.0, 10.0) } else { (y0 * 0.9, y1 * 1.1) };
    let mut chart = ChartBuilder::on(&area)
        .caption("size against perplexity (frontier in green)", (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("bits per parameter (zipped artifact)")
        .y_desc("eval PPL")
        .label_style((FONT, 13))
        .draw()
        .map_err(perr)?;
    for b in budgets {
        chart.draw_series(LineSeries::new(vec![(b, y0), (b, y1)], BLUE.mix(0.4))).map_err(perr)?;
    }
    if let Some(f) = fp {
        chart
            .draw_series(LineSeries::new(vec![(x0, f), (x1, f)], BLACK.stroke_width(2)))
            .map_err(perr)?
            .label(format!("full precision {f:.2}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart.configure_series_labels().label_font((FONT, 13)).border_style(BLACK.mix(0.3)).draw().map_err(perr)?;
    }
    let frontier: Vec<(f64, f64)> = pts.iter().filter(|p| p.0.on_frontier).map(|p| (p.1, p.2)).collect();
    chart.draw_series(LineSeries::new(frontier.clone(), GREEN.stroke_width(2))).map_err(perr)?;
    for (p, x, y) in &pts {
        let color = if p.on_frontier { GREEN.to_rgba() } else { RGBColor(150, 150, 150).to_rgba() };
        chart.draw_series(std::iter::once(Circle::new((*x, *y), 5, color.filled()))).map_err(perr)?;
        if !p.flags.is_empty() {
            chart.draw_series(std::iter::once(Circle::new((*x, *y), 8, RED.stroke_width(2)))).map_err(perr)?;
        }
        let name = p.run.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        chart.draw_series(std::iter::once(Text::new(name, (*x, *y), (FONT, 12).into_font()))).map_err(perr)?;
    }
    area.present().map_err(perr)?;
    Ok(())
}

fn perr<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("frontier plot: {e}")
}
