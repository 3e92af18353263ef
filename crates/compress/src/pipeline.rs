//! `autoqat compress`: from a Hugging Face checkpoint to a budgeted artifact, stage by stage:
//! load (and widen), plan the budget, score full precision, the fine-tune's teacher, calibrate
//! and allocate, distill, fine-tune, apply, evaluate, pack; each a method of one run context. Verification in a fresh process is
//! the CLI's (it owns the binary); everything it needs is in the [`Summary`].

use autoqat_workspace::run;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use autoqat_model::offload::layer_prefix;
use autoqat_model::{
    load_offloaded, parse_device, DocEvalOptions, EvalReport, EvalSet, LayerHook, LoadedModel, Offload, TextTokenizer,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::allocate::{all_cheapest_bits, allocate, over_budget_hint};
use crate::artifact::{self, TextFiles};
use crate::calib::{self, Recorder};
use crate::distill::BlockReport;
use crate::error::{io_err, CompressError, Result};
use crate::finetune::{FinetuneReport, Teacher};
use crate::recipe::CompressRecipe;
use crate::resume::ResumeState;
use crate::rows::{self, RowKind};
use crate::score::{targets, weight, Calibration, Target};
use crate::widen::WidenReport;

/// Resume files: the full-precision score, the fine-tune's teacher, the allocation.
const FP_FILE: &str = "fp.json";
const TEACHER_FILE: &str = "teacher.safetensors";
const MIX_FILE: &str = "mix.json";

/// The model's decoder layers: offloaded (read in as passes reach them, see
/// [`autoqat_model::offload`]), or all resident (widened, or `model.offload = false`, or a
/// stage that needs the whole model at once).
struct Paging(Option<Arc<Offload>>);

impl Paging {
    fn enter(&self, layer: usize) {
        if let Some(o) = &self.0 {
            o.enter(layer);
        }
    }

    /// Read errors since the last check.
    fn check(&self) -> Result<()> {
        match &self.0 {
            Some(o) => Ok(o.check()?),
            None => Ok(()),
        }
    }

    fn release(&self) {
        if let Some(o) = &self.0 {
            o.release();
        }
    }

    /// Keeps layer `layer`'s current weights for later passes (a file under `dir`).
    fn write_back(&self, layer: usize, dir: &Path) -> Result<()> {
        match &self.0 {
            Some(o) => {
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                Ok(o.write_back(layer, &dir.join(format!("layer-{layer}.safetensors")))?)
            }
            None => Ok(()),
        }
    }

    fn redirect(&self, layer: usize, file: &Path) -> Result<()> {
        match &self.0 {
            Some(o) => Ok(o.redirect(layer, file)?),
            None => Ok(()),
        }
    }
}

/// The row mix of one matrix, for the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixMix {
    /// Module path.
    pub name: String,
    /// `[rows, in]`.
    pub shape: [i64; 2],
    /// Rows per kind.
    pub rows: HashMap<RowKind, usize>,
    /// Bits of codes and scales (not the per-row kind codes).
    pub bits: i64,
    /// `|W - Q(W)|²` over the matrix.
    pub sq_err: f64,
    /// `|W|²`.
    pub sq_norm: f64,
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageTimes {
    /// Loading the model and tokenizing.
    pub load_s: f64,
    /// Net2Net widening (0 when off).
    pub widen_s: f64,
    /// Full-precision evaluation.
    pub fp_eval_s: f64,
    /// Calibration forward (and, for fisher, backward) passes, and with them the sensitivity of
    /// every row for every kind (one layer-by-layer pass).
    pub calibrate_s: f64,
    /// The allocation.
    pub allocate_s: f64,
    /// Layerwise distillation (0 when off).
    pub distill_s: f64,
    /// The fine-tune's teacher targets (0 when off).
    #[serde(default)]
    pub teacher_s: f64,
    /// End-to-end fine-tune (0 when off).
    #[serde(default)]
    pub finetune_s: f64,
    /// Quantizing the chosen kinds into the model.
    pub apply_s: f64,
    /// Evaluation of the compressed model.
    pub eval_s: f64,
    /// Writing the directory and the zip.
    pub pack_s: f64,
}

/// `summary.json` of a compress run: the trial contract every run directory has
/// (docs/contracts.md#the-trial; owned by `autoqat_workspace`; here `eval_ppl` is the compressed model's PPL by the
/// validator's protocol and `fp_ppl` the full-precision model's on the same documents), plus
/// the artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// status, eval_ppl/eval_loss/eval_bpb, fp_ppl, device, time_s, error.
    #[serde(flatten)]
    pub run: autoqat_workspace::Summary,
    /// Tokens scored.
    pub eval_tokens: usize,
    /// Documents scored.
    pub eval_docs: usize,
    /// SHA-256 of the zip.
    pub artifact_sha256: String,
    /// The zip.
    pub artifact_zip: PathBuf,
    /// The unzipped directory.
    pub artifact_dir: PathBuf,
    /// Parameters as transformers counts them (tied weights once).
    pub param_count: i64,
    /// The budget in bits per parameter.
    pub budget_bpp: f64,
    /// `ceil(param_count * budget_bpp)`.
    pub budget_bits: i64,
    /// What ranked the rows.
    pub sensitivity: String,
    /// `Σ|W - Q(W)|² / Σ|W|²` over every quantized matrix: the weight-space proxy, kept so a
    /// frontier can flag runs where it improves while the PPL worsens.
    pub weight_rel_mse: f64,
    /// SHA-256 of the `tokenizer.json` that tokenized the eval documents.
    pub tokenizer_sha256: String,
    /// Rows per kind over the whole model.
    pub mix: HashMap<RowKind, usize>,
    /// Share of the parameters in q4 rows (the track's rules allow at most 10%).
    #[serde(default)]
    pub q4_share: f64,
    /// Per stage.
    pub stages: StageTimes,
    /// What widening did, when it ran.
    #[serde(default)]
    pub widen: Option<crate::widen::WidenReport>,
    /// Per block, when layerwise distillation ran: output MSE before and after.
    #[serde(default)]
    pub distill: Vec<crate::distill::BlockReport>,
    /// What the end-to-end fine-tune did, when it ran.
    #[serde(default)]
    pub finetune: Option<crate::finetune::FinetuneReport>,
    /// PPL of the zip reloaded from disk in a fresh process (the CLI's verify stage).
    pub verify_ppl: Option<f64>,
    /// Whether decoder layers were read in one at a time (memory of one layer, not the model).
    #[serde(default)]
    pub offloaded: bool,
}

