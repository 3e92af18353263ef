//! Resumable checkpoints in `<run>/checkpoint/`: every model variable (latent full-precision
//! weights and learned scales), AdamW's moments and step, and the data sampler's state, so a
//! resumed trial (or compression fine-tune) continues exactly where it stopped.

use crate::error::{io_err, Result, ToolkitError};
use crate::optim::AdamW;
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
        .map_err(|e| ToolkitError::Checkpoint(format!("cannot serialize the checkpoint's meta.json: {e}")))?;
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
        ToolkitError::Checkpoint(format!(
            "--resume: no checkpoint in {} (hint: run without --resume first)",
            run.display()
        ))
    })?;
    let meta: Meta =
        serde_json::from_str(&text).map_err(|e| ToolkitError::Checkpoint(format!("{}: {e}", meta_path.display())))?;
    let state: HashMap<String, Tensor> = Tensor::read_safetensors(d.join("state.safetensors"))?.into_iter().collect();
    let get = |key: &str| {
        state.get(key).ok_or_else(|| {
            ToolkitError::Checkpoint(format!(
                "checkpoint {} lacks {key}; was it written by another recipe?",
                d.display()
            ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn model() -> (nn::VarStore, AdamW) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().randn("w", &[3, 2], 0.0, 1.0);
        let b = vs.root().zeros("b", &[2]);
        let opt = AdamW::new(vec![("w".into(), w), ("b".into(), b)], 0.9, 0.95, 0.1);
        (vs, opt)
    }

    fn step(vs: &nn::VarStore, opt: &mut AdamW) {
        opt.zero_grad();
        let loss =
            vs.variables().values().map(|t| t.square().sum(Kind::Float)).fold(Tensor::from(0.0f32), |a, b| a + b);
        loss.backward();
        opt.clip_and_step(1e-2, 1.0);
    }

    #[test]
    fn a_saved_checkpoint_restores_variables_moments_and_scalars() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_step(dir.path()), None);
        let (vs, mut opt) = model();
        step(&vs, &mut opt);
        let meta = Meta {
            step: 1,
            rng_state: 7,
            best_ppl: 12.5,
            fp_ppl: 10.0,
            time_s: 0.5,
            adam_step: opt.step,
            seen_tokens: 64,
            flip: Some((1, 64)),
        };
        save(dir.path(), &vs, &opt, &meta).unwrap();
        assert_eq!(saved_step(dir.path()), Some(1));

        let (vs2, mut opt2) = model();
        assert_eq!(load(dir.path(), &vs2, &mut opt2).unwrap(), meta);
        assert_eq!(opt2.step, opt.step);
        for (name, t) in vs.variables() {
            assert!(t.equal(&vs2.variables()[&name]), "{name}");
        }
        for (a, b) in opt.params.iter().zip(&opt2.params) {
            assert!(a.m.equal(&b.m) && a.v.equal(&b.v), "{}", a.name);
        }
        // The next step from the restored state is the step the original takes.
        step(&vs, &mut opt);
        step(&vs2, &mut opt2);
        for (name, t) in vs.variables() {
            assert!(t.equal(&vs2.variables()[&name]), "{name}");
        }
    }

    #[test]
    fn a_missing_checkpoint_says_how_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, mut opt) = model();
        let e = load(dir.path(), &vs, &mut opt).unwrap_err();
        assert!(matches!(e, ToolkitError::Checkpoint(_)));
        assert!(e.to_string().contains("run without --resume first"), "{e}");
    }
}
