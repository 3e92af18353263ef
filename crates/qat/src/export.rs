//! Exports of a trained student.
//!
//! `<run>/export/` (packed): `config.json`, `tokenizer.json`, `quant.json` (which tensors are
//! packed, the quantizer) and `model.safetensors` where each quantized weight `W` is stored as
//! `W.codes` (u8, four 2-bit codes per byte, code + 1 in {0, 1, 2}, row-major over the grouped
//! view) and `W.scales` (f16, one per group); every other tensor is stored as is. Deadzone
//! recovery is folded into per-output biases. When the recipe quantizes activations,
//! `quant.json` records the bit width the trial evaluated with and the packed layers quantize
//! their inputs the same way. [`load_packed`] rebuilds a runnable model.
//!
//! `<run>/hf/` (dequantized): a plain Hugging Face directory with `codes * scale` weights
//! that transformers loads (written only when no bias had to be folded, which a Llama config
//! cannot express per layer). It carries weights only: a Hugging Face config has no place for
//! activation quantization.

use crate::error::{io_err, QatError, Result};
use crate::quant::act::act_quant_values;
use crate::quant::bitlinear::deadzone_bias;
use crate::quant::QuantHandle;
use crate::student::Student;
use autoqat_model::autoqat_kernels::{Granularity, Kernels};
use autoqat_model::kernel_linear::{ActFakeQuant, ActMode, KernelBuilder, PackedMatrix, PackedWeight};
use autoqat_model::linear::{Linear, LinearBuilder, LinearSpec, PlainLinear};
use autoqat_model::load::{build_causal_lm, write_safetensors};
use autoqat_model::{CausalLM, ModelConfig};
use autoqat_recipe::{ActGranularity, Recipe};
use half::f16;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};

/// `quant.json` of a packed export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackedInfo {
    /// Format version.
    pub format: String,
    /// Quantizer name (`ternary_absmean`, ...).
    pub method: String,
    /// Granularity name.
    pub granularity: String,
    /// Packed weights: name -> shape `[out, in]`.
    pub packed: Vec<(String, Vec<i64>)>,
    /// Biases added by folding deadzone recovery (VarStore names of the layers' `bias`).
    pub folded_biases: Vec<String>,
    /// Bit width of the packed layers' inputs (`0`: full precision; older exports lack it).
    #[serde(default)]
    pub act_bits: u32,
    /// Which inputs share one absmax scale, when `act_bits > 0`.
    #[serde(default)]
    pub act_granularity: Option<ActGranularity>,
}

/// Packs codes in {-1, 0, 1} four to a byte.
pub fn pack_codes(codes: &Tensor) -> Tensor {
    let flat = (codes.flatten(0, -1).to_kind(Kind::Int64) + 1).to_device(Device::Cpu);
    let n = flat.numel() as i64;
    let pad = (4 - n % 4) % 4;
    let flat = if pad > 0 { Tensor::cat(&[flat, Tensor::ones([pad], (Kind::Int64, Device::Cpu))], 0) } else { flat };
    let q = flat.reshape([-1, 4]);
    (q.select(1, 0) + q.select(1, 1) * 4 + q.select(1, 2) * 16 + q.select(1, 3) * 64).to_kind(Kind::Uint8)
}

/// The `[256, 4]` f32 table that decodes a [`pack_codes`] byte into its four codes: a byte
/// holds four base-4 digits (code + 1), so unpacking is one gather, with no int64 copy of
/// every code.
pub fn code_table(device: Device) -> Tensor {
    let table: Vec<f32> = (0..256i64).flat_map(|b| (0..4).map(move |k| ((b >> (2 * k)) & 3) as f32 - 1.0)).collect();
    Tensor::from_slice(&table).reshape([256, 4]).to_device(device)
}

/// Unpacks `n` codes (as f32 in {-1, 0, 1}) from [`pack_codes`] bytes.
pub fn unpack_codes(packed: &Tensor, n: i64) -> Tensor {
    code_table(packed.device())
        .index_select(0, &packed.flatten(0, -1).to_kind(Kind::Int64))
        .flatten(0, -1)
        .narrow(0, 0, n)
}

/// Unpacks every code of `packed` into the front of `out` (f32, at least 4 values a byte)
/// through `index` (i64 scratch, at least one value a byte), allocating nothing: for
/// decoders that unpack one matrix at a time into the same buffer.
pub fn unpack_codes_into(packed: &Tensor, table: &Tensor, index: &Tensor, out: &Tensor) {
    let m = packed.numel() as i64;
    let mut idx = index.narrow(0, 0, m);
    idx.copy_(&packed.flatten(0, -1));
    let dst = out.narrow(0, 0, 4 * m).view([m, 4]);
    let _ = table.index_select_out(&dst, 0, &idx);
}