impl Summary {
    /// The compressed model's PPL (NaN when missing).
    pub fn eval_ppl(&self) -> f64 {
        self.run.eval_ppl.unwrap_or(f64::NAN)
    }

    /// The full-precision model's PPL on the same documents (NaN when missing).
    pub fn fp_ppl(&self) -> f64 {
        self.run.fp_ppl.unwrap_or(f64::NAN)
    }

    /// Bytes of the zip (`i64::MAX` when missing, so that it never looks small).
    pub fn artifact_size_bytes(&self) -> i64 {
        self.run.artifact_size_bytes.unwrap_or(i64::MAX)
    }

    /// `artifact_size_bytes * 8 / param_count` (NaN when missing).
    pub fn bits_per_param(&self) -> f64 {
        self.run.bits_per_param.unwrap_or(f64::NAN)
    }
}

/// Progress lines go through this, so a CLI prints them and a test can keep them.
pub type Log<'a> = &'a mut dyn FnMut(&str);

fn timed<T>(slot: &mut f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let out = f();
    *slot = t.elapsed().as_secs_f64();
    out
}

/// The validator's documents of the recipe's eval text.
pub fn eval_documents(recipe: &CompressRecipe, tok: &TextTokenizer) -> Result<EvalSet> {
    let path = recipe.resolve(&recipe.eval.text);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let opts = DocEvalOptions { max_tokens: recipe.eval.doc_tokens, batch: recipe.eval.batch };
    Ok(EvalSet::documents(tok, &text, opts, recipe.eval.max_docs)?)
}

/// Checks a packed artifact before the run counts as finished (the CLI reloads the zip in a
/// fresh process); returns the PPL it measured, or None when verification is off.
pub type Verify<'a> = &'a mut dyn FnMut(&Summary) -> Result<Option<f64>>;

