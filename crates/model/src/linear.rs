//! The one place where linear and embedding layers are built.
//!
//! Model code never creates a projection itself: it describes it with a [`LinearSpec`]
//! (which role, which layer, shapes, bias, tied weight) and asks a [`LinearBuilder`]. The
//! default [`PlainBuilder`] makes ordinary floating-point layers; a quantization crate
//! implements [`LinearBuilder`] to return BitLinear layers for the roles it chooses, so
//! quantization needs no copy of the model code.
//!
//! Contract for builders:
//! - Create the weight at `p / "weight"` with shape `[out_dim, in_dim]` and, when
//!   `spec.bias`, the bias at `p / "bias"` with shape `[out_dim]`. The loader fills
//!   these from the checkpoint by name (`model.layers.0.self_attn.q_proj.weight`, ...).
//! - Extra variables (learned scales, ...) may be created under `p`; declare them through
//!   [`LinearBuilder::is_extra_var`] so the loader does not demand them from the
//!   checkpoint (they keep their initial value; derive data-dependent values lazily or
//!   after loading).
//! - When `spec.tied` is set (an `lm_head` tied to the embedding), use that tensor as the
//!   weight and create no weight variable.
//! - Variables are created with the kind and device of `p` (see `VarStore::set_kind`).

use std::fmt;

use tch::nn::{self, Init};
use tch::Tensor;

use crate::error::Result;
use crate::kernel_linear::HostLinear;

/// Which projection a linear layer is, so a builder can quantize some modules and not others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearRole {
    /// Attention query projection.
    Q,
    /// Attention key projection.
    K,
    /// Attention value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection (SwiGLU).
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
    /// Gated DeltaNet: queries, keys and values before the convolution (`in_proj_qkv`).
    InProjQkv,
    /// Gated DeltaNet: the output gate (`in_proj_z`).
    InProjZ,
    /// Gated DeltaNet: the write strength beta, one per value head (`in_proj_b`).
    InProjB,
    /// Gated DeltaNet: the decay input, one per value head (`in_proj_a`).
    InProjA,
    /// Gated DeltaNet: the output projection (`out_proj`).
    OutProj,
    /// Output head projecting hidden states to vocabulary logits.
    LmHead,
}

impl LinearRole {
    /// True for the token mixer's projections: softmax attention's q/k/v/o and Gated
    /// DeltaNet's (so "quantize attention" covers both kinds of layer).
    pub fn is_attention(self) -> bool {
        self.is_full_attention() || self.is_linear_attention()
    }

    /// True for softmax attention's q/k/v/o.
    pub fn is_full_attention(self) -> bool {
        matches!(self, Self::Q | Self::K | Self::V | Self::O)
    }

    /// True for Gated DeltaNet's projections.
    pub fn is_linear_attention(self) -> bool {
        matches!(self, Self::InProjQkv | Self::InProjZ | Self::InProjB | Self::InProjA | Self::OutProj)
    }

    /// True for the MLP projections gate/up/down.
    pub fn is_mlp(self) -> bool {
        matches!(self, Self::Gate | Self::Up | Self::Down)
    }

    /// The full Hugging Face module path of this projection in decoder layer `layer`
    /// (`model.layers.3.self_attn.q_proj`, `model.layers.3.mlp.down_proj`, `lm_head`): the
    /// checkpoint keys are this path plus `.weight` / `.bias`.
    pub fn module_path(self, layer: Option<usize>) -> String {
        match (self, layer) {
            (Self::LmHead, _) | (_, None) => self.hf_name().to_string(),
            (r, Some(i)) if r.is_full_attention() => format!("model.layers.{i}.self_attn.{}", r.hf_name()),
            (r, Some(i)) if r.is_linear_attention() => format!("model.layers.{i}.linear_attn.{}", r.hf_name()),
            (r, Some(i)) => format!("model.layers.{i}.mlp.{}", r.hf_name()),
        }
    }

    /// The Hugging Face module name (`q_proj`, ..., `lm_head`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
            Self::InProjQkv => "in_proj_qkv",
            Self::InProjZ => "in_proj_z",
            Self::InProjB => "in_proj_b",
            Self::InProjA => "in_proj_a",
            Self::OutProj => "out_proj",
            Self::LmHead => "lm_head",
        }
    }
}

