//! The Llama family causal LM (Llama, SmolLM, TinyLlama, Llama 3.x) with the Qwen variations
//! switched on by config flags: Qwen2's q/k/v bias, Qwen3's per-head q/k RMSNorm, and
//! Qwen3.5/3.6's hybrid stack (`layer_types`: Gated DeltaNet layers, see [`crate::deltanet`],
//! between full-attention layers whose `q_proj` also yields an output gate, with RoPE on part of
//! each head and RMSNorms scaled by `1 + weight`). Follows
//! `transformers/models/llama/modeling_llama.py` (and `qwen2`, `qwen3`, `qwen3_5`) block for
//! block; variable names equal the Hugging Face checkpoint keys.
//!
//! Shapes in comments: B batch, T time, H query heads, K key/value heads, D head_dim,
//! C hidden size, V vocabulary.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::config::{LayerType, ModelConfig, RopeScaling};
use crate::deltanet::{DeltaState, GatedDeltaNet};
use crate::error::Result;
use crate::host::HostKv;
use crate::linear::{Embedding, Linear, LinearBuilder, LinearRole, LinearSpec};

/// RMSNorm as in HF: normalize in f32, cast back, then scale.
#[derive(Debug)]
pub struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
    /// Qwen3.5 stores the scale centred on zero and multiplies by `1 + weight`, in f32.
    pub(crate) unit_offset: bool,
}

impl RmsNorm {
    /// Creates the scale at `p / "weight"` (`[dim]`, initialized to an effective scale of one).
    pub fn new(p: &nn::Path, dim: i64, cfg: &ModelConfig) -> Result<Self> {
        let unit_offset = cfg.norm_unit_offset;
        let init = Init::Const(if unit_offset { 0.0 } else { 1.0 });
        Ok(Self { weight: p.f_var("weight", &[dim], init)?, eps: cfg.rms_norm_eps, unit_offset })
    }

    /// `[.., dim] -> [.., dim]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        if self.unit_offset {
            let x = xs.to_kind(Kind::Float);
            let x = x.rms_norm([x.size()[x.dim() - 1]], None::<Tensor>, self.eps);
            return (x * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind);
        }
        if kind == Kind::Float {
            // Fused kernel: same math as the HF formula in f32.
            return xs.rms_norm([xs.size()[xs.dim() - 1]], Some(&self.weight), self.eps);
        }
        let x = xs.to_kind(Kind::Float);
        let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let x = x * (var + self.eps).rsqrt();
        &self.weight * x.to_kind(kind)
    }
}

/// Rotary position embedding; the frequency table is built in f32.
#[derive(Debug)]
pub struct RotaryEmbedding {
    /// `[D/2]` f32.
    pub(crate) inv_freq: Tensor,
}

impl RotaryEmbedding {
    /// Builds the inverse frequencies for `cfg` on `device` (over the rotated part of a head).
    pub fn new(cfg: &ModelConfig, device: tch::Device) -> Self {
        let dim = cfg.rotary_dim();
        // As HF: base ** (arange(0, dim, 2) / dim), in f32.
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / dim as f64;
        let base = Tensor::full([1], cfg.rope_theta, (Kind::Float, device));
        let inv_freq = base.pow(&exponents).reciprocal();
        let inv_freq = match cfg.rope_scaling {
            RopeScaling::Default => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
                // torch.where(cond, a, b) is a.where_self(cond, b) in tch.
                let scaled: Tensor = (&inv_freq / factor).where_self(&wavelen.gt(low_freq_wavelen), &inv_freq);
                let smooth = ((wavelen.reciprocal() * old) - low_freq_factor) / (high_freq_factor - low_freq_factor);
                let smoothed: Tensor = (1.0 - &smooth) * &scaled / factor + &smooth * &scaled;
                let medium = wavelen
                    .lt(high_freq_wavelen)
                    .logical_not()
                    .logical_and(&wavelen.gt(low_freq_wavelen).logical_not());
                smoothed.where_self(&medium, &scaled)
            }
        };
        Self { inv_freq }
    }

    /// `(cos, sin)`, each `[T, R]` (R the rotated width) in `kind`, for positions `0..t`.
    pub fn cos_sin(&self, t: i64, kind: Kind) -> (Tensor, Tensor) {
        let pos = Tensor::arange(t, (Kind::Float, self.inv_freq.device()));
        let freqs = pos.unsqueeze(1) * self.inv_freq.unsqueeze(0); // [T, D/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// `[.., D] -> [.., D]`: `(x1, x2) -> (-x2, x1)`.
fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[x.dim() - 1] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// Applies rotary embedding to `x` `[B, heads, T, D]` with `cos`/`sin` `[T, R]`: the first R
/// channels of each head rotate, the rest pass through (partial rotary).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let (d, r) = (x.size()[3], cos.size()[1]);
    if r == d {
        return x * cos + rotate_half(x) * sin;
    }
    let rot = x.narrow(-1, 0, r);
    Tensor::cat(&[&rot * cos + rotate_half(&rot) * sin, x.narrow(-1, r, d - r)], -1)
}

