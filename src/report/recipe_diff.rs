//! The best recipe as a diff against the baseline: the files that differ between the two
//! experiment commits, read through the research loop's `Git` and diffed by its `unified`.

use std::path::Path;

use anyhow::Context;
use autoqat_research::git::Git;

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
    let git = Git::discover(workspace)?;
    let files = git.changed_files(base, best).context("the commits of results.tsv")?;
    Ok(files
        .into_iter()
        .map(|(path, old, new)| FileDiff { unified: autoqat_research::focus::unified(&path, &old, &new, 3), path })
        .collect())
}

/// `path` as it was at `commit` (a full or abbreviated hash) in the repository that contains
/// `workspace`, if both exist.
pub fn file_at(workspace: &Path, commit: &str, path: &str) -> Option<String> {
    let git = Git::discover(workspace).ok()?;
    git.file_at(git.revision(commit)?, path)
}
