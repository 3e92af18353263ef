//! The host decode step: one new token through a kernel model on plain f32 buffers.
//!
//! In a small ternary model a libtorch decode step is dominated less by the products, which the
//! packed kernels run near the memory's bandwidth, than by the thirty-odd libtorch ops per layer
//! between them (norms, RoPE, attention, SwiGLU, and a tensor round trip around every product),
//! a few microseconds each (docs/benchmarks.md). Here those ops are loops over the layer's own
//! buffers, every product goes straight to the kernels through [`HostLinear`], and layers that
//! read the same input (q/k/v, gate/up) quantize it once. The formulas are the libtorch path's,
//! in f32 throughout; only the order of summation differs, so the logits agree to float
//! tolerance (tests hold the two paths together).
//!
//! It covers attention-only stacks (Llama, Qwen2/3, and Qwen3.5-style attention with an output
//! gate, partial RoPE and unit-offset norms) held in f32 on the CPU whose every linear layer has
//! a host form and whose layers stay put (no offload hook). Any other model, one with Gated
//! DeltaNet layers above all, decodes through libtorch as before.

use tch::{Kind, Tensor};

use crate::kernel_linear::{host_f32, HostInput, HostLinear};
use crate::llama::{Attention, CausalLM, DecoderLayer, KvCache, LayerState, Mixer, Mlp, RmsNorm};

/// The keys and values of one attention layer on the host: per key/value head, `[T, D]`
/// row-major, so appending a position is a push and a head's keys are one contiguous matrix.
#[derive(Debug, Default)]
pub struct HostKv {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl HostKv {
    /// From libtorch's `[1, K, T, D]` keys and values (after a prefill).
    fn from_tensors(k: &Tensor, v: &Tensor) -> Self {
        let heads = |t: &Tensor| -> Vec<Vec<f32>> {
            let t = t.to_kind(Kind::Float).contiguous();
            let s = t.size();
            let per = (s[2] * s[3]) as usize;
            (0..s[1])
                .map(|g| {
                    let mut out = vec![0.0f32; per];
                    t.get(0).get(g).view([-1]).copy_data(&mut out, per);
                    out
                })
                .collect()
        };
        Self { k: heads(k), v: heads(v) }
    }

    /// Back to libtorch's `[1, K, T, D]` (a prefill after host steps).
    pub(crate) fn into_tensors(self, head_dim: i64) -> (Tensor, Tensor) {
        let join = |heads: Vec<Vec<f32>>| {
            let kv = heads.len() as i64;
            let flat: Vec<f32> = heads.concat();
            let t = flat.len() as i64 / (kv * head_dim).max(1);
            Tensor::from_slice(&flat).view([1, kv, t, head_dim])
        };
        (join(self.k), join(self.v))
    }
}

/// RMSNorm with its scale read in place.
struct Norm<'a> {
    w: &'a [f32],
    eps: f32,
    unit_offset: bool,
}

impl<'a> Norm<'a> {
    fn of(n: &'a RmsNorm) -> Option<Self> {
        Some(Self { w: host_f32(&n.weight)?, eps: n.eps as f32, unit_offset: n.unit_offset })
    }

    /// Normalizes each `w.len()`-wide chunk of `x` in place.
    fn apply(&self, x: &mut [f32]) {
        let dim = self.w.len();
        for chunk in x.chunks_exact_mut(dim) {
            let ms = dot(chunk, chunk) / dim as f32;
            let inv = 1.0 / (ms + self.eps).sqrt();
            for (v, &w) in chunk.iter_mut().zip(self.w) {
                let scale = if self.unit_offset { 1.0 + w } else { w };
                *v = *v * inv * scale;
            }
        }
    }

    /// `out = norm(x)`.
    fn apply_to(&self, x: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(x);
        self.apply(out);
    }
}

/// One decoder layer's host view.
struct Layer<'a> {
    input_norm: Norm<'a>,
    post_norm: Norm<'a>,
    q: &'a dyn HostLinear,
    k: &'a dyn HostLinear,
    v: &'a dyn HostLinear,
    o: &'a dyn HostLinear,
    q_norm: Option<Norm<'a>>,
    k_norm: Option<Norm<'a>>,
    output_gate: bool,
    gate: &'a dyn HostLinear,
    up: &'a dyn HostLinear,
    down: &'a dyn HostLinear,
}

