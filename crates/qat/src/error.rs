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
    Torch(#[from] tch::TchError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
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

/// Result with [`QatError`].
pub type Result<T> = std::result::Result<T, QatError>;

/// Maps an I/O error to [`QatError::Io`] naming `path`.
pub fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> QatError + '_ {
    move |source| QatError::Io { path: path.to_path_buf(), source }
}