/// Runs the whole compression described by `recipe`, writing into `run_dir`, and `verify`s the
/// artifact. With `resume`, continues a killed run of the same recipe in `run_dir` from what it
/// saved (the full-precision score, the teacher, the allocation, each distilled block, the
/// fine-tune's last checkpoint); the saved state is dropped only once the artifact verified, so
/// a run killed while verifying resumes and verifies again.
///
/// Either way `run_dir/summary.json` says how it ended: this summary, or a crash summary with
/// the error (the research loop reads a failed compression as it reads a crashed trial).
pub fn compress(recipe: &CompressRecipe, run_dir: &Path, resume: bool, log: Log, verify: Verify) -> Result<Summary> {
    let start = Instant::now();
    let result = run_stages(recipe, run_dir, resume, log, verify, start);
    match &result {
        Ok(summary) => write_json(&run_dir.join(run::SUMMARY_FILE), summary)?,
        Err(e) => {
            let crash = autoqat_workspace::Summary {
                status: "crash".into(),
                error: Some(e.to_string()),
                device: recipe.model.device.clone(),
                time_s: start.elapsed().as_secs_f64(),
                peak_mem_mb: autoqat_toolkit::resources::peak_rss_mb(),
                ..autoqat_workspace::Summary::default()
            };
            // The error is what the caller must see; a crash summary that cannot be written
            // (no run directory) must not replace it.
            if std::fs::create_dir_all(run_dir).is_ok() {
                let _ = run::write_summary(run_dir, &crash);
            }
        }
    }
    result
}

/// A compression between its stages: what every stage reads, the resume state and the clock.
struct Run<'a, 'l> {
    recipe: &'a CompressRecipe,
    run_dir: &'a Path,
    state: ResumeState,
    device: Device,
    recorder: Recorder,
    times: StageTimes,
    log: Log<'l>,
    start: Instant,
}

/// The model as the stages see it: loaded (and widened), its calibration and eval inputs, its
/// variables and their full shapes.
struct Model {
    loaded: LoadedModel,
    paging: Paging,
    calib: Tensor,
    docs: EvalSet,
    /// The artifact's config: the text decoder's, widened where the model was.
    config: serde_json::Value,
    widened: Option<WidenReport>,
    vars: HashMap<String, Tensor>,
    /// Full shapes: an offloaded layer's variables are empty while it is not resident.
    shapes: HashMap<String, Vec<i64>>,
}

impl Model {
    fn numel(&self, name: &str) -> i64 {
        self.shapes.get(name).map(|s| s.iter().product::<i64>()).unwrap_or(0)
    }
}

/// The artifact's tensors by name, as they are packed.
type Packed = Vec<(String, Tensor)>;

/// What the budget buys: the matrices to quantize and their candidate kinds, what stays in
/// half precision, the bits, and the artifact's small files.
struct Plan {
    targets: Vec<Target>,
    kinds: Vec<RowKind>,
    passthrough: Vec<String>,
    param_count: i64,
    total_bits: i64,
    /// Bits left for the rows' codes and scales once files, headers, norms and row kinds are
    /// reserved.
    row_budget: i64,
    files: TextFiles,
}

/// The stages, in order. Each is a method of [`Run`]; what one hands the next is in its
/// signature.
fn run_stages(
    recipe: &CompressRecipe,
    run_dir: &Path,
    resume: bool,
    log: Log,
    verify: Verify,
    start: Instant,
) -> Result<Summary> {
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let mut run = Run {
        recipe,
        run_dir,
        state: ResumeState::open(run_dir, recipe, resume)?,
        device: parse_device(&recipe.model.device)?,
        recorder: Recorder::default(),
        times: StageTimes::default(),
        log,
        start,
    };
    let model = run.load()?;
    let plan = run.plan(&model)?;
    let fp = run.fp_eval(&model)?;
    let teacher = run.teacher(&model)?;
    let mix = run.allocate(&model, &plan)?;
    let by_name: HashMap<String, Vec<RowKind>> =
        plan.targets.iter().map(|t| t.prefix.clone()).zip(mix.iter().cloned()).collect();
    let distilled = run.distill(&model, &by_name)?;
    let finetuned = run.finetune(&model, &by_name, teacher.as_ref())?;
    let (tensors, manifest) = run.apply(&model, &plan, &mix)?;
    let report = run.eval(&model, &fp)?;
    let written = run.pack(&plan, &tensors)?;
    let mut summary = run.summary(&model, &plan, &fp, &report, &written, &manifest)?;
    summary.widen = model.widened.clone();
    summary.distill = distilled;
    summary.finetune = finetuned;
    write_json(&run_dir.join(run::MANIFEST_FILE), &serde_json::json!({ "summary": &summary, "matrices": manifest }))?;
    drop(model);
    summary.verify_ppl = verify(&summary)?;
    run.state.finish()?;
    Ok(summary)
}