/// Multi-head attention with grouped key/value heads.
#[derive(Debug)]
pub struct Attention {
    pub(crate) q_proj: Box<dyn Linear>,
    pub(crate) k_proj: Box<dyn Linear>,
    pub(crate) v_proj: Box<dyn Linear>,
    pub(crate) o_proj: Box<dyn Linear>,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    /// `q_proj` yields `[query | gate]` per head; the output is scaled by `sigmoid(gate)`.
    pub(crate) output_gate: bool,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    /// Builds `p` = `model.layers.<layer>.self_attn`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig, layer: usize, b: &dyn LinearBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let (h, k, d) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let lin = |role: LinearRole, in_dim: i64, out_dim: i64, bias: bool| {
            b.linear(&(p / role.hf_name()), LinearSpec { role, layer: Some(layer), in_dim, out_dim, bias, tied: None })
        };
        let (q_norm, k_norm) = if cfg.qk_norm {
            (Some(RmsNorm::new(&(p / "q_norm"), d, cfg)?), Some(RmsNorm::new(&(p / "k_norm"), d, cfg)?))
        } else {
            (None, None)
        };
        let q_width = if cfg.attn_output_gate { 2 * h * d } else { h * d };
        Ok(Self {
            q_proj: lin(LinearRole::Q, c, q_width, cfg.qkv_bias)?,
            k_proj: lin(LinearRole::K, c, k * d, cfg.qkv_bias)?,
            v_proj: lin(LinearRole::V, c, k * d, cfg.qkv_bias)?,
            o_proj: lin(LinearRole::O, h * d, c, cfg.o_bias)?,
            q_norm,
            k_norm,
            output_gate: cfg.attn_output_gate,
            n_heads: h,
            n_kv_heads: k,
            head_dim: d,
        })
    }

    /// Queries, keys and values `[B, heads, T, D]` with rotary embedding applied, and the
    /// output gate `[B, T, H * D]` when the layer has one.
    fn qkv(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor, Tensor, Option<Tensor>) {
        let (b, t, d) = (xs.size()[0], xs.size()[1], self.head_dim);
        let heads = |x: Tensor, norm: &Option<RmsNorm>| {
            let x = match norm {
                Some(norm) => norm.forward(&x),
                None => x,
            };
            x.transpose(1, 2) // [B, n, T, D]
        };
        let q_out = self.q_proj.forward(xs);
        let (q, gate) = if self.output_gate {
            // Per head: D query channels, then D gate channels.
            let both = q_out.view([b, t, self.n_heads, 2 * d]);
            (both.narrow(-1, 0, d), Some(both.narrow(-1, d, d).reshape([b, t, self.n_heads * d])))
        } else {
            (q_out.view([b, t, self.n_heads, d]), None)
        };
        let q = apply_rope(&heads(q, &self.q_norm), cos, sin);
        let k = self.k_proj.forward(xs).view([b, t, self.n_kv_heads, d]);
        let k = apply_rope(&heads(k, &self.k_norm), cos, sin);
        let v = heads(self.v_proj.forward(xs).view([b, t, self.n_kv_heads, d]), &None);
        (q, k, v, gate)
    }

    /// Attention of `q` over `k`/`v`, gated, then the output projection: `[B, T, C]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        gate: Option<Tensor>,
        mask: Option<Tensor>,
        causal: bool,
    ) -> Tensor {
        let (b, t) = (q.size()[0], q.size()[2]);
        // GQA inside the fused kernel (`enable_gqa`): the same math as `repeat_kv` without the copy.
        let scale = (self.head_dim as f64).powf(-0.5);
        let gqa = self.n_heads != self.n_kv_heads;
        let y = Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale, gqa);
        let y = y.transpose(1, 2).reshape([b, t, self.n_heads * self.head_dim]);
        let y = match gate {
            Some(gate) => y * gate.sigmoid(),
            None => y,
        };
        self.o_proj.forward(&y)
    }

    /// `[B, T, C] -> [B, T, C]`, causal.
    pub fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let (q, k, v, gate) = self.qkv(xs, cos, sin);
        self.attend(&q, &k, &v, gate, None, true)
    }

    /// As [`Attention::forward`] for new positions after those held in `kv` (whose keys and
    /// values it appends); `cos`/`sin` cover the new positions only.
    pub fn forward_cached(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, kv: &mut Option<(Tensor, Tensor)>) -> Tensor {
        let (q, k, v, gate) = self.qkv(xs, cos, sin);
        let Some((pk, pv)) = kv.take() else {
            let y = self.attend(&q, &k, &v, gate, None, true);
            *kv = Some((k, v));
            return y;
        };
        let (past, t) = (pk.size()[2], q.size()[2]);
        let k = Tensor::cat(&[&pk, &k], 2);
        let v = Tensor::cat(&[&pv, &v], 2);
        // One new token sees every cached one; several need the causal mask shifted by `past`.
        let mask = (t > 1).then(|| Tensor::ones([t, past + t], (Kind::Bool, q.device())).tril(past));
        let y = self.attend(&q, &k, &v, gate, mask, false);
        *kv = Some((k, v));
        y
    }
}

