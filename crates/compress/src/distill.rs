//! Layerwise distillation after the allocation (the track's "layerwise distillation"): each
//! decoder block, its rows fixed to their allocated kinds, is trained so that on the output of
//! the already-compressed prefix it reproduces the full-precision model's output of that block.
//!
//! The weights stay on their grid: the variables hold full-precision latents, each step swaps in
//! their row-mix quantization for the forward and backward pass (the straight-through
//! estimator: the gradient at the quantized weights updates the latents), and what is packed
//! afterwards is the quantization of the final latents. The optimizer is the QAT trial's AdamW.

use std::collections::HashMap;

use autoqat_model::CausalLM;
use autoqat_qat::train::optim::AdamW;
use serde::{Deserialize, Serialize};
use tch::{Device, Reduction, Tensor};

use crate::error::Result;
use crate::rows::{self, RowKind};

/// `[distill]` of the recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// Run the stage.
    #[serde(default)]
    pub enabled: bool,
    /// Optimizer steps per block.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// AdamW learning rate of the latents.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Calibration sequences per step.
    #[serde(default = "default_batch")]
    pub batch: i64,
}

fn default_steps() -> usize {
    20
}
fn default_lr() -> f64 {
    1e-4
}
fn default_batch() -> i64 {
    4
}

impl Default for DistillSection {
    fn default() -> Self {
        Self { enabled: false, steps: default_steps(), lr: default_lr(), batch: default_batch() }
    }
}

/// What the stage did to one block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockReport {
    /// Decoder layer.
    pub layer: usize,
    /// Output MSE against the teacher with the allocated rows before training.
    pub mse_before: f64,
    /// The same after training.
    pub mse_after: f64,
}

/// One block's quantized matrices: variable, row groups.
struct Matrix {
    var: Tensor,
    groups: Vec<(RowKind, Tensor)>,
}

/// Swaps the quantized weights in, runs `f`, and puts the latents back.
fn with_quantized<T>(mats: &mut [Matrix], f: impl FnOnce() -> T) -> T {
    let latents: Vec<Tensor> = mats.iter().map(|m| m.var.detach().copy()).collect();
    tch::no_grad(|| {
        for m in mats.iter_mut() {
            let q = rows::quantize_mix(&m.var, &m.groups);
            m.var.copy_(&q);
        }
    });
    let out = f();
    tch::no_grad(|| {
        for (m, l) in mats.iter_mut().zip(&latents) {
            m.var.copy_(l);
        }
    });
    out
}

fn mse(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(a.f_mse_loss(b, Reduction::Mean)?.double_value(&[]))
}

/// Distils every block in order. `vars` are the model's variables by name, `mix` the row kinds
/// of each quantized matrix by module path (`model.embed_tokens` included), `seqs` the
/// calibration sequences. The variables end holding the trained latents.
pub fn layerwise(
    model: &CausalLM,
    vars: &HashMap<String, Tensor>,
    mix: &HashMap<String, Vec<RowKind>>,
    seqs: &Tensor,
    opts: &DistillSection,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<BlockReport>> {
    let ids = seqs.to_device(device);
    let embed = &vars["model.embed_tokens.weight"];
    let embed_q = match mix.get("model.embed_tokens") {
        Some(kinds) => rows::quantize_mix(embed, &rows::kind_groups(kinds, device)),
        None => embed.detach(),
    };
    let mut x_fp = tch::no_grad(|| Tensor::embedding(&embed.detach(), &ids, -1, false, false));
    let mut x_q = tch::no_grad(|| Tensor::embedding(&embed_q, &ids, -1, false, false));
    let n = ids.size()[0];
    let mut reports = Vec::new();
    for layer in 0..model.num_layers() {
        let prefix = format!("model.layers.{layer}.");
        let mut names: Vec<&String> = mix.keys().filter(|k| k.starts_with(&prefix)).collect();
        names.sort();
        let mut mats: Vec<Matrix> = names
            .iter()
            .map(|k| Matrix {
                var: vars[&format!("{k}.weight")].shallow_clone(),
                groups: rows::kind_groups(&mix[*k], device),
            })
            .collect();
        let y_fp = tch::no_grad(|| model.layer(layer, &x_fp));
        let mse_before = with_quantized(&mut mats, || tch::no_grad(|| mse(&model.layer(layer, &x_q), &y_fp)))?;
        let mut opt = AdamW::new(
            names.iter().map(|k| ((*k).clone(), vars[&format!("{k}.weight")].shallow_clone())).collect(),
            0.9,
            0.999,
            0.0,
        );
        for step in 0..opts.steps {
            let start = (step as i64 * opts.batch) % n;
            let b = opts.batch.min(n - start);
            let (xb, yb) = (x_q.narrow(0, start, b), y_fp.narrow(0, start, b));
            opt.zero_grad();
            let loss = with_quantized(&mut mats, || -> Result<Tensor> {
                let loss = model.layer(layer, &xb).f_mse_loss(&yb, Reduction::Mean)?;
                loss.f_backward()?;
                Ok(loss)
            })?;
            if !loss.double_value(&[]).is_finite() {
                break;
            }
            opt.step(opts.lr);
        }
        opt.zero_grad();
        let (mse_after, next) = with_quantized(&mut mats, || -> Result<(f64, Tensor)> {
            tch::no_grad(|| {
                let out = model.layer(layer, &x_q);
                Ok((mse(&out, &y_fp)?, out))
            })
        })?;
        log(&format!("distill: layer {layer} output MSE {mse_before:.4e} -> {mse_after:.4e}"));
        reports.push(BlockReport { layer, mse_before, mse_after });
        x_q = next;
        x_fp = y_fp;
    }
    // Gradients of variables outside the optimizers (norms) are not needed any more.
    crate::calib::zero_grads(vars.values());
    Ok(reports)
}