impl Run<'_, '_> {
    fn say(&mut self, line: &str) {
        (self.log)(line)
    }

    /// Loads the model, the tokenizer, the calibration sequences and the eval documents, and
    /// widens the model when the recipe asks.
    fn load(&mut self) -> Result<Model> {
        let (recipe, device, recorder) = (self.recipe, self.device, &self.recorder);
        let source = recipe.model_source();
        (self.log)(&format!("load: {source}"));
        let (loaded, offload, calib, docs) = timed(&mut self.times.load_s, || {
            let (loaded, offload) = load_offloaded(&source, device, Kind::Float, recorder)?;
            let tok = TextTokenizer::from_path(&loaded.dir)?;
            let cpath = recipe.resolve(&recipe.calibration.text);
            let ctext = std::fs::read_to_string(&cpath).map_err(io_err(&cpath))?;
            let ids = tok.encode(&ctext)?;
            let seqs = calib::sequences(&ids, recipe.calibration.tokens, recipe.calibration.seq_len)?;
            let docs = eval_documents(recipe, &tok)?;
            Ok((loaded, offload, seqs, docs))
        })?;
        // Memory grows with one decoder layer, except where a stage needs the whole model:
        // widening builds a new one, the fine-tune trains end to end.
        let widens = recipe.widen.new_width(loaded.cfg.intermediate_size).is_some()
            || recipe.widen.new_heads(loaded.cfg.num_attention_heads, loaded.cfg.num_key_value_heads).is_some();
        if !recipe.model.offload || widens || recipe.finetune.enabled {
            offload.pin_all()?;
        } else {
            self.say("load: decoder layers offloaded, read in one at a time");
        }
        // The artifact holds the text decoder alone (as transformers' AutoModelForCausalLM
        // loads it), so an image-text wrapper's config becomes its text part.
        let mut config: serde_json::Value = {
            let p = loaded.dir.join("config.json");
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            let value = serde_json::from_str(&text)
                .map_err(|e| CompressError::Artifact { path: p.clone(), msg: e.to_string() })?;
            autoqat_model::config::text_only_config(value).map_err(|msg| CompressError::Artifact { path: p, msg })?
        };
        let probe = calib.narrow(0, 0, 1);
        let widening = timed(&mut self.times.widen_s, || {
            crate::widen::widen_model(&loaded, &recipe.widen, &self.recorder, &probe, device)
        })?;
        let (loaded, paging, widened) = match widening {
            None => (loaded, Paging((!offload.pinned()).then_some(offload)), None),
            Some((wider, report)) => {
                self.say(&format!(
                    "widen: MLP {} -> {} units, query heads {} -> {}, max logit change {:.2e}",
                    report.intermediate_before,
                    report.intermediate_after,
                    report.heads_before,
                    report.heads_after,
                    report.max_logit_diff
                ));
                config["intermediate_size"] = report.intermediate_after.into();
                config["num_attention_heads"] = report.heads_after.into();
                // The head width stays: explicit, since hidden / heads no longer gives it.
                config["head_dim"] = wider.cfg.head_dim.into();
                (wider, Paging(None), Some(report))
            }
        };
        let vars = loaded.vs.variables();
        let mut shapes: HashMap<String, Vec<i64>> = vars.iter().map(|(n, v)| (n.clone(), v.size())).collect();
        if let Some(o) = &paging.0 {
            shapes.extend(o.shapes().map(|(n, s)| (n.to_string(), s.to_vec())));
        }
        Ok(Model { loaded, paging, calib, docs, config, widened, vars, shapes })
    }