fn dequantized(h: &QuantHandle) -> Tensor {
    tch::no_grad(|| {
        let c = h.quant.codes(&h.weight, h.alpha.as_ref());
        h.quant.dequant(&c, &h.weight.size())
    })
}

fn enum_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Writes `<run>/export/` (packed) and, when representable, `<run>/hf/` (dequantized).
pub fn export_all(recipe: &Recipe, student: &Student, run: &Path) -> Result<()> {
    let cfg = &student.loaded.model.cfg;
    let vars = student.loaded.vs.variables();
    let handles: HashMap<&str, &QuantHandle> = student.handles.iter().map(|h| (h.name.as_str(), h)).collect();
    let mut packed_tensors: Vec<(String, Tensor)> = Vec::new();
    let mut hf_tensors: Vec<(String, Tensor)> = Vec::new();
    // What the trial's final eval ran with (after any A8 -> A4 flip).
    let act_bits = student.state.act_bits();
    let mut info = PackedInfo {
        format: "autoqat-packed-v1".into(),
        method: enum_name(&recipe.quant.method),
        granularity: enum_name(&recipe.quant.granularity),
        packed: Vec::new(),
        folded_biases: Vec::new(),
        act_bits,
        act_granularity: (act_bits > 0).then_some(recipe.activations.granularity),
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        if name.contains("qat_") {
            continue;
        }
        let var = &vars[name];
        match handles.get(name.as_str()) {
            Some(h) => {
                let c = tch::no_grad(|| h.quant.codes(&h.weight, h.alpha.as_ref()));
                packed_tensors.push((format!("{name}.codes"), pack_codes(&c.codes)));
                packed_tensors.push((format!("{name}.scales"), c.scale.to_kind(Kind::Half)));
                info.packed.push((name.clone(), var.size()));
                hf_tensors.push((name.clone(), dequantized(h)));
                if let Some(dz) = &h.dz_scale {
                    let bias = tch::no_grad(|| deadzone_bias(&h.weight, h.alpha.as_ref(), &h.quant, dz));
                    let bname = name.trim_end_matches("weight").to_string() + "bias";
                    packed_tensors.push((bname.clone(), bias));
                    info.folded_biases.push(bname);
                }
            }
            None => {
                packed_tensors.push((name.clone(), var.detach()));
                hf_tensors.push((name.clone(), var.detach()));
            }
        }
    }
    let tokenizer = student.loaded.dir.join("tokenizer.json");
    let out = run.join("export");
    write_dir(&out, cfg, &tokenizer)?;
    write_safetensors(&packed_tensors, &out.join("model.safetensors"))?;
    autoqat_workspace::atomic::write_json(&out.join("quant.json"), &info)?;
    if info.folded_biases.is_empty() {
        let hf = run.join("hf");
        write_dir(&hf, cfg, &tokenizer)?;
        write_safetensors(&hf_tensors, &hf.join("model.safetensors"))?;
    }
    Ok(())
}

fn write_dir(dir: &Path, cfg: &ModelConfig, tokenizer: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    autoqat_workspace::atomic::write_json(&dir.join("config.json"), &cfg.to_hf_json())?;
    if tokenizer.is_file() {
        std::fs::copy(tokenizer, dir.join("tokenizer.json")).map_err(io_err(tokenizer))?;
    }
    Ok(())
}

/// Whether `dir` holds a packed export (has `quant.json`).
pub fn is_packed(dir: &Path) -> bool {
    dir.join("quant.json").is_file()
}

/// Builds plain layers, with a bias where a deadzone bias was folded, and input quantization
/// on the packed layers when the trial quantized activations.
struct PackedBuilder {
    biases: HashSet<String>,
    packed: HashSet<String>,
    act: Option<(u32, ActGranularity)>,
}

impl LinearBuilder for PackedBuilder {
    fn linear(&self, p: &nn::Path, mut spec: LinearSpec) -> autoqat_model::Result<Box<dyn Linear>> {
        if self.biases.contains(&p.path("bias")) {
            spec.bias = true;
        }
        let plain = PlainLinear::new(p, spec)?;
        match self.act {
            Some((bits, gran)) if self.packed.contains(&p.path("weight")) => {
                Ok(Box::new(ActQuantLinear { inner: plain, bits, gran }))
            }
            _ => Ok(Box::new(plain)),
        }
    }
}

/// A dequantized packed layer that quantizes its input as BitLinear did in the trial.
#[derive(Debug)]
struct ActQuantLinear {
    inner: PlainLinear,
    bits: u32,
    gran: ActGranularity,
}

