//! Early stopping: a live `steps.tsv` is compared with the best run's at the same step.

use std::path::Path;

/// `(step, eval_ppl)` pairs of a steps.tsv (read by the workspace's one reader); a file that
/// cannot be read yet has none, since a live trial may not have written its header.
pub fn curve(path: &Path) -> Vec<(u64, f64)> {
    autoqat_workspace::run::read_steps(path)
        .map(|rows| rows.iter().map(|r| (r.step, r.eval_ppl)).collect())
        .unwrap_or_default()
}

/// Why the live run should stop, if it is worse than the best run by more than `margin` at a
/// step both have evaluated (at or after `min_step`).
pub fn verdict(live: &[(u64, f64)], best: &[(u64, f64)], margin: f64, min_step: u64) -> Option<String> {
    for &(step, ppl) in live.iter().rev() {
        if step < min_step {
            continue;
        }
        if let Some(&(_, b)) = best.iter().find(|(s, _)| *s == step) {
            if !ppl.is_finite() || ppl > b * (1.0 + margin) {
                return Some(format!(
                    "eval_ppl {ppl:.4} at step {step} is more than {:.0}% above the best run's {b:.4}",
                    margin * 100.0
                ));
            }
            return None;
        }
    }
    None
}