    /// The budget in bits, refused before any model work when not even all-cheapest rows meet
    /// it, and the reserve for everything but the rows' codes and scales.
    fn plan(&mut self, model: &Model) -> Result<Plan> {
        let recipe = self.recipe;
        let cfg = &model.loaded.cfg;
        let targets = targets(cfg);
        let kinds = recipe.allocate.kinds.clone();
        let param_count: i64 = model.shapes.keys().map(|n| model.numel(n)).sum();
        let bpp = recipe.budget_bpp();
        // The live tracks also gate on their reference model's count (27e9 for Qwen3.6-27B): a
        // model widened past it gets no more bits than the reference would.
        let reference = artifact::reference_params(&recipe.model.source);
        let total_bits = artifact::budget_bits(reference.map_or(param_count, |r| param_count.min(r)), bpp);
        if let Some(r) = reference.filter(|&r| r < param_count) {
            self.say(&format!("budget: {param_count} parameters, gated at the track's reference count {r}"));
        }
        let quantized: std::collections::HashSet<String> =
            targets.iter().map(|t| format!("{}.weight", t.prefix)).collect();
        let mut passthrough: Vec<String> = model.vars.keys().filter(|n| !quantized.contains(*n)).cloned().collect();
        passthrough.sort();
        // The rows' codes and scales at the cheapest kind and the full-precision tensors alone
        // are a floor that packing can only add to; the full-precision eval and calibration
        // take most of a run, so a budget under it is refused first.
        let cheapest = kinds.iter().copied().min().unwrap_or(RowKind::Binary);
        let matrices = targets.iter().map(|t| {
            let s = model.shapes.get(&format!("{}.weight", t.prefix)).map(Vec::as_slice).unwrap_or(&[]);
            (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0))
        });
        let floor_bits =
            all_cheapest_bits(matrices, cheapest) + passthrough.iter().map(|n| 16 * model.numel(n)).sum::<i64>();
        if floor_bits > total_bits {
            let need = floor_bits as f64 / param_count.max(1) as f64;
            let hint = format!("{} to at least {:.3}", over_budget_hint(cheapest), need + 0.005);
            return Err(CompressError::Budget(format!(
                "a budget of {bpp} bits per parameter cannot hold this model: all-{cheapest} rows and the full-precision tensors alone take {need:.3} bits per parameter, {:.3} over the budget (hint: {hint})",
                need - bpp
            )));
        }
        let mut files = TextFiles::new();
        let extra = serde_json::json!({
            "format": artifact::FORMAT,
            "track": recipe.budget.track.name(),
            "budget_bits_per_param": bpp,
            "sensitivity": recipe.allocate.sensitivity.name(),
        });
        files.insert("config.json".into(), artifact::artifact_config(&model.config, extra)?);
        files.insert("modeling_autoqat.py".into(), artifact::modeling_py());
        if recipe.package.tokenizer {
            for (name, data) in artifact::tokenizer_files(&model.loaded.dir)? {
                files.insert(name, data);
            }
        }
        let mut names: Vec<String> = passthrough.clone();
        for t in &targets {
            names.push(format!("{}.row_kind", t.prefix));
            for k in &kinds {
                names.push(format!("{}.{}.codes", t.prefix, k.name()));
                names.push(format!("{}.{}.scales", t.prefix, k.name()));
            }
        }
        let max_dim = model.shapes.values().flatten().copied().max().unwrap_or(1);
        let passthrough_bytes: i64 = passthrough.iter().map(|n| 2 * model.numel(n)).sum();
        let rows_of = |prefix: &str| -> Result<i64> {
            let name = format!("{prefix}.weight");
            model
                .shapes
                .get(&name)
                .and_then(|s| s.first().copied())
                .ok_or_else(|| CompressError::Torch(format!("the model has no variable {name}")))
        };
        let kind_bytes: i64 = targets.iter().map(|t| Ok((rows_of(&t.prefix)? + 3) / 4)).sum::<Result<i64>>()?;
        let reserve_bytes = artifact::zip_overhead(&files, (total_bits / 8).max(0) as u64)?
            + artifact::safetensors_header_bound(names.iter().map(String::as_str), max_dim, total_bits / 8 + 1)
            + passthrough_bytes
            + kind_bytes;
        let row_budget = total_bits - 8 * reserve_bytes;
        Ok(Plan { targets, kinds, passthrough, param_count, total_bits, row_budget, files })
    }

    /// The full-precision model's score on the eval documents (saved for a resume).
    fn fp_eval(&mut self, model: &Model) -> Result<EvalReport> {
        let fp = match self.state.load::<EvalReport>(FP_FILE)? {
            Some(fp) => fp,
            None => {
                let device = self.device;
                let fp = timed(&mut self.times.fp_eval_s, || Ok(model.docs.score(&model.loaded.model, device)?))?;
                model.paging.check()?;
                self.state.save(FP_FILE, &fp)?;
                fp
            }
        };
        self.say(&format!(
            "fp: eval PPL {:.4} over {} documents ({} tokens)",
            fp.eval_ppl,
            model.docs.documents_len(),
            fp.tokens
        ));
        Ok(fp)
    }

    /// The fine-tune's teacher: the full-precision model's top-k, measured before any weight
    /// changes. `None` without a fine-tune.
    fn teacher(&mut self, model: &Model) -> Result<Option<Teacher>> {
        if !self.recipe.finetune.enabled {
            return Ok(None);
        }
        let (state, device, top_k) = (&self.state, self.device, self.recipe.finetune.top_k);
        Ok(Some(timed(&mut self.times.teacher_s, || match state.load_tensors(TEACHER_FILE)? {
            Some(saved) => Teacher::from_tensors(&saved),
            None => {
                let t = Teacher::measure(&model.loaded.model, &model.calib, top_k, device)?;
                state.save_tensors(TEACHER_FILE, &t.tensors())?;
                Ok(t)
            }
        })?))
    }

    /// Every row's kind: calibration and sensitivity scores, then the allocation under the row
    /// budget (saved for a resume).
    fn allocate(&mut self, model: &Model, plan: &Plan) -> Result<Vec<Vec<RowKind>>> {
        let recipe = self.recipe;
        let sens = recipe.allocate.sensitivity;
        self.say(&format!(
            "allocate: {} parameters x {} bits = {} bits; {} reserved for files, headers, norms and row kinds",
            plan.param_count,
            recipe.budget_bpp(),
            plan.total_bits,
            plan.total_bits - plan.row_budget
        ));
        if let Some(mix) = self.state.load(MIX_FILE)? {
            self.say("allocate: resumed");
            return Ok(mix);
        }
        let seqs = &model.calib;
        self.say(&format!("calibrate: {} sequences of {} tokens ({})", seqs.size()[0], seqs.size()[1], sens.name()));
        // Calibration and scoring are one layer-by-layer pass (see `score`), timed as one.
        let check = || model.paging.check();
        let calibration = Calibration {
            model: &model.loaded.model,
            vars: &model.vars,
            recorder: &self.recorder,
            seqs,
            check: &check,
            scratch: &self.state.dir().join("acts"),
            device: self.device,
        };
        let tied = model.loaded.cfg.tie_word_embeddings;
        let scores = timed(&mut self.times.calibrate_s, || {
            crate::score::score(&calibration, &plan.targets, &plan.kinds, sens, tied)
        })?;
        model.paging.release();
        // The track's rules: q4 rescue rows hold at most 10% of the parameters.
        let q4_cap =
            recipe.budget.track_rules.then(|| (plan.param_count as f64 * crate::recipe::RESCUE_SHARE).floor() as i64);
        let mix = timed(&mut self.times.allocate_s, || allocate(&scores, &plan.kinds, plan.row_budget, q4_cap))?;
        self.state.save(MIX_FILE, &mix)?;
        Ok(mix)
    }

    /// Layerwise distillation of each block towards the full-precision one (empty when off).
    fn distill(&mut self, model: &Model, by_name: &HashMap<String, Vec<RowKind>>) -> Result<Vec<BlockReport>> {
        let opts = &self.recipe.distill;
        if !opts.enabled {
            return Ok(Vec::new());
        }
        (self.log)(&format!("distill: {} steps per block, lr {}", opts.steps, opts.lr));
        let (state, device, log) = (&self.state, self.device, &mut *self.log);
        timed(&mut self.times.distill_s, || {
            crate::distill::layerwise(
                &model.loaded.model,
                &model.vars,
                by_name,
                &model.calib,
                opts,
                device,
                Some(state),
                &mut |layer, file| model.paging.redirect(layer, file),
                log,
            )
        })
    }

    /// The end-to-end fine-tune against the teacher's top-k (`None` when off).
    fn finetune(
        &mut self,
        model: &Model,
        by_name: &HashMap<String, Vec<RowKind>>,
        teacher: Option<&Teacher>,
    ) -> Result<Option<FinetuneReport>> {
        let Some(teacher) = teacher else { return Ok(None) };
        let ft = &self.recipe.finetune;
        (self.log)(&format!(
            "finetune: {} steps of {} sequences, lr {}, top-{} KD",
            ft.steps, ft.batch, ft.lr, ft.top_k
        ));
        let (state, device, log) = (&self.state, self.device, &mut *self.log);
        let report = timed(&mut self.times.finetune_s, || {
            crate::finetune::run(
                &model.loaded.model,
                &model.loaded.vs,
                by_name,
                &model.calib,
                teacher,
                ft,
                device,
                state.dir(),
                log,
            )
        })?;
        Ok(Some(report))
    }

    /// Quantizes every target to its rows' kinds in the model (so the eval scores what the
    /// artifact holds) and returns the packed tensors, sorted by name, and the manifest.
    fn apply(&mut self, model: &Model, plan: &Plan, mix: &[Vec<RowKind>]) -> Result<(Packed, Vec<MatrixMix>)> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut manifest: Vec<MatrixMix> = Vec::new();
        let (paging, vars, passthrough) = (&model.paging, &model.vars, &plan.passthrough);
        let layer_dir = self.state.dir().join("layers");
        timed(&mut self.times.apply_s, || {
            // Layer by layer: each layer's quantized weights (and half-precision norms) are
            // written back for the evaluation to read; the embedding and head stay resident.
            // A layer is finished once its matrices are packed: its norms go to half precision
            // (as the artifact holds them) and it is written back before the next is read in.
            let finish = |layer: usize, tensors: &mut Vec<(String, Tensor)>| -> Result<()> {
                for name in passthrough.iter().filter(|n| n.starts_with(&layer_prefix(layer))) {
                    tensors.push(to_half(vars, name)?);
                }
                paging.write_back(layer, &layer_dir)
            };
            let mut current: Option<usize> = None;
            for (t, row_kinds) in plan.targets.iter().zip(mix) {
                if t.layer != current {
                    if let Some(done) = current {
                        finish(done, &mut tensors)?;
                    }
                    if let Some(l) = t.layer {
                        paging.enter(l);
                    }
                    current = t.layer;
                }
                let mut w = weight(vars, &t.prefix)?;
                let (packed, mm) = apply(&mut w, &t.prefix, row_kinds)?;
                tensors.extend(packed);
                manifest.push(mm);
            }
            if let Some(done) = current {
                finish(done, &mut tensors)?;
            }
            for name in passthrough.iter().filter(|n| !n.starts_with("model.layers.")) {
                tensors.push(to_half(vars, name)?);
            }
            paging.check()?;
            paging.release();
            Ok(())
        })?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((tensors, manifest))
    }

    /// The compressed model's score on the same documents.
    fn eval(&mut self, model: &Model, fp: &EvalReport) -> Result<EvalReport> {
        let device = self.device;
        let report = timed(&mut self.times.eval_s, || Ok(model.docs.score(&model.loaded.model, device)?))?;
        model.paging.check()?;
        model.paging.release();
        self.say(&format!(
            "eval: PPL {:.4} (fp {:.4}, {:+.2}%)",
            report.eval_ppl,
            fp.eval_ppl,
            100.0 * (report.eval_ppl / fp.eval_ppl - 1.0)
        ));
        Ok(report)
    }

    /// Writes the artifact directory and zip; over the budget, nothing is left under the
    /// finished names.
    fn pack(&mut self, plan: &Plan, tensors: &[(String, Tensor)]) -> Result<artifact::Written> {
        let (run_dir, bpp) = (self.run_dir, self.recipe.budget_bpp());
        timed(&mut self.times.pack_s, || {
            let zip = run_dir.join(run::ARTIFACT_ZIP);
            artifact::write(&run_dir.join(run::ARTIFACT_DIR), &zip, &plan.files, tensors, plan.total_bits).map_err(
                |e| match e {
                    CompressError::Budget(msg) => {
                        CompressError::Budget(format!("{msg} ({} parameters x {bpp} bits)", plan.param_count))
                    }
                    e => CompressError::Artifact {
                        path: zip.clone(),
                        msg: format!(
                            "packing failed, nothing left under the finished names: {e} (hint: free disk space, then rerun)"
                        ),
                    },
                },
            )
        })
    }

    /// The run's summary (widening, distillation, fine-tune and verification are the caller's
    /// to fill in).
    fn summary(
        &self,
        model: &Model,
        plan: &Plan,
        fp: &EvalReport,
        report: &EvalReport,
        written: &artifact::Written,
        manifest: &[MatrixMix],
    ) -> Result<Summary> {
        let param_count = plan.param_count;
        let mut total_mix: HashMap<RowKind, usize> = HashMap::new();
        for m in manifest {
            for (k, n) in &m.rows {
                *total_mix.entry(*k).or_default() += n;
            }
        }
        Ok(Summary {
            run: autoqat_workspace::Summary {
                status: "ok".into(),
                eval_ppl: Some(report.eval_ppl),
                eval_loss: Some(report.eval_loss),
                eval_bpb: Some(report.eval_bpb),
                fp_ppl: Some(fp.eval_ppl),
                device: autoqat_model::device_name(self.device),
                time_s: self.start.elapsed().as_secs_f64(),
                peak_mem_mb: autoqat_toolkit::resources::peak_rss_mb(),
                artifact_size_bytes: Some(written.size_bytes),
                bits_per_param: Some(written.size_bytes as f64 * 8.0 / param_count as f64),
                ..autoqat_workspace::Summary::default()
            },
            eval_tokens: report.tokens,
            eval_docs: model.docs.documents_len(),
            artifact_sha256: written.sha256.clone(),
            artifact_zip: written.zip.clone(),
            artifact_dir: written.dir.clone(),
            param_count,
            budget_bpp: self.recipe.budget_bpp(),
            budget_bits: plan.total_bits,
            sensitivity: self.recipe.allocate.sensitivity.name().into(),
            weight_rel_mse: manifest.iter().map(|m| m.sq_err).sum::<f64>()
                / manifest.iter().map(|m| m.sq_norm).sum::<f64>().max(f64::MIN_POSITIVE),
            tokenizer_sha256: artifact::sha256_file(&model.loaded.dir.join("tokenizer.json"))?.0,
            mix: total_mix,
            q4_share: manifest
                .iter()
                .map(|m| m.rows.get(&RowKind::Q4).copied().unwrap_or(0) as f64 * m.shape[1] as f64)
                .sum::<f64>()
                / param_count.max(1) as f64,
            offloaded: model.paging.0.is_some(),
            stages: self.times.clone(),
            widen: None,
            distill: Vec::new(),
            finetune: None,
            verify_ppl: None,
        })
    }
}

