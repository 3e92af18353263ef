//! Net2Net widening of the MLPs and of the attention's query heads: more units for the same
//! function, so a wider model (whose budget grows with its parameters) has more rows to spread
//! quantization error over.
//!
//! A new unit copies the gate and up rows of a source unit, and the source's outgoing down
//! column is split between the two: `a` to the source and `1 - a` to the copy, per element.
//! Both units compute the same activation, so the sum is unchanged and so is the function
//! (exactly, up to float rounding). The split `a = (1 + u) / 2`, `u` uniform in
//! `[-split_noise, split_noise]`, differs per element, so the two down columns differ and do not
//! quantize identically (the public toy code leaves duplicates identical). Above 1 the shares
//! can change sign, which is what makes binary rows (sign times one scale) of a unit and its
//! copy differ; at 0.1 the copies stay about as alike after quantization as with no noise
//! (measured by `tests/compress_cli.rs`).
//!
//! Query heads widen the same way, a head being the unit: a new head copies the q rows (and
//! q bias) of a source head in the same key/value group, so it attends exactly as its source
//! does, and the source's block of `o_proj` columns is split between the two. With grouped-query
//! attention every group gains the same number of heads, the copies placed after their group's
//! heads, so that head `h` still reads key/value head `h / (heads per group)`; `head_dim` is
//! kept and written into the config.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::recipe::WidenSection;

impl WidenSection {
    /// The widened intermediate size for `intermediate`, or None when widening is off.
    pub fn new_width(&self, intermediate: i64) -> Option<i64> {
        let wide = (intermediate as f64 * self.mlp_factor).round() as i64;
        (wide > intermediate).then_some(wide)
    }

    /// The widened number of query heads for `heads` over `kv_heads` groups, or None when off.
    pub fn new_heads(&self, heads: i64, kv_heads: i64) -> Option<i64> {
        let per_group = heads / kv_heads.max(1);
        let wide = (per_group as f64 * self.heads_factor).round() as i64;
        (wide > per_group).then_some(wide * kv_heads)
    }
}

/// Which source unit each new unit copies: the units with the largest outgoing weight norm
/// first (cycling when more than doubling).
pub fn sources(down: &Tensor, extra: i64) -> Vec<i64> {
    let norms = down.to_kind(Kind::Float).square().sum_dim_intlist(0, false, Kind::Float);
    let order = Vec::<i64>::try_from(&norms.argsort(0, true).to_device(Device::Cpu)).unwrap_or_default();
    (0..extra as usize).map(|j| order[j % order.len()]).collect()
}

/// Splits the outgoing columns `out` `[R, U]` of `U` units between each unit and its copies:
/// `src[j]` is the source of new unit `U + j`. Returns `[R, U + src.len()]`; for every source,
/// its column and its copies' sum to the original column exactly, with per-element shares
/// `(1 + u) / n` (`n` the copies plus one, `u` uniform in `[-noise, noise]`) for the copies.
fn split_outgoing(out: &Tensor, src: &[i64], noise: f64, gen_seed: i64) -> Tensor {
    let (r, u) = (out.size()[0], out.size()[1]);
    let idx = Tensor::from_slice(src).to_device(out.device());
    let mut share = vec![1.0f64; u as usize];
    for &s in src {
        share[s as usize] += 1.0;
    }
    tch::manual_seed(gen_seed);
    let cols = out.index_select(1, &idx); // [R, extra]
    let n_copies = Tensor::from_slice(&share).to_kind(Kind::Float).to_device(out.device());
    // a_k = (1 + noise) / n for each copy, the source keeps the rest: the shares sum to one.
    let jitter = (Tensor::rand([r, src.len() as i64], (Kind::Float, out.device())) * 2.0 - 1.0) * noise;
    let per_copy = n_copies.index_select(0, &idx).reciprocal().unsqueeze(0) * (jitter + 1.0);
    let new_cols = &cols * &per_copy;
    let taken = Tensor::zeros([r, u], (Kind::Float, out.device())).index_add(1, &idx, &per_copy);
    let kept = out * (taken.neg() + 1.0);
    Tensor::cat(&[kept, new_cols], 1)
}

