//! `autoqat dryrun`: a forward pass of a large ternary model on a machine that could not hold
//! it dense (docs/contracts.md#the-distillation-traces-track: the 7B shape, dim 4096, 32 layers, 32 heads of 128). Weights exist only
//! packed (2 bits each, as the QAT export stores them) and each linear unpacks its own matrix
//! for the duration of its matmul, so the resident set is the packed model plus one matrix. The
//! model code is the shared Llama; only the linear layers differ.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use autoqat_model::{
    build_causal_lm, DeltaNetConfig, Linear, LinearBuilder, LinearRole, LinearSpec, ModelConfig, PlainBuilder,
};
use autoqat_qat::export::{code_table, unpack_codes_into};
use autoqat_qat::quant::act::act_quant_values;
use autoqat_recipe::ActGranularity;
use autoqat_toolkit::resources::{peak_rss_mb, rss_mb};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::error::{KdError, Result};

/// A decoder shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shape {
    /// Hidden size.
    pub hidden: i64,
    /// Decoder layers.
    pub layers: i64,
    /// Attention heads.
    pub heads: i64,
    /// Key/value heads (as many as `heads` unless the shape is grouped).
    pub kv_heads: i64,
    /// Head dimension.
    pub head_dim: i64,
    /// MLP width.
    pub intermediate: i64,
    /// Vocabulary.
    pub vocab: i64,
    /// A Qwen3.5/3.6 hybrid: the Gated DeltaNet shapes, with every `full_attention_interval`-th
    /// layer full (gated) attention and the others Gated DeltaNet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deltanet: Option<DeltaNetConfig>,
    /// See `deltanet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_attention_interval: Option<i64>,
}

/// The presets `--shape` names.
const PRESETS: &str = "7b, 1b, tiny, qwen3.6-27b";

impl std::str::FromStr for Shape {
    type Err = String;
    /// A preset (see [`PRESETS`]) or `hidden,layers,heads,head_dim,intermediate,vocab`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let shape = |v: [i64; 6]| Shape {
            hidden: v[0],
            layers: v[1],
            heads: v[2],
            kv_heads: v[2],
            head_dim: v[3],
            intermediate: v[4],
            vocab: v[5],
            deltanet: None,
            full_attention_interval: None,
        };
        match s {
            "7b" => Ok(shape([4096, 32, 32, 128, 11008, 32000])),
            "1b" => Ok(shape([2048, 16, 16, 128, 5504, 32000])),
            "tiny" => Ok(shape([256, 4, 4, 64, 688, 4096])),
            // Qwen/Qwen3.6-27B's text decoder, as its config.json gives it.
            "qwen3.6-27b" => Ok(Shape {
                kv_heads: 4,
                deltanet: Some(DeltaNetConfig {
                    num_key_heads: 16,
                    num_value_heads: 48,
                    key_head_dim: 128,
                    value_head_dim: 128,
                    conv_kernel: 4,
                }),
                full_attention_interval: Some(4),
                ..shape([5120, 64, 24, 256, 17408, 248320])
            }),
            other => {
                let v: Vec<i64> = other
                    .split(',')
                    .map(|x| x.trim().parse::<i64>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| bad_shape(other))?;
                let v: [i64; 6] = v.try_into().map_err(|_| bad_shape(other))?;
                if v.iter().any(|&x| x <= 0) || v[0] != v[2] * v[3] {
                    return Err(format!(
                        "shape `{other}`: every figure must be positive and hidden = heads * head_dim"
                    ));
                }
                Ok(shape(v))
            }
        }
    }
}

fn bad_shape(s: &str) -> String {
    format!("`{s}` is not a shape; use {PRESETS} or hidden,layers,heads,head_dim,intermediate,vocab")
}

impl Shape {
    /// `(out, in)` of every quantized linear (attention or Gated DeltaNet, and MLP).
    fn linears(&self) -> Result<Vec<(i64, i64)>> {
        let cfg = self.config()?;
        Ok((0..self.layers as usize).flat_map(|l| cfg.layer_linears(l)).map(|(_, o, i)| (o, i)).collect())
    }

