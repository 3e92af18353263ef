//! The journal (`.autoqat/pending.json`): what the experiment in flight is, written before its
//! first commit and removed once its row is written, so that `--resume` can tell a trial to
//! re-run from a finished experiment.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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
