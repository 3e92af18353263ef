//! End-to-end fine-tune after the allocation (and the layerwise stage, when it ran): the whole
//! compressed model, every row on its allocated grid, is trained to match the full-precision
//! teacher's next-token distribution on the calibration sequences.
//!
//! Nothing here is a second trainer. The teacher is stored as the distillation-traces track's
//! Top-K + Other targets ([`TraceTargets`]) and the loss is the toolkit's (the QAT trial's)
//! [`topk_other_kl`] (plus, optionally, its [`weighted_sample_ce`] on the real next token); the
//! step is the toolkit's [`AdamW::clip_and_step`] with its [`lr_factor`] cosine schedule; the
//! checkpoint is the toolkit's, so `--resume` continues from the last saved step. The
//! straight-through estimator is the layerwise stage's [`with_quantized`]: the forward and
//! backward passes see the quantized rows, the gradient updates the full-precision latents.
//! Norms are trained as they are (they are stored in f16 and cost what they cost either way).

use std::collections::HashMap;
use std::path::Path;

use autoqat_model::CausalLM;
use autoqat_recipe::LrSchedule;
use autoqat_toolkit::checkpoint::{self, Meta};
use autoqat_toolkit::loss::{topk_other_kl, weighted_sample_ce, TraceTargets};
use autoqat_toolkit::optim::AdamW;
use autoqat_toolkit::schedule::lr_factor;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::distill::{with_quantized, Matrix};
use crate::error::{CompressError, Result};
use crate::rows::RowKind;

use crate::recipe::FinetuneSection;

/// Sequences per teacher forward pass (the logits of a pass are `batch x seq x vocab` f32).
const TEACHER_BATCH: i64 = 2;
/// The learning rate decays to this fraction of `lr` by the last step.
const MIN_LR_FRAC: f64 = 0.1;

/// What the stage did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// Steps taken (including those resumed from a checkpoint).
    pub steps: usize,
    /// Mean loss of the first steps (up to 5) of this process (None: no step taken).
    pub loss_first: Option<f64>,
    /// Mean loss of the last steps (up to 5).
    pub loss_last: Option<f64>,
    /// Steps whose gradient was not finite, so no update was made.
    pub skipped: usize,
    /// The step this process resumed from (0 = from the start).
    pub resumed_from: usize,
}

/// The full-precision teacher on the calibration sequences, as Top-K + Other targets of every
/// position but the last (which has no next token): `[n, seq - 1, k]`.
#[derive(Debug)]
pub struct Teacher {
    ids: Tensor,
    logprobs: Tensor,
    other: Tensor,
}

impl Teacher {
    /// Runs the (still full-precision) model over `seqs` `[n, seq]` and keeps its `k` most
    /// likely next tokens per position with their log-probabilities, and the log of the rest.
    pub fn measure(model: &CausalLM, seqs: &Tensor, k: i64, device: Device) -> Result<Self> {
        let n = seqs.size()[0];
        let (mut ids, mut logprobs, mut other) = (Vec::new(), Vec::new(), Vec::new());
        for (i, b) in crate::calib::batches(n, TEACHER_BATCH) {
            let x = seqs.narrow(0, i, b).to_device(device);
            let (top_ids, top_lp, rest) = tch::no_grad(|| -> Result<(Tensor, Tensor, Tensor)> {
                let logits = model.forward(&x);
                let t = logits.size()[1];
                let logp = logits.narrow(1, 0, t - 1).to_kind(Kind::Float).log_softmax(-1, Kind::Float);
                let k = k.min(logp.size()[2]);
                let (lp, idx) = logp.f_topk(k, -1, true, true)?;
                // log(1 - Σ p_topk), clamped: when the Top-K hold all the mass, Other is a
                // finite "nothing" rather than log(0).
                let mass = lp.exp().sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
                let rest = (mass * -1.0 + 1.0).clamp_min(1e-12).log();
                Ok((idx.to_device(Device::Cpu), lp.to_device(Device::Cpu), rest.to_device(Device::Cpu)))
            })?;
            ids.push(top_ids);
            logprobs.push(top_lp);
            other.push(rest);
        }
        Ok(Self { ids: Tensor::cat(&ids, 0), logprobs: Tensor::cat(&logprobs, 0), other: Tensor::cat(&other, 0) })
    }

