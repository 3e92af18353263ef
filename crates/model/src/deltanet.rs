//! Gated DeltaNet, the linear-attention token mixer of Qwen3.5/3.6 (`linear_attn`), after
//! `transformers/models/qwen3_5/modeling_qwen3_5.py` (`Qwen3_5GatedDeltaNet` and its plain-PyTorch
//! fallbacks `torch_chunk_gated_delta_rule`, `torch_recurrent_gated_delta_rule`,
//! `causal_conv1d_fn`, `causal_conv1d_update`) and Yang et al., "Gated Delta Networks" (2024).
//!
//! Per value head the layer keeps a state `S` (`[Dk, Dv]`) that each position decays and then
//! corrects towards its value, a delta rule:
//! `S = exp(g) S;  S += k (beta (v - S^T k))^T;  o = S^T q`,
//! with `g = -exp(A_log) softplus(a + dt_bias)`, `beta = sigmoid(b)` and L2-normed `q`, `k`.
//! Training and evaluation run the chunked form (chunks of 64, a triangular solve inside each,
//! a scan across them); decoding runs the recurrent form one token at a time. Both accumulate
//! the state in f32 whatever the model's dtype.
//!
//! Shapes: B batch, T time, Hk query/key heads, Hv value heads, Dk/Dv their widths,
//! C hidden size, X = 2 Hk Dk + Hv Dv the convolved channels.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::config::{DeltaNetConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::linear::{Linear, LinearBuilder, LinearRole, LinearSpec};

/// Chunk length of the chunked form (transformers and flash-linear-attention use 64).
pub const CHUNK: i64 = 64;

/// What a Gated DeltaNet layer carries from one decoding step to the next.
#[derive(Debug)]
pub struct DeltaState {
    /// The last `kernel - 1` inputs of the convolution: `[B, X, kernel - 1]`.
    conv: Tensor,
    /// The delta-rule state per value head, f32: `[B, Hv, Dk, Dv]`.
    recurrent: Tensor,
}

/// RMSNorm over each value head, then multiplied by `silu(z)` (`Qwen3_5RMSNormGated`).
#[derive(Debug)]
struct GatedRmsNorm {
    weight: Tensor,
    eps: f64,
}

impl GatedRmsNorm {
    fn new(p: &nn::Path, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self { weight: p.f_var("weight", &[dim], Init::Const(1.0))?, eps })
    }

    /// `[.., Dv]`, gate `[.., Dv]` -> `[.., Dv]`.
    fn forward(&self, xs: &Tensor, gate: &Tensor) -> Tensor {
        let kind = xs.kind();
        let x = xs.to_kind(Kind::Float);
        let x = &x * (x.square().mean_dim(-1, true, Kind::Float) + self.eps).rsqrt();
        let x = &self.weight * x.to_kind(kind);
        (x * gate.to_kind(Kind::Float).silu()).to_kind(kind)
    }
}

/// The Gated DeltaNet block (`model.layers.<i>.linear_attn`).
#[derive(Debug)]
pub struct GatedDeltaNet {
    in_proj_qkv: Box<dyn Linear>,
    in_proj_z: Box<dyn Linear>,
    in_proj_b: Box<dyn Linear>,
    in_proj_a: Box<dyn Linear>,
    out_proj: Box<dyn Linear>,
    /// Depthwise causal convolution, `[X, 1, kernel]`, no bias.
    conv_weight: Tensor,
    /// `[Hv]`.
    dt_bias: Tensor,
    /// `[Hv]`: the decay rate's log, so `-exp(A_log)` stays negative.
    a_log: Tensor,
    norm: GatedRmsNorm,
    d: DeltaNetConfig,
}

