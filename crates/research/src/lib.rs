//! autoqat-research: the unattended research loop. It asks a proposer for one focused edit
//! of the mutable recipe, commits it, runs the trial as a child process, and keeps or reverts
//! the commit. Git notes are the source of truth for every finished experiment; `results.tsv`
//! is a cache that can always be rebuilt from them.
//!
//! This crate never links libtorch: trials are child processes. What it reads and writes on
//! disk (the layout, a run's `steps.tsv` and `summary.json`, `results.tsv` and the note
//! records) belongs to `autoqat-workspace`; [`results`] is re-exported from there.

pub mod answer;
pub mod driver;
pub mod edit;
pub mod error;
pub mod executor;
pub mod focus;
pub mod git;
pub mod killpoint;
pub mod noise;
pub mod prompt;
pub mod proposer;
pub mod prune;
pub mod python;
pub mod review;
pub mod settings;
pub mod trial;
pub mod validate;

pub use autoqat_workspace::results;
pub use error::ResearchError;