    /// Parameters of the quantized linears.
    pub fn linear_params(&self) -> Result<u64> {
        Ok(self.linears()?.iter().map(|(o, i)| (o * i) as u64).sum())
    }

    /// Parameters of the embedding and the untied head.
    pub fn embedding_params(&self) -> u64 {
        (2 * self.vocab * self.hidden) as u64
    }

    /// Bytes the run needs: the runtime itself (libtorch and this binary, about 400 MiB
    /// measured), packed codes and row scales, f32 embedding and head, one unpacked matrix with
    /// its index, and the activations and logits of `seq` tokens.
    pub fn estimate_bytes(&self, seq: i64) -> Result<u64> {
        let linears = self.linears()?;
        let rows: i64 = linears.iter().map(|(o, _)| o).sum();
        let packed = self.linear_params()? / 4 + 4 * rows as u64;
        let embed = 4 * self.embedding_params();
        let biggest = linears.iter().map(|(o, i)| (o * i) as u64).max().unwrap_or(0) * 6;
        let acts = (seq * (self.vocab + 8 * self.intermediate.max(self.hidden))) as u64 * 4 * 4;
        const RUNTIME: u64 = 400 << 20;
        Ok(RUNTIME + packed + embed + biggest + acts)
    }

    fn config(&self) -> Result<ModelConfig> {
        let mut json = serde_json::json!({
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
        });
        if let (Some(d), Some(every)) = (self.deltanet, self.full_attention_interval) {
            let types: Vec<&str> = (0..self.layers)
                .map(|i| if (i + 1) % every == 0 { "full_attention" } else { "linear_attention" })
                .collect();
            json["model_type"] = "qwen3_5_text".into();
            json["layer_types"] = types.into();
            json["partial_rotary_factor"] = 0.25.into();
            json["linear_num_key_heads"] = d.num_key_heads.into();
            json["linear_num_value_heads"] = d.num_value_heads.into();
            json["linear_key_head_dim"] = d.key_head_dim.into();
            json["linear_value_head_dim"] = d.value_head_dim.into();
            json["linear_conv_kernel_dim"] = d.conv_kernel.into();
        }
        Ok(ModelConfig::from_json_str(&json.to_string())?)
    }
}

/// One buffer every linear unpacks its matrix into, sized for the largest: the resident set is
/// the packed model plus this, and no forward pass allocates (or page-faults) a matrix.
#[derive(Debug)]
struct Scratch {
    table: Tensor,
    index: Tensor,
    weights: Tensor,
}

/// A ternary linear that exists only packed; its matrix is unpacked for each forward pass.
#[derive(Debug)]
struct PackedTernary {
    codes: Tensor,
    scales: Tensor,
    out_dim: i64,
    in_dim: i64,
    act_bits: Arc<AtomicU32>,
    scratch: Arc<Mutex<Scratch>>,
}

impl Linear for PackedTernary {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        unpack_codes_into(&self.codes, &s.table, &s.index, &s.weights);
        let mut w = s.weights.narrow(0, 0, self.out_dim * self.in_dim).view([self.out_dim, self.in_dim]);
        let _ = w.g_mul_(&self.scales);
        let bits = self.act_bits.load(Ordering::Relaxed);
        let x = if bits > 0 { act_quant_values(xs, bits, ActGranularity::PerToken) } else { xs.shallow_clone() };
        x.linear(&w, None::<&Tensor>)
    }
}

/// Builds packed random ternary linears (uniform codes, scales that keep unit variance) and a
/// plain f32 embedding and head.
struct RandomPackedBuilder {
    act_bits: Arc<AtomicU32>,
    scratch: Arc<Mutex<Scratch>>,
}