/// Widened `(gate, up, down)` of one MLP (`gate`/`up` `[I, C]`, `down` `[C, I]`) to `wide`
/// units; `gen_seed` seeds the split noise.
pub fn widen_mlp(
    gate: &Tensor,
    up: &Tensor,
    down: &Tensor,
    wide: i64,
    noise: f64,
    gen_seed: i64,
) -> (Tensor, Tensor, Tensor) {
    let i = gate.size()[0];
    let src = sources(down, wide - i);
    let idx = Tensor::from_slice(&src).to_device(gate.device());
    let gate_w = Tensor::cat(&[gate, &gate.index_select(0, &idx)], 0);
    let up_w = Tensor::cat(&[up, &up.index_select(0, &idx)], 0);
    (gate_w, up_w, split_outgoing(down, &src, noise, gen_seed))
}

/// Widened `(q, q_bias, o)` of one attention (`q` `[H*D, C]`, `o` `[C, H*D]`) from `heads` to
/// `wide` query heads over `kv_heads` groups; the copies of each group follow its heads.
#[allow(clippy::too_many_arguments)]
pub fn widen_heads(
    q: &Tensor,
    q_bias: Option<&Tensor>,
    o: &Tensor,
    heads: i64,
    kv_heads: i64,
    wide: i64,
    noise: f64,
    gen_seed: i64,
) -> (Tensor, Option<Tensor>, Tensor) {
    let (c, d) = (q.size()[1], q.size()[0] / heads);
    let (g, g_wide) = (heads / kv_heads, wide / kv_heads);
    // A head's outgoing weights as one unit: o [C, H*D] -> [C*D, H] (rows of C and D elements).
    let o_units = o.view([c, heads, d]).permute([0, 2, 1]).reshape([c * d, heads]);
    let mut src = Vec::new();
    let mut order = Vec::new(); // new head -> index into [old heads..., copies...]
    for group in 0..kv_heads {
        let in_group = o_units.narrow(1, group * g, g);
        let picks = sources(&in_group, g_wide - g);
        order.extend(group * g..(group + 1) * g);
        for p in picks {
            order.push(heads + src.len() as i64);
            src.push(group * g + p);
        }
    }
    let idx = Tensor::from_slice(&src).to_device(q.device());
    let perm = Tensor::from_slice(&order).to_device(q.device());
    let q_heads = q.view([heads, d * c]);
    let q_w = Tensor::cat(&[&q_heads, &q_heads.index_select(0, &idx)], 0).index_select(0, &perm).reshape([wide * d, c]);
    let b_w = q_bias.map(|b| {
        let b = b.view([heads, d]);
        Tensor::cat(&[&b, &b.index_select(0, &idx)], 0).index_select(0, &perm).reshape([wide * d])
    });
    let o_w = split_outgoing(&o_units, &src, noise, gen_seed)
        .index_select(1, &perm)
        .reshape([c, d, wide])
        .permute([0, 2, 1])
        .reshape([c, wide * d]);
    (q_w, b_w, o_w)
}

/// What widening did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WidenReport {
    /// MLP units before.
    pub intermediate_before: i64,
    /// MLP units after.
    pub intermediate_after: i64,
    /// Query heads before.
    #[serde(default)]
    pub heads_before: i64,
    /// Query heads after.
    #[serde(default)]
    pub heads_after: i64,
    /// Largest absolute logit change on a calibration sequence (before quantization).
    pub max_logit_diff: f64,
}