    /// The tensors to save for `--resume`.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            ("ids".into(), self.ids.shallow_clone()),
            ("logprobs".into(), self.logprobs.shallow_clone()),
            ("other".into(), self.other.shallow_clone()),
        ]
    }

    /// The teacher [`Teacher::tensors`] saved.
    pub fn from_tensors(saved: &HashMap<String, Tensor>) -> Result<Self> {
        let get = |k: &str| {
            saved.get(k).map(Tensor::shallow_clone).ok_or_else(|| {
                CompressError::Resume(format!("the saved teacher lacks {k} (hint: run without --resume)"))
            })
        };
        Ok(Self { ids: get("ids")?, logprobs: get("logprobs")?, other: get("other")? })
    }

    /// The targets of sequences `rows`, flattened to one row per position; `seqs` gives the
    /// real next tokens for the cross-entropy term.
    pub fn targets(&self, rows: &Tensor, seqs: &Tensor, device: Device) -> TraceTargets {
        let k = self.ids.size()[2];
        let topk_ids = self.ids.index_select(0, rows).reshape([-1, k]).to_device(device);
        let n = topk_ids.size()[0];
        let t = seqs.size()[1];
        TraceTargets {
            topk_mask: Tensor::ones([n, k], (Kind::Bool, device)),
            topk_ids,
            topk_logprobs: self.logprobs.index_select(0, rows).reshape([-1, k]).to_device(device),
            other_logprob: self.other.index_select(0, rows).reshape([-1]).to_device(device),
            sample: seqs.index_select(0, rows).narrow(1, 1, t - 1).reshape([-1]).to_device(device),
            valid: Tensor::ones([n], (Kind::Float, device)),
            is_struct: Tensor::zeros([n], (Kind::Float, device)),
        }
    }
}

/// Fine-tunes the whole model: `mix` holds the row kinds of every quantized matrix by module
/// path, `seqs` the calibration sequences, `teacher` their full-precision targets. `state_dir`
/// keeps the checkpoint (resumed from when it holds one). The variables end holding the
/// trained latents; what is packed is their quantization.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &CausalLM,
    vs: &nn::VarStore,
    mix: &HashMap<String, Vec<RowKind>>,
    seqs: &Tensor,
    teacher: &Teacher,
    opts: &FinetuneSection,
    device: Device,
    state_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<FinetuneReport> {
    let vars = vs.variables();
    let mut names: Vec<&String> = mix.keys().collect();
    names.sort();
    let mut mats: Vec<Matrix> = names
        .iter()
        .map(|k| {
            let var = vars
                .get(&format!("{k}.weight"))
                .ok_or_else(|| CompressError::Torch(format!("the model has no variable {k}.weight to fine-tune")))?;
            Ok(Matrix::new(var.shallow_clone(), &mix[*k], device))
        })
        .collect::<Result<_>>()?;
    let mut opt = AdamW::new(vars.iter().map(|(n, v)| (n.clone(), v.shallow_clone())).collect(), 0.9, 0.999, 0.0);
    let resumed_from = match checkpoint::saved_step(state_dir) {
        Some(_) => {
            let meta = checkpoint::load(state_dir, vs, &mut opt)?;
            log(&format!("finetune: resuming at step {}", meta.step));
            meta.step as usize
        }
        None => 0,
    };
    let n = seqs.size()[0];
    let every = (opts.steps / 10).max(1);
    let (mut losses, mut skipped) = (Vec::new(), 0usize);
    let mut window = Vec::new();
    for step in resumed_from..opts.steps {
        let (start, b) = crate::calib::cycled_batch(step, opts.batch, n);
        let rows = Tensor::arange_start(start, start + b, (Kind::Int64, Device::Cpu));
        let x = seqs.index_select(0, &rows).to_device(device);
        let targets = teacher.targets(&rows, seqs, device);
        opt.zero_grad();
        let loss = with_quantized(&mut mats, || -> Result<f64> {
            let logits = model.forward(&x);
            let (t, v) = (logits.size()[1], logits.size()[2]);
            let s = logits.narrow(1, 0, t - 1).reshape([-1, v]);
            let mut loss = topk_other_kl(&s, &targets, opts.temperature) * opts.kl_weight;
            if opts.ce_weight > 0.0 {
                loss += weighted_sample_ce(&s, &targets, &targets.valid) * opts.ce_weight;
            }
            loss.f_backward()?;
            Ok(loss.double_value(&[]))
        })?;
        let lr =
            opts.lr * lr_factor(LrSchedule::Cosine, step as u64, opts.steps as u64, opts.warmup as u64, MIN_LR_FRAC, 0);
        // A non-finite loss or gradient makes no update (clip_and_step refuses it); counted.
        let stepped = loss.is_finite() && opt.clip_and_step(lr, opts.clip).0.is_finite();
        if stepped {
            losses.push(loss);
        } else {
            skipped += 1;
        }
        window.push(loss);
        let done = step + 1;
        if done % every == 0 || done == opts.steps {
            let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
            log(&format!("finetune: step {done}/{} loss {mean:.4} lr {lr:.2e}", opts.steps));
            window.clear();
        }
        if opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0 && done < opts.steps {
            let meta = Meta {
                step: done as u64,
                rng_state: 0,
                best_ppl: 0.0,
                fp_ppl: 0.0,
                time_s: 0.0,
                adam_step: opt.step,
                seen_tokens: 0,
                flip: None,
            };
            checkpoint::save(state_dir, vs, &opt, &meta)?;
        }
    }
    opt.zero_grad();
    // None rather than NaN: summary.json must read back (NaN is written as null).
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let head = losses.len().min(5);
    Ok(FinetuneReport {
        steps: opts.steps,
        loss_first: mean(&losses[..head]),
        loss_last: mean(&losses[losses.len() - head..]),
        skipped,
        resumed_from,
    })
}
