//! The typed recipe: one struct per TOML section. Field names are the TOML keys; the schema
//! table in `spec.rs` must name exactly these (checked by a unit test).

use serde::{Deserialize, Serialize};

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `[model]`: the starting checkpoint and the teacher.
    pub model: ModelSection,
    /// `[data]`: training and evaluation text, sequence length, eval protocol.
    pub data: DataSection,
    /// `[budget]`: how long the trial trains and how often it evaluates.
    pub budget: BudgetSection,
    /// `[quant]`: the weight quantizer and which modules it applies to.
    pub quant: QuantSection,
    /// `[ste]`: the straight-through blend factor lambda and its schedule.
    pub ste: SteSection,
    /// `[activations]`: activation quantization.
    pub activations: ActivationSection,
    /// `[deadzone_recovery]`: Tequila-style reuse of weights trapped at zero.
    pub deadzone_recovery: DeadzoneSection,
    /// `[optim]`: AdamW and its learning-rate schedule.
    pub optim: OptimSection,
    /// `[distill]`: knowledge distillation from the frozen full-precision teacher.
    pub distill: DistillSection,
    /// `[loss]`.
    pub loss: LossSection,
    /// `[traces]`: train on teacher traces (`autoqat kd collect`) instead of the training text.
    pub traces: TracesSection,
    /// `[runtime]`: device and precision.
    pub runtime: RuntimeSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// HF model directory or hub id of the full-precision starting checkpoint.
    pub source: String,
    /// Teacher for distillation; empty means the starting checkpoint.
    pub teacher: String,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Training text file (UTF-8), relative to the recipe file.
    pub train_text: String,
    /// Evaluation text file (UTF-8), relative to the recipe file.
    pub eval_text: String,
    /// Training sequence length in tokens.
    pub seq_len: u32,
    /// Evaluation context length in tokens.
    pub eval_ctx: u32,
    /// Evaluation stride in tokens (equal to `eval_ctx`: disjoint windows).
    pub eval_stride: u32,
    /// Evaluate on at most this many tokens of the eval text (0: all of it).
    pub eval_max_tokens: u64,
}

/// `[budget]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// Optimizer steps (ignored when `tokens` > 0).
    pub steps: u64,
    /// Token budget (0: use `steps`).
    pub tokens: u64,
    /// Evaluate every this many steps (and always at the end).
    pub eval_every: u64,
    /// Write a resumable checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
}

/// The weight quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantMethod {
    /// BitNet b1.58: scale = mean|w|, q = clamp(round(w/scale), -1, 1) * scale.
    TernaryAbsmean,
    /// Like absmean with scale = max|w|.
    TernaryAbsmax,
    /// sign(w) * scale where |w| > t * scale (scale = mean|w|), else 0.
    TernaryDeadzone,
    /// ParetoQ-style ternary with a learned per-row step (LSQ gradient).
    ParetoqStretched,
    /// sign(w) * mean|w|.
    BinaryAbsmean,
    /// The program in `quant.expr`.
    Expr,
    /// No weight quantization (full-precision fine-tune; a control).
    None,
}

/// Which weights share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One scale for the whole matrix.
    PerTensor,
    /// One scale per output row.
    PerRow,
    /// One scale per 64 consecutive input weights of a row.
    Group64,
    /// One scale per 128 consecutive input weights of a row.
    Group128,
    /// One scale per 256 consecutive input weights of a row.
    Group256,
}

impl Granularity {
    /// The group size along the input dimension, if grouped.
    pub fn group_size(self) -> Option<i64> {
        match self {
            Granularity::Group64 => Some(64),
            Granularity::Group128 => Some(128),
            Granularity::Group256 => Some(256),
            _ => None,
        }
    }
}

/// `[quant]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuantSection {
    /// The weight quantizer.
    pub method: QuantMethod,
    /// Which weights share a scale.
    pub granularity: Granularity,
    /// Deadzone threshold as a multiple of the scale (`ternary_deadzone` only).
    pub deadzone_t: f64,
    /// The quantizer program (`method = "expr"` only).
    pub expr: String,
    /// Quantize q/k/v/o projections.
    pub attention: bool,
    /// Quantize gate/up/down projections.
    pub mlp: bool,
    /// Quantize the token embedding.
    pub embeddings: bool,
    /// Quantize the output head (an untied one; a tied head follows `embeddings`).
    pub lm_head: bool,
}