/// The model widened as `opts` asks, built by `builder` (the calibration recorder), and the
/// report; None when `opts` widens nothing. `probe` `[1, T]` measures the function
/// preservation.
pub fn widen_model(
    loaded: &autoqat_model::LoadedModel,
    opts: &WidenSection,
    builder: &dyn autoqat_model::LinearBuilder,
    probe: &Tensor,
    device: Device,
) -> crate::Result<Option<(autoqat_model::LoadedModel, WidenReport)>> {
    let old_cfg = &loaded.cfg;
    let (heads, kv) = (old_cfg.num_attention_heads, old_cfg.num_key_value_heads);
    let wide_mlp = opts.new_width(old_cfg.intermediate_size);
    let wide_heads = opts.new_heads(heads, kv);
    if wide_mlp.is_none() && wide_heads.is_none() {
        return Ok(None);
    }
    if wide_heads.is_some() && old_cfg.attn_output_gate {
        return Err(crate::CompressError::Budget(
            "widen.heads is not supported on Qwen3.5/3.6 (q_proj carries each head's output gate) (hint: widen the MLP only)"
                .into(),
        ));
    }
    let before = tch::no_grad(|| loaded.model.forward(&probe.to_device(device)));
    let mut cfg = old_cfg.clone();
    cfg.intermediate_size = wide_mlp.unwrap_or(cfg.intermediate_size);
    cfg.num_attention_heads = wide_heads.unwrap_or(heads);
    let (vs, model) = autoqat_model::build_causal_lm(&cfg, device, Kind::Float, builder)?;
    let old = loaded.vs.variables();
    let get =
        |n: &str| old.get(n).map(Tensor::detach).ok_or_else(|| crate::CompressError::Torch(format!("no variable {n}")));
    let mut widened: Vec<(String, Tensor)> = Vec::new();
    let layers = cfg.num_hidden_layers;
    for layer in 0..layers {
        if let Some(wide) = wide_mlp {
            let p = format!("model.layers.{layer}.mlp.");
            let (g, u, d) = widen_mlp(
                &get(&format!("{p}gate_proj.weight"))?,
                &get(&format!("{p}up_proj.weight"))?,
                &get(&format!("{p}down_proj.weight"))?,
                wide,
                opts.split_noise,
                opts.seed as i64 + layer,
            );
            widened.extend([(format!("{p}gate_proj.weight"), g), (format!("{p}up_proj.weight"), u)]);
            widened.push((format!("{p}down_proj.weight"), d));
        }
        if let Some(wide) = wide_heads {
            let p = format!("model.layers.{layer}.self_attn.");
            let bias = old.get(&format!("{p}q_proj.bias")).map(Tensor::detach);
            let (q, b, o) = widen_heads(
                &get(&format!("{p}q_proj.weight"))?,
                bias.as_ref(),
                &get(&format!("{p}o_proj.weight"))?,
                heads,
                kv,
                wide,
                opts.split_noise,
                // Another stream than the MLP's, so the two splits are not correlated.
                opts.seed as i64 + layers + layer,
            );
            widened.extend([(format!("{p}q_proj.weight"), q), (format!("{p}o_proj.weight"), o)]);
            if let Some(b) = b {
                widened.push((format!("{p}q_proj.bias"), b));
            }
        }
    }
    let mut new = vs.variables();
    for (key, value) in widened {
        let var = new
            .get_mut(&key)
            .ok_or_else(|| crate::CompressError::Torch(format!("the widened model has no variable {key}")))?;
        tch::no_grad(|| var.f_copy_(&value))?;
        new.remove(&key);
    }
    for (name, mut var) in new {
        let src = get(&name)?;
        tch::no_grad(|| var.f_copy_(&src))?;
    }
    let after = tch::no_grad(|| model.forward(&probe.to_device(device)));
    let max_logit_diff = (after - before).abs().max().double_value(&[]);
    let report = WidenReport {
        intermediate_before: old_cfg.intermediate_size,
        intermediate_after: cfg.intermediate_size,
        heads_before: heads,
        heads_after: cfg.num_attention_heads,
        max_logit_diff,
    };
    Ok(Some((autoqat_model::LoadedModel { cfg, model, vs, dir: loaded.dir.clone() }, report)))
}
