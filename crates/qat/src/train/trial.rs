//! The QAT trial: load the full-precision model as a BitLinear student (and a frozen teacher),
//! train with the recipe's schedules, evaluate every N steps, checkpoint, and write the run
//! directory. Any failure ends the trial with `status: crash` and its reason in summary.json.

use super::data::{Rng, TrainData};
use super::health::{Gates, Health, HealthLog};
use super::loss::extra_loss;
use super::outputs::{RunFiles, StepRow, Summary};
use super::traces::TraceData;
use crate::error::{QatError, Result};
use crate::quant::code_fractions;
use crate::quant::schedule::Schedules;
use crate::student::{load_student, recipe_device, use_bf16, Student};
use autoqat_expr::LossExpr;
use autoqat_model::{
    load_causal_lm, CausalLM, EvalOptions, EvalReport, EvalSet, LoadedModel, PlainBuilder, TextTokenizer,
};
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

/// The trial's stages, in order: open (models, data, schedules, optimizer), begin (resume, or
/// score full precision), steps with their evals and checkpoints, finish (gates, export,
/// summary).
fn train(
    recipe: &Recipe,
    opts: &mut TrialOptions<'_>,
    files: &mut RunFiles,
    progress: &mut Progress,
    start: Instant,
) -> Result<Summary> {
    let mut t = Trainer::open(recipe, &opts.run_dir, files, progress)?;
    let first = t.begin(opts, files, progress)?;
    for step in first..t.total {
        let (lambda, lr) = t.step(step, files, progress, start)?;
        let done = step + 1;
        if done % recipe.budget.eval_every == 0 || done == t.total {
            t.eval_row(done, lambda, lr, opts, files, progress, start)?;
        }
        let ck = recipe.budget.checkpoint_every;
        if (ck > 0 && done % ck == 0) || done == t.total || opts.stop_after == Some(done) {
            t.checkpoint(done, opts, progress, start)?;
        }
        if opts.stop_after == Some(done) {
            files.log(&format!("stopped after step {done} as asked"));
            break;
        }
    }
    t.finish(opts, files, progress, start)
}

/// A trial between its steps: the student (and teacher) with their data, the schedules and the
/// optimizer, and what the steps so far measured.
struct Trainer<'r> {
    recipe: &'r Recipe,
    run_dir: PathBuf,
    device: Device,
    bf16: bool,
    student: Student,
    teacher: Option<LoadedModel>,
    data: Data,
    eval: EvalSet,
    sched: Schedules,
    /// Optimizer steps in all.
    total: u64,
    opt: AdamW,
    rng: Rng,
    extra: Option<LossExpr>,
    /// Activation bits before any A8 -> A4 flip, and those the evals use.
    base_bits: u32,
    final_bits: u32,
    /// Trace training flips to A4 after this many seen tokens.
    flip_at_tokens: Option<u64>,
    /// Training cross entropy past which the weights have blown up even if still finite.
    diverged_above: f64,
    /// Tokens trained on so far.
    seen: u64,
    /// The one-way A8 -> A4 flip: (step, seen tokens), once it happened.
    flip: Option<(u64, u64)>,
    health: HealthLog,
    best_ppl: f64,
    fp_ppl: f64,
    /// Training cross entropy summed since the last eval, and its count.
    interval: (f64, u64),
    last_report: Option<(EvalReport, [f64; 3], f64)>,
}

