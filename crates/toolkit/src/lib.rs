//! autoqat-toolkit: the generic training and measurement pieces every track uses, below the
//! tracks and below the QAT trainer, so that no track reaches into another one's insides.
//!
//! - [`optim`]: AdamW written out in tensor ops (checkpointable moments and step), with the
//!   gradient clipping every trainer in autoqat steps through.
//! - [`schedule`]: the learning-rate schedules (constant, cosine, WSD) as pure functions of
//!   the step.
//! - [`loss`]: next-token cross entropy, logit distillation, and the Top-K + Other trace losses.
//! - [`checkpoint`]: resumable checkpoints of a `VarStore` and its optimizer.
//! - [`resources`]: peak and current memory of a run (CUDA device memory or the process's RSS).
//!
//! What belongs here is generic: it depends on tensors, a model's variables and the on-disk
//! contract (`autoqat-workspace`), never on quantizers, a recipe's loss expressions, the
//! research loop or one track's file layout. The QAT-specific pieces (quantizers, the STE
//! lambda schedules, `loss.extra` over quantizer handles, the trial's run files) stay in
//! `autoqat-qat`; the compression and traces tracks' own stages stay in their crates.

pub mod checkpoint;
pub mod error;
pub mod loss;
pub mod optim;
pub mod resources;
pub mod schedule;

pub use error::{Result, ToolkitError};
