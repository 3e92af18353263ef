//! The error type of the on-disk contract.

use std::path::PathBuf;

/// A file of the workspace could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A file could not be read or written. The OS error is part of the message, not a
    /// chained source, so that a cause chain prints it once.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A file is there but does not hold what the contract says.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix where there is one.
        msg: String,
    },
    /// One line of a table (`results.tsv`) does not read.
    #[error("{path} line {line}: {msg}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, and the fix.
        msg: String,
    },
}

impl WorkspaceError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        WorkspaceError::Io { path: path.into(), cause }
    }
}

/// Maps an I/O error to [`WorkspaceError::Io`] naming `path`.
pub fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |cause| WorkspaceError::io(path, cause)
}

/// Result with [`WorkspaceError`].
pub type Result<T> = std::result::Result<T, WorkspaceError>;