impl GatedDeltaNet {
    /// Builds `p` = `model.layers.<layer>.linear_attn`; every projection through `b`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig, layer: usize, b: &dyn LinearBuilder) -> Result<Self> {
        let d = cfg.deltanet.ok_or_else(|| {
            ModelError::Unsupported(format!("layer {layer} is linear_attention but the config has no linear_* shapes"))
        })?;
        let c = cfg.hidden_size;
        let lin = |role: LinearRole, in_dim: i64, out_dim: i64| {
            b.linear(
                &(p / role.hf_name()),
                LinearSpec { role, layer: Some(layer), in_dim, out_dim, bias: false, tied: None },
            )
        };
        Ok(Self {
            in_proj_qkv: lin(LinearRole::InProjQkv, c, d.conv_dim())?,
            in_proj_z: lin(LinearRole::InProjZ, c, d.value_dim())?,
            in_proj_b: lin(LinearRole::InProjB, c, d.num_value_heads)?,
            in_proj_a: lin(LinearRole::InProjA, c, d.num_value_heads)?,
            out_proj: lin(LinearRole::OutProj, d.value_dim(), c)?,
            conv_weight: (p / "conv1d").f_var(
                "weight",
                &[d.conv_dim(), 1, d.conv_kernel],
                Init::Uniform { lo: -0.5, up: 0.5 },
            )?,
            dt_bias: p.f_var("dt_bias", &[d.num_value_heads], Init::Const(1.0))?,
            // log(A) with A in [1, 16), as transformers draws it at init.
            a_log: p.f_var("A_log", &[d.num_value_heads], Init::Uniform { lo: 0.0, up: 2.77 })?,
            norm: GatedRmsNorm::new(&(p / "norm"), d.value_head_dim, cfg.rms_norm_eps)?,
            d,
        })
    }

    /// `[B, T, C] -> [B, T, C]` from an empty state (the chunked form).
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.run(xs, &mut None, false)
    }

    /// As [`GatedDeltaNet::forward`] continuing from `state` (none: from the start), which it
    /// replaces by the state after `xs`. One token takes the recurrent form, several the chunked.
    pub fn forward_cached(&self, xs: &Tensor, state: &mut Option<DeltaState>) -> Tensor {
        self.run(xs, state, true)
    }

    /// As [`GatedDeltaNet::forward_cached`] always in the recurrent form, token by token
    /// (to check the two forms against each other).
    pub fn forward_recurrent(&self, xs: &Tensor, state: &mut Option<DeltaState>) -> Tensor {
        let t = xs.size()[1];
        let outs: Vec<Tensor> = (0..t).map(|i| self.run(&xs.narrow(1, i, 1), state, true)).collect();
        Tensor::cat(&outs, 1)
    }

    fn run(&self, xs: &Tensor, state: &mut Option<DeltaState>, keep: bool) -> Tensor {
        let (bsz, t) = (xs.size()[0], xs.size()[1]);
        let d = &self.d;
        let (k_pad, x_dim) = (d.conv_kernel - 1, d.conv_dim());
        let mixed = self.in_proj_qkv.forward(xs).transpose(1, 2); // [B, X, T]
                                                                  // The causal convolution sees the previous kernel-1 inputs (zeros at the start).
        let past = match state {
            Some(s) => s.conv.to_kind(mixed.kind()),
            None => Tensor::zeros([bsz, x_dim, k_pad], (mixed.kind(), mixed.device())),
        };
        let padded = Tensor::cat(&[&past, &mixed], 2); // [B, X, kernel-1+T]
        let conv = padded
            .conv1d(&self.conv_weight.to_kind(mixed.kind()), None::<Tensor>, [1], [0], [1], x_dim)
            .silu()
            .transpose(1, 2); // [B, T, X]
        let parts = conv.split_with_sizes([d.key_dim(), d.key_dim(), d.value_dim()], -1);
        let q = parts[0].reshape([bsz, t, d.num_key_heads, d.key_head_dim]);
        let k = parts[1].reshape([bsz, t, d.num_key_heads, d.key_head_dim]);
        let v = parts[2].reshape([bsz, t, d.num_value_heads, d.value_head_dim]);
        let beta = self.in_proj_b.forward(xs).sigmoid(); // [B, T, Hv]
        let a = self.in_proj_a.forward(xs).to_kind(Kind::Float);
        let g = -self.a_log.to_kind(Kind::Float).exp() * (a + self.dt_bias.to_kind(Kind::Float)).softplus();
        // Each query/key head serves Hv / Hk consecutive value heads.
        let groups = d.num_value_heads / d.num_key_heads;
        let (q, k) = if groups > 1 {
            (q.repeat_interleave_self_int(groups, 2, None), k.repeat_interleave_self_int(groups, 2, None))
        } else {
            (q, k)
        };
        let initial = state.as_ref().map(|s| &s.recurrent);
        let inputs = RuleInputs::new(&q, &k, &v, &g, &beta);
        let (out, last) =
            if t == 1 && keep { recurrent_delta_rule(&inputs, initial) } else { chunk_delta_rule(&inputs, initial) };
        if keep {
            let conv_state = padded.narrow(2, padded.size()[2] - k_pad, k_pad);
            *state = Some(DeltaState { conv: conv_state, recurrent: last });
        }
        let z = self.in_proj_z.forward(xs).reshape([bsz, t, d.num_value_heads, d.value_head_dim]);
        let y = self.norm.forward(&out.to_kind(xs.kind()), &z).reshape([bsz, t, d.value_dim()]);
        self.out_proj.forward(&y)
    }
}

/// `x / sqrt(sum x^2 + eps)` over the last dimension, as flash-linear-attention computes it.
fn l2norm(x: &Tensor) -> Tensor {
    x * (x.square().sum_dim_intlist(-1, true, Kind::Float) + 1e-6).rsqrt()
}

/// The delta rule's inputs, heads first and in f32: queries and keys `[B, Hv, T, Dk]`
/// (L2-normed, queries scaled by `Dk^-1/2`), values `[B, Hv, T, Dv]`, decay and beta
/// `[B, Hv, T]`.
struct RuleInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
}

impl RuleInputs {
    /// From queries and keys `[B, T, Hv, Dk]`, values `[B, T, Hv, Dv]`, decay and beta `[B, T, Hv]`.
    fn new(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, beta: &Tensor) -> Self {
        let f = |x: &Tensor| x.transpose(1, 2).to_kind(Kind::Float).contiguous();
        let dk = q.size()[3] as f64;
        Self { q: l2norm(&f(q)) * dk.powf(-0.5), k: l2norm(&f(k)), v: f(v), g: f(g), beta: f(beta) }
    }