impl LinearBuilder for RandomPackedBuilder {
    fn linear(&self, p: &nn::Path, spec: LinearSpec) -> autoqat_model::Result<Box<dyn Linear>> {
        if spec.role == LinearRole::LmHead {
            return PlainBuilder.linear(p, spec);
        }
        let m = (spec.out_dim * spec.in_dim + 3) / 4;
        // Four base-4 digits (code + 1, each 0..=2) per byte, drawn and combined in u8 so that
        // no wider temporary than the packed matrix itself is ever allocated.
        let digit = || Tensor::randint(3, [m], (Kind::Uint8, Device::Cpu));
        let mut codes = digit();
        for _ in 0..3 {
            let _ = codes.g_mul_scalar_(4);
            let _ = codes.g_add_(&digit());
        }
        let codes = codes.to_device(p.device());
        // Uniform ternary codes have variance 2/3: this scale keeps unit-variance outputs.
        let scale = 1.0 / ((spec.in_dim as f64) * 2.0 / 3.0).sqrt();
        let scales = Tensor::full([spec.out_dim, 1], scale, (Kind::Float, p.device()));
        Ok(Box::new(PackedTernary {
            codes,
            scales,
            out_dim: spec.out_dim,
            in_dim: spec.in_dim,
            act_bits: self.act_bits.clone(),
            scratch: self.scratch.clone(),
        }))
    }
}

/// One phase of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `build`, `forward_a8` or `forward_a4`.
    pub name: String,
    /// Wall seconds.
    pub seconds: f64,
    /// Peak resident memory during the phase, MiB.
    pub peak_rss_mb: f64,
    /// Resident memory at the end of the phase, MiB.
    pub rss_mb: f64,
}

/// What the dry run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The shape.
    pub shape: Shape,
    /// Parameters in all.
    pub params: u64,
    /// Bytes of the packed linears.
    pub packed_bytes: u64,
    /// Bytes the same model would take dense in f32.
    pub dense_fp32_bytes: u64,
    /// The estimate checked before starting.
    pub estimate_bytes: u64,
    /// Tokens in the forward pass.
    pub seq: i64,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// max |logits(A8) - logits(A4)|.
    pub logits_max_abs_diff: f64,
    /// mean |logits(A8) - logits(A4)|.
    pub logits_mean_abs_diff: f64,
    /// Positions where A8 and A4 pick the same top-1 token.
    pub top1_agreement: f64,
}

