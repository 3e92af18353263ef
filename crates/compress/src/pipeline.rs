//! `autoqat compress`: from a Hugging Face checkpoint to a budgeted artifact, stage by stage:
//! load, calibrate, score, allocate, apply, evaluate, pack. Verification in a fresh process is
//! the CLI's (it owns the binary); everything it needs is in the [`Summary`].

use autoqat_workspace::run;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use autoqat_model::offload::layer_prefix;
use autoqat_model::{
    load_offloaded, parse_device, DocEvalOptions, EvalReport, EvalSet, LayerHook, Offload, TextTokenizer,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::allocate::{all_cheapest_bits, allocate, over_budget_hint};
use crate::artifact::{self, TextFiles};
use crate::calib::{self, Recorder};
use crate::error::{io_err, CompressError, Result};
use crate::finetune::Teacher;
use crate::recipe::CompressRecipe;
use crate::resume::ResumeState;
use crate::rows::{self, RowKind};
use crate::score::{targets, weight, Calibration};

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

fn run_stages(
    recipe: &CompressRecipe,
    run_dir: &Path,
    resume: bool,
    log: Log,
    verify: Verify,
    start: Instant,
) -> Result<Summary> {
    let mut st = StageTimes::default();
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let state = ResumeState::open(run_dir, recipe, resume)?;
    let device = parse_device(&recipe.model.device)?;
    let recorder = Recorder::default();
    let source = recipe.model_source();
    log(&format!("load: {source}"));
    let (loaded, offload, tok, calib_seqs, docs) = timed(&mut st.load_s, || {
        let (loaded, offload) = load_offloaded(&source, device, Kind::Float, &recorder)?;
        let tok = TextTokenizer::from_path(&loaded.dir)?;
        let cpath = recipe.resolve(&recipe.calibration.text);
        let ctext = std::fs::read_to_string(&cpath).map_err(io_err(&cpath))?;
        let ids = tok.encode(&ctext)?;
        let seqs = calib::sequences(&ids, recipe.calibration.tokens, recipe.calibration.seq_len)?;
        let docs = eval_documents(recipe, &tok)?;
        Ok((loaded, offload, tok, seqs, docs))
    })?;
    // Memory grows with one decoder layer, except where a stage needs the whole model: widening
    // builds a new one, the fine-tune trains end to end.
    let widens = recipe.widen.new_width(loaded.cfg.intermediate_size).is_some()
        || recipe.widen.new_heads(loaded.cfg.num_attention_heads, loaded.cfg.num_key_value_heads).is_some();
    if !recipe.model.offload || widens || recipe.finetune.enabled {
        offload.pin_all()?;
    } else {
        log("load: decoder layers offloaded, read in one at a time");
    }
    // The artifact holds the text decoder alone (as transformers' AutoModelForCausalLM loads
    // it), so an image-text wrapper's config becomes its text part.
    let mut source_config: serde_json::Value = {
        let p = loaded.dir.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        let value =
            serde_json::from_str(&text).map_err(|e| CompressError::Artifact { path: p.clone(), msg: e.to_string() })?;
        autoqat_model::config::text_only_config(value).map_err(|msg| CompressError::Artifact { path: p, msg })?
    };
    let probe = calib_seqs.narrow(0, 0, 1);
    let widening =
        timed(&mut st.widen_s, || crate::widen::widen_model(&loaded, &recipe.widen, &recorder, &probe, device))?;
    let (loaded, paging, widened) = match widening {
        None => (loaded, Paging((!offload.pinned()).then_some(offload)), None),
        Some((wider, report)) => {
            log(&format!(
                "widen: MLP {} -> {} units, query heads {} -> {}, max logit change {:.2e}",
                report.intermediate_before,
                report.intermediate_after,
                report.heads_before,
                report.heads_after,
                report.max_logit_diff
            ));
            source_config["intermediate_size"] = report.intermediate_after.into();
            source_config["num_attention_heads"] = report.heads_after.into();
            // The head width stays: explicit, since hidden / heads no longer gives it.
            source_config["head_dim"] = wider.cfg.head_dim.into();
            (wider, Paging(None), Some(report))
        }
    };
    let cfg = loaded.cfg.clone();
    let vars = loaded.vs.variables();
    // Full shapes: an offloaded layer's variables are empty while it is not resident.
    let mut shapes: HashMap<String, Vec<i64>> = vars.iter().map(|(n, v)| (n.clone(), v.size())).collect();
    if let Some(o) = &paging.0 {
        shapes.extend(o.shapes().map(|(n, s)| (n.to_string(), s.to_vec())));
    }
    let numel = |n: &str| shapes.get(n).map(|s| s.iter().product::<i64>()).unwrap_or(0);
    let tied = cfg.tie_word_embeddings;
    let targets = targets(&cfg);
    let kinds = recipe.allocate.kinds.clone();
    let sens = recipe.allocate.sensitivity;
    // The budget: everything but the rows' codes and scales is reserved first, exactly or as
    // an upper bound, so the allocation can spend the rest.
    let param_count: i64 = shapes.keys().map(|n| numel(n)).sum();
    let bpp = recipe.budget_bpp();
    // The live tracks also gate on their reference model's count (27e9 for Qwen3.6-27B): a
    // model widened past it gets no more bits than the reference would.
    let reference = artifact::reference_params(&recipe.model.source);
    let total_bits = artifact::budget_bits(reference.map_or(param_count, |r| param_count.min(r)), bpp);
    if let Some(r) = reference.filter(|&r| r < param_count) {
        log(&format!("budget: {param_count} parameters, gated at the track's reference count {r}"));
    }
    let quantized: std::collections::HashSet<String> = targets.iter().map(|t| format!("{}.weight", t.prefix)).collect();
    let mut passthrough: Vec<String> = vars.keys().filter(|n| !quantized.contains(*n)).cloned().collect();
    passthrough.sort();
    // A budget that not even all-cheapest rows meet is refused before any model work (the
    // full-precision eval and calibration take most of a run): the rows' codes and scales and
    // the full-precision tensors alone are a floor that packing can only add to.
    let cheapest = kinds.iter().copied().min().unwrap_or(RowKind::Binary);
    let matrices = targets.iter().map(|t| {
        let s = shapes.get(&format!("{}.weight", t.prefix)).map(Vec::as_slice).unwrap_or(&[]);
        (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0))
    });
    let floor_bits = all_cheapest_bits(matrices, cheapest) + passthrough.iter().map(|n| 16 * numel(n)).sum::<i64>();
    if floor_bits > total_bits {
        let need = floor_bits as f64 / param_count.max(1) as f64;
        let hint = format!("{} to at least {:.3}", over_budget_hint(cheapest), need + 0.005);
        return Err(CompressError::Budget(format!(
            "a budget of {bpp} bits per parameter cannot hold this model: all-{cheapest} rows and the full-precision tensors alone take {need:.3} bits per parameter, {:.3} over the budget (hint: {hint})",
            need - bpp
        )));
    }
    let fp = match state.load::<EvalReport>(FP_FILE)? {
        Some(fp) => fp,
        None => {
            let fp = timed(&mut st.fp_eval_s, || Ok(docs.score(&loaded.model, device)?))?;
            paging.check()?;
            state.save(FP_FILE, &fp)?;
            fp
        }
    };
    log(&format!("fp: eval PPL {:.4} over {} documents ({} tokens)", fp.eval_ppl, docs.documents_len(), fp.tokens));
    // The fine-tune's teacher is the full-precision model: measured before any weight changes.
    let teacher = if recipe.finetune.enabled {
        Some(timed(&mut st.teacher_s, || match state.load_tensors(TEACHER_FILE)? {
            Some(saved) => Teacher::from_tensors(&saved),
            None => {
                let t = Teacher::measure(&loaded.model, &calib_seqs, recipe.finetune.top_k, device)?;
                state.save_tensors(TEACHER_FILE, &t.tensors())?;
                Ok(t)
            }
        })?)
    } else {
        None
    };

    let mut files = TextFiles::new();
    let extra = serde_json::json!({
        "format": artifact::FORMAT,
        "track": recipe.budget.track.name(),
        "budget_bits_per_param": bpp,
        "sensitivity": sens.name(),
    });
    files.insert("config.json".into(), artifact::artifact_config(&source_config, extra)?);
    files.insert("modeling_autoqat.py".into(), artifact::modeling_py());
    if recipe.package.tokenizer {
        for (name, data) in artifact::tokenizer_files(&loaded.dir)? {
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
    let max_dim = shapes.values().flatten().copied().max().unwrap_or(1);
    let passthrough_bytes: i64 = passthrough.iter().map(|n| 2 * numel(n)).sum();
    let rows_of = |prefix: &str| -> Result<i64> {
        let name = format!("{prefix}.weight");
        shapes
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
    log(&format!(
        "allocate: {param_count} parameters x {bpp} bits = {total_bits} bits; {} reserved for files, headers, norms and row kinds",
        8 * reserve_bytes
    ));
    let mix: Vec<Vec<RowKind>> = match state.load(MIX_FILE)? {
        Some(mix) => {
            log("allocate: resumed");
            mix
        }
        None => {
            log(&format!(
                "calibrate: {} sequences of {} tokens ({})",
                calib_seqs.size()[0],
                calib_seqs.size()[1],
                sens.name()
            ));
            // Calibration and scoring are one layer-by-layer pass (see `score`), timed as one.
            let check = || paging.check();
            let calibration = Calibration {
                model: &loaded.model,
                vars: &vars,
                recorder: &recorder,
                seqs: &calib_seqs,
                check: &check,
                scratch: &state.dir().join("acts"),
                device,
            };
            let scores =
                timed(&mut st.calibrate_s, || crate::score::score(&calibration, &targets, &kinds, sens, tied))?;
            paging.release();
            // The track's rules: q4 rescue rows hold at most 10% of the parameters.
            let q4_cap =
                recipe.budget.track_rules.then(|| (param_count as f64 * crate::recipe::RESCUE_SHARE).floor() as i64);
            let mix = timed(&mut st.allocate_s, || allocate(&scores, &kinds, row_budget, q4_cap))?;
            state.save(MIX_FILE, &mix)?;
            mix
        }
    };

    let by_name: HashMap<String, Vec<RowKind>> =
        targets.iter().map(|t| t.prefix.clone()).zip(mix.iter().cloned()).collect();
    let distilled = if recipe.distill.enabled {
        log(&format!("distill: {} steps per block, lr {}", recipe.distill.steps, recipe.distill.lr));
        timed(&mut st.distill_s, || {
            let opts = &recipe.distill;
            crate::distill::layerwise(
                &loaded.model,
                &vars,
                &by_name,
                &calib_seqs,
                opts,
                device,
                Some(&state),
                &mut |layer, file| paging.redirect(layer, file),
                &mut *log,
            )
        })?
    } else {
        Vec::new()
    };
    let finetuned = match &teacher {
        Some(teacher) => {
            let ft = &recipe.finetune;
            log(&format!("finetune: {} steps of {} sequences, lr {}, top-{} KD", ft.steps, ft.batch, ft.lr, ft.top_k));
            let report = timed(&mut st.finetune_s, || {
                let model = &loaded.model;
                crate::finetune::run(
                    model,
                    &loaded.vs,
                    &by_name,
                    &calib_seqs,
                    teacher,
                    ft,
                    device,
                    state.dir(),
                    &mut *log,
                )
            })?;
            Some(report)
        }
        None => None,
    };

    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut manifest: Vec<MatrixMix> = Vec::new();
    timed(&mut st.apply_s, || {
        // Layer by layer: each layer's quantized weights (and half-precision norms) are written
        // back for the evaluation to read; the embedding and head stay resident.
        let layer_dir = state.dir().join("layers");
        // A layer is finished once its matrices are packed: its norms go to half precision
        // (as the artifact holds them) and it is written back before the next is read in.
        let finish = |layer: usize, tensors: &mut Vec<(String, Tensor)>| -> Result<()> {
            for name in passthrough.iter().filter(|n| n.starts_with(&layer_prefix(layer))) {
                tensors.push(to_half(&vars, name)?);
            }
            paging.write_back(layer, &layer_dir)
        };
        let mut current: Option<usize> = None;
        for (t, row_kinds) in targets.iter().zip(&mix) {
            if t.layer != current {
                if let Some(done) = current {
                    finish(done, &mut tensors)?;
                }
                if let Some(l) = t.layer {
                    paging.enter(l);
                }
                current = t.layer;
            }
            let mut w = weight(&vars, &t.prefix)?;
            let (packed, mm) = apply(&mut w, &t.prefix, row_kinds)?;
            tensors.extend(packed);
            manifest.push(mm);
        }
        if let Some(done) = current {
            finish(done, &mut tensors)?;
        }
        for name in passthrough.iter().filter(|n| !n.starts_with("model.layers.")) {
            tensors.push(to_half(&vars, name)?);
        }
        paging.check()?;
        paging.release();
        Ok(())
    })?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));

    let report: EvalReport = timed(&mut st.eval_s, || Ok(docs.score(&loaded.model, device)?))?;
    paging.check()?;
    paging.release();
    log(&format!(
        "eval: PPL {:.4} (fp {:.4}, {:+.2}%)",
        report.eval_ppl,
        fp.eval_ppl,
        100.0 * (report.eval_ppl / fp.eval_ppl - 1.0)
    ));

    let written = timed(&mut st.pack_s, || {
        let zip = run_dir.join(run::ARTIFACT_ZIP);
        artifact::write(&run_dir.join(run::ARTIFACT_DIR), &zip, &files, &tensors, total_bits).map_err(|e| match e {
            CompressError::Budget(msg) => {
                CompressError::Budget(format!("{msg} ({param_count} parameters x {bpp} bits)"))
            }
            e => CompressError::Artifact {
                path: zip.clone(),
                msg: format!(
                    "packing failed, nothing left under the finished names: {e} (hint: free disk space, then rerun)"
                ),
            },
        })
    })?;
    let bits_per_param = written.size_bytes as f64 * 8.0 / param_count as f64;
    let mut total_mix: HashMap<RowKind, usize> = HashMap::new();
    for m in &manifest {
        for (k, n) in &m.rows {
            *total_mix.entry(*k).or_default() += n;
        }
    }
    let summary = Summary {
        run: autoqat_workspace::Summary {
            status: "ok".into(),
            eval_ppl: Some(report.eval_ppl),
            eval_loss: Some(report.eval_loss),
            eval_bpb: Some(report.eval_bpb),
            fp_ppl: Some(fp.eval_ppl),
            device: autoqat_model::device_name(device),
            time_s: start.elapsed().as_secs_f64(),
            peak_mem_mb: autoqat_toolkit::resources::peak_rss_mb(),
            artifact_size_bytes: Some(written.size_bytes),
            bits_per_param: Some(bits_per_param),
            ..autoqat_workspace::Summary::default()
        },
        eval_tokens: report.tokens,
        eval_docs: docs.documents_len(),
        artifact_sha256: written.sha256.clone(),
        artifact_zip: written.zip.clone(),
        artifact_dir: written.dir.clone(),
        param_count,
        budget_bpp: bpp,
        budget_bits: total_bits,
        sensitivity: sens.name().into(),
        weight_rel_mse: manifest.iter().map(|m| m.sq_err).sum::<f64>()
            / manifest.iter().map(|m| m.sq_norm).sum::<f64>().max(f64::MIN_POSITIVE),
        tokenizer_sha256: artifact::sha256_file(&loaded.dir.join("tokenizer.json"))?.0,
        mix: total_mix,
        q4_share: manifest
            .iter()
            .map(|m| m.rows.get(&RowKind::Q4).copied().unwrap_or(0) as f64 * m.shape[1] as f64)
            .sum::<f64>()
            / param_count.max(1) as f64,
        offloaded: paging.0.is_some(),
        stages: st,
        widen: widened,
        distill: distilled,
        finetune: finetuned,
        verify_ppl: None,
    };
    write_json(&run_dir.join(run::MANIFEST_FILE), &serde_json::json!({ "summary": &summary, "matrices": manifest }))?;
    drop(tok);
    let mut summary = summary;
    summary.verify_ppl = verify(&summary)?;
    state.finish()?;
    Ok(summary)
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
