//! The run report: `report.md` (best recipe and its diff against the baseline, every
//! experiment, noise) and `progress.png` / `progress.svg`, all built from `results.tsv` and git.

pub mod markdown;
pub mod plot;
pub mod recipe_diff;

use std::path::{Path, PathBuf};

use anyhow::Context;
use autoqat_research::results::{self, Row, Status};

/// What `generate` wrote and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// The Markdown report.
    pub report_md: PathBuf,
    /// The PNG plot.
    pub png: PathBuf,
    /// The same plot as SVG.
    pub svg: PathBuf,
    /// Eval PPL of the full-precision model, as the trials measured it.
    pub fp_ppl: Option<f64>,
    /// Eval PPL of the baseline.
    pub baseline_ppl: Option<f64>,
    /// Eval PPL of the best kept experiment.
    pub best_ppl: Option<f64>,
    /// Experiment id of the best.
    pub best_exp: Option<String>,
    /// The best recipe as a unified diff against the baseline (empty when the baseline is best).
    pub best_diff: String,
    /// Number of experiments.
    pub experiments: usize,
}

/// Reads `<workspace>/results.tsv` and git, writes the report into `out` (default
/// `<workspace>/report`).
pub fn generate(workspace: &Path, tag: Option<&str>, out: Option<&Path>) -> anyhow::Result<Written> {
    let path = autoqat_workspace::Layout::new(workspace).results();
    if !path.is_file() {
        return Err(crate::exit::error(
            crate::exit::ExitKind::BadInput,
            format!("cannot read {} (hint: run `autoqat run` first, or `autoqat results --rebuild`)", path.display()),
        ));
    }
    let rows = results::read(&path)?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| workspace.join("report"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let title = tag.map(str::to_string).or_else(|| current_tag(workspace)).unwrap_or_else(|| "autoqat".into());

    let baseline = rows.iter().position(|r| r.status() == Status::Baseline);
    let best = results::best_row(&rows);
    let diff = match (baseline, best) {
        (Some(b), Some(k)) if rows[b].commit != rows[k].commit && !rows[k].commit.is_empty() => {
            recipe_diff::between(workspace, &rows[b].commit, &rows[k].commit)?
        }
        _ => Vec::new(),
    };
    let fp_ppl = fp_ppl(workspace, &title, &rows);
    let noise = measured_noise(workspace, &title).or_else(|| results::noise(&rows));
    let png = out.join("progress.png");
    let svg = out.join("progress.svg");
    let refs = plot::References { noise: noise.as_ref().map(|n| (n.mean, n.sigma)), fp_ppl };
    plot::write(&rows, &title, refs, &png, &svg)?;
    let heldout = autoqat_workspace::heldout::read(&autoqat_workspace::Layout::new(workspace).heldout())?;
    let settings = autoqat_research::settings::Settings::load(workspace).ok();
    // A report taken while the parallel loop runs says what is still in flight.
    let in_flight: Vec<String> = match &settings {
        Some(settings) => crate::status::in_flight(workspace, settings).iter().map(|f| f.line()).collect(),
        None => Vec::new(),
    };
    let float_inputs = match (&settings, best) {
        (Some(settings), Some(i)) => best_quantizes_no_activations(workspace, settings, &rows[i].commit),
        _ => false,
    };
    let md = markdown::render(&markdown::Summary {
        title: &title,
        rows: &rows,
        best,
        baseline,
        noise,
        fp_ppl,
        diff: &diff,
        plot: "progress.png",
        heldout: &heldout,
        in_flight: &in_flight,
        float_inputs,
    });
    let report_md = out.join("report.md");
    std::fs::write(&report_md, md).with_context(|| format!("cannot write {}", report_md.display()))?;
    Ok(Written {
        report_md,
        png,
        svg,
        fp_ppl,
        baseline_ppl: baseline.and_then(|i| rows[i].eval_ppl),
        best_ppl: best.and_then(|i| rows[i].eval_ppl),
        best_exp: best.map(|i| rows[i].exp.clone()),
        best_diff: diff.iter().map(|d| d.unified.as_str()).collect(),
        experiments: rows.len(),
    })
}

/// Whether the best recipe is an autoqat QAT recipe that quantizes no activations: a search
/// may switch A8 off when that pays (`activations.bits` is free), and a reader comparing with
/// W1.58A8 models must not miss it.
fn best_quantizes_no_activations(
    workspace: &Path,
    settings: &autoqat_research::settings::Settings,
    commit: &str,
) -> bool {
    let Some(path) = settings.run.mutable_paths.first().filter(|_| settings.validator.kind == "autoqat") else {
        return false;
    };
    recipe_diff::file_at(workspace, commit, path)
        .and_then(|text| autoqat_recipe::parse(&text).ok())
        .is_some_and(|r| r.activations.bits == autoqat_recipe::ActBits::None)
}

/// The noise the driver measured: its baseline repeats live in the baseline's git note (not
/// in results.tsv, which has one row per experiment), so a report that counted baseline rows
/// would call a measured σ unknown.
fn measured_noise(workspace: &Path, tag: &str) -> Option<results::Noise> {
    let git = autoqat_research::git::Git::open(workspace).ok()?;
    let records = git.records(tag).ok()?;
    let base = records.iter().find(|r| r.status == Some(Status::Baseline) && r.baseline_ppls.len() >= 2)?;
    let ppls = &base.baseline_ppls;
    Some(results::Noise {
        n: ppls.len(),
        mean: autoqat_research::noise::mean(ppls),
        sigma: base.sigma.or_else(|| autoqat_research::noise::sigma(ppls))?,
    })
}

/// `fp_ppl` from the first trial summary that has one (in the run directory the settings
/// name): the full-precision floor every trial is measured against.
fn fp_ppl(workspace: &Path, tag: &str, rows: &[Row]) -> Option<f64> {
    let settings = autoqat_research::settings::Settings::load(workspace).ok().map(|mut s| {
        s.for_tag(tag);
        s
    });
    let template = settings.as_ref().map_or(autoqat_workspace::layout::RUN_DIR_TEMPLATE, |s| s.trial.run_dir.as_str());
    let layout = autoqat_workspace::Layout::new(workspace);
    rows.iter().find_map(|r| {
        let summary = autoqat_workspace::run::read_summary(&layout.run_dir(template, r.record.exp)).ok()??;
        summary.fp_ppl.filter(|p| p.is_finite())
    })
}

/// The tag of the checked-out `autoqat/<tag>` branch, if any.
pub fn current_tag(workspace: &Path) -> Option<String> {
    autoqat_research::git::Git::discover(workspace).ok()?.current_tag()
}
