//! Layerwise distillation after the allocation (the track's "layerwise distillation"): each
//! decoder block, its rows fixed to their allocated kinds, is trained so that on the output of
//! the already-compressed prefix it reproduces the full-precision model's output of that block.
//!
//! The weights stay on their grid: the variables hold full-precision latents, each step swaps in
//! their row-mix quantization for the forward and backward pass (the straight-through
//! estimator: the gradient at the quantized weights updates the latents), and what is packed
//! afterwards is the quantization of the final latents. The optimizer is the toolkit's AdamW (the
//! QAT trial's).

use std::collections::HashMap;

use autoqat_model::CausalLM;
use autoqat_toolkit::optim::AdamW;
use serde::{Deserialize, Serialize};
use tch::{Device, Reduction, Tensor};

use crate::calib;
use crate::error::{CompressError, Result};
use crate::resume::ResumeState;
use crate::rows::{self, RowKind};

use crate::recipe::DistillSection;

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

/// A quantized matrix being trained: its variable (holding the latents) and its row groups.
pub(crate) struct Matrix {
    var: Tensor,
    groups: Vec<(RowKind, Tensor)>,
}

impl Matrix {
    /// The matrix `var` whose rows have `kinds`.
    pub(crate) fn new(var: Tensor, kinds: &[RowKind], device: Device) -> Self {
        Self { var, groups: rows::kind_groups(kinds, device) }
    }
}

/// Swaps the quantized weights in, runs `f`, and puts the latents back: the straight-through
/// estimator, as the gradient `f` leaves on the variables is the one at the quantized weights.
pub(crate) fn with_quantized<T>(mats: &mut [Matrix], f: impl FnOnce() -> T) -> T {
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

/// The resume file of one distilled block's latents.
fn layer_file(layer: usize) -> String {
    format!("distill-layer-{layer}.safetensors")
}

/// The resume file of the reports of the blocks distilled so far.
const REPORTS_FILE: &str = "distill.json";

/// Distils every block in order. `vars` are the model's variables by name, `mix` the row kinds
/// of each quantized matrix by module path (`model.embed_tokens` included), `seqs` the
/// calibration sequences. The variables end holding the trained latents. With `state`, each
/// block's latents are saved once trained, and blocks saved by a killed run are loaded, not
/// trained again. `keep(layer, file)` is told where a block's latents were saved, so that an
/// offloaded model reads them from there once the block is released.
#[allow(clippy::too_many_arguments)]
pub fn layerwise(
    model: &CausalLM,
    vars: &HashMap<String, Tensor>,
    mix: &HashMap<String, Vec<RowKind>>,
    seqs: &Tensor,
    opts: &DistillSection,
    device: Device,
    state: Option<&ResumeState>,
    keep: &mut dyn FnMut(usize, &std::path::Path) -> Result<()>,
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
    let saved_reports: Vec<BlockReport> = match state {
        Some(s) => s.load(REPORTS_FILE)?.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut reports = Vec::new();
    for layer in 0..model.num_layers() {
        let prefix = format!("model.layers.{layer}.");
        let mut names: Vec<&String> = mix.keys().filter(|k| k.starts_with(&prefix)).collect();
        names.sort();
        let mut mats: Vec<Matrix> =
            names.iter().map(|k| Matrix::new(vars[&format!("{k}.weight")].shallow_clone(), &mix[*k], device)).collect();
        // The teacher's output of this block, from full-precision weights: computed before a
        // resumed block's latents replace them.
        let y_fp = tch::no_grad(|| model.layer(layer, &x_fp));
        let saved = match (state, saved_reports.get(layer)) {
            (Some(s), Some(report)) => s.load_tensors(&layer_file(layer))?.map(|t| (t, report.clone())),
            _ => None,
        };
        let (report, next) = match saved {
            Some((latents, report)) => {
                tch::no_grad(|| -> Result<()> {
                    for (k, m) in names.iter().zip(mats.iter_mut()) {
                        let src = latents
                            .get(&format!("{k}.weight"))
                            .ok_or_else(|| CompressError::Resume(format!("{} lacks {k}.weight", layer_file(layer))))?;
                        m.var.f_copy_(&src.to_device(device))?;
                    }
                    Ok(())
                })?;
                log(&format!(
                    "distill: layer {layer} resumed (output MSE {:.4e} -> {:.4e})",
                    report.mse_before, report.mse_after
                ));
                (report, with_quantized(&mut mats, || tch::no_grad(|| model.layer(layer, &x_q))))
            }
            None => {
                let (report, next) = train_block(model, layer, vars, &names, &mut mats, &x_q, &y_fp, opts)?;
                log(&format!(
                    "distill: layer {layer} output MSE {:.4e} -> {:.4e}",
                    report.mse_before, report.mse_after
                ));
                if let Some(s) = state {
                    let latents: Vec<(String, Tensor)> = names
                        .iter()
                        .map(|k| (format!("{k}.weight"), vars[&format!("{k}.weight")].shallow_clone()))
                        .collect();
                    s.save_tensors(&layer_file(layer), &latents)?;
                    let mut so_far = reports.clone();
                    so_far.push(report.clone());
                    s.save(REPORTS_FILE, &so_far)?;
                }
                (report, next)
            }
        };
        if let Some(s) = state {
            keep(layer, &s.dir().join(layer_file(layer)))?;
        }
        reports.push(report);
        x_q = next;
        x_fp = y_fp;
    }
    // Gradients of variables outside the optimizers (norms) are not needed any more.
    crate::calib::zero_grads(vars.values());
    Ok(reports)
}

/// Trains one block's latents so that on `x_q` (the compressed prefix's output) it reproduces
/// `y_fp` (the full-precision block's output); returns the report and the trained block's
/// output on `x_q` (the next block's input).
#[allow(clippy::too_many_arguments)]
fn train_block(
    model: &CausalLM,
    layer: usize,
    vars: &HashMap<String, Tensor>,
    names: &[&String],
    mats: &mut [Matrix],
    x_q: &Tensor,
    y_fp: &Tensor,
    opts: &DistillSection,
) -> Result<(BlockReport, Tensor)> {
    let n = x_q.size()[0];
    let mse_before = with_quantized(mats, || tch::no_grad(|| mse(&model.layer(layer, x_q), y_fp)))?;
    let mut opt = AdamW::new(
        names.iter().map(|k| ((*k).clone(), vars[&format!("{k}.weight")].shallow_clone())).collect(),
        0.9,
        0.999,
        0.0,
    );
    for step in 0..opts.steps {
        let (start, b) = calib::cycled_batch(step, opts.batch, n);
        let (xb, yb) = (x_q.narrow(0, start, b), y_fp.narrow(0, start, b));
        opt.zero_grad();
        let loss = with_quantized(mats, || -> Result<Tensor> {
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
    let out = with_quantized(mats, || tch::no_grad(|| model.layer(layer, x_q)));
    Ok((BlockReport { layer, mse_before, mse_after: mse(&out, y_fp)? }, out))
}