impl<'r> Trainer<'r> {
    /// Seeds, loads the student and teacher, reads the data and the eval set, and sets up the
    /// schedules and the optimizer.
    fn open(recipe: &'r Recipe, run_dir: &Path, files: &mut RunFiles, progress: &mut Progress) -> Result<Self> {
        let device = recipe_device(recipe)?;
        progress.device = autoqat_model::device_name(device);
        let meter = MemMeter::start(device);
        progress.mem = Some(meter);
        files.log(&format!("peak_mem_mb is the {}", meter.source()));
        let bf16 = use_bf16(recipe, device)?;
        // Seeded before anything draws from libtorch's generator, so a recipe reruns alike.
        tch::manual_seed(recipe.optim.seed as i64);
        let student = load_student(recipe, device)?;
        let teacher = if recipe.distill.enabled {
            let mut t = load_causal_lm(recipe.teacher_source(), device, Kind::Float, &PlainBuilder)?;
            t.vs.freeze();
            Some(t)
        } else {
            None
        };
        let tok = TextTokenizer::from_path(&student.loaded.dir)?;
        let data = Self::data(recipe, &tok, &student, files)?;
        let (batch, accum) = (recipe.optim.batch_size as usize, recipe.optim.grad_accum as usize);
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
        let opt = AdamW::new(vars, recipe.optim.beta1, recipe.optim.beta2, recipe.optim.weight_decay);
        let base_bits = recipe.activations.bits.bits().unwrap_or(0);
        // Trace training flips by the tokens it really saw; text training keeps its step fraction.
        let flip_at_tokens = (recipe.traces.enabled
            && recipe.activations.bits == autoqat_recipe::ActBits::A8
            && recipe.activations.a4_flip_frac < 1.0
            && recipe.budget.tokens > 0)
            .then(|| (recipe.activations.a4_flip_frac * recipe.budget.tokens as f64).ceil() as u64);
        let final_bits = if sched.a4_from.is_some() || flip_at_tokens.is_some() { 4 } else { base_bits };
        let diverged_above = 10.0 * (student.loaded.model.cfg.vocab_size as f64).ln();
        let extra = recipe.extra_loss().map_err(|e| QatError::Config(e.to_string()))?;
        Ok(Trainer {
            recipe,
            run_dir: run_dir.to_path_buf(),
            device,
            bf16,
            student,
            teacher,
            data,
            eval,
            sched,
            total,
            opt,
            rng: super::data::sampler_rng(recipe.optim.seed),
            extra,
            base_bits,
            final_bits,
            flip_at_tokens,
            diverged_above,
            seen: 0,
            flip: None,
            health: HealthLog::default(),
            best_ppl: f64::INFINITY,
            fp_ppl: f64::NAN,
            interval: (0.0, 0),
            last_report: None,
        })
    }