    /// `(B, Hv, T, Dk, Dv)`.
    fn dims(&self) -> (i64, i64, i64, i64, i64) {
        let s = self.q.size();
        (s[0], s[1], s[2], s[3], self.v.size()[3])
    }

    /// The state to start from: `initial` (f32), or zeros `[B, Hv, Dk, Dv]`.
    fn start(&self, initial: Option<&Tensor>) -> Tensor {
        let (bsz, h, _, dk, dv) = self.dims();
        match initial {
            Some(s) => s.to_kind(Kind::Float),
            None => Tensor::zeros([bsz, h, dk, dv], (Kind::Float, self.q.device())),
        }
    }
}

/// The chunked gated delta rule: output `[B, T, Hv, Dv]` (f32) and the final state
/// `[B, Hv, Dk, Dv]`.
fn chunk_delta_rule(x: &RuleInputs, initial: Option<&Tensor>) -> (Tensor, Tensor) {
    let (bsz, h, t, dk, dv) = x.dims();
    let (q, k, v, g, beta) = (&x.q, &x.k, &x.v, &x.g, &x.beta);
    let pad = (CHUNK - t % CHUNK) % CHUNK;
    let n = (t + pad) / CHUNK;
    let pad4 = |x: &Tensor| x.constant_pad_nd([0, 0, 0, pad]);
    let (q, k, v) = (pad4(q), pad4(k), pad4(v));
    let (g, beta) = (g.constant_pad_nd([0, pad]), beta.constant_pad_nd([0, pad]));
    let chunks = |x: &Tensor, w: i64| x.reshape([bsz, h, n, CHUNK, w]);
    let beta = beta.unsqueeze(-1);
    let (k_beta, v_beta) = (chunks(&(&k * &beta), dk), chunks(&(&v * &beta), dv));
    let (q, k) = (chunks(&q, dk), chunks(&k, dk));
    // Log decay from the chunk's start to each position, and between every pair of positions.
    let cum = g.reshape([bsz, h, n, CHUNK]).cumsum(-1, Kind::Float);
    let upper = Tensor::ones([CHUNK, CHUNK], (Kind::Bool, q.device())).triu(1);
    let pair = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(&upper, f64::NEG_INFINITY).exp();
    // The UT transform: (I + strictly-lower(k_beta k^T decay))^-1 applied to the values and to
    // the decayed keys, so a chunk's delta-rule updates become matrix products.
    let ut = k_beta.matmul(&k.transpose(-1, -2)) * &pair;
    let intra = q.matmul(&k.transpose(-1, -2)) * &pair;
    let new_values = ut.linalg_solve_triangular(&v_beta, false, true, true);
    let k_cumdecay = ut.linalg_solve_triangular(&(&k_beta * cum.exp().unsqueeze(-1)), false, true, true);
    let q = &q * cum.exp().unsqueeze(-1);
    let last = cum.narrow(-1, CHUNK - 1, 1); // [B, H, N, 1]
    let k = &k * (&last - &cum).exp().unsqueeze(-1);
    let chunk_decay = last.exp().unsqueeze(-1); // [B, H, N, 1, 1]
    let mut state = x.start(initial);
    let mut outs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = |x: &Tensor| x.select(2, i);
        let v_new = at(&new_values) - at(&k_cumdecay).matmul(&state);
        outs.push(at(&q).matmul(&state) + at(&intra).matmul(&v_new));
        state = &state * at(&chunk_decay) + at(&k).transpose(-1, -2).matmul(&v_new);
    }
    let out = Tensor::stack(&outs, 2).reshape([bsz, h, n * CHUNK, dv]).narrow(2, 0, t);
    (out.transpose(1, 2), state)
}

/// The recurrent gated delta rule, one position at a time: same inputs and outputs as
/// [`chunk_delta_rule`].
fn recurrent_delta_rule(x: &RuleInputs, initial: Option<&Tensor>) -> (Tensor, Tensor) {
    let t = x.dims().2;
    let (q, k, v, g, beta) = (&x.q, &x.k, &x.v, &x.g, &x.beta);
    let mut state = x.start(initial);
    let mut outs = Vec::with_capacity(t as usize);
    for i in 0..t {
        let (q_t, k_t, v_t) = (q.select(2, i), k.select(2, i), v.select(2, i)); // [B, H, D]
        state = &state * g.select(2, i).exp().unsqueeze(-1).unsqueeze(-1);
        let remembered = (&state * k_t.unsqueeze(-1)).sum_dim_intlist(-2, false, Kind::Float); // [B, H, Dv]
        let delta = (v_t - remembered) * beta.select(2, i).unsqueeze(-1);
        state = &state + k_t.unsqueeze(-1) * delta.unsqueeze(-2);
        outs.push((&state * q_t.unsqueeze(-1)).sum_dim_intlist(-2, false, Kind::Float));
    }
    (Tensor::stack(&outs, 2).transpose(1, 2), state)
}
