//! The error type of this crate: each variant names its cause and, where possible, the fix.
//! Callers convert it into their own error (`QatError`, `CompressError`) with `?`.

use std::path::PathBuf;

/// What can go wrong in the toolkit (so far: saving or restoring a checkpoint).
#[derive(Debug, thiserror::Error)]
pub enum ToolkitError {
    /// Writing the model's tensors failed.
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
    /// A checkpoint is missing or inconsistent.
    #[error("{0}")]
    Checkpoint(String),
}

// By hand rather than `#[from]`, so the message is not repeated as a separate cause.
impl From<tch::TchError> for ToolkitError {
    fn from(e: tch::TchError) -> Self {
        ToolkitError::Torch(e)
    }
}

impl From<autoqat_workspace::WorkspaceError> for ToolkitError {
    fn from(e: autoqat_workspace::WorkspaceError) -> Self {
        match e {
            autoqat_workspace::WorkspaceError::Io { path, cause } => ToolkitError::Io { path, cause },
            other => ToolkitError::Checkpoint(other.to_string()),
        }
    }
}

/// Result with [`ToolkitError`].
pub type Result<T> = std::result::Result<T, ToolkitError>;

/// Maps an I/O error to [`ToolkitError::Io`] naming `path`.
pub fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ToolkitError + '_ {
    move |cause| ToolkitError::Io { path: path.to_path_buf(), cause }
}
