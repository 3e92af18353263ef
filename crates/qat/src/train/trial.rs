//! The QAT trial: load the full-precision model as a BitLinear student (and a frozen teacher),
//! train with the recipe's schedules, evaluate every N steps, checkpoint, and write the run
//! directory. Any failure ends the trial with `status: crash` and its reason in summary.json.

use super::data::TrainData;
use super::health::{Gates, Health, HealthLog};
use super::loss::extra_loss;
use super::outputs::{RunFiles, StepRow, Summary};
use super::traces::TraceData;
use crate::error::{QatError, Result};
use crate::quant::code_fractions;
use crate::quant::schedule::Schedules;
use crate::student::{load_student, recipe_device, use_bf16};
use autoqat_model::{load_causal_lm, CausalLM, EvalOptions, EvalReport, EvalSet, PlainBuilder, TextTokenizer};
use autoqat_recipe::Recipe;
use autoqat_toolkit::checkpoint;
use autoqat_toolkit::loss::{cross_entropy, distill_kl, topk_other_kl, weighted_sample_ce};
use autoqat_toolkit::optim::AdamW;
use autoqat_toolkit::resources::{peak_rss_mb, MemMeter};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How to run a trial (everything that is not part of the recipe).
pub struct TrialOptions<'a> {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Continue from the checkpoint in `run_dir`.
    pub resume: bool,
    /// Stop (without the final export) after this many steps; for tests of `--resume`.
    pub stop_after: Option<u64>,
    /// Write the packed and HF exports at the end.
    pub export: bool,
    /// Called with each steps.tsv row as it is written.
    pub on_row: Option<&'a mut dyn FnMut(&StepRow)>,
}

impl<'a> TrialOptions<'a> {
    /// A fresh trial in `run_dir` with exports.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self { run_dir: run_dir.into(), resume: false, stop_after: None, export: true, on_row: None }
    }
}

/// The ids of the text at `path` read from the token cache `autoqat prepare` fills (when it
/// matches this text and tokenizer), else encoded here.
fn encode_cached(tok: &TextTokenizer, path: &Path, text: &str) -> Result<Vec<i64>> {
    let cached = std::fs::read(tok.path()).ok().and_then(|json| autoqat_workspace::tokens::lookup(path, text, &json));
    match cached {
        Some(ids) => Ok(ids.into_iter().map(i64::from).collect()),
        None => Ok(tok.encode(text)?),
    }
}

/// The recipe's eval set: its eval text cut to `data.eval_max_tokens`, scored in sliding
/// windows of `data.eval_ctx` every `data.eval_stride` tokens.
pub fn eval_set(tok: &TextTokenizer, recipe: &Recipe) -> Result<EvalSet> {
    let path = Path::new(&recipe.data.eval_text);
    let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
    let opts = EvalOptions { ctx: recipe.data.eval_ctx as usize, stride: recipe.data.eval_stride as usize, batch: 4 };
    if recipe.data.eval_max_tokens == 0 {
        return Ok(EvalSet::windows(encode_cached(tok, path, &text)?, text.len(), opts));
    }
    Ok(EvalSet::windows_of_text(tok, &text, opts, recipe.data.eval_max_tokens as usize)?)
}

/// Scores `model` on `set`, under bf16 autocast when the trial trains in it.
pub fn evaluate(model: &CausalLM, set: &EvalSet, device: Device, bf16: bool) -> Result<EvalReport> {
    Ok(tch::autocast(bf16, || set.score(model, device))?)
}

/// Where training batches come from.
enum Data {
    /// Random windows of the training text.
    Text(TrainData),
    /// Teacher traces with Top-K+Other targets.
    Traces(TraceData),
}