impl Linear for ActQuantLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.inner.forward(&act_quant_values(xs, self.bits, self.gran))
    }
}

/// A packed export loaded for inference.
#[derive(Debug)]
pub struct PackedModel {
    /// The configuration.
    pub cfg: ModelConfig,
    /// The network with dequantized weights.
    pub model: CausalLM,
    /// Its variables.
    pub vs: nn::VarStore,
}

/// `quant.json` of the packed export in `dir` and the activation quantization it records
/// (bits, granularity), None when the layers take full-precision inputs.
pub fn read_quant_info(dir: &Path) -> Result<(PackedInfo, Option<(u32, ActGranularity)>)> {
    let qpath = dir.join("quant.json");
    let text = std::fs::read_to_string(&qpath).map_err(io_err(&qpath))?;
    let info: PackedInfo =
        serde_json::from_str(&text).map_err(|e| QatError::Checkpoint(format!("{}: {e}", qpath.display())))?;
    let act = match (info.act_bits, info.act_granularity) {
        (0, _) => None,
        (bits @ (4 | 8), Some(gran)) => Some((bits, gran)),
        (bits, _) => {
            return Err(QatError::Checkpoint(format!(
                "{}: act_bits {bits} needs act_granularity, and only 4 or 8 bits are supported",
                qpath.display()
            )))
        }
    };
    Ok((info, act))
}

/// Loads a packed export (`<run>/export`) onto `device` in f32; `autoqat eval` calls this when
/// [`is_packed`] is true. The tokenizer is `dir/tokenizer.json`.
pub fn load_packed(dir: &Path, device: Device) -> Result<PackedModel> {
    let (info, act) = read_quant_info(dir)?;
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let builder = PackedBuilder {
        biases: info.folded_biases.iter().cloned().collect(),
        packed: info.packed.iter().map(|(n, _)| n.clone()).collect(),
        act,
    };
    let (vs, model) = build_causal_lm(&cfg, device, Kind::Float, &builder)?;
    let wpath = dir.join("model.safetensors");
    let stored: HashMap<String, Tensor> = Tensor::read_safetensors(&wpath)?.into_iter().collect();
    let shapes: HashMap<&str, &Vec<i64>> = info.packed.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let missing = |n: &str| QatError::Checkpoint(format!("{} lacks {n}", wpath.display()));
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let value = match shapes.get(name.as_str()) {
                Some(shape) => {
                    let codes =
                        stored.get(&format!("{name}.codes")).ok_or_else(|| missing(&format!("{name}.codes")))?;
                    let scales =
                        stored.get(&format!("{name}.scales")).ok_or_else(|| missing(&format!("{name}.scales")))?;
                    let sc = scales.to_kind(Kind::Float);
                    let ss = sc.size();
                    let n: i64 = shape.iter().product();
                    let c = unpack_codes(codes, n).reshape([ss[0], ss[1], -1]);
                    (c * sc).reshape(shape.as_slice())
                }
                None => stored.get(&name).ok_or_else(|| missing(&name))?.to_kind(Kind::Float),
            };
            var.f_copy_(&value.to_device(device))?;
        }
        Ok(())
    })?;
    Ok(PackedModel { cfg, model, vs })
}

/// A packed export loaded onto the packed low-bit CPU kernels: the quantized layers hold only
/// their codes and scales ([`autoqat_model::KernelLinear`]); everything else is f32.
#[derive(Debug)]
pub struct KernelPackedModel {
    /// The configuration.
    pub cfg: ModelConfig,
    /// The network.
    pub model: CausalLM,
    /// The variables other than the packed weights (embedding, norms, biases, plain layers).
    pub vs: nn::VarStore,
    /// Bytes of the packed weights (codes plus f32 scales).
    pub packed_bytes: usize,
    /// How the kernel layers consume their inputs.
    pub mode: ActMode,
    /// The kernels every packed layer runs on.
    pub kernels: Arc<Kernels>,
}

/// The activation mode a student's own quantizer implies: int8 per vector for 8-bit per-token
/// inputs (the same absmax rounding as [`act_quant_values`]), exact f32 otherwise.
pub fn student_act_mode(act: Option<(u32, ActGranularity)>) -> ActMode {
    match act {
        Some((8, ActGranularity::PerToken)) => ActMode::Int8PerVector,
        _ => ActMode::F32,
    }
}

