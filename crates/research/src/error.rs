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
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error (in the message, not chained, so it prints once).
        cause: std::io::Error,
    },
    /// A git operation failed.
    #[error("git: {0}")]
    Git(git2::Error),
    /// A workspace file (results.tsv, a summary, steps.tsv) could not be read or written.
    #[error(transparent)]
    Files(#[from] autoqat_workspace::WorkspaceError),
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
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        ResearchError::Io { path: path.into(), cause }
    }
}

// By hand rather than `#[from]`, so the message is not repeated as a separate cause.
impl From<git2::Error> for ResearchError {
    fn from(e: git2::Error) -> Self {
        ResearchError::Git(e)
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ResearchError>;
