//! The Hugging Face `config.json` of a Llama, Qwen2, Qwen3 or Qwen3.5/3.6 causal LM, with every
//! default resolved in one place ([`ModelConfig::resolve`]) and unsupported settings rejected
//! before a model is built.
//!
//! Qwen3.5/3.6 ships as an image-text wrapper (`model_type` `qwen3_5`) whose decoder settings sit
//! under `text_config` and whose decoder weights sit under `model.language_model.`; saved
//! text-only it is `qwen3_5_text` with the weights under `model.`. Both resolve to the same
//! [`ModelConfig`]; [`ModelConfig::checkpoint_key`] maps a variable to the key the file holds.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// The `model_type` values this crate builds.
pub const SUPPORTED_MODEL_TYPES: [&str; 5] = ["llama", "qwen2", "qwen3", "qwen3_5_text", "qwen3_5"];

/// The architecture family, from `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama, SmolLM, TinyLlama, Llama 3.x.
    Llama,
    /// Qwen2 / Qwen2.5: bias on q/k/v.
    Qwen2,
    /// Qwen3: RMSNorm on q and k per head.
    Qwen3,
    /// Qwen3.5/3.6: hybrid Gated DeltaNet + gated full attention (`layer_types`).
    #[serde(rename = "qwen3_5_text")]
    Qwen3_5,
}

/// The token mixer of one decoder layer (`layer_types` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Softmax attention over every earlier position (`self_attn`).
    FullAttention,
    /// Gated DeltaNet linear attention with a recurrent state (`linear_attn`).
    LinearAttention,
}

impl LayerType {
    /// The `layer_types` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullAttention => "full_attention",
            Self::LinearAttention => "linear_attention",
        }
    }
}

/// Shapes of the Gated DeltaNet layers (`linear_*` keys of a Qwen3.5 config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaNetConfig {
    /// Query/key heads (`linear_num_key_heads`).
    pub num_key_heads: i64,
    /// Value heads (`linear_num_value_heads`), a multiple of the key heads.
    pub num_value_heads: i64,
    /// Per-head query/key width (`linear_key_head_dim`).
    pub key_head_dim: i64,
    /// Per-head value width (`linear_value_head_dim`).
    pub value_head_dim: i64,
    /// Width of the depthwise causal convolution (`linear_conv_kernel_dim`).
    pub conv_kernel: i64,
}

impl DeltaNetConfig {
    /// Width of all query (or key) heads together.
    pub fn key_dim(&self) -> i64 {
        self.num_key_heads * self.key_head_dim
    }

    /// Width of all value heads together.
    pub fn value_dim(&self) -> i64 {
        self.num_value_heads * self.value_head_dim
    }

    /// Channels of the convolution: queries, keys and values side by side.
    pub fn conv_dim(&self) -> i64 {
        2 * self.key_dim() + self.value_dim()
    }
}

impl Arch {
    /// The `model_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Qwen3_5 => "qwen3_5_text",
        }
    }
}

