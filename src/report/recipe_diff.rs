//! The best recipe as a diff against the baseline: the files that differ between the two
//! experiment commits, read from git and diffed with `similar`.

use std::path::Path;

use anyhow::Context;

/// One changed file between the baseline and the best commit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileDiff {
    /// Path relative to the repository root.
    pub path: String,
    /// Unified diff, baseline first.
    pub unified: String,
}

/// Diffs every file that changed between `base` and `best` (commit hashes, abbreviated ones
/// too) in the repository that contains `workspace`.
pub fn between(workspace: &Path, base: &str, best: &str) -> anyhow::Result<Vec<FileDiff>> {
    let repo = git2::Repository::discover(workspace)
        .with_context(|| format!("{} is not inside a git repository", workspace.display()))?;
    let tree = |rev: &str| -> anyhow::Result<git2::Tree<'_>> {
        let obj = repo
            .revparse_single(rev)
            .with_context(|| format!("commit {rev} from results.tsv is not in the repository"))?;
        Ok(obj.peel_to_commit().with_context(|| format!("{rev} is not a commit"))?.tree()?)
    };
    let (old, new) = (tree(base)?, tree(best)?);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
    let mut out = Vec::new();
    for delta in diff.deltas() {
        let path = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = |id: git2::Oid| -> String {
            if id.is_zero() {
                return String::new();
            }
            repo.find_blob(id).map(|b| String::from_utf8_lossy(b.content()).into_owned()).unwrap_or_default()
        };
        let (a, b) = (text(delta.old_file().id()), text(delta.new_file().id()));
        out.push(FileDiff { unified: unified(&a, &b, &path), path });
    }
    Ok(out)
}

/// A unified diff of two texts with git-style `a/` and `b/` headers.
pub fn unified(old: &str, new: &str, path: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}