impl<'a> Layer<'a> {
    fn of(layer: &'a DecoderLayer) -> Option<Self> {
        let Mixer::Attention(a) = &layer.mixer else { return None };
        let Attention { q_proj, k_proj, v_proj, o_proj, q_norm, k_norm, output_gate, .. } = a;
        let Mlp { gate_proj, up_proj, down_proj } = &layer.mlp;
        let norm = |n: &'a Option<RmsNorm>| match n {
            Some(n) => Norm::of(n).map(Some),
            None => Some(None),
        };
        Some(Self {
            input_norm: Norm::of(&layer.input_layernorm)?,
            post_norm: Norm::of(&layer.post_attention_layernorm)?,
            q: q_proj.host()?,
            k: k_proj.host()?,
            v: v_proj.host()?,
            o: o_proj.host()?,
            q_norm: norm(q_norm)?,
            k_norm: norm(k_norm)?,
            output_gate: *output_gate,
            gate: gate_proj.host()?,
            up: up_proj.host()?,
            down: down_proj.host()?,
        })
    }
}

/// Scratch buffers reused across the layers of a step.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    scores: Vec<f32>,
    out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// A kernel model's host view, taken at the start of each step (it borrows the model).
pub(crate) struct Plan<'a> {
    layers: Vec<Layer<'a>>,
    norm: Norm<'a>,
    head: &'a dyn HostLinear,
    inv_freq: &'a [f32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// `Σ a_i b_i` with sixteen independent sums, so the compiler keeps it in vector registers (two
/// chains of 256-bit adds under AVX2).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Rotates the first `2 * cos.len()` channels of `x` (one head) as `x * cos + rotate_half(x) * sin`.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for i in 0..half {
        let (x1, x2) = (x[i], x[i + half]);
        x[i] = x1 * cos[i] - x2 * sin[i];
        x[i + half] = x2 * cos[i] + x1 * sin[i];
    }
}

/// The head layout of one attention layer's step.
struct Heads {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Channels per query head in `q` (2D with an output gate, whose second half is skipped).
    q_stride: usize,
}

/// `att[h] = softmax(q_h · K_g / √D) V_g` for every query head `h` (kv head `g = h / groups`).
fn attention(shape: &Heads, q: &[f32], kv: &HostKv, scores: &mut Vec<f32>, att: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were just detected.
        return unsafe { attention_avx2(shape, q, kv, scores, att) };
    }
    attention_body(shape, q, kv, scores, att)
}

/// [`attention`] compiled for AVX2: the dot products and sums then use 256-bit registers
/// (about a tenth of a step at a few hundred positions, on the caller's thread).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_avx2(shape: &Heads, q: &[f32], kv: &HostKv, scores: &mut Vec<f32>, att: &mut [f32]) {
    attention_body(shape, q, kv, scores, att)
}

#[inline(always)]
fn attention_body(shape: &Heads, q: &[f32], kv: &HostKv, scores: &mut Vec<f32>, att: &mut [f32]) {
    let Heads { heads, kv_heads, head_dim: d, q_stride } = *shape;
    let scale = (d as f32).powf(-0.5);
    let groups = heads / kv_heads;
    for (hq, y) in att.chunks_exact_mut(d).enumerate() {
        let q = &q[hq * q_stride..hq * q_stride + d];
        let (keys, values) = (&kv.k[hq / groups], &kv.v[hq / groups]);
        // A plain loop, not `extend(map(..))`: the iterator's fold is a function of its own,
        // compiled without AVX2, and perf showed the dot products there.
        scores.resize(keys.len() / d, 0.0);
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(d)) {
            *s = dot(q, k) * scale;
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for p in scores.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
            let w = p / sum;
            for (y, v) in y.iter_mut().zip(v) {
                *y += w * v;
            }
        }
    }
}

type Res<T> = autoqat_kernels::Result<T>;

impl<'a> Plan<'a> {
    /// The host view of `model`, or None when some part of it has no host form.
    pub(crate) fn of(model: &'a CausalLM) -> Option<Self> {
        let m = &model.model;
        if m.hook.is_some() || m.embed_tokens.weight().kind() != Kind::Float {
            return None;
        }
        let layers = m.layers.iter().map(Layer::of).collect::<Option<Vec<_>>>()?;
        let cfg = &model.cfg;
        Some(Self {
            layers,
            norm: Norm::of(&m.norm)?,
            head: model.lm_head.host()?,
            inv_freq: host_f32(&m.rotary.inv_freq)?,
            heads: cfg.num_attention_heads as usize,
            kv_heads: cfg.num_key_value_heads as usize,
            head_dim: cfg.head_dim as usize,
        })
    }