/// How rotary frequencies are scaled for long context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// Divisor.
        factor: f64,
    },
    /// Llama 3.x frequency-dependent scaling.
    Llama3 {
        /// Divisor for low frequencies.
        factor: f64,
        /// Wavelength threshold (in units of the original context) below which scaling starts.
        low_freq_factor: f64,
        /// Wavelength threshold above which frequencies are kept.
        high_freq_factor: f64,
        /// Context the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

/// A resolved model configuration: every field the model code reads, no defaults left open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the MLP.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Longest position the model was built for.
    pub max_position_embeddings: i64,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// lm_head shares the embedding table.
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v (Qwen2 always; Llama/Qwen3 from `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama/Qwen3 `attention_bias`).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm on q and k per head (Qwen3, Qwen3.5).
    pub qk_norm: bool,
    /// Each layer's token mixer; empty means all full attention.
    #[serde(default)]
    pub layer_types: Vec<LayerType>,
    /// Fraction of each head that RoPE rotates (Qwen3.5: 0.25); the rest passes through.
    #[serde(default = "one")]
    pub partial_rotary_factor: f64,
    /// `q_proj` also produces a per-channel output gate, `sigmoid` applied before `o_proj`
    /// (Qwen3.5 full attention).
    #[serde(default)]
    pub attn_output_gate: bool,
    /// RMSNorm scales by `1 + weight` (weights stored centred on zero, Qwen3.5).
    #[serde(default)]
    pub norm_unit_offset: bool,
    /// Shapes of the Gated DeltaNet layers, when any layer is `linear_attention`.
    #[serde(default)]
    pub deltanet: Option<DeltaNetConfig>,
    /// The checkpoint is the image-text wrapper: decoder weights under `model.language_model.`.
    #[serde(default)]
    pub wrapped: bool,
}

fn one() -> f64 {
    1.0
}

/// Channels RoPE rotates of a head of `head_dim` (transformers truncates the product).
fn rotary_width(head_dim: i64, factor: f64) -> i64 {
    (head_dim as f64 * factor) as i64
}

/// Where the wrapper keeps the decoder's weights.
const WRAPPED_PREFIX: &str = "model.language_model.";

/// The raw fields of config.json this crate reads; the rest is ignored.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<i64>,
    vocab_size: i64,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    use_sliding_window: Option<bool>,
    layer_types: Option<Vec<String>>,
    full_attention_interval: Option<i64>,
    partial_rotary_factor: Option<f64>,
    linear_num_key_heads: Option<i64>,
    linear_num_value_heads: Option<i64>,
    linear_key_head_dim: Option<i64>,
    linear_value_head_dim: Option<i64>,
    linear_conv_kernel_dim: Option<i64>,
    #[serde(skip)]
    wrapped: bool,
}

impl ModelConfig {
    /// Reads and resolves `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| ModelError::Io { path: path.to_path_buf(), err })?;
        Self::from_json_str(&text).map_err(|e| match e {
            ModelError::Config { msg, .. } => ModelError::Config { path: path.to_path_buf(), msg },
            other => other,
        })
    }

    /// Parses and resolves the text of a config.json.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config { path: "config.json".into(), msg: e.to_string() })?;
        // Check model_type first so an unknown architecture is reported as such, not as a
        // missing field of ours.
        let model_type = value.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !SUPPORTED_MODEL_TYPES.contains(&model_type) {
            return Err(ModelError::UnsupportedModelType {
                found: model_type.to_string(),
                supported: SUPPORTED_MODEL_TYPES.to_vec(),
            });
        }
        let bad = |msg: String| ModelError::Config { path: "config.json".into(), msg };
        let wrapped = model_type == "qwen3_5";
        let value = text_only_config(value).map_err(bad)?;
        let mut raw: RawConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        raw.wrapped = wrapped;
        Self::resolve(raw)
    }

    fn resolve(raw: RawConfig) -> Result<Self> {
        let arch = match raw.model_type.as_deref() {
            Some("llama") => Arch::Llama,
            Some("qwen2") => Arch::Qwen2,
            Some("qwen3") => Arch::Qwen3,
            Some("qwen3_5_text") => Arch::Qwen3_5,
            other => {
                return Err(ModelError::UnsupportedModelType {
                    found: other.unwrap_or("").to_string(),
                    supported: SUPPORTED_MODEL_TYPES.to_vec(),
                })
            }
        };
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(ModelError::Unsupported(format!("hidden_act \"{act}\" (only \"silu\" is implemented)")));
            }
        }
        if raw.use_sliding_window == Some(true) {
            return Err(ModelError::Unsupported(
                "use_sliding_window = true (only full attention is implemented)".into(),
            ));
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        for (name, v) in [
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", heads),
            ("num_key_value_heads", kv_heads),
            ("vocab_size", raw.vocab_size),
        ] {
            if v <= 0 {
                return Err(ModelError::Unsupported(format!("{name} = {v} (must be positive)")));
            }
        }
        if heads % kv_heads != 0 {
            return Err(ModelError::Unsupported(format!(
                "num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size % heads == 0 => raw.hidden_size / heads,
            None => {
                return Err(ModelError::Unsupported(format!(
                    "hidden_size = {} is not divisible by num_attention_heads = {heads}; set head_dim",
                    raw.hidden_size
                )))
            }
        };
        if head_dim <= 0 || head_dim % 2 != 0 {
            return Err(ModelError::Unsupported(format!("head_dim = {head_dim} (must be even and positive)")));
        }
        let (rope_theta, rope_scaling) =
            resolve_rope(raw.rope_theta, raw.rope_scaling.as_ref(), raw.rope_parameters.as_ref())?;
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match arch {
            // Qwen2 hard-codes bias on q/k/v and none on o, whatever attention_bias says.
            Arch::Qwen2 => (true, false),
            Arch::Llama | Arch::Qwen3 | Arch::Qwen3_5 => (attention_bias, attention_bias),
        };
        let hybrid = arch == Arch::Qwen3_5;
        let layer_types = if hybrid { resolve_layer_types(&raw)? } else { Vec::new() };
        let deltanet =
            if layer_types.contains(&LayerType::LinearAttention) { Some(resolve_deltanet(&raw)?) } else { None };
        // transformers reads the factor from rope_parameters and defaults it to 0.25 for Qwen3.5.
        let partial_rotary_factor = [raw.rope_parameters.as_ref(), raw.rope_scaling.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|v| v.get("partial_rotary_factor").and_then(Value::as_f64))
            .or(raw.partial_rotary_factor)
            .unwrap_or(if hybrid { 0.25 } else { 1.0 });
        let rotary_dim = rotary_width(head_dim, partial_rotary_factor);
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) || rotary_dim <= 0 || rotary_dim % 2 != 0 {
            return Err(ModelError::Unsupported(format!(
                "partial_rotary_factor = {partial_rotary_factor} gives a rotary width of {rotary_dim} of head_dim {head_dim} (must be even and positive)"
            )));
        }
        Ok(Self {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            vocab_size: raw.vocab_size,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: arch == Arch::Llama && raw.mlp_bias.unwrap_or(false),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3_5),
            layer_types,
            partial_rotary_factor,
            attn_output_gate: hybrid,
            norm_unit_offset: hybrid,
            deltanet,
            wrapped: raw.wrapped,
        })
    }

    /// The token mixer of decoder layer `layer`.
    pub fn layer_type(&self, layer: usize) -> LayerType {
        self.layer_types.get(layer).copied().unwrap_or(LayerType::FullAttention)
    }

    /// How many head channels RoPE rotates (all of them unless `partial_rotary_factor` < 1).
    pub fn rotary_dim(&self) -> i64 {
        rotary_width(self.head_dim, self.partial_rotary_factor)
    }

    /// `(role, out_dim, in_dim)` of every projection of decoder layer `layer`, as the model
    /// builds them (for sizing a model before building it).
    pub fn layer_linears(&self, layer: usize) -> Vec<(crate::linear::LinearRole, i64, i64)> {
        use crate::linear::LinearRole as R;
        let (c, i) = (self.hidden_size, self.intermediate_size);
        let mut out = match (self.layer_type(layer), &self.deltanet) {
            (LayerType::LinearAttention, Some(d)) => vec![
                (R::InProjQkv, d.conv_dim(), c),
                (R::InProjZ, d.value_dim(), c),
                (R::InProjB, d.num_value_heads, c),
                (R::InProjA, d.num_value_heads, c),
                (R::OutProj, c, d.value_dim()),
            ],
            _ => {
                let (h, k, d) = (self.num_attention_heads, self.num_key_value_heads, self.head_dim);
                let q = if self.attn_output_gate { 2 * h * d } else { h * d };
                vec![(R::Q, q, c), (R::K, k * d, c), (R::V, k * d, c), (R::O, c, h * d)]
            }
        };
        out.extend([(R::Gate, i, c), (R::Up, i, c), (R::Down, c, i)]);
        out
    }

    /// The checkpoint key of variable `name` (they differ only for the image-text wrapper).
    pub fn checkpoint_key(&self, name: &str) -> String {
        match name.strip_prefix("model.") {
            Some(rest) if self.wrapped => format!("{WRAPPED_PREFIX}{rest}"),
            _ => name.to_string(),
        }
    }

    /// The variable a checkpoint key fills, or None for a key of no part of the decoder (the
    /// wrapper's vision encoder and multi-token-prediction head), which is never read.
    pub fn var_name(&self, key: &str) -> Option<String> {
        if !self.wrapped {
            return Some(key.to_string());
        }
        match key.strip_prefix(WRAPPED_PREFIX) {
            Some(rest) => Some(format!("model.{rest}")),
            None if key.starts_with("model.") || key.starts_with("mtp.") => None,
            None => Some(key.to_string()),
        }
    }

    /// The Hugging Face config.json for this configuration (loadable by transformers).
    pub fn to_hf_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put(
            "architectures",
            Value::from(vec![match self.arch {
                Arch::Llama => "LlamaForCausalLM",
                Arch::Qwen2 => "Qwen2ForCausalLM",
                Arch::Qwen3 => "Qwen3ForCausalLM",
                Arch::Qwen3_5 => "Qwen3_5ForCausalLM",
            }]),
        );
        put("model_type", self.arch.as_str().into());
        put("hidden_size", self.hidden_size.into());
        put("intermediate_size", self.intermediate_size.into());
        put("num_hidden_layers", self.num_hidden_layers.into());
        put("num_attention_heads", self.num_attention_heads.into());
        put("num_key_value_heads", self.num_key_value_heads.into());
        put("head_dim", self.head_dim.into());
        put("hidden_act", "silu".into());
        put("rms_norm_eps", self.rms_norm_eps.into());
        put("max_position_embeddings", self.max_position_embeddings.into());
        put("vocab_size", self.vocab_size.into());
        put("tie_word_embeddings", self.tie_word_embeddings.into());
        if self.arch != Arch::Qwen2 {
            put("attention_bias", self.o_bias.into());
        }
        if self.arch == Arch::Llama {
            put("mlp_bias", self.mlp_bias.into());
        }
        let mut rope = Map::new();
        rope.insert("rope_theta".into(), self.rope_theta.into());
        match &self.rope_scaling {
            RopeScaling::Default => {
                rope.insert("rope_type".into(), "default".into());
            }
            RopeScaling::Linear { factor } => {
                rope.insert("rope_type".into(), "linear".into());
                rope.insert("factor".into(), (*factor).into());
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                rope.insert("rope_type".into(), "llama3".into());
                rope.insert("factor".into(), (*factor).into());
                rope.insert("low_freq_factor".into(), (*low_freq_factor).into());
                rope.insert("high_freq_factor".into(), (*high_freq_factor).into());
                rope.insert(
                    "original_max_position_embeddings".into(),
                    (*original_max_position_embeddings as i64).into(),
                );
            }
        }
        if self.partial_rotary_factor != 1.0 {
            rope.insert("partial_rotary_factor".into(), self.partial_rotary_factor.into());
        }
        put("rope_theta", self.rope_theta.into());
        put("rope_parameters", Value::Object(rope));
        if self.arch == Arch::Qwen3_5 {
            put("layer_types", self.layer_types.iter().map(|t| Value::from(t.as_str())).collect());
            if let Some(d) = &self.deltanet {
                put("linear_num_key_heads", d.num_key_heads.into());
                put("linear_num_value_heads", d.num_value_heads.into());
                put("linear_key_head_dim", d.key_head_dim.into());
                put("linear_value_head_dim", d.value_head_dim.into());
                put("linear_conv_kernel_dim", d.conv_kernel.into());
            }
        }
        Value::Object(m)
    }
}