/// Bytes the kernel says could be allocated without swapping.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Resets the peak resident set (Linux `clear_refs` 5), so each phase reports its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs the dry run: build packed, forward `seq` random tokens at 8-bit then 4-bit activations.
pub fn dry_run(shape: Shape, seq: i64, seed: i64, device: Device) -> Result<DryRun> {
    let estimate = shape.estimate_bytes(seq)?;
    let linear_params = shape.linear_params()?;
    if let Some(avail) = available_bytes() {
        if estimate > avail / 10 * 9 {
            return Err(KdError::Config(format!(
                "the shape needs about {:.1} GiB (packed weights {:.1} GiB, f32 embedding and head {:.1} GiB, one unpacked matrix, activations) but {:.1} GiB are available; pick a smaller --shape or free memory",
                gib(estimate),
                gib(linear_params / 4),
                gib(4 * shape.embedding_params()),
                gib(avail)
            )));
        }
    }
    // Building draws each matrix's digits in temporaries between the kept codes: with glibc's
    // default threshold (which grows to 32 MiB) they come from the heap, whose holes are not
    // given back, and the resident set would grow with the heap's history.
    // SAFETY: mallopt only tunes glibc's allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    tch::manual_seed(seed);
    let cfg = shape.config()?;
    let act_bits = Arc::new(AtomicU32::new(8));
    let biggest = (shape.linears()?.iter().map(|(o, i)| o * i).max().unwrap_or(0) + 3) / 4;
    let scratch = Scratch {
        table: code_table(device),
        index: Tensor::zeros([biggest], (Kind::Int64, device)),
        weights: Tensor::zeros([4 * biggest], (Kind::Float, device)),
    };
    let builder = RandomPackedBuilder { act_bits: act_bits.clone(), scratch: Arc::new(Mutex::new(scratch)) };
    let mut phases = Vec::new();
    reset_peak();
    let t = Instant::now();
    let (vs, model) = build_causal_lm(&cfg, device, Kind::Float, &builder)?;
    phases.push(Phase {
        name: "build".into(),
        seconds: t.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        rss_mb: rss_mb(),
    });
    let ids = Tensor::randint(shape.vocab, [1, seq], (Kind::Int64, device));
    let mut logits = Vec::new();
    for bits in [8u32, 4] {
        act_bits.store(bits, Ordering::Relaxed);
        reset_peak();
        let t = Instant::now();
        let l = tch::no_grad(|| model.forward(&ids)).to_kind(Kind::Float);
        phases.push(Phase {
            name: format!("forward_a{bits}"),
            seconds: t.elapsed().as_secs_f64(),
            peak_rss_mb: peak_rss_mb(),
            rss_mb: rss_mb(),
        });
        logits.push(l);
    }
    let diff = (&logits[0] - &logits[1]).abs();
    let agree =
        logits[0].argmax(-1, false).eq_tensor(&logits[1].argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float);
    // The packed linears are not variables; everything else (embedding, head, norms, and a
    // hybrid's convolutions and decay parameters) is.
    let params = linear_params + vs.variables().values().map(|t| t.numel() as u64).sum::<u64>();
    Ok(DryRun {
        shape,
        params,
        packed_bytes: linear_params / 4,
        dense_fp32_bytes: 4 * params,
        estimate_bytes: estimate,
        seq,
        phases,
        logits_max_abs_diff: diff.max().double_value(&[]),
        logits_mean_abs_diff: diff.mean(Kind::Float).double_value(&[]),
        top1_agreement: agree.double_value(&[]),
    })
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_the_7b_estimate_is_far_below_dense() {
        let s: Shape = "7b".parse().unwrap();
        assert_eq!((s.hidden, s.layers, s.heads, s.head_dim), (4096, 32, 32, 128));
        let dense = 4 * (s.linear_params().unwrap() + s.embedding_params());
        let estimate = s.estimate_bytes(16).unwrap();
        assert!(estimate * 5 < dense, "{estimate} vs {dense}");
        assert!("12,2,3,4,5,6".parse::<Shape>().is_ok());
        assert!("12,2,3,5,5,6".parse::<Shape>().unwrap_err().contains("hidden = heads * head_dim"));
        assert!("huge".parse::<Shape>().unwrap_err().contains("7b, 1b, tiny, qwen3.6-27b"));
    }

    #[test]
    fn the_qwen3_6_27b_shape_has_the_real_models_decoder() {
        let s: Shape = "qwen3.6-27b".parse().unwrap();
        let cfg = s.config().unwrap();
        let full = cfg.layer_types.iter().filter(|t| **t == autoqat_model::LayerType::FullAttention).count();
        assert_eq!((cfg.layer_types.len(), full), (64, 16));
        assert_eq!(cfg.rotary_dim(), 64);
        // Its linears plus embedding and head: 26.9e9 of the reference's 27e9 (the rest is
        // norms, convolutions and the decay parameters, counted after building).
        let total = s.linear_params().unwrap() + s.embedding_params();
        assert!((26.5e9..27.0e9).contains(&(total as f64)), "{total}");
    }

    #[test]
    fn a_tiny_dry_run_differs_between_a8_and_a4_but_stays_finite() {
        let r = dry_run("tiny".parse().unwrap(), 8, 0, Device::Cpu).unwrap();
        assert_eq!(r.phases.len(), 3);
        assert!(r.logits_mean_abs_diff.is_finite() && r.logits_mean_abs_diff > 0.0, "{r:?}");
        assert!(r.top1_agreement > 0.0 && r.top1_agreement <= 1.0);
    }
}
