//! autoqat-kd: the distillation-traces track (docs/contracts.md#the-distillation-traces-track). A teacher reached through an
//! OpenAI-compatible API (or a local checkpoint) answers prompts greedily; its Top-K+Other
//! log-probabilities, projected to the student's tokenizer, become Parquet traces
//! (`autoqat-traces`) that the QAT trial trains a ternary student on; the report measures the
//! student's quality, packed memory and decode speed against the teacher's (QEI).
//!
//! It reuses the model, generation and loading of `autoqat-model`, the trial and packed export
//! of `autoqat-qat`, the losses and memory meters of `autoqat-toolkit`, and the HTTP client
//! (retries, Retry-After, key scrubbing) of `autoqat-http`, which the research loop's
//! proposers use too.

pub mod baseline;
pub mod collect;
pub mod dryrun;
pub mod error;
pub mod project;
pub mod report;
pub mod teacher;

pub use error::{KdError, Result};
