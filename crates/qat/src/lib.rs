//! autoqat-qat: quantization-aware training of small language models into ternary or binary
//! weights: quantizers and BitLinear (`quant`), the student model (`student`), the trial loop
//! (`train`), and the packed export (`export`). `export` and `train` both use `student`; the
//! trial calls the export, never the other way round.

pub mod error;
pub mod export;
pub mod quant;
pub mod student;
pub mod train;

pub use error::{QatError, Result};
pub use export::{is_packed, load_packed, load_packed_kernels, KernelPackedModel, PackedModel};
pub use train::{run_trial, Summary, TrialOptions};
