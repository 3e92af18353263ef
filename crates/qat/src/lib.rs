//! autoqat-qat: quantization-aware training of small language models into ternary or binary
//! weights: quantizers and BitLinear (`quant`), the trial loop (`train`), and the packed
//! export (`export`).

pub mod quant;