/// `[B, K, T, D] -> [B, K * groups, T, D]`, each kv head repeated for its query group.
pub fn repeat_kv(x: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return x.shallow_clone();
    }
    let s = x.size();
    let (b, k, t, d) = (s[0], s[1], s[2], s[3]);
    x.unsqueeze(2).expand([b, k, groups, t, d], false).reshape([b, k * groups, t, d])
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    pub(crate) gate_proj: Box<dyn Linear>,
    pub(crate) up_proj: Box<dyn Linear>,
    pub(crate) down_proj: Box<dyn Linear>,
}

impl Mlp {
    /// Builds `p` = `model.layers.<layer>.mlp`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig, layer: usize, b: &dyn LinearBuilder) -> Result<Self> {
        let (c, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let lin = |role: LinearRole, in_dim: i64, out_dim: i64| {
            b.linear(&(p / role.hf_name()), LinearSpec { role, layer: Some(layer), in_dim, out_dim, bias, tied: None })
        };
        Ok(Self {
            gate_proj: lin(LinearRole::Gate, c, i)?,
            up_proj: lin(LinearRole::Up, c, i)?,
            down_proj: lin(LinearRole::Down, i, c)?,
        })
    }

    /// `[B, T, C] -> [B, T, C]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.down_proj.forward(&(self.gate_proj.forward(xs).silu() * self.up_proj.forward(xs)))
    }
}

