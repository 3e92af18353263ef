//! How big a change is: changed lines counted with `similar`, and a fingerprint of the
//! changed lines so that the same edit is not tried twice.

use similar::{ChangeTag, DiffTag, TextDiff};

/// Changed lines between two texts: a replaced line counts once, an added or removed one once.
pub fn changed_lines(old: &str, new: &str) -> usize {
    let diff = TextDiff::from_lines(old, new);
    diff.ops()
        .iter()
        .filter(|op| op.tag() != DiffTag::Equal)
        .map(|op| op.old_range().len().max(op.new_range().len()))
        .sum()
}

/// The changed lines as `-old` / `+new` lines (no context), for prompts, notes and review.
pub fn compact_diff(path: &str, old: &str, new: &str) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    for ch in diff.iter_all_changes() {
        let sign = match ch.tag() {
            ChangeTag::Equal => continue,
            ChangeTag::Delete => '-',
            ChangeTag::Insert => '+',
        };
        out.push_str(&format!("{path}: {sign}{}\n", ch.value().trim_end()));
    }
    out
}

/// A stable fingerprint of a compact diff, ignoring whitespace and order.
pub fn diff_key(compact: &str) -> String {
    let mut lines: Vec<String> =
        compact.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    lines.sort();
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    autoqat_workspace::hash::fnv1a_hex(lines.join("\n").as_bytes())
}

/// A unified diff with `context` lines around each change and git-style `a/`, `b/` headers:
/// the one diff every command shows (`autoqat log`, the report's best-recipe diff).
pub fn unified(path: &str, old: &str, new: &str, context: usize) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(context)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}