    /// Logits `[V]` of token `id` at the position after those in `cache`; the cache grows by one.
    pub(crate) fn step(&self, model: &CausalLM, id: i64, cache: &mut KvCache) -> Res<Vec<f32>> {
        let emb = model.embed(&Tensor::from_slice(&[id]).view([1, 1])).to_kind(Kind::Float).contiguous();
        let mut h = vec![0.0f32; emb.numel()];
        emb.view([-1]).copy_data(&mut h, emb.numel());
        // As the libtorch path: positions as f32, times the inverse frequencies in f32.
        let pos = cache.len as f32;
        let (cos, sin): (Vec<f32>, Vec<f32>) =
            self.inv_freq.iter().map(|&f| ((pos * f).cos(), (pos * f).sin())).unzip();
        cache.layers.resize_with(self.layers.len(), LayerState::default);
        let mut s = Scratch::default();
        for (layer, state) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let mut kv = match std::mem::take(state) {
                LayerState::HostKv(kv) => kv,
                LayerState::Kv(k, v) => HostKv::from_tensors(&k, &v),
                _ => HostKv { k: vec![Vec::new(); self.kv_heads], v: vec![Vec::new(); self.kv_heads] },
            };
            self.layer(layer, &mut h, &mut kv, &cos, &sin, &mut s)?;
            *state = LayerState::HostKv(kv);
        }
        cache.len += 1;
        self.norm.apply(&mut h);
        let mut logits = vec![0.0f32; self.head.rows()];
        self.head.forward_host(&mut HostInput::new(&h), &mut logits)?;
        Ok(logits)
    }

    /// One decoder layer on the residual stream `h`, appending to `kv`.
    fn layer(
        &self,
        l: &Layer<'_>,
        h: &mut [f32],
        kv: &mut HostKv,
        cos: &[f32],
        sin: &[f32],
        s: &mut Scratch,
    ) -> Res<()> {
        let (nh, nk, d) = (self.heads, self.kv_heads, self.head_dim);
        l.input_norm.apply_to(h, &mut s.x);
        let mut input = HostInput::new(&s.x);
        s.q.resize(l.q.rows(), 0.0);
        s.k.resize(l.k.rows(), 0.0);
        s.v.resize(l.v.rows(), 0.0);
        l.q.forward_host(&mut input, &mut s.q)?;
        l.k.forward_host(&mut input, &mut s.k)?;
        l.v.forward_host(&mut input, &mut s.v)?;
        // Per head: D query channels, then (with an output gate) D gate channels.
        let q_stride = if l.output_gate { 2 * d } else { d };
        s.gate.clear();
        if l.output_gate {
            for head in s.q.chunks_exact(q_stride) {
                s.gate.extend(head[d..].iter().map(|&g| sigmoid(g)));
            }
        }
        for head in s.q.chunks_exact_mut(q_stride) {
            let head = &mut head[..d];
            if let Some(n) = &l.q_norm {
                n.apply(head);
            }
            rope(head, cos, sin);
        }
        for (g, head) in s.k.chunks_exact_mut(d).enumerate() {
            if let Some(n) = &l.k_norm {
                n.apply(head);
            }
            rope(head, cos, sin);
            kv.k[g].extend_from_slice(head);
        }
        for (g, head) in s.v.chunks_exact(d).enumerate() {
            kv.v[g].extend_from_slice(head);
        }
        // Grouped-query attention of the new position over every cached one (itself included).
        s.att.clear();
        s.att.resize(nh * d, 0.0);
        let shape = Heads { heads: nh, kv_heads: nk, head_dim: d, q_stride };
        attention(&shape, &s.q, kv, &mut s.scores, &mut s.att);
        if l.output_gate {
            for (y, g) in s.att.iter_mut().zip(&s.gate) {
                *y *= g;
            }
        }
        s.out.resize(l.o.rows(), 0.0);
        l.o.forward_host(&mut HostInput::new(&s.att), &mut s.out)?;
        for (h, o) in h.iter_mut().zip(&s.out) {
            *h += o;
        }
        // SwiGLU MLP.
        l.post_norm.apply_to(h, &mut s.x);
        let mut input = HostInput::new(&s.x);
        s.gate.resize(l.gate.rows(), 0.0);
        s.up.resize(l.up.rows(), 0.0);
        l.gate.forward_host(&mut input, &mut s.gate)?;
        l.up.forward_host(&mut input, &mut s.up)?;
        for (g, u) in s.gate.iter_mut().zip(&s.up) {
            *g = *g * sigmoid(*g) * u;
        }
        s.out.resize(l.down.rows(), 0.0);
        l.down.forward_host(&mut HostInput::new(&s.gate), &mut s.out)?;
        for (h, o) in h.iter_mut().zip(&s.out) {
            *h += o;
        }
        Ok(())
    }
}
