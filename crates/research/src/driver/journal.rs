//! The journal: one file per experiment in flight (`.autoqat/inflight/<tag>-<exp>.json`),
//! written before its first commit and removed once its row is written, so that `--resume`
//! can tell a trial to re-run from a finished experiment. One worker or eight, it is the same
//! file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ResearchError, Result};
use crate::results::Record;

/// What an experiment is: its change and what proposing it cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pending {
    pub tag: String,
    pub exp: u32,
    pub description: String,
    pub rationale: String,
    pub diff: String,
    pub diff_key: String,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Pending {
    /// The baseline: experiment `exp` of run `tag`, the unmodified recipe.
    pub(super) fn baseline(tag: &str, exp: u32) -> Pending {
        Pending {
            tag: tag.to_string(),
            exp,
            description: "baseline: the unmodified recipe".into(),
            rationale: String::new(),
            diff: String::new(),
            diff_key: String::new(),
            cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// The record of this experiment after its first trial: what it is, and what the trial
    /// measured (the status and the comparison are the caller's).
    pub(super) fn record(&self, first: &crate::trial::Outcome) -> Record {
        let mut rec = Record {
            tag: self.tag.clone(),
            exp: self.exp,
            description: self.description.clone(),
            rationale: self.rationale.clone(),
            diff: self.diff.clone(),
            diff_key: self.diff_key.clone(),
            cost_usd: self.cost_usd,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            ..Record::default()
        };
        rec.set_measurements(&first.summary, first.wall_s);
        rec.error = first.error.clone();
        rec
    }
}

/// The journal of one experiment in flight. Its running commit is not in it: it is made after
/// the journal and held by `refs/autoqat/<tag>/running/<exp>`, which `--resume` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flight {
    /// What it is.
    pub(super) pending: Pending,
    /// The commit it was proposed against (the best, or the branch head before the baseline).
    pub(super) parent: String,
    /// The worker slot (device) it runs on.
    pub worker: usize,
    /// The experiment whose change it re-applies on a newer best, if it is such a replay.
    pub(super) replays: Option<u32>,
    /// It runs in the workspace itself, on the branch (one worker, or the baseline), rather
    /// than in a worktree of its own.
    #[serde(default)]
    pub in_workspace: bool,
}

impl Flight {
    /// Its experiment number.
    pub fn exp(&self) -> u32 {
        self.pending.exp
    }

    /// Its run tag.
    pub fn tag(&self) -> &str {
        &self.pending.tag
    }

    /// Its one-line description.
    pub fn description(&self) -> &str {
        &self.pending.description
    }
}

fn path(ws: &Path, tag: &str, exp: u32) -> PathBuf {
    autoqat_workspace::Layout::new(ws).inflight().join(format!("{}-{exp:04}.json", tag.replace('/', "-")))
}

/// Writes the journal of `f` atomically.
pub(super) fn write(ws: &Path, f: &Flight) -> Result<()> {
    let path = path(ws, &f.pending.tag, f.pending.exp);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ResearchError::io(dir, e))?;
    }
    Ok(autoqat_workspace::atomic::write_json(&path, f)?)
}

/// Removes the journal of experiment `exp` of `tag` (it is recorded, or it never started).
pub(super) fn remove(ws: &Path, tag: &str, exp: u32) {
    let _ = std::fs::remove_file(path(ws, tag, exp));
}

/// The journals of the experiments in flight in `ws` (every tag), in experiment order.
pub fn flights(ws: &Path) -> Vec<Flight> {
    let dir = autoqat_workspace::Layout::new(ws).inflight();
    let mut out: Vec<Flight> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
        .collect();
    out.sort_by_key(|f: &Flight| (f.pending.tag.clone(), f.pending.exp));
    out
}
