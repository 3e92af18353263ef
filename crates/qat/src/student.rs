//! The student of a QAT trial: the starting checkpoint loaded with the recipe's quantized
//! layers, on the recipe's device. The trial trains it and the export writes it; both take it
//! from here, so neither module depends on the other's internals.

use std::sync::Arc;

use autoqat_model::{load_causal_lm, LoadedModel};
use autoqat_recipe::{Precision, Recipe};
use tch::{Device, Kind};

use crate::error::{QatError, Result};
use crate::quant::{init_learned_scales, QatState, QuantBuilder, QuantHandle};

/// The model and tensors a running trial holds.
pub struct Student {
    /// The student network and its variables.
    pub loaded: LoadedModel,
    /// The quantized weights.
    pub handles: Vec<QuantHandle>,
    /// lambda and activation bits shared with every BitLinear.
    pub state: Arc<QatState>,
}

/// Loads the starting checkpoint with the recipe's quantized layers.
pub fn load_student(recipe: &Recipe, device: Device) -> Result<Student> {
    let bits = recipe.activations.bits.bits().unwrap_or(0);
    let state = QatState::new(1.0, bits);
    let builder = QuantBuilder::new(recipe, state.clone())?;
    let loaded = load_causal_lm(&recipe.model.source, device, Kind::Float, &builder)?;
    let handles = builder.take_handles();
    init_learned_scales(&handles);
    Ok(Student { loaded, handles, state })
}

/// The compute device of a recipe.
pub fn recipe_device(recipe: &Recipe) -> Result<Device> {
    let name =
        serde_json::to_value(recipe.runtime.device).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    Ok(autoqat_model::parse_device(&name)?)
}

/// Whether to autocast to bf16 (CUDA only).
pub fn use_bf16(recipe: &Recipe, device: Device) -> Result<bool> {
    match (recipe.runtime.precision, device) {
        (Precision::Fp32, _) => Ok(false),
        (Precision::Auto, Device::Cuda(_)) | (Precision::Bf16, Device::Cuda(_)) => Ok(true),
        (Precision::Auto, _) => Ok(false),
        (Precision::Bf16, d) => Err(QatError::Config(format!(
            "runtime.precision = \"bf16\" needs a CUDA device, but the device is {} (hint: precision = \"auto\")",
            autoqat_model::device_name(d)
        ))),
    }
}