/// Shape of the lambda warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LambdaSchedule {
    /// lambda = 1 from the first step.
    Constant,
    /// Linear ramp from 0 to 1.
    Linear,
    /// Half-cosine ramp from 0 to 1.
    Cosine,
    /// 1 - exp(-5p), normalized to end at 1.
    Exponential,
    /// Four equal stairs: 0, 0.25, 0.5, 0.75, then 1.
    Step,
    /// Logistic ramp centred at half the warmup, normalized to [0, 1].
    Sigmoid,
    /// The function in `ste.lambda_expr`.
    Expr,
}

/// `[ste]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SteSection {
    /// Shape of the lambda ramp.
    pub lambda_schedule: LambdaSchedule,
    /// Fraction of the steps over which lambda ramps to 1.
    pub lambda_warmup_frac: f64,
    /// lambda as a function of the step (`lambda_schedule = "expr"` only).
    pub lambda_expr: String,
}

/// `[loss]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// An extra loss term (`autoqat-expr` loss expression); empty = none.
    pub extra: String,
}

/// Activation bit width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ActBits {
    /// Activations stay in full precision.
    #[serde(rename = "none")]
    None,
    /// 8-bit symmetric absmax.
    #[serde(rename = "8")]
    A8,
    /// 4-bit symmetric absmax.
    #[serde(rename = "4")]
    A4,
}

impl ActBits {
    /// The bit count, or None for full precision.
    pub fn bits(self) -> Option<u32> {
        match self {
            ActBits::None => None,
            ActBits::A8 => Some(8),
            ActBits::A4 => Some(4),
        }
    }
}

/// Which activations share one absmax scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActGranularity {
    /// One scale per token (row of the input).
    PerToken,
    /// One scale per channel (over all tokens of the batch).
    PerChannel,
}

/// `[activations]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationSection {
    /// Bit width of the inputs of quantized linear layers.
    pub bits: ActBits,
    /// Which activations share a scale.
    pub granularity: ActGranularity,
    /// With bits = "8", switch to 4 bits after this fraction of the steps (1: never).
    pub a4_flip_frac: f64,
}

/// `[deadzone_recovery]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadzoneSection {
    /// Add, per output, `scale_init`-weighted sum of the weights quantized to 0 as a bias.
    pub enabled: bool,
    /// Initial value of the learned per-layer factor of that bias.
    pub scale_init: f64,
}

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Constant after warmup.
    Constant,
    /// Cosine decay to `min_lr_frac * lr`.
    Cosine,
    /// Warmup-stable-decay: constant, then linear decay over the last `wsd_decay_frac`.
    Wsd,
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Fraction of the steps of linear lr warmup from 0.
    pub lr_warmup_frac: f64,
    /// Schedule after warmup.
    pub lr_schedule: LrSchedule,
    /// Final lr as a fraction of the peak (cosine and WSD).
    pub min_lr_frac: f64,
    /// Fraction of the steps spent decaying (WSD only).
    pub wsd_decay_frac: f64,
    /// Decoupled weight decay, on matrices only.
    pub weight_decay: f64,
    /// AdamW beta1.
    pub beta1: f64,
    /// AdamW beta2.
    pub beta2: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    /// Sequences per micro-batch.
    pub batch_size: u32,
    /// Micro-batches per optimizer step.
    pub grad_accum: u32,
    /// Seed of initialization and data order.
    pub seed: u64,
}

/// `[distill]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// Distill from the frozen full-precision teacher.
    pub enabled: bool,
    /// Softmax temperature tau of the KL term (scaled by tau^2).
    pub temperature: f64,
    /// Weight of the next-token cross entropy.
    pub ce_weight: f64,
    /// Weight of the KL(teacher || student) term.
    pub kl_weight: f64,
}

/// `[traces]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracesSection {
    /// Train on the Top-K+Other traces in `dir` instead of `data.train_text`.
    pub enabled: bool,
    /// The trace directory (`autoqat kd collect --out`), relative to the recipe file.
    pub dir: String,
    /// Use the first K teacher alternatives of each position (the rest joins Other).
    pub top_k: u32,
    /// Temperature tau of teacher and student in the KL term (scaled by tau^2).
    pub temperature: f64,
    /// Weight of the KL over Top-K+Other.
    pub kl_weight: f64,
    /// Weight of the cross entropy on the teacher's sampled token.
    pub ce_weight: f64,
    /// Extra cross-entropy weight on structural tokens (JSON/code punctuation).
    pub format_weight: f64,
}

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// cuda > mps > cpu.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// Apple Metal.
    Mps,
}

/// Numeric precision of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 autocast on CUDA, fp32 elsewhere.
    Auto,
    /// fp32 everywhere.
    Fp32,
    /// bf16 autocast (CUDA only).
    Bf16,
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Compute device.
    pub device: DeviceChoice,
    /// Numeric precision.
    pub precision: Precision,
}