/// The `text_config` of an image-text wrapper (`model_type` `qwen3_5`) as a text-only
/// `qwen3_5_text` config.json, with the wrapper's `tie_word_embeddings` where the text part does
/// not say; any other config as it is. What a text-only save of the decoder carries.
pub fn text_only_config(value: serde_json::Value) -> std::result::Result<Value, String> {
    if value.get("model_type").and_then(Value::as_str) == Some("qwen3_5") {
        unwrap_text_config(value)
    } else {
        Ok(value)
    }
}

fn unwrap_text_config(mut value: Value) -> std::result::Result<Value, String> {
    let tie = value.get("tie_word_embeddings").cloned();
    let Some(Value::Object(mut text)) = value.get_mut("text_config").map(Value::take) else {
        return Err("model_type \"qwen3_5\" (the image-text wrapper) needs a \"text_config\" object with the decoder's settings (hint: this config.json is incomplete; use the one the model ships with)".into());
    };
    text.insert("model_type".into(), "qwen3_5_text".into());
    if let Some(tie) = tie {
        text.entry("tie_word_embeddings").or_insert(tie);
    }
    Ok(Value::Object(text))
}

/// `layer_types`, checked against the layer count; transformers' `full_attention_interval`
/// default only when a config leaves `layer_types` out.
fn resolve_layer_types(raw: &RawConfig) -> Result<Vec<LayerType>> {
    let n = raw.num_hidden_layers;
    let Some(names) = &raw.layer_types else {
        let every = raw.full_attention_interval.unwrap_or(4).max(1);
        return Ok((0..n)
            .map(|i| if (i + 1) % every == 0 { LayerType::FullAttention } else { LayerType::LinearAttention })
            .collect());
    };
    if names.len() as i64 != n {
        return Err(ModelError::Unsupported(format!(
            "layer_types has {} entries but num_hidden_layers is {n} (hint: one entry per decoder layer)",
            names.len()
        )));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| match name.as_str() {
            "full_attention" => Ok(LayerType::FullAttention),
            "linear_attention" => Ok(LayerType::LinearAttention),
            other => Err(ModelError::Unsupported(format!(
                "layer_types[{i}] = \"{other}\" (supported: full_attention, linear_attention)"
            ))),
        })
        .collect()
}

