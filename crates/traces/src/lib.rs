//! autoqat-traces: the on-disk contract of distillation traces (docs/contracts.md#the-distillation-traces-track). One row per
//! generated teacher position holds the sampled token and the teacher's Top-K log-probabilities
//! projected to the student's vocabulary, plus the "Other" mass. Rows live in Parquet shards that
//! pandas and pyarrow read; `index.json` beside them says which prompts are done, so a collection
//! resumes, and which tokenizer the ids belong to, so a trial refuses traces for another student.
//!
//! This crate never links libtorch: the collector writes through it and the trial reads through it.

pub mod index;
pub mod shard;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use index::{PromptEntry, ShardEntry, TraceIndex, TraceStats};
pub use shard::{read_shard, write_shard};

/// One generated position of one teacher answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Index of the prompt in the prompts file.
    pub prompt_idx: i64,
    /// Position in the teacher's answer (0 = first generated token).
    pub step_idx: i32,
    /// The sampled token projected to the student vocabulary (its first sub-token), -1 when it
    /// has no student encoding.
    pub teacher_sample_id: i32,
    /// The sampled token as the teacher wrote it.
    pub teacher_sample_text: String,
    /// Student ids of the projected Top-K, collisions merged, by descending log-probability.
    pub topk_ids: Vec<i32>,
    /// Teacher log-probabilities of `topk_ids` (temperature 1).
    pub topk_logprobs: Vec<f32>,
    /// `log(1 - sum exp(topk_logprobs))`; NaN on an invalid row (remaining mass <= 0 or >= 1).
    pub other_logprob: f32,
    /// The sampled token is JSON/code punctuation (the format loss weighs these).
    pub is_struct_token: bool,
    /// Hash of the prompt template the teacher was asked with.
    pub template_hash: String,
    /// Hash of the student tokenizer the ids belong to.
    pub tokenizer_hash: String,
}

impl TraceRow {
    /// Whether the row may be trained on: a sampled token the student can encode and a
    /// remaining mass strictly inside (0, 1).
    pub fn is_valid(&self) -> bool {
        self.teacher_sample_id >= 0 && self.other_logprob.is_finite() && self.other_logprob < 0.0
    }
}

/// Why traces cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file operation failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not chained, so it prints once).
        cause: std::io::Error,
    },
    /// A shard or the index does not have the expected shape.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        msg: String,
    },
}

/// Result with [`TraceError`].
pub type Result<T> = std::result::Result<T, TraceError>;

/// A closure mapping an io error on `path` into [`TraceError::Io`].
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TraceError + '_ {
    move |cause| TraceError::Io { path: path.to_path_buf(), cause }
}

/// The first 16 hex digits of SHA-256: the hashes stored in every row.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The hash a trace row stores for a tokenizer: of its `tokenizer.json` bytes (`path` is the
/// file or a model directory holding it). Collection writes it; training refuses traces whose
/// hash is not its student's.
pub fn tokenizer_hash(path: &Path) -> Result<String> {
    let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
    let bytes = std::fs::read(&file).map_err(io_err(&file))?;
    Ok(short_hash(&bytes))
}

/// Whether a token is structure rather than prose: non-empty and only JSON/code punctuation
/// once whitespace is trimmed (what the format loss is for).
pub fn is_struct_token(text: &str) -> bool {
    let t = text.trim();
    !t.is_empty() && t.chars().all(|c| "{}[]()<>:;,\"'`=|\\/".contains(c))
}