/// Runs a trial; always writes summary.json and returns the summary (status `crash` with the
/// reason on any failure).
pub fn run_trial(recipe: &Recipe, mut opts: TrialOptions<'_>) -> Summary {
    let start = Instant::now();
    let mut files =
        match RunFiles::open(&opts.run_dir, if opts.resume { checkpoint::saved_step(&opts.run_dir) } else { None }) {
            Ok(f) => f,
            Err(e) => {
                let s = crash_summary(&e.to_string(), &Progress { device: "?".into(), ..Progress::default() }, start);
                let _ = super::outputs::write_summary(&opts.run_dir, &s);
                return s;
            }
        };
    let mut progress = Progress::default();
    let summary = match train(recipe, &mut opts, &mut files, &mut progress, start) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            files.log(&format!("crash: {msg}"));
            crash_summary(&msg, &progress, start)
        }
    };
    if let Err(e) = files.summary(&summary) {
        files.log(&format!("cannot write summary.json: {e}"));
    }
    summary
}

fn crash_summary(msg: &str, progress: &Progress, start: Instant) -> Summary {
    Summary {
        status: "crash".into(),
        eval_ppl: None,
        eval_bpb: None,
        eval_loss: None,
        train_loss: None,
        steps: progress.steps,
        tokens: progress.tokens,
        time_s: progress.time_s(start),
        peak_mem_mb: progress.peak_mem_mb(),
        device: progress.device.clone(),
        q_neg1: None,
        q_zero: None,
        q_pos1: None,
        fp_ppl: None,
        error: Some(msg.into()),
        ..Summary::default()
    }
}

/// What the crash summary needs to know about how far a trial got.
#[derive(Default)]
struct Progress {
    steps: u64,
    tokens: u64,
    prior_time_s: f64,
    device: String,
    mem: Option<MemMeter>,
}

impl Progress {
    fn time_s(&self, start: Instant) -> f64 {
        self.prior_time_s + start.elapsed().as_secs_f64()
    }

    fn peak_mem_mb(&self) -> f64 {
        self.mem.map_or_else(peak_rss_mb, |m| m.peak_mb())
    }
}

fn finite(x: f64, what: &str, step: u64, lr: f64) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(QatError::NonFinite(format!(
            "{what} is {x} at step {step} (lr {lr:.3e}); the trial diverged (hint: lower optim.lr or set optim.grad_clip)"
        )))
    }
}