/// Writes pretty JSON atomically (the workspace's one writer).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    Ok(autoqat_workspace::atomic::write_json(path, value)?)
}

/// Rounds variable `name` to half precision in place (the model then scores what the artifact
/// holds) and returns the half-precision copy to pack.
fn to_half(vars: &HashMap<String, Tensor>, name: &str) -> Result<(String, Tensor)> {
    let mut v = vars
        .get(name)
        .ok_or_else(|| CompressError::Torch(format!("the model has no variable {name}")))?
        .shallow_clone();
    let h = v.to_kind(Kind::Half);
    tch::no_grad(|| v.f_copy_(&h))?;
    Ok((name.to_string(), h.to_device(Device::Cpu)))
}

/// Quantizes `w` in place, row by row to `row_kinds`, returning the packed tensors and the mix.
fn apply(w: &mut Tensor, prefix: &str, row_kinds: &[RowKind]) -> Result<(Vec<(String, Tensor)>, MatrixMix)> {
    let size = w.size();
    let mut out = vec![(format!("{prefix}.row_kind"), Tensor::from_slice(&rows::pack_kinds(row_kinds)))];
    let mut mm = MatrixMix {
        name: prefix.to_string(),
        shape: [size[0], size[1]],
        rows: HashMap::new(),
        bits: 0,
        sq_err: 0.0,
        sq_norm: 0.0,
    };
    // Block by block: a 27B model's embedding is 1.3B weights, and whole-matrix temporaries
    // (a dense copy, f32 codes, int64 digits) would need tens of GB. A block's rows are copied
    // to the host before the same rows are overwritten with their dequantized values, so `w`
    // is the only full copy.
    for (kind, idx_t) in rows::kind_groups(row_kinds, w.device()) {
        let n = idx_t.size()[0];
        let (mut packed, mut scales) = (Vec::new(), Vec::new());
        for (start, len) in rows::row_blocks(n, size[1]) {
            let idx = idx_t.narrow(0, start, len);
            let block = w.detach().index_select(0, &idx).to_device(Device::Cpu).to_kind(Kind::Float);
            let q = rows::quantize(&block, kind)?;
            mm.sq_err += (&block - &q.dequant).square().sum(Kind::Double).double_value(&[]);
            mm.sq_norm += block.square().sum(Kind::Double).double_value(&[]);
            packed.push(q.packed);
            scales.push(q.scales);
            let dq = q.dequant.to_device(w.device()).to_kind(w.kind());
            let _ = tch::no_grad(|| w.f_index_copy_(0, &idx, &dq))?;
        }
        out.push((format!("{prefix}.{}.codes", kind.name()), Tensor::cat(&packed, 0)));
        out.push((format!("{prefix}.{}.scales", kind.name()), Tensor::cat(&scales, 0)));
        mm.rows.insert(kind, n as usize);
        mm.bits += n * kind.row_bits(size[1]);
    }
    Ok((out, mm))
}
