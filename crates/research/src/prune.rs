//! Early stopping: a live `steps.tsv` is compared with the best run's at the same step.

use std::path::Path;

/// `(step, eval_ppl)` pairs of a steps.tsv; unreadable or partial lines are skipped.
pub fn read_steps(path: &Path) -> Vec<(u64, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let cols: Vec<&str> = header.split('\t').collect();
    let (Some(si), Some(pi)) = (
        cols.iter().position(|c| *c == "step"),
        cols.iter().position(|c| *c == "eval_ppl"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((f.get(si)?.parse().ok()?, f.get(pi)?.parse().ok()?))
        })
        .collect()
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
