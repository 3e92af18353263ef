//! Renders the run summary as Markdown.

use std::fmt::Write as _;

use autoqat_research::results::{Noise, Row, Status};

use super::recipe_diff::FileDiff;

/// Everything the Markdown summary shows.
pub struct Summary<'a> {
    /// Title line, e.g. the run tag.
    pub title: &'a str,
    /// Every experiment, in order.
    pub rows: &'a [Row],
    /// Index of the best row.
    pub best: Option<usize>,
    /// Index of the (first) baseline row.
    pub baseline: Option<usize>,
    /// Spread of the repeated baseline.
    pub noise: Option<Noise>,
    /// Eval PPL of the full-precision model.
    pub fp_ppl: Option<f64>,
    /// The best recipe against the baseline.
    pub diff: &'a [FileDiff],
    /// File name of the plot, relative to the report.
    pub plot: &'a str,
    /// Held-out scores (heldout.tsv), oldest first.
    pub heldout: &'a [autoqat_workspace::heldout::Row],
    /// The parallel loop's experiments still in flight, one line per worker.
    pub in_flight: &'a [String],
    /// The best recipe quantizes no activations (`activations.bits = "none"`).
    pub float_inputs: bool,
}

/// The Markdown text of the report.
pub fn render(s: &Summary<'_>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# autoqat report: {}\n", s.title);
    overview(&mut md, s);
    let _ = writeln!(md, "![eval PPL per experiment]({})\n", s.plot);
    best_recipe(&mut md, s);
    noise(&mut md, s);
    heldout(&mut md, s);
    table(&mut md, s.rows);
    md
}

fn overview(md: &mut String, s: &Summary<'_>) {
    let rows = s.rows;
    let mut counts = String::new();
    for status in Status::ALL {
        let n = rows.iter().filter(|r| r.status() == status).count();
        if n > 0 {
            let _ = write!(counts, "{}{n} {status}", if counts.is_empty() { "" } else { ", " });
        }
    }
    let time: f64 = rows.iter().filter_map(|r| r.time_s).sum();
    let cost: f64 = rows.iter().map(|r| r.cost_usd).sum();
    let _ = writeln!(md, "- experiments: {} ({counts})", rows.len());
    let base = s.baseline.and_then(|i| rows[i].eval_ppl);
    if let Some(fp) = s.fp_ppl {
        let _ = writeln!(md, "- full-precision teacher eval PPL: {}", crate::fmt::ppl(fp));
    }
    if let Some(b) = base {
        let _ = writeln!(md, "- baseline eval PPL: {}", crate::fmt::ppl(b));
    }
    if let Some(i) = s.best {
        let r = &rows[i];
        let p = r.eval_ppl.unwrap_or(f64::NAN);
        let gain = base.map(|b| format!(" ({:+.2}% vs baseline)", (p / b - 1.0) * 100.0)).unwrap_or_default();
        let _ = writeln!(
            md,
            "- best eval PPL: {} in experiment {} `{}`{gain}",
            crate::fmt::ppl(p),
            r.exp,
            short(&r.commit)
        );
        if let Some(bpb) = r.eval_bpb {
            let _ = writeln!(md, "- best eval bits per byte: {bpb:.4}");
        }
        if let (Some(n), Some(z), Some(p)) = (r.q_neg1, r.q_zero, r.q_pos1) {
            let _ = writeln!(md, "- best weight mix: -1 {:.1}%, 0 {:.1}%, +1 {:.1}%", n * 100.0, z * 100.0, p * 100.0);
        }
    }
    let _ = writeln!(md, "- trial time: {:.1} min; proposer cost: ${cost:.4}", time / 60.0);
    for line in s.in_flight {
        let _ = writeln!(md, "- in flight: {line}");
    }
    md.push('\n');
}

