//! autoqat-qat: quantization-aware training of small language models into ternary or binary
//! weights: quantizers and BitLinear (`quant`), the trial loop (`train`), and the packed
//! export (`export`).

pub mod error;
pub mod export;
pub mod quant;
pub mod train;

pub use error::{QatError, Result};
pub use export::{is_packed, load_packed, PackedModel};
pub use train::{run_trial, Summary, TrialOptions};
