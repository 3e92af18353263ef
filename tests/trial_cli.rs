//! `autoqat trial` as a user runs it: a short QAT trial on a tiny transformers Llama writes
//! outputs of docs/contracts.md#the-trial, and its packed ternary export, scored by `autoqat eval`, gives the
//! trial's own final eval PPL. A bad recipe key is one clear line.

mod common;

use common::{autoqat, s};

use std::path::Path;
use std::process::Output;

/// A recipe for the tiny model, written to `dir/train.toml`; eval on the whole eval text so
/// that `autoqat eval` can score exactly the same tokens.
fn write_recipe(dir: &Path, model: &Path, extra: &str) -> std::path::PathBuf {
    let train = std::fs::read_to_string(model.join("train.txt")).expect("tiny model has train.txt");
    let eval: String = train.chars().take(6000).collect();
    std::fs::write(dir.join("eval.txt"), &eval).expect("write eval text");
    let recipe = format!(
        "[model]\nsource = \"{m}\"\n[data]\ntrain_text = \"{m}/train.txt\"\neval_text = \"eval.txt\"\n\
         seq_len = 32\neval_ctx = 64\neval_stride = 64\neval_max_tokens = 0\n\
         [budget]\nsteps = 12\neval_every = 6\ncheckpoint_every = 0\n\
         [optim]\nlr = 0.002\nbatch_size = 4\n[runtime]\ndevice = \"cpu\"\n{extra}",
        m = model.display()
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, recipe).expect("write recipe");
    path
}

/// `autoqat eval` of a trial's packed export on `eval` with the recipe's windows (ctx and
/// stride 64).
fn export_ppl(run: &Path, eval: &Path) -> f64 {
    let export = run.join("export");
    let args = [
        "eval",
        "--model",
        s(&export),
        "--text",
        s(eval),
        "--ctx",
        "64",
        "--stride",
        "64",
        "--device",
        "cpu",
        "--json",
    ];
    let out = autoqat(&args);
    assert!(out.status.success(), "eval of the export failed: {}", String::from_utf8_lossy(&out.stderr));
    let scored: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    scored["eval_ppl"].as_f64().expect("eval_ppl")
}

#[test]
fn trial_outputs_and_packed_export_score_the_same_ppl() {
    let Some(model) = common::qat::tiny_model() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(tmp.path(), &model, "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"group64\"\n");
    let run = tmp.path().join("run");
    let out = autoqat(&["trial", "--config", s(&recipe), "--run-dir", s(&run)]);
    assert!(out.status.success(), "trial failed: {}", String::from_utf8_lossy(&out.stderr));

    let steps = std::fs::read_to_string(run.join("steps.tsv")).expect("steps.tsv");
    let header = steps.lines().next().expect("steps.tsv has a header");
    assert_eq!(
        header,
        "step\tlambda\ttrain_loss\ttrain_ppl\teval_ppl\teval_bpb\tlr\ttime_s\tbest_ppl\tq_neg1\tq_zero\tq_pos1"
    );
    assert_eq!(steps.lines().count(), 3, "one row per eval (steps 6 and 12):\n{steps}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).expect("summary.json"))
            .expect("summary.json is JSON");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["steps"], 12);
    let fractions: f64 = ["q_neg1", "q_zero", "q_pos1"].iter().map(|k| summary[k].as_f64().unwrap_or(f64::NAN)).sum();
    assert!((fractions - 1.0).abs() < 1e-6, "q fractions sum to {fractions}");
    let trial_ppl = summary["eval_ppl"].as_f64().expect("eval_ppl");

    let packed_ppl = export_ppl(&run, &tmp.path().join("eval.txt"));
    let rel = (packed_ppl - trial_ppl).abs() / trial_ppl;
    assert!(rel < 1e-3, "packed export scores {packed_ppl}, the trial reported {trial_ppl}");
}

/// The Qwen3.5/3.6 fixtures of `crates/model/tests/reference/make_qwen3_5.py` (shared with the
/// model crate's parity tests through the cargo target's temp dir).
fn qwen3_5_fixture() -> Option<std::path::PathBuf> {
    let script = common::model::repo_root().join("crates/model/tests/reference/make_qwen3_5.py");
    common::model::script_fixture("qwen3_5-ref", &script, &[], "reference.json")
}

