//! Quantization: weight quantizers, the STE blend, activation quantizers, schedules, and the
//! BitLinear layers a model is built with.

pub mod act;
pub mod bitlinear;
pub mod expr;
pub mod schedule;
pub mod weight;

pub use bitlinear::{code_fractions, init_learned_scales, BitLinear, QatState, QuantBuilder, QuantHandle};
pub use weight::{ste_blend, WeightQuant};