/// A decoder layer's token mixer: softmax attention (`self_attn`) or Gated DeltaNet
/// (`linear_attn`).
#[derive(Debug)]
pub enum Mixer {
    /// Full (softmax) attention.
    Attention(Attention),
    /// Gated DeltaNet linear attention.
    DeltaNet(GatedDeltaNet),
}

/// What one layer carries between decoding steps.
#[derive(Debug, Default)]
pub enum LayerState {
    /// Nothing seen yet.
    #[default]
    Empty,
    /// Attention's keys and values `[B, K, T, D]`.
    Kv(Tensor, Tensor),
    /// Gated DeltaNet's convolution window and recurrent state.
    Delta(DeltaState),
    /// Attention's keys and values on the host, after a host decode step ([`crate::host`]).
    HostKv(HostKv),
}

/// One pre-norm decoder block.
#[derive(Debug)]
pub struct DecoderLayer {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) mixer: Mixer,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
}

impl DecoderLayer {
    /// Builds `p` = `model.layers.<layer>`, its mixer from `layer_types`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig, layer: usize, b: &dyn LinearBuilder) -> Result<Self> {
        let mixer = match cfg.layer_type(layer) {
            LayerType::FullAttention => Mixer::Attention(Attention::new(&(p / "self_attn"), cfg, layer, b)?),
            LayerType::LinearAttention => Mixer::DeltaNet(GatedDeltaNet::new(&(p / "linear_attn"), cfg, layer, b)?),
        };
        Ok(Self {
            input_layernorm: RmsNorm::new(&(p / "input_layernorm"), cfg.hidden_size, cfg)?,
            mixer,
            post_attention_layernorm: RmsNorm::new(&(p / "post_attention_layernorm"), cfg.hidden_size, cfg)?,
            mlp: Mlp::new(&(p / "mlp"), cfg, layer, b)?,
        })
    }

    /// `[B, T, C] -> [B, T, C]`.
    pub fn forward(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let x = self.input_layernorm.forward(xs);
        let mixed = match &self.mixer {
            Mixer::Attention(a) => a.forward(&x, cos, sin),
            Mixer::DeltaNet(d) => d.forward(&x),
        };
        self.feed_forward(xs + mixed)
    }

    fn feed_forward(&self, h: Tensor) -> Tensor {
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }

    /// As [`DecoderLayer::forward`] continuing from the layer's decoding state.
    pub fn forward_cached(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, state: &mut LayerState) -> Tensor {
        self.step(xs, cos, sin, state, false)
    }

    fn step(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor, state: &mut LayerState, recurrent: bool) -> Tensor {
        let x = self.input_layernorm.forward(xs);
        let mixed = match &self.mixer {
            Mixer::Attention(a) => {
                let mut kv = match std::mem::take(state) {
                    LayerState::Kv(k, v) => Some((k, v)),
                    LayerState::HostKv(kv) => Some(kv.into_tensors(a.head_dim)),
                    _ => None,
                };
                let y = a.forward_cached(&x, cos, sin, &mut kv);
                *state = kv.map_or(LayerState::Empty, |(k, v)| LayerState::Kv(k, v));
                y
            }
            Mixer::DeltaNet(d) => {
                let mut delta = match std::mem::take(state) {
                    LayerState::Delta(s) => Some(s),
                    _ => None,
                };
                let y = if recurrent { d.forward_recurrent(&x, &mut delta) } else { d.forward_cached(&x, &mut delta) };
                *state = delta.map_or(LayerState::Empty, LayerState::Delta);
                y
            }
        };
        self.feed_forward(xs + mixed)
    }
}

/// Keys and values of every position seen so far, per layer: incremental (greedy) decoding
/// runs each new token through the stack once instead of re-reading the whole prefix.
#[derive(Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerState>,
    pub(crate) len: i64,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether no position is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Called before a decoder layer runs, so that a layer's weights can live elsewhere (a file)