    /// The training data: teacher traces, or windows of the training text.
    fn data(recipe: &Recipe, tok: &TextTokenizer, student: &Student, files: &mut RunFiles) -> Result<Data> {
        if recipe.traces.enabled {
            let d = TraceData::load(
                Path::new(&recipe.traces.dir),
                tok,
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
            return Ok(Data::Traces(d));
        }
        let train_path = Path::new(&recipe.data.train_text);
        let train_text = std::fs::read_to_string(train_path).map_err(crate::error::io_err(train_path))?;
        let d = TrainData::new(encode_cached(tok, train_path, &train_text)?, recipe.data.seq_len as usize)
            .map_err(|m| QatError::Config(format!("{m} ({})", train_path.display())))?;
        files.log(&format!("train tokens {}", d.len()));
        Ok(Data::Text(d))
    }

    /// Where the steps start: the checkpoint's step on a resume, else 0 after scoring the
    /// full-precision model under the same protocol (the baseline every PPL is read against).
    fn begin(&mut self, opts: &TrialOptions<'_>, files: &mut RunFiles, progress: &mut Progress) -> Result<u64> {
        let mut first = 0;
        if opts.resume {
            let meta = checkpoint::load(&opts.run_dir, &self.student.loaded.vs, &mut self.opt)?;
            first = meta.step;
            self.rng.state = meta.rng_state;
            self.best_ppl = meta.best_ppl;
            self.fp_ppl = meta.fp_ppl;
            self.seen = meta.seen_tokens;
            self.flip = meta.flip;
            progress.prior_time_s = meta.time_s;
            files.log(&format!("resumed at step {first}"));
        } else {
            let fp_model = self.teacher.as_ref().map(|t| &t.model);
            self.student.state.set_lambda(0.0);
            self.student.state.set_act_bits(0);
            let r = evaluate(fp_model.unwrap_or(&self.student.loaded.model), &self.eval, self.device, self.bf16)?;
            self.fp_ppl = r.eval_ppl;
            files.log(&format!("fp_ppl {:.4} fp_bpb {:.4}", r.eval_ppl, r.eval_bpb));
        }
        progress.steps = first;
        progress.tokens =
            if matches!(self.data, Data::Traces(_)) { self.seen } else { first * self.recipe.tokens_per_step() };
        Ok(first)
    }

    /// Activation bits of a training step: 4 once the one-way A8 -> A4 flip happened.
    fn train_bits(&self) -> u32 {
        if self.flip.is_some() {
            4
        } else {
            self.base_bits
        }
    }

    /// The loss and the cross entropy of one micro-batch.
    fn micro_batch(&mut self) -> (Tensor, Tensor) {
        let (recipe, device, bf16) = (self.recipe, self.device, self.bf16);
        let batch = recipe.optim.batch_size as usize;
        let model = &self.student.loaded.model;
        match &self.data {
            Data::Text(d) => {
                let seq = recipe.data.seq_len as i64;
                let b = d.batch(batch, &mut self.rng, device);
                let inp = b.narrow(1, 0, seq);
                let tgt = b.narrow(1, 1, seq);
                let logits = tch::autocast(bf16, || model.forward(&inp));
                let ce = cross_entropy(&logits, &tgt);
                self.seen += (batch as u64) * seq as u64;
                let loss = match &self.teacher {
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
                let b = d.batch(batch, &mut self.rng, device);
                let logits = tch::autocast(bf16, || model.forward(&b.input));
                let v = logits.size()[2];
                let at = logits.reshape([-1, v]).index_select(0, &b.positions);
                let t = &b.targets;
                let tc = &recipe.traces;
                let ce = weighted_sample_ce(&at, t, &t.valid);
                let loss = topk_other_kl(&at, t, tc.temperature) * tc.kl_weight
                    + &ce * tc.ce_weight
                    + weighted_sample_ce(&at, t, &(&t.valid * &t.is_struct)) * tc.format_weight;
                self.seen += b.seen;
                (loss, ce)
            }
        }
    }

    /// One optimizer step (`grad_accum` micro-batches) at `step`; returns its lambda and lr.
    fn step(&mut self, step: u64, files: &mut RunFiles, progress: &mut Progress, start: Instant) -> Result<(f64, f64)> {
        let (recipe, total) = (self.recipe, self.total);
        let accum = recipe.optim.grad_accum as usize;
        let lambda = self.sched.lambda(step);
        let lr = self.sched.lr(step);
        self.student.state.set_lambda(lambda);
        // One-way: once flipped by steps or by seen tokens, 4-bit activations stay.
        if self.flip.is_none()
            && (self.sched.a4_from.is_some_and(|f| step >= f) || self.flip_at_tokens.is_some_and(|t| self.seen >= t))
        {
            self.flip = Some((step, self.seen));
            files.log(&format!("a8->a4 flip at step {step} after {} seen tokens", self.seen));
        }
        self.student.state.set_act_bits(self.train_bits());
        self.opt.zero_grad();
        let mut ce_sum = 0.0;
        let mut loss_sum = 0.0;
        for _ in 0..accum {
            let (loss, ce) = self.micro_batch();
            let loss = match &self.extra {
                Some(e) => loss + extra_loss(e, &self.student.handles, step, total).to_device(self.device),
                None => loss,
            };
            let loss_v = loss.double_value(&[]);
            let ce_v = ce.double_value(&[]);
            if !loss_v.is_finite() {
                self.health.nan_count += 1;
                // The trial ends on this loss: health.json records it for the report and a
                // reviewer (the error already names it; a failed write must not hide that).
                let h = Health::now(step, self.seen, self.flip.is_some(), self.train_bits(), &self.health);
                let _ = h.write(&self.run_dir);
            }
            finite(loss_v, "the training loss", step + 1, lr)?;
            // Far worse than guessing uniformly: the weights have blown up even if still finite.
            if ce_v > self.diverged_above {
                return Err(QatError::NonFinite(format!(
                    "the training cross entropy {ce_v:.1} at step {} is far above ln(vocab) = {:.2}; the trial diverged (hint: lower optim.lr, now {:.3e}, or set optim.grad_clip)",
                    step + 1,
                    self.diverged_above / 10.0,
                    lr
                )));
            }
            (loss / accum as f64).backward();
            ce_sum += ce_v;
            loss_sum += loss_v;
        }
        let ce_mean = ce_sum / accum as f64;
        let (norm, clipped) = self.opt.clip_and_step(lr, recipe.optim.grad_clip);
        finite(norm, "the gradient norm", step + 1, lr)?;
        let done = step + 1;
        progress.steps = done;
        progress.tokens = self.seen;
        let post_clip = if clipped { recipe.optim.grad_clip } else { norm };
        self.health.push(loss_sum / accum as f64, post_clip);
        self.interval.0 += ce_mean;
        self.interval.1 += 1;
        files.log(&format!("step {done} lambda {lambda:.6} lr {lr:.6e} ce {ce_mean:.17} grad_norm {norm:.6}"));
        // Separate line: timings differ between runs, the step lines above must not.
        files.log(&format!("timing step {done} wall_s {:.4}", start.elapsed().as_secs_f64()));
        Ok((lambda, lr))
    }

    /// Scores the fully quantized student after step `done` and writes its steps.tsv row.
    #[allow(clippy::too_many_arguments)]
    fn eval_row(
        &mut self,
        done: u64,
        lambda: f64,
        lr: f64,
        opts: &mut TrialOptions<'_>,
        files: &mut RunFiles,
        progress: &Progress,
        start: Instant,
    ) -> Result<()> {
        self.student.state.set_lambda(1.0);
        self.student.state.set_act_bits(self.final_bits);
        let report = evaluate(&self.student.loaded.model, &self.eval, self.device, self.bf16)?;
        finite(report.eval_ppl, "the eval perplexity", done, lr)?;
        let fr = code_fractions(&self.student.handles);
        self.best_ppl = self.best_ppl.min(report.eval_ppl);
        let train_loss = self.interval.0 / self.interval.1 as f64;
        let row = StepRow {
            step: done,
            lambda,
            train_loss,
            train_ppl: train_loss.exp(),
            eval_ppl: report.eval_ppl,
            eval_bpb: report.eval_bpb,
            lr,
            time_s: progress.time_s(start),
            best_ppl: self.best_ppl,
            q_neg1: fr[0],
            q_zero: fr[1],
            q_pos1: fr[2],
        };
        files.row(&row)?;
        files.log(&format!("eval step {done} eval_ppl {:.4} eval_bpb {:.4}", report.eval_ppl, report.eval_bpb));
        if let Some(cb) = opts.on_row.as_mut() {
            cb(&row);
        }
        self.last_report = Some((report, fr, train_loss));
        self.interval = (0.0, 0);
        Ok(())
    }

    /// Saves the weights, the optimizer and the position after step `done`, and health.json.
    fn checkpoint(&self, done: u64, opts: &TrialOptions<'_>, progress: &Progress, start: Instant) -> Result<()> {
        let meta = checkpoint::Meta {
            step: done,
            rng_state: self.rng.state,
            best_ppl: self.best_ppl,
            fp_ppl: self.fp_ppl,
            time_s: progress.time_s(start),
            adam_step: self.opt.step,
            seen_tokens: self.seen,
            flip: self.flip,
        };
        checkpoint::save(&opts.run_dir, &self.student.loaded.vs, &self.opt, &meta)?;
        Health::now(done, self.seen, self.flip.is_some(), self.train_bits(), &self.health).write(&opts.run_dir)?;
        Ok(())
    }

    /// The trace track's gates, the exports of a finished trial, and its summary.
    fn finish(
        self,
        opts: &TrialOptions<'_>,
        files: &mut RunFiles,
        progress: &Progress,
        start: Instant,
    ) -> Result<Summary> {
        let recipe = self.recipe;
        if recipe.traces.enabled {
            let gates = Gates::check(
                &self.health,
                self.flip,
                self.flip_at_tokens,
                self.sched.a4_from,
                recipe.budget.tokens,
                self.total,
            );
            for line in gates.lines() {
                files.log(&line);
            }
            gates.write(&opts.run_dir)?;
        }
        if opts.export && opts.stop_after.is_none_or(|s| s >= self.total) {
            self.student.state.set_lambda(1.0);
            self.student.state.set_act_bits(self.final_bits);
            crate::export::export_all(recipe, &self.student, &opts.run_dir)?;
            files.log("exported packed model to export/ and a dequantized HF model to hf/");
        }
        let r = self.last_report.as_ref();
        Ok(Summary {
            status: "ok".into(),
            eval_ppl: r.map(|r| r.0.eval_ppl),
            eval_bpb: r.map(|r| r.0.eval_bpb),
            eval_loss: r.map(|r| r.0.eval_loss),
            train_loss: r.map(|r| r.2),
            steps: progress.steps,
            tokens: progress.tokens,
            time_s: progress.time_s(start),
            peak_mem_mb: progress.peak_mem_mb(),
            device: progress.device.clone(),
            q_neg1: r.map(|r| r.1[0]),
            q_zero: r.map(|r| r.1[1]),
            q_pos1: r.map(|r| r.1[2]),
            fp_ppl: Some(self.fp_ppl),
            error: None,
            ..Summary::default()
        })
    }
}
