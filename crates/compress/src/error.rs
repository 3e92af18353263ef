//! Errors of the compression track: each names the cause and, where there is one, the fix.

use std::path::PathBuf;

/// What can go wrong while compressing, packing or loading an artifact.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (not chained, so it prints once).
        err: std::io::Error,
    },
    /// The recipe is malformed or out of range.
    #[error("recipe {path}: {msg}")]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// What is wrong and what is allowed.
        msg: String,
    },
    /// No allocation of the allowed row kinds fits the budget.
    #[error("{0}")]
    Budget(String),
    /// The calibration text is too short for what the recipe asks.
    #[error("{0}")]
    Calibration(String),
    /// The artifact is malformed or not ours.
    #[error("artifact {path}: {msg}")]
    Artifact {
        /// The artifact directory or zip.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// `--resume` cannot continue (nothing saved, another recipe, unreadable state).
    #[error("--resume: {0}")]
    Resume(String),
    /// The verification of a written artifact failed.
    #[error("verify: {0}")]
    Verify(String),
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] autoqat_model::ModelError),
    /// The shared training toolkit (the fine-tune's checkpoint) failed.
    #[error(transparent)]
    Toolkit(#[from] autoqat_toolkit::ToolkitError),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for CompressError {
    fn from(e: tch::TchError) -> Self {
        Self::Torch(e.to_string())
    }
}

impl From<autoqat_workspace::WorkspaceError> for CompressError {
    fn from(e: autoqat_workspace::WorkspaceError) -> Self {
        match e {
            autoqat_workspace::WorkspaceError::Io { path, cause } => CompressError::Io { path, err: cause },
            other => CompressError::Verify(other.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, CompressError>;

/// Wraps an I/O error with its path.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CompressError {
    let path = path.into();
    move |err| CompressError::Io { path, err }
}