/// until the forward reaches it: memory then grows with one layer, not with depth (see
/// [`crate::offload`]). Infallible because a forward is; an implementation keeps its errors for
/// its owner to check after the pass.
pub trait LayerHook: std::fmt::Debug + Send + Sync {
    /// Layer `layer` is about to run.
    fn enter(&self, layer: usize);
}

/// The decoder stack without the head (`model.*`).
#[derive(Debug)]
pub struct Model {
    pub(crate) embed_tokens: Box<dyn Embedding>,
    pub(crate) layers: Vec<DecoderLayer>,
    pub(crate) norm: RmsNorm,
    pub(crate) rotary: RotaryEmbedding,
    pub(crate) hook: Option<std::sync::Arc<dyn LayerHook>>,
}

impl Model {
    /// Builds `p` = `model`, calling `after_layer(i)` once layer `i`'s variables exist.
    pub fn new(
        p: &nn::Path,
        cfg: &ModelConfig,
        b: &dyn LinearBuilder,
        after_layer: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Self> {
        let embed_tokens = b.embedding(&(p / "embed_tokens"), cfg.vocab_size, cfg.hidden_size)?;
        let layers = (0..cfg.num_hidden_layers as usize)
            .map(|i| {
                let layer = DecoderLayer::new(&(p / "layers" / i), cfg, i, b)?;
                after_layer(i)?;
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm::new(&(p / "norm"), cfg.hidden_size, cfg)?,
            rotary: RotaryEmbedding::new(cfg, p.device()),
            hook: None,
        })
    }

    fn enter(&self, i: usize) {
        if let Some(hook) = &self.hook {
            hook.enter(i);
        }
    }

    /// Decoder layer `i` alone: `[B, T, C] -> [B, T, C]` (positions from 0), for block-wise
    /// work such as layerwise distillation.
    pub fn layer(&self, i: usize, h: &Tensor) -> Tensor {
        self.enter(i);
        let (cos, sin) = self.rotary.cos_sin(h.size()[1], h.kind());
        self.layers[i].forward(h, &cos, &sin)
    }

    /// Token ids `[B, T]` of the positions after those in `cache` -> final normed hidden states
    /// `[B, T, C]`; the cache grows by `T`. `recurrent` runs Gated DeltaNet layers token by token
    /// even over several new positions (the chunked form otherwise).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache, recurrent: bool) -> Tensor {
        let t = ids.size()[1];
        let mut h = self.embed_tokens.forward(ids);
        let (cos, sin) = self.rotary.cos_sin(cache.len + t, h.kind());
        let (cos, sin) = (cos.narrow(0, cache.len, t), sin.narrow(0, cache.len, t));
        cache.layers.resize_with(self.layers.len(), LayerState::default);
        for (i, (layer, state)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            self.enter(i);
            h = layer.step(&h, &cos, &sin, state, recurrent);
        }
        cache.len += t;
        self.norm.forward(&h)
    }

    /// Token ids `[B, T]` -> final normed hidden states `[B, T, C]`.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        let t = ids.size()[1];
        let mut h = self.embed_tokens.forward(ids);
        let (cos, sin) = self.rotary.cos_sin(t, h.kind());
        for (i, layer) in self.layers.iter().enumerate() {
            self.enter(i);
            h = layer.forward(&h, &cos, &sin);
        }
        self.norm.forward(&h)
    }
}

/// A causal language model: decoder stack plus lm_head (tied or not).
#[derive(Debug)]
pub struct CausalLM {
    /// The resolved configuration it was built from.
    pub cfg: ModelConfig,
    pub(crate) model: Model,
    pub(crate) lm_head: Box<dyn Linear>,
    /// Whether one-token steps may take the host decode step ([`crate::host`]).
    host_decode: bool,
}

impl CausalLM {
    /// Builds every variable under `p` (the VarStore root) with `b` building the linears.
    pub fn new(p: &nn::Path, cfg: &ModelConfig, b: &dyn LinearBuilder) -> Result<Self> {
        Self::new_with(p, cfg, b, &mut |_| Ok(()))
    }