/// The Gated DeltaNet shapes, with transformers' defaults for the keys a config leaves out.
fn resolve_deltanet(raw: &RawConfig) -> Result<DeltaNetConfig> {
    let d = DeltaNetConfig {
        num_key_heads: raw.linear_num_key_heads.unwrap_or(16),
        num_value_heads: raw.linear_num_value_heads.unwrap_or(32),
        key_head_dim: raw.linear_key_head_dim.unwrap_or(128),
        value_head_dim: raw.linear_value_head_dim.unwrap_or(128),
        conv_kernel: raw.linear_conv_kernel_dim.unwrap_or(4),
    };
    for (name, v) in [
        ("linear_num_key_heads", d.num_key_heads),
        ("linear_num_value_heads", d.num_value_heads),
        ("linear_key_head_dim", d.key_head_dim),
        ("linear_value_head_dim", d.value_head_dim),
        ("linear_conv_kernel_dim", d.conv_kernel),
    ] {
        if v <= 0 {
            return Err(ModelError::Unsupported(format!("{name} = {v} (must be positive)")));
        }
    }
    if d.num_value_heads % d.num_key_heads != 0 {
        return Err(ModelError::Unsupported(format!(
            "linear_num_value_heads = {} is not a multiple of linear_num_key_heads = {}",
            d.num_value_heads, d.num_key_heads
        )));
    }
    Ok(d)
}

