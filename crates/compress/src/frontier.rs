//! The (size, PPL) frontier over compression runs, with the traps of the track flagged: a run
//! whose weight-space MSE is better than another's at the same budget while its PPL is worse
//! (the proxy misleads), a run scored with a tokenizer other than the reference, and a run whose
//! artifact was not reloaded (crashed, or verified with `--no-verify` off).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::pipeline::Summary;

/// One run as the frontier sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The run directory.
    pub run: PathBuf,
    /// The summary, when the run finished.
    pub summary: Option<Summary>,
    /// On the frontier: loadable, finite PPL, not dominated.
    pub on_frontier: bool,
    /// Dominated by this run (smaller or equal size and lower or equal PPL).
    pub dominated_by: Option<PathBuf>,
    /// What is wrong with this run, one phrase each.
    pub flags: Vec<String>,
}

impl Point {
    /// Loadable with a finite PPL: the only runs a frontier may hold.
    pub fn eligible(&self) -> bool {
        self.summary
            .as_ref()
            .is_some_and(|s| s.run.status == "ok" && s.eval_ppl().is_finite() && s.verify_ppl.is_some())
    }
}

/// Reads one run directory's `summary.json`; a missing or crashed one is a point with a flag.
pub fn read_run(run: &Path) -> Point {
    let mut flags = Vec::new();
    let summary = match autoqat_workspace::run::read_summary_as::<Summary>(run) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            flags.push("no summary.json".into());
            None
        }
        Err(e) => {
            // A crash summary is a plain run summary: say why the run crashed.
            match autoqat_workspace::run::read_summary(run) {
                Ok(Some(s)) if s.is_crash() => {
                    flags.push(format!("crashed: {}", s.error.as_deref().unwrap_or("no reason recorded")))
                }
                _ => flags.push(format!("summary.json is not one this autoqat writes ({e}; rerun autoqat compress)")),
            }
            None
        }
    };
    Point { run: run.to_path_buf(), summary, on_frontier: false, dominated_by: None, flags }
}

