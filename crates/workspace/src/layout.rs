//! Where things live in a workspace. Every path the loop, the trial, `status` and the report
//! agree on is named here once; settings may move the recipe and the run directories, and
//! then they go through [`Layout::run_dir`] too.

use std::path::{Path, PathBuf};

/// The workspace's settings file.
pub const CONFIG: &str = "autoqat.toml";
/// The mutable QAT recipe of the default templates.
pub const RECIPE: &str = "experiments/train.toml";
/// One row per finished experiment (rebuildable from git notes).
pub const RESULTS: &str = "results.tsv";
/// The held-out text: the trial never reads it (`[heldout]` scores the best on it).
pub const HELDOUT_TEXT: &str = "data/heldout.txt";
/// Held-out scores of the best recipe, never read by the loop's decisions.
pub const HELDOUT: &str = "heldout.tsv";
/// Suffix of the directory beside a run's that holds its held-out scoring's log (not a run).
pub const HELDOUT_RUN_SUFFIX: &str = "-heldout";
/// The loop's private state: lock, journal, the running trial's process group.
pub const STATE_DIR: &str = ".autoqat";
/// The default run directory of an experiment; `{exp}` becomes its zero-padded number.
pub const RUN_DIR_TEMPLATE: &str = "runs/{exp}";
/// The default stop file: touching it ends the run after the current experiment.
pub const STOP_FILE: &str = "STOP";
/// Paths the harness writes that must never make the worktree dirty (git exclude patterns).
pub const GIT_EXCLUDES: &[&str] =
    &["/runs/", "/results.tsv", "/results.tsv.tmp", "/heldout.tsv", "/.autoqat/", "/STOP"];

/// The paths of one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the workspace at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The workspace directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `autoqat.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG)
    }

    /// The default recipe, `experiments/train.toml`.
    pub fn recipe(&self) -> PathBuf {
        self.root.join(RECIPE)
    }

    /// `results.tsv`.
    pub fn results(&self) -> PathBuf {
        self.root.join(RESULTS)
    }

    /// `heldout.tsv`.
    pub fn heldout(&self) -> PathBuf {
        self.root.join(HELDOUT)
    }

    /// `.autoqat/`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// `.autoqat/lock`: flocked by the running `autoqat run`.
    pub fn lock(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    /// `.autoqat/trial.pgid`: the running trial's process group, killed on resume if orphaned.
    pub fn trial_pgid(&self) -> PathBuf {
        self.state_dir().join("trial.pgid")
    }

    /// `.autoqat/inflight/`: the research loop's journals, one per experiment in flight.
    pub fn inflight(&self) -> PathBuf {
        self.state_dir().join("inflight")
    }

    /// `.autoqat/queue.json`: the loop's changes waiting to be re-applied on a new best.
    pub fn queue(&self) -> PathBuf {
        self.state_dir().join("queue.json")
    }

    /// `.autoqat/worktrees/`: the git worktrees of the trials in flight.
    pub fn worktrees(&self) -> PathBuf {
        self.state_dir().join("worktrees")
    }

    /// The run directory of experiment `exp` under `template` (`{exp}` replaced), absolute.
    pub fn run_dir(&self, template: &str, exp: u32) -> PathBuf {
        self.root.join(run_dir(template, exp))
    }
}

/// The run directory of experiment `exp` under `template`, relative to the workspace.
pub fn run_dir(template: &str, exp: u32) -> PathBuf {
    PathBuf::from(template.replace("{exp}", &format!("{exp:04}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_dirs_are_zero_padded() {
        let l = super::Layout::new("/w");
        assert_eq!(l.run_dir(super::RUN_DIR_TEMPLATE, 7), std::path::Path::new("/w/runs/0007"));
        assert_eq!(super::run_dir("out/e{exp}", 12), std::path::Path::new("out/e0012"));
    }
}
