//! Errors of the traces track; each names its cause and, where there is one, the fix.

use std::path::{Path, PathBuf};

/// Why a kd command failed.
#[derive(Debug, thiserror::Error)]
pub enum KdError {
    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Loading or running a model failed.
    #[error(transparent)]
    Model(#[from] autoqat_model::ModelError),
    /// A trace shard or index is unreadable.
    #[error(transparent)]
    Traces(#[from] autoqat_traces::TraceError),
    /// The teacher's API failed or answered something unusable.
    #[error("teacher: {0}")]
    Teacher(String),
    /// Bad input: flags, prompts, a trace directory from another collection.
    #[error("{0}")]
    Config(String),
    /// A tensor operation failed.
    #[error("torch: {0}")]
    Torch(tch::TchError),
}

// A key or client that cannot be set up is the user's input; anything a request ran into is the
// teacher's failure. The messages are already scrubbed of the key.
impl From<autoqat_http::HttpError> for KdError {
    fn from(e: autoqat_http::HttpError) -> Self {
        match e {
            autoqat_http::HttpError::Config(m) => KdError::Config(m),
            other => KdError::Teacher(other.to_string()),
        }
    }
}

/// Result with [`KdError`].
pub type Result<T> = std::result::Result<T, KdError>;

/// A closure mapping an io error on `path` into [`KdError::Io`].
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KdError + '_ {
    move |cause| KdError::Io { path: path.to_path_buf(), cause }
}

// By hand rather than `#[from]`, so the message is not repeated as a separate cause.
impl From<tch::TchError> for KdError {
    fn from(e: tch::TchError) -> Self {
        KdError::Torch(e)
    }
}
