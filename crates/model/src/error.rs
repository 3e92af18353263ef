//! The one error type of this crate: every failure a user can cause, each naming its cause.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, loading or evaluating a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (a plain field, not a `source`, so a printed cause chain says it once).
        err: std::io::Error,
    },
    /// config.json is not valid JSON or lacks a field.
    #[error("invalid config {path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A config value this crate cannot build.
    #[error("unsupported config: {0}")]
    Unsupported(String),
    /// `model_type` is not one of the supported architectures.
    #[error("unsupported model_type \"{found}\" (supported: {})", supported.join(", "))]
    UnsupportedModelType {
        /// The value in config.json.
        found: String,
        /// The architectures this crate implements.
        supported: Vec<&'static str>,
    },
    /// The model directory has no weights file.
    #[error("no model.safetensors or model.safetensors.index.json in {0} (hint: pass a Hugging Face model directory)")]
    NoWeights(PathBuf),
    /// A safetensors file could not be parsed.
    #[error("corrupt safetensors file {path}: {msg}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        msg: String,
    },
    /// The checkpoint lacks a tensor the model needs.
    #[error("missing tensor {name} in {path}")]
    MissingTensor {
        /// The HF key.
        name: String,
        /// The file (or index) where it was looked for.
        path: PathBuf,
    },
    /// A checkpoint tensor has a different shape than the model expects.
    #[error("tensor {name} has shape {found:?} in {path} but the model expects {expected:?}")]
    ShapeMismatch {
        /// The HF key.
        name: String,
        /// The file holding it.
        path: PathBuf,
        /// Shape the model config implies.
        expected: Vec<i64>,
        /// Shape on disk.
        found: Vec<i64>,
    },
    /// A checkpoint tensor is stored in a dtype this loader does not read.
    #[error("tensor {name} in {path} has dtype {dtype}; supported: F32, BF16, F16")]
    UnsupportedDtype {
        /// The HF key.
        name: String,
        /// The file.
        path: PathBuf,
        /// The dtype on disk.
        dtype: String,
    },
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer {path}: {msg}")]
    Tokenizer {
        /// tokenizer.json (or the model directory).
        path: PathBuf,
        /// The tokenizers crate's message.
        msg: String,
    },
    /// A device string that is not auto|cpu|cuda|cuda:N|mps, or a device that is absent.
    #[error("{0}")]
    Device(String),
    /// A dtype string that is not f32|bf16|f16.
    #[error("unknown dtype \"{0}\" (expected f32, bf16 or f16)")]
    Dtype(String),
    /// The Hugging Face Hub could not provide a model.
    #[error("cannot fetch {repo} from the Hugging Face Hub: {msg}")]
    Hub {
        /// The hub id.
        repo: String,
        /// Why.
        msg: String,
    },
    /// Perplexity evaluation was asked something impossible.
    #[error("{0}")]
    Eval(String),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
}

// By hand rather than `#[from]`, so the message is not repeated as a separate cause.
impl From<tch::TchError> for ModelError {
    fn from(e: tch::TchError) -> Self {
        Self::Torch(e)
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
