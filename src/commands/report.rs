//! `autoqat report`: writes report.md and progress.png, and prints the best recipe's diff.

use crate::cli::ReportArgs;
use crate::report;

/// Runs `autoqat report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let w = report::generate(&args.workspace, args.tag.as_deref(), args.out.as_deref())?;
    let ppl = crate::fmt::ppl_or_dash;
    println!("experiments: {}", w.experiments);
    println!("fp_ppl: {}", ppl(w.fp_ppl));
    println!("baseline_ppl: {}", ppl(w.baseline_ppl));
    println!("best_ppl: {} (experiment {})", ppl(w.best_ppl), w.best_exp.as_deref().unwrap_or("-"));
    println!("report: {}", w.report_md.display());
    println!("plot: {}", w.png.display());
    if w.best_diff.is_empty() && w.best_ppl < w.baseline_ppl {
        println!("best recipe: no diff (its commit or the baseline's is not recorded in results.tsv)");
    } else if w.best_diff.is_empty() {
        println!("best recipe: the baseline (no kept change)");
    } else {
        println!("best recipe against the baseline:\n{}", w.best_diff);
    }
    Ok(())
}
