//! The error type of this crate: each variant names its cause and, where possible, the fix.

use std::path::PathBuf;

/// Everything that can end a trial or an export.
#[derive(Debug, thiserror::Error)]
pub enum QatError {
    /// Building, loading or evaluating the model failed.
    #[error(transparent)]
    Model(#[from] autoqat_model::ModelError),
    /// A torch operation failed.
    #[error("torch: {0}")]
    Torch(tch::TchError),
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not chained, so it prints once).
        cause: std::io::Error,
    },
    /// The recipe cannot run as written (the message names the key).
    #[error("{0}")]
    Config(String),
    /// The loss or a gradient became NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
    /// A checkpoint or export is missing or inconsistent.
    #[error("{0}")]
    Checkpoint(String),
}

// By hand rather than `#[from]`, so the message is not repeated as a separate cause.
impl From<tch::TchError> for QatError {
    fn from(e: tch::TchError) -> Self {
        QatError::Torch(e)
    }
}

impl From<autoqat_workspace::WorkspaceError> for QatError {
    fn from(e: autoqat_workspace::WorkspaceError) -> Self {
        match e {
            autoqat_workspace::WorkspaceError::Io { path, cause } => QatError::Io { path, cause },
            other => QatError::Checkpoint(other.to_string()),
        }
    }
}

impl From<autoqat_toolkit::ToolkitError> for QatError {
    fn from(e: autoqat_toolkit::ToolkitError) -> Self {
        use autoqat_toolkit::ToolkitError as T;
        match e {
            T::Model(e) => QatError::Model(e),
            T::Torch(e) => QatError::Torch(e),
            T::Io { path, cause } => QatError::Io { path, cause },
            T::Checkpoint(m) => QatError::Checkpoint(m),
        }
    }
}

/// Result with [`QatError`].
pub type Result<T> = std::result::Result<T, QatError>;

/// Maps an I/O error to [`QatError::Io`] naming `path`.
pub fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> QatError + '_ {
    move |cause| QatError::Io { path: path.to_path_buf(), cause }
}