impl fmt::Display for LinearRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

/// Everything a builder needs to know to build one linear layer.
#[derive(Debug)]
pub struct LinearSpec {
    /// Which projection this is.
    pub role: LinearRole,
    /// Decoder layer index; `None` for the lm_head.
    pub layer: Option<usize>,
    /// Input features.
    pub in_dim: i64,
    /// Output features.
    pub out_dim: i64,
    /// Whether the layer has a bias (Qwen2 q/k/v).
    pub bias: bool,
    /// lm_head tied to the embedding: use this tensor (`[out_dim, in_dim]`) as the weight.
    pub tied: Option<Tensor>,
}

/// A linear map `xs @ W^T (+ b)` over the last dimension.
pub trait Linear: fmt::Debug + Send {
    /// Applies the layer: `[.., in_dim] -> [.., out_dim]`.
    fn forward(&self, xs: &Tensor) -> Tensor;

    /// The layer as one-token host code, when it has such a form (the packed-kernel layers):
    /// a model whose every layer has one decodes through [`crate::host`].
    fn host(&self) -> Option<&dyn HostLinear> {
        None
    }
}

/// A token embedding table.
pub trait Embedding: fmt::Debug + Send {
    /// Looks up ids: `[..] i64 -> [.., dim]`.
    fn forward(&self, ids: &Tensor) -> Tensor;
    /// The `[vocab, dim]` table, shared with a tied lm_head.
    fn weight(&self) -> &Tensor;
}

/// Builds every linear and embedding layer of a model.
pub trait LinearBuilder {
    /// Builds the linear layer described by `spec` with its variables under `p`.
    fn linear(&self, p: &nn::Path, spec: LinearSpec) -> Result<Box<dyn Linear>>;

    /// Builds the token embedding at `p / "weight"` (`[vocab, dim]`).
    fn embedding(&self, p: &nn::Path, vocab: i64, dim: i64) -> Result<Box<dyn Embedding>> {
        Ok(Box::new(PlainEmbedding::new(p, vocab, dim)?))
    }

    /// True for variables this builder created beyond the checkpoint's keys (full VarStore
    /// name), which the loader must not demand from the checkpoint.
    fn is_extra_var(&self, _name: &str) -> bool {
        false
    }
}

/// A floating-point linear layer with HF weight layout `[out, in]`.
#[derive(Debug)]
pub struct PlainLinear {
    /// `[out_dim, in_dim]`.
    pub weight: Tensor,
    /// `[out_dim]`, when present.
    pub bias: Option<Tensor>,
}

impl PlainLinear {
    /// Creates (or, when tied, reuses) the variables of `spec` under `p`.
    pub fn new(p: &nn::Path, spec: LinearSpec) -> Result<Self> {
        let weight = match spec.tied {
            Some(w) => w,
            None => p.f_var("weight", &[spec.out_dim, spec.in_dim], kaiming(spec.in_dim))?,
        };
        let bias = if spec.bias { Some(p.f_zeros("bias", &[spec.out_dim])?) } else { None };
        Ok(Self { weight, bias })
    }
}

impl Linear for PlainLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, self.bias.as_ref())
    }
}

/// A floating-point embedding table.
#[derive(Debug)]
pub struct PlainEmbedding {
    /// `[vocab, dim]`.
    pub weight: Tensor,
}

impl PlainEmbedding {
    /// Creates the table at `p / "weight"`.
    pub fn new(p: &nn::Path, vocab: i64, dim: i64) -> Result<Self> {
        let weight = p.f_var("weight", &[vocab, dim], Init::Randn { mean: 0.0, stdev: 0.02 })?;
        Ok(Self { weight })
    }
}

impl Embedding for PlainEmbedding {
    fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }

    fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// Builds plain floating-point layers everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainBuilder;

impl LinearBuilder for PlainBuilder {
    fn linear(&self, p: &nn::Path, spec: LinearSpec) -> Result<Box<dyn Linear>> {
        Ok(Box::new(PlainLinear::new(p, spec)?))
    }
}

/// The init HF Llama uses for fresh weights: normal with std 0.02 (scaled-down for wide inputs
/// would also do; what matters for a from-scratch teacher is a small, finite start).
fn kaiming(_in_dim: i64) -> Init {
    Init::Randn { mean: 0.0, stdev: 0.02 }
}
