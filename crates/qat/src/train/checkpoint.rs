//! Resumable checkpoints in `<run>/checkpoint/`: every model variable (latent full-precision
//! weights and learned scales), AdamW's moments and step, and the data sampler's state, so a
//! resumed trial continues exactly where it stopped.

use super::optim::AdamW;
use crate::error::{io_err, QatError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

/// Scalars of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Optimizer steps done.
    pub step: u64,
    /// Data sampler state.
    pub rng_state: u64,
    /// Best eval perplexity so far.
    pub best_ppl: f64,
    /// Eval perplexity of the full-precision model.
    pub fp_ppl: f64,
    /// Seconds spent so far.
    pub time_s: f64,
    /// AdamW's step count.
    pub adam_step: u64,
    /// Training tokens seen (valid target positions for trace training).
    #[serde(default)]
    pub seen_tokens: u64,
    /// Step and seen tokens at the one-way A8 -> A4 flip, once it happened.
    #[serde(default)]
    pub flip: Option<(u64, u64)>,
}

fn dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// The step of the checkpoint in `run`, if there is a readable one.
pub fn saved_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir(run).join("meta.json")).ok()?;
    serde_json::from_str::<Meta>(&text).ok().map(|m| m.step)
}

/// Writes the checkpoint (into a temporary directory renamed over the old one, so a kill
/// while saving leaves the previous checkpoint intact).
pub fn save(run: &Path, vs: &nn::VarStore, opt: &AdamW, meta: &Meta) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
    for p in &opt.params {
        tensors.push((format!("adam_m.{}", p.name), p.m.shallow_clone()));
        tensors.push((format!("adam_v.{}", p.name), p.v.shallow_clone()));
    }
    let meta_text = serde_json::to_string_pretty(meta)
        .map_err(|e| QatError::Checkpoint(format!("cannot serialize the checkpoint's meta.json: {e}")))?;
    autoqat_workspace::atomic::replace_dir_with(
        &dir(run),
        |tmp| {
            autoqat_model::load::write_safetensors(&tensors, &tmp.join("state.safetensors"))?;
            let meta_path = tmp.join("meta.json");
            std::fs::write(&meta_path, meta_text).map_err(io_err(&meta_path))
        },
        |p, e| io_err(p)(e),
    )
}

/// Restores variables and optimizer state; returns the scalars.
pub fn load(run: &Path, vs: &nn::VarStore, opt: &mut AdamW) -> Result<Meta> {
    let d = dir(run);
    let meta_path = d.join("meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|_| {
        QatError::Checkpoint(format!("--resume: no checkpoint in {} (hint: run without --resume first)", run.display()))
    })?;
    let meta: Meta =
        serde_json::from_str(&text).map_err(|e| QatError::Checkpoint(format!("{}: {e}", meta_path.display())))?;
    let state: HashMap<String, Tensor> = Tensor::read_safetensors(d.join("state.safetensors"))?.into_iter().collect();
    let get = |key: &str| {
        state.get(key).ok_or_else(|| {
            QatError::Checkpoint(format!("checkpoint {} lacks {key}; was it written by another recipe?", d.display()))
        })
    };
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let src = get(&format!("model.{name}"))?;
            var.f_copy_(&src.to_device(var.device()))?;
        }
        for p in &mut opt.params {
            p.m.f_copy_(&get(&format!("adam_m.{}", p.name))?.to_device(p.m.device()))?;
            p.v.f_copy_(&get(&format!("adam_v.{}", p.name))?.to_device(p.v.device()))?;
        }
        Ok(())
    })?;
    opt.step = meta.adam_step;
    Ok(meta)
}