/// Column `name` of every row of a steps.tsv.
fn column(steps: &str, name: &str) -> Vec<f64> {
    let mut lines = steps.lines();
    let at = lines.next().unwrap().split('\t').position(|c| c == name).unwrap();
    lines.map(|l| l.split('\t').nth(at).unwrap().parse().unwrap()).collect()
}

#[test]
fn qat_trial_on_qwen3_5_lowers_the_loss_and_its_export_scores_the_same() {
    let Some(fx) = qwen3_5_fixture() else { return };
    // The text-only save and the wrapped checkpoint as Qwen3.6 ships, each with the fixture's
    // text to train on.
    for name in ["text", "wrapped"] {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        std::fs::create_dir(&model).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fx.join(name).join(f), model.join(f)).unwrap();
        }
        std::fs::copy(fx.join("text.txt"), model.join("train.txt")).unwrap();
        let quant = "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"per_row\"\n";
        let recipe = write_recipe(tmp.path(), &model, quant);
        let text = std::fs::read_to_string(&recipe)
            .unwrap()
            .replace("steps = 12\neval_every = 6", "steps = 30\neval_every = 10");
        std::fs::write(&recipe, text).unwrap();
        let run = tmp.path().join("run");
        let out = autoqat(&["trial", "--config", s(&recipe), "--run-dir", s(&run)]);
        assert!(out.status.success(), "{name}: trial failed: {}", String::from_utf8_lossy(&out.stderr));
        let steps = std::fs::read_to_string(run.join("steps.tsv")).unwrap();
        let (loss, ppl) = (column(&steps, "train_loss"), column(&steps, "eval_ppl"));
        assert_eq!(loss.len(), 3, "{steps}");
        assert!(loss[2] < loss[0] && ppl[2] < ppl[0], "{name}: QAT must lower the loss:\n{steps}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["status"], "ok");
        // Gated DeltaNet projections are ternary too: some weights sit at zero.
        assert!(summary["q_zero"].as_f64().unwrap() > 0.05, "{summary}");
        let (packed, trial) = (export_ppl(&run, &tmp.path().join("eval.txt")), summary["eval_ppl"].as_f64().unwrap());
        assert!(
            (packed - trial).abs() / trial < 1e-3,
            "{name}: packed export scores {packed}, the trial reported {trial}"
        );
    }
}

#[test]
fn unknown_recipe_key_is_one_clear_line() {
    let Some(model) = common::qat::tiny_model() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(tmp.path(), &model, "[quant]\nmethd = \"ternary_absmean\"\n");
    let out = autoqat(&["trial", "--config", s(&recipe), "--check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("methd") && stderr.contains("method"), "names the key and what is allowed: {stderr}");
}

#[test]
fn exit_codes_tell_usage_bad_input_and_a_failed_trial_apart() {
    let Some(model) = common::qat::tiny_model() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let code = |out: &Output| out.status.code();
    assert_eq!(code(&autoqat(&["trial", "--no-such-flag"])), Some(2), "usage");
    assert_eq!(
        code(&autoqat(&["trial", "--config", s(&tmp.path().join("missing.toml")), "--check"])),
        Some(3),
        "missing file"
    );
    let typo = write_recipe(tmp.path(), &model, "[quant]\nmethd = \"ternary_absmean\"\n");
    assert_eq!(code(&autoqat(&["trial", "--config", s(&typo), "--check"])), Some(3), "malformed recipe");
    let diverges = write_recipe(tmp.path(), &model, "[ste]\nlambda_warmup_frac = 0.0\n");
    let text = std::fs::read_to_string(&diverges)
        .unwrap()
        .replace("lr = 0.002", "lr = 100.0\ngrad_clip = 0.0\nlr_warmup_frac = 0.0");
    std::fs::write(&diverges, text).unwrap();
    let out = autoqat(&["trial", "--config", s(&diverges), "--run-dir", s(&tmp.path().join("run"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(4), "a trial that ran and crashed: {stderr}");
    assert!(stderr.contains("diverged"), "{stderr}");
}