/// Merges the legacy (`rope_theta` + `rope_scaling`) and transformers 5 (`rope_parameters`)
/// spellings; `rope_parameters` wins where both are present.
fn resolve_rope(theta: Option<f64>, scaling: Option<&Value>, params: Option<&Value>) -> Result<(f64, RopeScaling)> {
    let mut merged = Map::new();
    for v in [scaling, params].into_iter().flatten() {
        if let Value::Object(o) = v {
            for (k, x) in o {
                merged.insert(k.clone(), x.clone());
            }
        }
    }
    let theta = merged.get("rope_theta").and_then(Value::as_f64).or(theta).unwrap_or(10000.0);
    let kind =
        merged.get("rope_type").or_else(|| merged.get("type")).and_then(Value::as_str).unwrap_or("default").to_string();
    let num = |k: &str| -> Result<f64> {
        merged
            .get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::Unsupported(format!("rope scaling \"{kind}\" needs a numeric \"{k}\"")))
    };
    let scaling = match kind.as_str() {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: num("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(ModelError::Unsupported(format!("rope_type \"{other}\" (supported: default, linear, llama3)")))
        }
    };
    Ok((theta, scaling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_type_lists_supported() {
        let err = ModelConfig::from_json_str(r#"{"model_type":"gpt2"}"#).unwrap_err().to_string();
        assert!(err.contains("gpt2") && err.contains("llama, qwen2, qwen3"), "{err}");
    }

    #[test]
    fn legacy_llama3_rope_scaling_is_read() {
        let cfg = ModelConfig::from_json_str(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
            "num_attention_heads":4,"vocab_size":10,"rope_theta":500000.0,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#,
        )
        .unwrap();
        assert_eq!(cfg.rope_theta, 500000.0);
        assert!(matches!(cfg.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(cfg.num_key_value_heads, 4);
        assert_eq!(cfg.head_dim, 16);
    }

    #[test]
    fn round_trips_through_hf_json() {
        let cfg = ModelConfig::from_json_str(
            r#"{"model_type":"qwen3","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"vocab_size":10,
            "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}"#,
        )
        .unwrap();
        let again = ModelConfig::from_json_str(&cfg.to_hf_json().to_string()).unwrap();
        assert_eq!(cfg, again);
    }
}
