//! The error type of the research loop: one variant per kind of failure a user can act on.

use std::path::PathBuf;

/// Everything that can stop the research loop or one of its commands.
#[derive(Debug, thiserror::Error)]
pub enum ResearchError {
    /// autoqat.toml is missing a value or has a wrong one.
    #[error("{path}: {msg}")]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A git operation failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// The workspace is not in a state the loop can start from.
    #[error("{0}")]
    Workspace(String),
    /// The proposer could not be reached or gave up.
    #[error("proposer: {0}")]
    Proposer(String),
    /// The trial command could not be started.
    #[error("trial: {0}")]
    Trial(String),
    /// results.tsv or a note could not be parsed.
    #[error("results: {0}")]
    Results(String),
}

impl ResearchError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ResearchError::Io { path: path.into(), source }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ResearchError>;