/// Marks the frontier and the traps over `points`; `reference_tokenizer` is the SHA-256 of the
/// reference tokenizer.json (None: the one most runs used).
pub fn analyse(points: &mut [Point], reference_tokenizer: Option<&str>) {
    for p in points.iter_mut() {
        if let Some(s) = &p.summary {
            if s.verify_ppl.is_none() {
                p.flags.push("artifact not reloaded (run without --no-verify to prove it loads)".into());
            }
            if !s.eval_ppl().is_finite() {
                p.flags.push("non-finite PPL".into());
            }
        }
    }
    let majority = {
        let mut shas: Vec<&str> =
            points.iter().filter_map(|p| p.summary.as_ref()).map(|s| s.tokenizer_sha256.as_str()).collect();
        shas.sort_unstable();
        let mut best: Option<(&str, usize)> = None;
        for chunk in shas.chunk_by(|a, b| a == b) {
            if best.is_none_or(|(_, n)| chunk.len() > n) {
                best = Some((chunk[0], chunk.len()));
            }
        }
        best.map(|(s, _)| s.to_string())
    };
    let reference = reference_tokenizer.map(str::to_string).or(majority);
    // A PPL scored with another tokenizer is not comparable: such runs stay off the frontier.
    let same_tokenizer = |s: &Summary| reference.as_ref().is_none_or(|r| &s.tokenizer_sha256 == r);
    let snapshot: Vec<(PathBuf, Option<Summary>, bool)> = points
        .iter()
        .map(|p| (p.run.clone(), p.summary.clone(), p.eligible() && p.summary.as_ref().is_some_and(same_tokenizer)))
        .collect();
    for p in points.iter_mut() {
        let Some(s) = p.summary.clone() else { continue };
        if let Some(r) = &reference {
            if &s.tokenizer_sha256 != r {
                p.flags.push("scored with a tokenizer other than the reference".into());
            }
        }
        for (run, other, _) in &snapshot {
            let Some(o) = other else { continue };
            if run != &p.run
                && o.budget_bpp == s.budget_bpp
                && s.weight_rel_mse < o.weight_rel_mse
                && s.eval_ppl() > o.eval_ppl()
            {
                p.flags.push(format!(
                    "lower weight MSE than {} ({:.4} < {:.4}) but worse PPL ({:.3} > {:.3})",
                    run.display(),
                    s.weight_rel_mse,
                    o.weight_rel_mse,
                    s.eval_ppl(),
                    o.eval_ppl()
                ));
            }
        }
        if !(p.eligible() && same_tokenizer(&s)) {
            continue;
        }
        let dominator = snapshot.iter().find(|(run, other, ok)| {
            let Some(o) = other else { return false };
            *ok && run != &p.run
                && o.artifact_size_bytes() <= s.artifact_size_bytes()
                && o.eval_ppl() <= s.eval_ppl()
                && (o.artifact_size_bytes() < s.artifact_size_bytes() || o.eval_ppl() < s.eval_ppl())
        });
        p.dominated_by = dominator.map(|(run, _, _)| run.clone());
        p.on_frontier = p.dominated_by.is_none();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StageTimes;

    fn point(name: &str, bytes: i64, ppl: f64, mse: f64, tok: &str, verified: bool) -> Point {
        let s = Summary {
            run: autoqat_workspace::Summary {
                status: "ok".into(),
                eval_ppl: Some(ppl),
                eval_loss: Some(ppl.ln()),
                eval_bpb: Some(1.0),
                fp_ppl: Some(10.0),
                device: "cpu".into(),
                time_s: 1.0,
                artifact_size_bytes: Some(bytes),
                bits_per_param: Some(bytes as f64 * 8.0 / 1000.0),
                ..autoqat_workspace::Summary::default()
            },
            eval_tokens: 100,
            eval_docs: 10,
            artifact_sha256: String::new(),
            artifact_zip: PathBuf::new(),
            artifact_dir: PathBuf::new(),
            param_count: 1000,
            budget_bpp: 2.2125,
            budget_bits: 2213,
            sensitivity: "mse".into(),
            weight_rel_mse: mse,
            tokenizer_sha256: tok.into(),
            mix: Default::default(),
            q4_share: 0.0,
            stages: StageTimes::default(),
            widen: None,
            distill: vec![],
            finetune: None,
            verify_ppl: verified.then_some(ppl),
            offloaded: false,
        };
        Point { run: PathBuf::from(name), summary: Some(s), on_frontier: false, dominated_by: None, flags: vec![] }
    }

    #[test]
    fn frontier_drops_dominated_runs_and_flags_the_traps() {
        let mut pts = vec![
            point("small", 200, 30.0, 0.20, "t", true),
            point("big-good", 270, 20.0, 0.10, "t", true),
            // Larger and worse than big-good: dominated; better MSE than it, worse PPL: a trap.
            point("big-bad", 275, 25.0, 0.05, "t", true),
            point("other-tok", 250, 10.0, 0.30, "x", true),
            point("unverified", 100, 5.0, 0.30, "t", false),
        ];
        analyse(&mut pts, None);
        let by = |n: &str| pts.iter().find(|p| p.run == Path::new(n)).unwrap();
        assert!(by("small").on_frontier && by("big-good").on_frontier);
        assert_eq!(by("big-bad").dominated_by.as_deref(), Some(Path::new("big-good")));
        assert!(
            by("big-bad").flags.iter().any(|f| f.contains("lower weight MSE than big-good")),
            "{:?}",
            by("big-bad").flags
        );
        assert!(by("other-tok").flags.iter().any(|f| f.contains("tokenizer")));
        let u = by("unverified");
        assert!(!u.on_frontier && u.flags.iter().any(|f| f.contains("not reloaded")));
        // Smaller and better, but scored with another tokenizer: off the frontier, dominating none.
        assert!(!by("other-tok").on_frontier && by("other-tok").dominated_by.is_none());
    }
}