fn train(
    recipe: &Recipe,
    opts: &mut TrialOptions<'_>,
    files: &mut RunFiles,
    progress: &mut Progress,
    start: Instant,
) -> Result<Summary> {
    let device = recipe_device(recipe)?;
    progress.device = autoqat_model::device_name(device);
    let meter = MemMeter::start(device);
    progress.mem = Some(meter);
    files.log(&format!("peak_mem_mb is the {}", meter.source()));
    let bf16 = use_bf16(recipe, device)?;
    tch::manual_seed(recipe.optim.seed as i64);
    let student = load_student(recipe, device)?;
    let model = &student.loaded.model;
    let teacher = if recipe.distill.enabled {
        let mut t = load_causal_lm(recipe.teacher_source(), device, Kind::Float, &PlainBuilder)?;
        t.vs.freeze();
        Some(t)
    } else {
        None
    };
    let tok = TextTokenizer::from_path(&student.loaded.dir)?;
    let (batch, accum, seq) =
        (recipe.optim.batch_size as usize, recipe.optim.grad_accum as usize, recipe.data.seq_len as i64);
    let data = if recipe.traces.enabled {
        let d = TraceData::load(
            Path::new(&recipe.traces.dir),
            &tok,
            &student.loaded.dir.join("tokenizer.json"),
            recipe.traces.top_k as usize,
            recipe.data.seq_len as usize,
        )?;
        files.log(&format!(
            "traces {}: {} sequences, {:.1} valid positions each, {} rows dropped",
            recipe.traces.dir,
            d.len(),
            d.mean_valid_per_seq(),
            d.dropped_rows
        ));
        Data::Traces(d)
    } else {
        let train_path = Path::new(&recipe.data.train_text);
        let train_text = std::fs::read_to_string(train_path).map_err(crate::error::io_err(train_path))?;
        let d = TrainData::new(encode_cached(&tok, train_path, &train_text)?, recipe.data.seq_len as usize)
            .map_err(|m| QatError::Config(format!("{m} ({})", train_path.display())))?;
        files.log(&format!("train tokens {}", d.len()));
        Data::Text(d)
    };
    // A token budget counts the tokens really trained on: trace sequences are shorter than
    // data.seq_len, so their step count comes from their mean length.
    let total = match &data {
        Data::Traces(d) if recipe.budget.tokens > 0 => {
            let per_step = (batch * accum) as f64 * d.mean_valid_per_seq().max(1e-9);
            ((recipe.budget.tokens as f64 / per_step).ceil() as u64).max(1)
        }
        _ => recipe.total_steps(),
    };
    let sched = Schedules::with_total(recipe, total);
    files.log(&format!("recipe:\n{}", recipe.to_toml()));
    files.log(&format!(
        "device {} bf16 {bf16} steps {total} tokens/step {}",
        progress.device,
        recipe.tokens_per_step()
    ));
    let eval = eval_set(&tok, recipe)?;
    files.log(&format!("eval tokens {} eval bytes {}", eval.text_tokens(), eval.n_bytes()));

    let vars: Vec<(String, Tensor)> =
        student.loaded.vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).collect();
    let mut opt = AdamW::new(vars, recipe.optim.beta1, recipe.optim.beta2, recipe.optim.weight_decay);
    let mut rng = super::data::sampler_rng(recipe.optim.seed);
    let base_bits = recipe.activations.bits.bits().unwrap_or(0);
    // Trace training flips by the tokens it really saw; text training keeps its step fraction.
    let flip_at_tokens = (recipe.traces.enabled
        && recipe.activations.bits == autoqat_recipe::ActBits::A8
        && recipe.activations.a4_flip_frac < 1.0
        && recipe.budget.tokens > 0)
        .then(|| (recipe.activations.a4_flip_frac * recipe.budget.tokens as f64).ceil() as u64);
    let final_bits = if sched.a4_from.is_some() || flip_at_tokens.is_some() { 4 } else { base_bits };
    let mut seen: u64 = 0;
    let mut flip: Option<(u64, u64)> = None;
    // Activation bits of a training step: 4 once the one-way A8 -> A4 flip happened.
    let train_bits = |flip: &Option<(u64, u64)>| if flip.is_some() { 4 } else { base_bits };
    let mut health = HealthLog::default();

    let mut first = 0u64;
    let mut best_ppl = f64::INFINITY;
    let fp_ppl;
    if opts.resume {
        let meta = checkpoint::load(&opts.run_dir, &student.loaded.vs, &mut opt)?;
        first = meta.step;
        rng.state = meta.rng_state;
        best_ppl = meta.best_ppl;
        fp_ppl = meta.fp_ppl;
        seen = meta.seen_tokens;
        flip = meta.flip;
        progress.prior_time_s = meta.time_s;
        files.log(&format!("resumed at step {first}"));
    } else {
        // The baseline: the full-precision model under the same protocol.
        let fp_model = teacher.as_ref().map(|t| &t.model);
        student.state.set_lambda(0.0);
        student.state.set_act_bits(0);
        let r = evaluate(fp_model.unwrap_or(model), &eval, device, bf16)?;
        fp_ppl = r.eval_ppl;
        files.log(&format!("fp_ppl {:.4} fp_bpb {:.4}", r.eval_ppl, r.eval_bpb));
    }
    progress.steps = first;
    progress.tokens = if matches!(data, Data::Traces(_)) { seen } else { first * recipe.tokens_per_step() };

    let diverged_above = 10.0 * (model.cfg.vocab_size as f64).ln();
    let extra = recipe.extra_loss().map_err(|e| QatError::Config(e.to_string()))?;
    let mut interval_loss = 0.0;
    let mut interval_n = 0u64;
    let mut last_report: Option<(EvalReport, [f64; 3], f64)> = None;
    let mut last_train = None;
    for step in first..total {
        let lambda = sched.lambda(step);
        let lr = sched.lr(step);
        student.state.set_lambda(lambda);
        // One-way: once flipped by steps or by seen tokens, 4-bit activations stay.
        if flip.is_none() && (sched.a4_from.is_some_and(|f| step >= f) || flip_at_tokens.is_some_and(|t| seen >= t)) {
            flip = Some((step, seen));
            files.log(&format!("a8->a4 flip at step {step} after {seen} seen tokens"));
        }
        student.state.set_act_bits(train_bits(&flip));
        opt.zero_grad();
        let mut ce_sum = 0.0;
        let mut loss_sum = 0.0;
        for _ in 0..accum {
            let (loss, ce) = match &data {
                Data::Text(d) => {
                    let b = d.batch(batch, &mut rng, device);
                    let inp = b.narrow(1, 0, seq);
                    let tgt = b.narrow(1, 1, seq);
                    let logits = tch::autocast(bf16, || model.forward(&inp));
                    let ce = cross_entropy(&logits, &tgt);
                    seen += (batch as u64) * seq as u64;
                    let loss = match &teacher {
                        Some(t) => {
                            let tl = tch::no_grad(|| tch::autocast(bf16, || t.model.forward(&inp)));
                            let kl = distill_kl(&logits, &tl, recipe.distill.temperature);
                            &ce * recipe.distill.ce_weight + kl * recipe.distill.kl_weight
                        }
                        None => ce.shallow_clone(),
                    };
                    (loss, ce)
                }
                Data::Traces(d) => {
                    let b = d.batch(batch, &mut rng, device);
                    let logits = tch::autocast(bf16, || model.forward(&b.input));
                    let v = logits.size()[2];
                    let at = logits.reshape([-1, v]).index_select(0, &b.positions);
                    let t = &b.targets;
                    let tc = &recipe.traces;
                    let ce = weighted_sample_ce(&at, t, &t.valid);
                    let loss = topk_other_kl(&at, t, tc.temperature) * tc.kl_weight
                        + &ce * tc.ce_weight
                        + weighted_sample_ce(&at, t, &(&t.valid * &t.is_struct)) * tc.format_weight;
                    seen += b.seen;
                    (loss, ce)
                }
            };
            let loss = match &extra {
                Some(e) => loss + extra_loss(e, &student.handles, step, total).to_device(device),
                None => loss,
            };
            let loss_v = loss.double_value(&[]);
            let ce_v = ce.double_value(&[]);
            if !loss_v.is_finite() {
                health.nan_count += 1;
                // The trial ends on this loss: health.json records it for the report and a
                // reviewer (the error already names it; a failed write must not hide that).
                let _ = Health::now(step, seen, flip.is_some(), train_bits(&flip), &health).write(&opts.run_dir);
            }
            finite(loss_v, "the training loss", step + 1, lr)?;
            // Far worse than guessing uniformly: the weights have blown up even if still finite.
            if ce_v > diverged_above {
                return Err(QatError::NonFinite(format!(
                    "the training cross entropy {ce_v:.1} at step {} is far above ln(vocab) = {:.2}; the trial diverged (hint: lower optim.lr, now {:.3e}, or set optim.grad_clip)",
                    step + 1,
                    diverged_above / 10.0,
                    lr
                )));
            }
            (loss / accum as f64).backward();
            ce_sum += ce_v;
            loss_sum += loss_v;
        }
        let ce_mean = ce_sum / accum as f64;
        let (norm, clipped) = opt.clip_and_step(lr, recipe.optim.grad_clip);
        finite(norm, "the gradient norm", step + 1, lr)?;
        let done = step + 1;
        progress.steps = done;
        progress.tokens = seen;
        let post_clip = if clipped { recipe.optim.grad_clip } else { norm };
        health.push(loss_sum / accum as f64, post_clip);
        interval_loss += ce_mean;
        interval_n += 1;
        files.log(&format!("step {done} lambda {lambda:.6} lr {lr:.6e} ce {ce_mean:.17} grad_norm {norm:.6}"));
        // Separate line: timings differ between runs, the step lines above must not.
        files.log(&format!("timing step {done} wall_s {:.4}", start.elapsed().as_secs_f64()));

        if done % recipe.budget.eval_every == 0 || done == total {
            student.state.set_lambda(1.0);
            student.state.set_act_bits(final_bits);
            let report = evaluate(model, &eval, device, bf16)?;
            finite(report.eval_ppl, "the eval perplexity", done, lr)?;
            let fr = code_fractions(&student.handles);
            best_ppl = best_ppl.min(report.eval_ppl);
            let train_loss = interval_loss / interval_n as f64;
            let row = StepRow {
                step: done,
                lambda,
                train_loss,
                train_ppl: train_loss.exp(),
                eval_ppl: report.eval_ppl,
                eval_bpb: report.eval_bpb,
                lr,
                time_s: progress.time_s(start),
                best_ppl,
                q_neg1: fr[0],
                q_zero: fr[1],
                q_pos1: fr[2],
            };
            files.row(&row)?;
            files.log(&format!("eval step {done} eval_ppl {:.4} eval_bpb {:.4}", report.eval_ppl, report.eval_bpb));
            if let Some(cb) = opts.on_row.as_mut() {
                cb(&row);
            }
            last_train = Some(train_loss);
            last_report = Some((report, fr, train_loss));
            interval_loss = 0.0;
            interval_n = 0;
        }
        let ck = recipe.budget.checkpoint_every;
        if (ck > 0 && done % ck == 0) || done == total || opts.stop_after == Some(done) {
            let meta = checkpoint::Meta {
                step: done,
                rng_state: rng.state,
                best_ppl,
                fp_ppl,
                time_s: progress.time_s(start),
                adam_step: opt.step,
                seen_tokens: seen,
                flip,
            };
            checkpoint::save(&opts.run_dir, &student.loaded.vs, &opt, &meta)?;
            Health::now(done, seen, flip.is_some(), train_bits(&flip), &health).write(&opts.run_dir)?;
        }
        if opts.stop_after == Some(done) {
            files.log(&format!("stopped after step {done} as asked"));
            break;
        }
    }
    let summary_from = |r: Option<&(EvalReport, [f64; 3], f64)>| Summary {
        status: "ok".into(),
        eval_ppl: r.map(|r| r.0.eval_ppl),
        eval_bpb: r.map(|r| r.0.eval_bpb),
        eval_loss: r.map(|r| r.0.eval_loss),
        train_loss: last_train,
        steps: progress.steps,
        tokens: progress.tokens,
        time_s: progress.time_s(start),
        peak_mem_mb: progress.peak_mem_mb(),
        device: progress.device.clone(),
        q_neg1: r.map(|r| r.1[0]),
        q_zero: r.map(|r| r.1[1]),
        q_pos1: r.map(|r| r.1[2]),
        fp_ppl: Some(fp_ppl),
        error: None,
        ..Summary::default()
    };
    if recipe.traces.enabled {
        let gates = Gates::check(&health, flip, flip_at_tokens, sched.a4_from, recipe.budget.tokens, total);
        for line in gates.lines() {
            files.log(&line);
        }
        gates.write(&opts.run_dir)?;
    }
    if opts.export && opts.stop_after.is_none_or(|s| s >= total) {
        student.state.set_lambda(1.0);
        student.state.set_act_bits(final_bits);
        crate::export::export_all(recipe, &student, &opts.run_dir)?;
        files.log("exported packed model to export/ and a dequantized HF model to hf/");
    }
    Ok(summary_from(last_report.as_ref()))
}
