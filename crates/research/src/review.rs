//! `autoqat log`: every experiment of a run with its status, metrics, rationale and diff, in
//! an order and form a reviewer can read top to bottom.

use std::path::Path;

use git2::Oid;

use crate::error::Result;
use crate::focus;
use crate::git::Git;
use crate::results::Record;

/// The records of `tag` and, for each, the unified diff of the mutable paths.
pub fn entries(workspace: &Path, tag: &str, mutable: &[String]) -> Result<Vec<(Record, String)>> {
    let git = Git::open(workspace)?;
    let records = git.records(tag)?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let mut diff = String::new();
        if let (Ok(c), Ok(p)) = (Oid::from_str(&r.commit), Oid::from_str(&r.parent)) {
            for path in mutable {
                let old = git.file_at(p, path).unwrap_or_default();
                let new = git.file_at(c, path).unwrap_or_default();
                if old != new {
                    diff.push_str(&focus::unified(path, &old, &new, 2));
                }
            }
        }
        out.push((r, diff));
    }
    Ok(out)
}

/// The human-readable log.
pub fn render(tag: &str, entries: &[(Record, String)]) -> String {
    let mut s = format!("run autoqat/{tag}: {} experiments\n", entries.len());
    let best = crate::results::best(&entries.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>()).map(|r| r.exp);
    for (r, diff) in entries {
        let ppl = r.eval_ppl.map(|p| format!("{p:.4}")).unwrap_or_else(|| "-".into());
        let delta = r.delta.map(|d| format!(" ({:+.2}%)", d * 100.0)).unwrap_or_default();
        let star = if Some(r.exp) == best { "  <- best" } else { "" };
        s.push_str(&format!(
            "\n== exp {} {} eval_ppl {ppl}{delta} commit {}{star}\n",
            r.exp,
            r.status().as_str(),
            r.commit.chars().take(12).collect::<String>()
        ));
        s.push_str(&format!("   {}\n", crate::results::one_line(&r.description)));
        if !r.rationale.trim().is_empty() {
            s.push_str(&format!("   why: {}\n", crate::results::one_line(&r.rationale)));
        }
        if let Some(e) = &r.error {
            s.push_str(&format!("   error: {}\n", crate::results::one_line(e)));
        }
        if let Some(sig) = r.sigma {
            s.push_str(&format!("   baseline repeats {:?}, sigma {sig:.4}\n", r.baseline_ppls));
        }
        if let Some(c) = r.confirm_ppl {
            s.push_str(&format!("   second seed eval_ppl {c:.4}\n"));
        }
        if r.cost_usd > 0.0 {
            s.push_str(&format!(
                "   proposer: {} in / {} out tokens, ${:.4}\n",
                r.input_tokens, r.output_tokens, r.cost_usd
            ));
        }
        for line in diff.lines() {
            s.push_str(&format!("   {line}\n"));
        }
    }
    s
}
