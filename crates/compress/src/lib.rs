//! autoqat-compress: the compression track (docs/contracts.md#the-compression-track). From a Hugging Face checkpoint to a
//! binary/ternary artifact under a bits-per-parameter budget that transformers loads.
//!
//! - [`widen`]: Net2Net widening of the MLPs, function-preserving, duplicates made distinct.
//! - [`rows`]: the row quantizers (binary, ternary, q4, q8) and their exact packed sizes.
//! - [`calib`] and [`sensitivity`]: what a row loses as each kind, measured on calibration text.
//! - [`allocate`]: rowmix, the kind of every row under the budget.
//! - [`distill`]: layerwise distillation of the allocated blocks, weights kept on their grid.
//! - [`finetune`]: end-to-end KD of the whole compressed model, with the toolkit's (the QAT
//!   trial's) loss, optimizer and checkpoint (`autoqat-toolkit`).
//! - [`resume`]: what a killed run keeps so that `--resume` continues it.
//! - [`artifact`]: the Hugging Face directory, its deterministic zip, the gate, and the reader.
//! - [`kernel_load`]: an artifact loaded onto the packed low-bit CPU kernels, for decoding.
//! - [`pipeline`]: the stages in order, and `summary.json`.
//!
//! The model, its loading and the evaluation are `autoqat-model`'s; this crate adds a
//! [`autoqat_model::LinearBuilder`] (the calibration recorder) and never copies model code.

pub mod allocate;
pub mod artifact;
pub mod calib;
pub mod distill;
pub mod error;
pub mod finetune;
pub mod frontier;
pub mod kernel_load;
pub mod pipeline;
pub mod recipe;
pub mod resume;
pub mod rows;
mod score;
pub mod sensitivity;
pub mod widen;

pub use error::{CompressError, Result};
pub use pipeline::{compress, Summary};
pub use recipe::{CompressRecipe, Track};
pub use rows::RowKind;
pub use sensitivity::Sensitivity;
