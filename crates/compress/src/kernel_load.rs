//! A compression artifact loaded onto the packed low-bit CPU kernels (`autoqat-kernels`): each
//! quantized matrix is repacked once from its `P.row_kind` / `P.<kind>.codes` /
//! `P.<kind>.scales` tensors into a [`MixedRows`] and runs as a
//! [`autoqat_model::KernelLinear`]; the dense matrix is never made. Everything else (norms,
//! biases, the embedding) is f32, as [`crate::artifact::load`] holds it.
//!
//! With [`ActMode::F32`] (the default) the products are exact up to f32 summation order, so the
//! model computes what [`crate::artifact::load`] computes; [`ActMode::Int8PerBlock`] quantizes
//! each layer input to int8 per 128 values (llama.cpp's Q8 activations) for speed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use autoqat_model::autoqat_kernels::{Kernels, WeightKind};
use autoqat_model::kernel_linear::{ActMode, KernelBuilder, MixedRows, PackedWeight};
use autoqat_model::load::build_causal_lm;
use autoqat_model::{CausalLM, ModelConfig};
use half::f16;
use safetensors::{Dtype, SafeTensors};
use tch::{nn, Device, Kind, Tensor};

use crate::artifact::{dense_tensor, ArtifactFiles};
use crate::error::{CompressError, Result};
use crate::rows::RowKind;

/// An artifact's model on the packed kernels.
#[derive(Debug)]
pub struct KernelArtifact {
    /// The configuration.
    pub cfg: ModelConfig,
    /// The network.
    pub model: CausalLM,
    /// The variables other than the packed matrices.
    pub vs: nn::VarStore,
    /// Bytes of the packed matrices (codes plus f32 scales).
    pub packed_bytes: usize,
    /// Modules on the kernels, with the bytes of each packed matrix.
    pub packed: Vec<(String, usize)>,
    /// How the kernel layers consume their inputs.
    pub mode: ActMode,
    /// The kernels every packed layer runs on.
    pub kernels: Arc<Kernels>,
}

/// The kernel layout of quantized matrix `prefix` (`[rows, cols]`), or None when the artifact
/// stores `prefix.weight` unquantized.
pub fn mixed_rows(st: &SafeTensors, prefix: &str, rows: usize, cols: usize, path: &Path) -> Result<Option<MixedRows>> {
    let bad = |msg: String| CompressError::Artifact { path: path.to_path_buf(), msg };
    let Ok(row_kind) = st.tensor(&format!("{prefix}.row_kind")) else { return Ok(None) };
    let mut kinds: Vec<(WeightKind, Vec<u8>, Vec<f16>)> = Vec::new();
    for kind in RowKind::ALL {
        let Ok(codes) = st.tensor(&format!("{prefix}.{}.codes", kind.name())) else { continue };
        let scales = st
            .tensor(&format!("{prefix}.{}.scales", kind.name()))
            .map_err(|_| bad(format!("{prefix}.{} has codes but no scales", kind.name())))?;
        if codes.dtype() != Dtype::U8 || scales.dtype() != Dtype::F16 {
            return Err(bad(format!("{prefix}.{}: codes must be U8 and scales F16", kind.name())));
        }
        let wk = WeightKind::from_row_kind(kind.code())
            .ok_or_else(|| bad(format!("row kind {} has no kernel", kind.name())))?;
        let s: Vec<f16> = scales.data().chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect();
        kinds.push((wk, codes.data().to_vec(), s));
    }
    let refs: Vec<(WeightKind, &[u8], &[f16])> =
        kinds.iter().map(|(k, c, s)| (*k, c.as_slice(), s.as_slice())).collect();
    MixedRows::from_artifact(rows, cols, row_kind.data(), &refs).map(Some).map_err(|e| bad(format!("{prefix}: {e}")))
}

/// Rebuilds the model of an artifact for CPU decoding on the packed kernels with `threads`
/// threads, inputs of the packed layers consumed as `mode`.
pub fn load_kernels(files: &ArtifactFiles, threads: usize, mode: ActMode) -> Result<KernelArtifact> {
    let path = files.path.as_path();
    let (_, cfg, st) = files.parts()?;
    let source = |name: &str, rows: usize, cols: usize| -> autoqat_model::Result<Option<PackedWeight>> {
        mixed_rows(&st, name, rows, cols, path)
            .map(|m| m.map(PackedWeight::Mixed))
            .map_err(|e| autoqat_model::ModelError::Unsupported(e.to_string()))
    };
    let kernels = Arc::new(Kernels::new(threads));
    let builder = KernelBuilder::new(Device::Cpu, kernels.clone(), mode, HashMap::new())?.with_source(&source);
    let (vs, model) = build_causal_lm(&cfg, Device::Cpu, Kind::Float, &builder)?;
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        // Everything not on the kernels (norms, the embedding, a quantized embedding unpacked)
        // is read as the dense loader reads it.
        let value = dense_tensor(&st, &name, &var.size(), path)?;
        tch::no_grad(|| var.f_copy_(&value))?;
    }
    let packed = builder.built();
    let packed_bytes = packed.iter().map(|(_, b)| b).sum();
    Ok(KernelArtifact { cfg, model, vs, packed_bytes, packed, mode, kernels })
}
