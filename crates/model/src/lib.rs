//! autoqat-model: Hugging Face Llama / Qwen2 / Qwen3 / Qwen3.5 causal LMs in tch, their loading, the
//! tokenizer, device selection and perplexity evaluation.
//!
//! Linear layers are built in one place ([`linear::LinearBuilder`]), so a quantization crate
//! swaps in its own layers without copying model code; [`kernel_linear`] builds layers that run
//! on the packed low-bit CPU kernels (re-exported as [`autoqat_kernels`]).

pub use autoqat_kernels;

pub mod config;
pub mod deltanet;
pub mod device;
pub mod error;
pub mod eval;
pub mod generate;
pub mod host;
pub mod hub;
pub mod kernel_linear;
pub mod linear;
pub mod llama;
pub mod load;
pub mod offload;
pub mod tokenizer;

pub use config::{Arch, DeltaNetConfig, LayerType, ModelConfig, RopeScaling, SUPPORTED_MODEL_TYPES};
pub use device::{device_name, parse_device, parse_kind};
pub use error::{ModelError, Result};
pub use eval::{line_documents, perplexity, perplexity_docs, DocEvalOptions, EvalOptions, EvalReport, EvalSet};
pub use generate::{greedy_decode, stop_ids, DecodeStep, Decoded};
pub use kernel_linear::{
    ActFakeQuant, DenseKernelLinear, HostInput, HostLinear, KernelBuilder, KernelLinear, PackedWeight,
};
pub use linear::{Embedding, Linear, LinearBuilder, LinearRole, LinearSpec, PlainBuilder, PlainLinear};
pub use llama::{CausalLM, KvCache, LayerHook, LayerState, Mixer};
pub use load::{build_causal_lm, load_causal_lm, load_weights, save_pretrained, LoadedModel};
pub use offload::{load_offloaded, Offload};
pub use tokenizer::TextTokenizer;