/// A packed weight of the export as the kernels store it: `codes` (four 2-bit digits a byte)
/// and `scales` `[a, b, 1]` f16 in the quantizer's grouped view of `[rows, cols]`.
fn packed_matrix(codes: &Tensor, scales: &Tensor, rows: usize, cols: usize) -> Result<PackedMatrix> {
    let bytes = Vec::<u8>::try_from(codes.flatten(0, -1).to_kind(Kind::Uint8))?;
    let s = scales.size();
    let values = Vec::<f32>::try_from(scales.flatten(0, -1).to_kind(Kind::Float))?;
    let f16s: Vec<f16> = values.into_iter().map(f16::from_f32).collect();
    let gran = match (s.first().copied().unwrap_or(1), s.get(1).copied().unwrap_or(1)) {
        (1, 1) => Granularity::PerTensor,
        (_, 1) => Granularity::PerRow,
        (_, b) => Granularity::Group(cols / b.max(1) as usize),
    };
    PackedMatrix::from_student(rows, cols, &bytes, &f16s, gran).map_err(|e| QatError::Checkpoint(e.to_string()))
}

/// Loads a packed export (`<run>/export`) for CPU decoding on the packed kernels with `threads`
/// threads. `acts` picks how the packed layers consume their inputs (None: the mode the
/// student's quantizer implies, [`student_act_mode`]); a student that quantizes its inputs in
/// a way the chosen mode does not reproduce (4 bits, per channel, or any quantization under
/// [`ActMode::F32`]) gets that quantization applied in f32 first, so it computes what
/// [`load_packed`] computes.
pub fn load_packed_kernels(dir: &Path, threads: usize, acts: Option<ActMode>) -> Result<KernelPackedModel> {
    let (info, act) = read_quant_info(dir)?;
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let mode = acts.unwrap_or_else(|| student_act_mode(act));
    let pre = match act {
        Some((8, ActGranularity::PerToken)) if mode == ActMode::Int8PerVector => None,
        Some((bits, gran)) => Some(ActFakeQuant { bits, per_channel: gran == ActGranularity::PerChannel }),
        None => None,
    };
    let wpath = dir.join("model.safetensors");
    let mut stored: HashMap<String, Tensor> = Tensor::read_safetensors(&wpath)?.into_iter().collect();
    let missing = |n: &str| QatError::Checkpoint(format!("{} lacks {n}", wpath.display()));
    let mut weights = HashMap::new();
    for (name, shape) in &info.packed {
        let codes = stored.remove(&format!("{name}.codes")).ok_or_else(|| missing(&format!("{name}.codes")))?;
        let scales = stored.remove(&format!("{name}.scales")).ok_or_else(|| missing(&format!("{name}.scales")))?;
        let (rows, cols) = match shape.as_slice() {
            [r, c] => (*r as usize, *c as usize),
            other => return Err(QatError::Checkpoint(format!("packed weight {name} has shape {other:?}, not 2-D"))),
        };
        let m = packed_matrix(&codes, &scales, rows, cols)
            .map_err(|e| QatError::Checkpoint(format!("{}: {name}: {e}", wpath.display())))?;
        weights.insert(name.trim_end_matches(".weight").to_string(), PackedWeight::Packed(m));
    }
    let kernels = Arc::new(Kernels::new(threads));
    let builder = KernelBuilder::new(Device::Cpu, kernels.clone(), mode, weights)?
        .with_biases(info.folded_biases.iter().map(|b| b.trim_end_matches(".bias").to_string()))
        .with_pre(pre);
    let (vs, model) = build_causal_lm(&cfg, Device::Cpu, Kind::Float, &builder)?;
    builder.check_all_used()?;
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let value = stored.get(&name).ok_or_else(|| missing(&name))?;
            var.f_copy_(&value.to_kind(Kind::Float))?;
        }
        Ok(())
    })?;
    Ok(KernelPackedModel { cfg, model, vs, packed_bytes: builder.packed_bytes(), mode, kernels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_packing_for_every_length_modulo_four() {
        tch::manual_seed(3);
        for n in [1i64, 2, 3, 4, 5, 1001] {
            let codes = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu)) - 1;
            let packed = pack_codes(&codes);
            assert_eq!(packed.size(), vec![(n + 3) / 4]);
            let back = unpack_codes(&packed, n);
            let want = Vec::<f32>::try_from(&codes.to_kind(Kind::Float)).unwrap();
            assert_eq!(Vec::<f32>::try_from(&back).unwrap(), want);
            // Into a larger, dirty buffer: the front holds the codes.
            let out = Tensor::full([4 * n + 8], 7.0, (Kind::Float, Device::Cpu));
            let index = Tensor::zeros([n + 2], (Kind::Int64, Device::Cpu));
            unpack_codes_into(&packed, &code_table(Device::Cpu), &index, &out);
            assert_eq!(Vec::<f32>::try_from(&out.narrow(0, 0, n)).unwrap(), want);
        }
    }
}