fn best_recipe(md: &mut String, s: &Summary<'_>) {
    let _ = writeln!(md, "## Best recipe\n");
    match s.best {
        None => {
            let _ = writeln!(md, "No experiment finished with an eval PPL yet.\n");
        }
        Some(i) => {
            let r = &s.rows[i];
            if Some(i) == s.baseline || s.diff.is_empty() {
                let _ = writeln!(md, "The baseline recipe is still the best (no kept change).\n");
            } else {
                let _ = writeln!(md, "Experiment {} (`{}`): {}\n", r.exp, short(&r.commit), r.description);
                let _ = writeln!(md, "Its diff against the baseline:\n\n```diff");
                for f in s.diff {
                    md.push_str(&f.unified);
                }
                let _ = writeln!(md, "```\n");
            }
            if s.float_inputs {
                let _ = writeln!(
                    md,
                    "The best recipe quantizes no activations (`activations.bits = \"none\"`): its quantized linears take full-precision inputs, unlike W1.58A8 models such as BitNet b1.58.\n"
                );
            }
            let kept: Vec<&Row> = s.rows.iter().filter(|r| r.status() == Status::Keep).collect();
            if !kept.is_empty() {
                let _ = writeln!(md, "Kept changes, in order:\n");
                for r in kept {
                    let confirmed = r
                        .confirm_ppl
                        .map(|c| format!(", confirmed on a second seed: {}", crate::fmt::ppl(c)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        md,
                        "1. {} — {} ({}{confirmed})",
                        r.exp,
                        r.description,
                        crate::fmt::ppl_or_dash(r.eval_ppl)
                    );
                }
                md.push('\n');
            }
        }
    }
}

fn noise(md: &mut String, s: &Summary<'_>) {
    let _ = writeln!(md, "## Noise\n");
    match &s.noise {
        Some(n) => {
            let _ = write!(
                md,
                "The baseline ran {} times: mean eval PPL {}, σ = {:.4} ({:.2}% of the mean). \
                 Improvements smaller than about 2σ are within noise.",
                n.n,
                crate::fmt::ppl(n.mean),
                n.sigma,
                n.relative() * 100.0
            );
            // The keep rule trusts this σ; with few runs it can be off severalfold either way.
            if let Some((lo, hi)) = n.interval(0.9) {
                let _ = write!(
                    md,
                    " From {} runs the true σ lies between {lo:.4} and {hi:.4} (90% confidence){}.",
                    n.n,
                    if n.n < 10 { "; more baseline repeats (`noise.baseline_repeats`) narrow it" } else { "" }
                );
            }
            md.push_str("\n\n");
        }
        None => {
            let _ = writeln!(
                md,
                "The baseline ran once, so the run-to-run noise is unknown; repeat the baseline \
                 (noise settings in autoqat.toml) before trusting small gains.\n"
            );
        }
    }
}

/// Search PPL beside held-out PPL: the loop selected on the first, so after many experiments
/// it is optimistic; the second was never read by a decision.
fn heldout(md: &mut String, s: &Summary<'_>) {
    let _ = writeln!(md, "## Held-out split\n");
    if s.heldout.is_empty() {
        let _ = writeln!(
            md,
            "No held-out score yet: set `[heldout] command` in autoqat.toml (the templates score \
             data/heldout.txt); the best recipe is scored when the run stops.\n"
        );
        return;
    }
    let _ =
        writeln!(md, "Keep/discard read the eval text only; no decision and no prompt ever saw the held-out text.\n");
    let _ = writeln!(md, "| exp | change | search PPL | held-out PPL |\n|---:|---|---:|---:|");
    for h in s.heldout {
        let desc = s.rows.iter().find(|r| r.record.exp == h.exp).map(|r| r.description.as_str()).unwrap_or("");
        let search = crate::fmt::ppl_or_dash(h.search_ppl);
        let _ = writeln!(
            md,
            "| {} | {} | {search} | {} |",
            h.exp,
            desc.replace('|', "\\|"),
            crate::fmt::ppl(h.heldout_ppl)
        );
    }
    md.push('\n');
}

fn table(md: &mut String, rows: &[Row]) {
    let _ = writeln!(md, "## Experiments\n");
    let _ = writeln!(md, "| exp | status | eval PPL | Δ | bpb | -1 / 0 / +1 | time s | description |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|---:|---|");
    for r in rows {
        let q = match (r.q_neg1, r.q_zero, r.q_pos1) {
            (Some(n), Some(z), Some(p)) => format!("{:.2} / {:.2} / {:.2}", n, z, p),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {q} | {} | {} |",
            r.exp,
            r.status(),
            crate::fmt::ppl_or_dash(r.eval_ppl),
            r.delta.map(|d| format!("{:+.2}%", d * 100.0)).unwrap_or_else(|| "-".into()),
            r.eval_bpb.map(|b| format!("{b:.4}")).unwrap_or_else(|| "-".into()),
            r.time_s.map(|t| format!("{t:.0}")).unwrap_or_else(|| "-".into()),
            r.description.replace('|', "\\|"),
        );
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
