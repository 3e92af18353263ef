//! Net2Net widening of the MLPs: more units for the same function, so a wider model (whose
//! budget grows with its parameters) has more rows to spread quantization error over.
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

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// `[widen]` of the recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidenSection {
    /// MLP width multiplier (1 = off).
    #[serde(default = "one")]
    pub mlp_factor: f64,
    /// Half-width of the uniform noise `u` of a copy's share `(1 + u) / 2` of the down column.
    #[serde(default = "default_noise")]
    pub split_noise: f64,
    /// Seed of that noise.
    #[serde(default)]
    pub seed: u64,
}

fn one() -> f64 {
    1.0
}
fn default_noise() -> f64 {
    1.5
}

impl Default for WidenSection {
    fn default() -> Self {
        Self { mlp_factor: 1.0, split_noise: default_noise(), seed: 0 }
    }
}

impl WidenSection {
    /// The widened intermediate size for `intermediate`, or None when widening is off.
    pub fn new_width(&self, intermediate: i64) -> Option<i64> {
        let wide = (intermediate as f64 * self.mlp_factor).round() as i64;
        (wide > intermediate).then_some(wide)
    }
}

/// Which source unit each new unit copies: the units with the largest outgoing weight norm
/// first (cycling when more than doubling).
pub fn sources(down: &Tensor, extra: i64) -> Vec<i64> {
    let norms = down.to_kind(Kind::Float).square().sum_dim_intlist(0, false, Kind::Float);
    let order = Vec::<i64>::try_from(&norms.argsort(0, true).to_device(Device::Cpu)).unwrap_or_default();
    (0..extra as usize).map(|j| order[j % order.len()]).collect()
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
    // Each source unit may be copied more than once: its column is split among all its copies.
    let mut share = vec![1.0f64; i as usize];
    for &s in &src {
        share[s as usize] += 1.0;
    }
    let c = down.size()[0];
    tch::manual_seed(gen_seed);
    let cols = down.index_select(1, &idx); // [C, extra]
    let n_copies = Tensor::from_slice(&share).to_kind(Kind::Float).to_device(down.device());
    // a_k = 1/n + noise for each copy, the source keeps the rest: the shares sum to one exactly.
    let jitter = (Tensor::rand([c, wide - i], (Kind::Float, down.device())) * 2.0 - 1.0) * noise;
    let per_copy = n_copies.index_select(0, &idx).reciprocal().unsqueeze(0) * (jitter + 1.0); // [C, extra]
    let new_cols = &cols * &per_copy;
    let taken = Tensor::zeros([c, i], (Kind::Float, down.device())).index_add(1, &idx, &per_copy);
    let kept = down * (taken.neg() + 1.0);
    let down_w = Tensor::cat(&[kept, new_cols], 1);
    (gate_w, up_w, down_w)
}

/// What widening did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WidenReport {
    /// MLP units before.
    pub intermediate_before: i64,
    /// MLP units after.
    pub intermediate_after: i64,
    /// Largest absolute logit change on a calibration sequence (before quantization).
    pub max_logit_diff: f64,
}

/// The model widened to `wide` MLP units, built by `builder` (the calibration recorder), and
/// the report; `probe` `[1, T]` measures the function preservation.
pub fn widen_model(
    loaded: autoqat_model::LoadedModel,
    wide: i64,
    opts: &WidenSection,
    builder: &dyn autoqat_model::LinearBuilder,
    probe: &Tensor,
    device: Device,
) -> crate::Result<(autoqat_model::LoadedModel, WidenReport)> {
    let before = tch::no_grad(|| loaded.model.forward(&probe.to_device(device)));
    let mut cfg = loaded.cfg.clone();
    let narrow = cfg.intermediate_size;
    cfg.intermediate_size = wide;
    let (vs, model) = autoqat_model::build_causal_lm(&cfg, device, Kind::Float, builder)?;
    let old = loaded.vs.variables();
    let get =
        |n: &str| old.get(n).map(Tensor::detach).ok_or_else(|| crate::CompressError::Torch(format!("no variable {n}")));
    let mut new = vs.variables();
    for layer in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{layer}.mlp.");
        let (g, u, d) = widen_mlp(
            &get(&format!("{p}gate_proj.weight"))?,
            &get(&format!("{p}up_proj.weight"))?,
            &get(&format!("{p}down_proj.weight"))?,
            wide,
            opts.split_noise,
            opts.seed as i64 + layer,
        );
        for (name, value) in [("gate_proj", g), ("up_proj", u), ("down_proj", d)] {
            let key = format!("{p}{name}.weight");
            if let Some(var) = new.get_mut(&key) {
                tch::no_grad(|| var.f_copy_(&value))?;
            }
            new.remove(&key);
        }
    }
    for (name, mut var) in new {
        let src = get(&name)?;
        tch::no_grad(|| var.f_copy_(&src))?;
    }
    let after = tch::no_grad(|| model.forward(&probe.to_device(device)));
    let max_logit_diff = (after - before).abs().max().double_value(&[]);
    let report = WidenReport { intermediate_before: narrow, intermediate_after: wide, max_logit_diff };
    Ok((autoqat_model::LoadedModel { cfg, model, vs, dir: loaded.dir }, report))
}
