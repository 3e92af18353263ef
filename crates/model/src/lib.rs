//! autoqat-model: Hugging Face Llama / Qwen2 / Qwen3 causal LMs in tch, their loading, the
//! tokenizer, device selection and perplexity evaluation.
//!
//! Linear layers are built in one place ([`linear::LinearBuilder`]), so a quantization crate
//! swaps in its own layers without copying model code.

pub mod error;
pub mod linear;

pub use error::{ModelError, Result};
pub use linear::{Embedding, Linear, LinearBuilder, LinearRole, LinearSpec, PlainBuilder, PlainLinear};
