//! The journal (`.autoqat/pending.json`): what the experiment in flight is, written before its
//! first commit and removed once its row is written, so that `--resume` can tell a trial to
//! re-run from a finished experiment.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::results::Record;

/// The journal of the experiment in flight.
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

/// Writes the journal atomically.
pub(super) fn write(ws: &Path, p: &Pending) -> Result<()> {
    Ok(autoqat_workspace::atomic::write_json(&autoqat_workspace::Layout::new(ws).pending(), p)?)
}

/// The journal, when there is a readable one.
pub(super) fn read(ws: &Path) -> Option<Pending> {
    let text = std::fs::read_to_string(autoqat_workspace::Layout::new(ws).pending()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes the journal (the experiment is recorded, or nothing is in flight).
pub(super) fn clear(ws: &Path) {
    let _ = std::fs::remove_file(autoqat_workspace::Layout::new(ws).pending());
}