    /// As [`CausalLM::new`], calling `after_layer(i)` as soon as decoder layer `i`'s variables
    /// exist (an offloader moves them out there, so the whole model is never allocated).
    pub fn new_with(
        p: &nn::Path,
        cfg: &ModelConfig,
        b: &dyn LinearBuilder,
        after_layer: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Self> {
        let model = Model::new(&(p / "model"), cfg, b, after_layer)?;
        let tied = cfg.tie_word_embeddings.then(|| model.embed_tokens.weight().shallow_clone());
        let lm_head = b.linear(
            &(p / "lm_head"),
            LinearSpec {
                role: LinearRole::LmHead,
                layer: None,
                in_dim: cfg.hidden_size,
                out_dim: cfg.vocab_size,
                bias: false,
                tied,
            },
        )?;
        Ok(Self { cfg: cfg.clone(), model, lm_head, host_decode: true })
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// Decoder layer `i` alone on hidden states `[B, T, C]` (see [`Model::layer`]).
    pub fn layer(&self, i: usize, h: &Tensor) -> Tensor {
        self.model.layer(i, h)
    }

    /// Token ids `[B, T]` (i64) -> final hidden states `[B, T, C]`.
    pub fn hidden(&self, ids: &Tensor) -> Tensor {
        self.model.forward(ids)
    }

    /// Runs `hook` before each decoder layer from now on (None: no hook).
    pub fn set_layer_hook(&mut self, hook: Option<std::sync::Arc<dyn LayerHook>>) {
        self.model.hook = hook;
    }

    /// Token ids `[B, T]` -> the embeddings `[B, T, C]` the first layer reads.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        self.model.embed_tokens.forward(ids)
    }

    /// The last layer's output `[.., C]` -> the final normed hidden states the head reads.
    pub fn final_norm(&self, h: &Tensor) -> Tensor {
        self.model.norm.forward(h)
    }

    /// Hidden states `[.., C]` -> logits `[.., V]`.
    pub fn head(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden)
    }

    /// Token ids `[B, T]` (i64) -> logits `[B, T, V]`.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        self.head(&self.hidden(ids))
    }

    /// Logits `[B, T, V]` of new positions after those in `cache` (see [`Model::forward_cached`]).
    /// One new token of a kernel model goes through the host decode step ([`crate::host`]).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        if let Some(logits) = self.host_step(ids, cache) {
            return logits;
        }
        self.head(&self.model.forward_cached(ids, cache, false))
    }

    /// Lets one-token steps take the host decode step when the model has a host form (the
    /// default), or keeps every step on libtorch (to compare the two).
    pub fn set_host_decode(&mut self, on: bool) {
        self.host_decode = on;
    }

    /// Whether one-token steps of this model run on host buffers ([`crate::host`]).
    pub fn decodes_on_host(&self) -> bool {
        self.host_decode && crate::host::Plan::of(self).is_some()
    }

    /// The logits `[1, 1, V]` of one new token through the host step, or None when the call is
    /// not one token or the model has no host form.
    fn host_step(&self, ids: &Tensor, cache: &mut KvCache) -> Option<Tensor> {
        if !self.host_decode || ids.size() != [1, 1] || ids.device() != tch::Device::Cpu {
            return None;
        }
        let plan = crate::host::Plan::of(self)?;
        let id = ids.int64_value(&[0, 0]);
        let logits = plan.step(self, id, cache).unwrap_or_else(|e| {
            // Every shape was checked when the layers were built: a bug, not bad input.
            panic!("host decode step failed: {e}")
        });
        let v = logits.len() as i64;
        Some(Tensor::from_slice(&logits).view([1, 1, v]))
    }

    /// As [`CausalLM::forward_cached`] with Gated DeltaNet layers in their recurrent form over
    /// every new position, one at a time (the decoding path, checked against the chunked one).
    pub fn forward_recurrent(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        self.head(&self.model.forward_cached(ids, cache, true))
    }
}
