//! `autoqat compress` as a user runs it, checked against references we did not write:
//! transformers loads the artifact (`trust_remote_code=True`) and scores the same PPL by the
//! track's protocol as written in the reference script; plain-PyTorch row quantizers give the
//! same weights; the zip is byte-identical across runs; the gate matches docs/contracts.md#the-compression-track with a
//! hand-computed parameter count; bad input is one line with nothing left that looks finished.

mod common;

use common::{autoqat, s};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const DOC_TOKENS: usize = 128;
const BATCH: usize = 8;

fn script() -> PathBuf {
    common::model::repo_root().join("tests/reference/compress_ref.py")
}

/// The fixtures of `compress_ref.py make`, cached by the script's content.
fn fixtures() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| common::model::script_fixture("compress-ref", &script(), &["make"], "eval.txt")).as_deref()
}

/// Writes a recipe for `model` into `dir` with `extra` appended to `[budget]`'s section list.
fn recipe(dir: &Path, fx: &Path, model: &str, track: &str, body: &str) -> PathBuf {
    let text = format!(
        "[model]\nsource = \"{}\"\ndevice = \"cpu\"\n[budget]\ntrack = \"{track}\"\n{body}\n[calibration]\ntext = \"{}\"\ntokens = 4096\nseq_len = 128\n[eval]\ntext = \"{}\"\ndoc_tokens = {DOC_TOKENS}\nbatch = {BATCH}\n",
        s(&fx.join(model)),
        s(&fx.join("calib.txt")),
        s(&fx.join("eval.txt")),
    );
    let path = dir.join("compress.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `autoqat eval --json` of `zip` on the fixtures' eval text by the validator's protocol, with
/// `extra` flags; fails the test unless it succeeds.
fn eval_docs(zip: &Path, fx: &Path, extra: &[&str]) -> serde_json::Value {
    let (text, doc_tokens) = (fx.join("eval.txt"), DOC_TOKENS.to_string());
    let mut args =
        vec!["eval", "--model", s(zip), "--text", s(&text), "--protocol", "docs", "--doc-tokens", &doc_tokens];
    args.extend_from_slice(extra);
    args.push("--json");
    let out = autoqat(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_compress(config: &Path, run: &Path) -> serde_json::Value {
    let out = autoqat(&["compress", "--config", s(config), "--run-dir", s(run), "--json"]);
    assert!(out.status.success(), "compress failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints the summary")
}

/// `compress_ref.py check`: the artifact as transformers loads and scores it.
fn transformers_check(artifact: &Path, source: &Path, fx: &Path) -> Option<serde_json::Value> {
    let out = Command::new(common::model::python()?)
        .arg(script())
        .arg("check")
        .arg(artifact)
        .arg(source)
        .arg(fx.join("eval.txt"))
        .arg(DOC_TOKENS.to_string())
        .arg(BATCH.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "transformers check failed:\n{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// `compress_ref.py validate`: the track's scoring path on `zip`, written from its description.
fn validator_path(zip: &Path, fx: &Path, bpp: f64) -> Option<serde_json::Value> {
    let out = Command::new(common::model::python()?)
        .arg(script())
        .arg("validate")
        .arg(zip)
        .arg(fx.join("eval.txt"))
        .arg(DOC_TOKENS.to_string())
        .arg(BATCH.to_string())
        .arg(bpp.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "the validator's path failed:\n{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Parameters of the fixture as transformers counts them, from its config by hand, with the
/// MLP width and the query heads overridden when widened (the head width stays).
fn hand_param_count(fx: &Path, model: &str, intermediate: Option<i64>, heads: Option<i64>) -> i64 {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join(model).join("config.json")).unwrap()).unwrap();
    let g = |k: &str| cfg[k].as_i64().unwrap();
    let (v, c, i, l, h, kv) = (
        g("vocab_size"),
        g("hidden_size"),
        intermediate.unwrap_or_else(|| g("intermediate_size")),
        g("num_hidden_layers"),
        g("num_attention_heads"),
        g("num_key_value_heads"),
    );
    let d = c / h;
    let h = heads.unwrap_or(h);
    let tied = cfg["tie_word_embeddings"].as_bool().unwrap();
    let qkv_bias = if cfg["model_type"] == "qwen2" { h * d + 2 * kv * d } else { 0 };
    let qk_norms = if cfg["model_type"] == "qwen3" { 2 * d } else { 0 };
    let attn = c * h * d + 2 * c * kv * d + h * d * c + qkv_bias + qk_norms;
    let mlp = 3 * c * i;
    let norms = 2 * c;
    v * c + l * (attn + mlp + norms) + c + if tied { 0 } else { v * c }
}

#[test]
fn artifact_loads_in_transformers_and_scores_the_same_ppl_within_the_gate() {
    let Some(fx) = fixtures() else { return };
    // The llama and qwen3 artifacts ship their tokenizer files (the default); the qwen2 one does not.
    for (model, track, bpp) in [("llama", "ternary", 2.2125), ("qwen2", "binary", 1.3125), ("qwen3", "ternary", 2.2125)]
    {
        let tmp = tempfile::tempdir().unwrap();
        let ships_tokenizer = model != "qwen2";
        let body = if ships_tokenizer { "" } else { "[package]\ntokenizer = false" };
        let config = recipe(tmp.path(), fx, model, track, body);
        let a = run_compress(&config, &tmp.path().join("a"));
        assert_eq!(a["status"], "ok");

        // The gate, by the formula of docs/contracts.md#the-compression-track with the parameters counted by hand.
        let params = hand_param_count(fx, model, None, None);
        assert_eq!(a["param_count"].as_i64().unwrap(), params, "{model}: parameter count");
        let size = a["artifact_size_bytes"].as_i64().unwrap();
        assert_eq!(size as u64, std::fs::metadata(tmp.path().join("a/artifact.zip")).unwrap().len());
        let budget_bits = (params as f64 * bpp).ceil() as i64;
        assert!(size * 8 <= budget_bits, "{model}: {} bits over a budget of {budget_bits}", size * 8);
        // The track's rules: q4 rescue rows hold at most 10% of the parameters.
        let q4 = a["q4_share"].as_f64().unwrap();
        assert!(q4 > 0.0 && q4 <= 0.10, "{model}: q4 rows hold {q4} of the parameters");
        if track == "binary" {
            // Ternary rows may take what q4 may not: the allocation spends the budget.
            assert!(size * 8 > budget_bits * 98 / 100, "{model}: {} bits of {budget_bits} used", size * 8);
        }
        assert!(a["verify_ppl"].as_f64().is_some(), "the verify stage ran");

        // Deterministic packaging: a second run gives the same bytes.
        let b = run_compress(&config, &tmp.path().join("b"));
        assert_eq!(a["artifact_sha256"], b["artifact_sha256"], "{model}: zip differs between runs");

        // transformers loads it and the track's protocol, written in the reference script, agrees.
        let Some(r) = transformers_check(&tmp.path().join("a/artifact"), &fx.join(model), fx) else { return };
        assert_eq!(r["param_count"].as_i64().unwrap(), params, "{model}: transformers' parameter count");
        assert!(r["class"].as_str().unwrap().starts_with("Autoqat"), "{}", r["class"]);
        let diff = r["max_weight_diff"].as_f64().unwrap();
        assert!(diff <= 1e-6, "{model}: loaded weights differ from plain-PyTorch quantization by {diff}");
        let (got, want) = (a["eval_ppl"].as_f64().unwrap(), r["eval_ppl"].as_f64().unwrap());
        let rel = common::model::rel_err(got, want);
        assert!(rel <= 1e-4, "{model}: autoqat {got} vs transformers {want} (rel {rel})");
        assert_eq!(a["eval_tokens"].as_i64(), r["tokens"].as_i64());

        // `autoqat eval` of the zip by the docs protocol is the same number.
        let tok = fx.join(model).join("tokenizer.json");
        let e = eval_docs(&tmp.path().join("a/artifact.zip"), fx, &["--tokenizer", s(&tok)]);
        assert!(common::model::rel_err(e["eval_ppl"].as_f64().unwrap(), want) <= 1e-4);
        if ships_tokenizer {
            // The validator's own path (unzip, its exact loading arguments, AutoTokenizer from
            // the artifact, both gates) agrees with `autoqat eval` of the zip and its tokenizer.
            let zip = tmp.path().join("a/artifact.zip");
            let v = validator_path(&zip, fx, bpp).unwrap();
            assert!(v["gate_own"] == true && v["gate_reference"] == true && v["gate_param_cap"] == true, "{v}");
            let mine = eval_docs(&zip, fx, &[]);
            let rel = common::model::rel_err(mine["eval_ppl"].as_f64().unwrap(), v["eval_ppl"].as_f64().unwrap());
            assert!(rel <= 1e-4, "{model}: autoqat eval {} vs the validator's path {v} (rel {rel})", mine["eval_ppl"]);
            assert_eq!(mine["tokens"].as_i64(), v["tokens"].as_i64(), "{model}: the tokenizers disagree: {v}");
            continue;
        }
        // This artifact ships no tokenizer: scoring it without --tokenizer says what to pass.
        let out =
            autoqat(&["eval", "--model", s(&tmp.path().join("a/artifact.zip")), "--text", s(&fx.join("eval.txt"))]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.trim().lines().count() == 1 && err.contains("--tokenizer"), "{err}");
    }
}

#[test]
fn qwen3_5_compresses_to_an_artifact_transformers_scores_the_same() {
    // The live track's model family: Gated DeltaNet and gated-attention layers, shipped inside
    // the image-text wrapper (and saved text-only). The artifact holds the text decoder alone,
    // as AutoModelForCausalLM loads it.
    let Some(fx) = fixtures() else { return };
    for model in ["qwen3_5", "qwen3_5_text"] {
        qwen3_5_artifact_scores_the_same(fx, model);
    }
}

fn qwen3_5_artifact_scores_the_same(fx: &Path, model: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let config = recipe(tmp.path(), fx, model, "ternary", "");
    let a = run_compress(&config, &tmp.path().join("a"));
    assert_eq!(a["status"], "ok");
    let size = a["artifact_size_bytes"].as_i64().unwrap();
    let params = a["param_count"].as_i64().unwrap();
    assert!(size * 8 <= (params as f64 * 2.2125).ceil() as i64, "{} bits over the budget", size * 8);
    let Some(r) = transformers_check(&tmp.path().join("a/artifact"), &fx.join(model), fx) else { return };
    assert_eq!(r["class"], "AutoqatQwen3_5ForCausalLM");
    assert_eq!(r["param_count"].as_i64().unwrap(), params, "transformers' parameter count");
    // Every projection of both layer kinds went through the row quantizers.
    assert_eq!(r["quantized_matrices"].as_i64().unwrap(), 1 + 3 * 8 + 7 + 1, "{r}");
    let diff = r["max_weight_diff"].as_f64().unwrap();
    assert!(diff <= 1e-6, "loaded weights differ from plain-PyTorch quantization by {diff}");
    let (got, want) = (a["eval_ppl"].as_f64().unwrap(), r["eval_ppl"].as_f64().unwrap());
    let rel = common::model::rel_err(got, want);
    assert!(rel <= 1e-4, "{model}: autoqat {got} vs transformers {want} (rel {rel})");
    assert_eq!(a["eval_tokens"].as_i64(), r["tokens"].as_i64());
    // The validator's own path on the zip, its tokenizer from the artifact.
    let v = validator_path(&tmp.path().join("a/artifact.zip"), fx, 2.2125).unwrap();
    assert!(v["gate_own"] == true && v["gate_reference"] == true && v["finite"] == true, "{v}");
    let rel = common::model::rel_err(v["eval_ppl"].as_f64().unwrap(), got);
    assert!(rel <= 1e-4, "{model}: the validator's path scores {v} against autoqat's {got}");
}

#[test]
fn beyond_the_track_rules_the_allocation_spends_the_budget_and_q8_is_refused_within_them() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Research beyond the rules: q4 is not capped, so the ternary budget is spent.
    let config = recipe(tmp.path(), fx, "llama", "ternary", "track_rules = false");
    let a = run_compress(&config, &tmp.path().join("a"));
    let (size, params) = (a["artifact_size_bytes"].as_i64().unwrap(), a["param_count"].as_i64().unwrap());
    let budget_bits = (params as f64 * 2.2125).ceil() as i64;
    assert!(size * 8 <= budget_bits && size * 8 > budget_bits * 98 / 100, "{} bits of {budget_bits}", size * 8);
    assert!(a["q4_share"].as_f64().unwrap() > 0.10, "{}", a["q4_share"]);
    // q8 under the track's rules: one line naming the rule and the switch.
    let config = recipe(tmp.path(), fx, "llama", "ternary", "[allocate]\nkinds = [\"ternary\", \"q4\", \"q8\"]");
    let out = autoqat(&["compress", "--config", s(&config), "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1, "{err}");
    assert!(err.contains("q8") && err.contains("track_rules = false"), "{err}");
    assert_eq!(out.status.code(), Some(3));
}

/// Runs compress expecting failure; returns its one stderr line.
fn compress_fails(config: &Path, run: &Path) -> String {
    let out = autoqat(&["compress", "--config", s(config), "--run-dir", s(run)]);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "expected failure, got success");
    assert_eq!(stderr.lines().count(), 1, "expected one line, got:\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "crash", "the loop must read a crash");
    assert!(!run.join("artifact.zip").exists(), "no artifact may look finished");
    stderr
}

#[test]
fn bad_input_is_one_line_and_leaves_no_artifact() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();

    // A budget that not even all-ternary rows fit: says by how much.
    let config =
        recipe(tmp.path(), fx, "llama", "ternary", "bits_per_param = 1.0\n[allocate]\nkinds = [\"ternary\", \"q4\"]");
    let err = compress_fails(&config, &tmp.path().join("r1"));
    assert!(err.contains("over") && err.contains("bits") && err.contains("hint"), "{err}");

    // A calibration text too short for the tokens asked.
    let text = std::fs::read_to_string(&config).unwrap().replace("tokens = 4096", "tokens = 10000000");
    std::fs::write(&config, text).unwrap();
    let err = compress_fails(&config, &tmp.path().join("r2"));
    assert!(err.contains("calibration") && err.contains("fewer"), "{err}");

    // A model_type we do not build.
    let bad = tmp.path().join("gpt2");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fx.join("llama").join(f), bad.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(fx.join("llama/config.json")).unwrap().replace("\"llama\"", "\"gpt2\"");
    std::fs::write(bad.join("config.json"), cfg).unwrap();
    let text = std::fs::read_to_string(recipe(tmp.path(), fx, "llama", "ternary", "")).unwrap();
    std::fs::write(&config, text.replace(s(&fx.join("llama")), s(&bad))).unwrap();
    let err = compress_fails(&config, &tmp.path().join("r3"));
    assert!(err.contains("gpt2") && err.contains("llama"), "{err}");

    // A write that fails while packing (here a file-size limit, as a full disk would): one line,
    // a crash summary, and neither the zip nor the directory under their finished names.
    let text = std::fs::read_to_string(recipe(tmp.path(), fx, "llama", "ternary", "")).unwrap();
    std::fs::write(&config, &text).unwrap();
    let run = tmp.path().join("r4");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f 200 && exec \"$0\" compress --config '{}' --run-dir '{}'", s(&config), s(&run)))
        .arg(env!("CARGO_BIN_EXE_autoqat"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("too large") || err.contains("No space"), "{err}");
    assert!(!run.join("artifact.zip").exists() && !run.join("artifact").exists(), "a partial artifact looks finished");
    let summary = std::fs::read_to_string(run.join("summary.json")).unwrap();
    assert!(summary.contains("\"crash\""), "{summary}");

    // A typo in the recipe names the key.
    std::fs::write(&config, text.replace("[eval]", "[eval]\nbatchsize = 8")).unwrap();
    let out = autoqat(&["compress", "--config", s(&config), "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("batchsize"), "{err}");
}

#[test]
fn the_loop_searches_a_compression_workspace() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let out = autoqat(&["init", "--template", "qwen-ternary", s(&ws)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Point the goalposts at the fixture (the template's default is a hub id) and commit that.
    std::fs::create_dir_all(ws.join("data")).unwrap();
    std::fs::copy(fx.join("calib.txt"), ws.join("data/train.txt")).unwrap();
    std::fs::copy(fx.join("eval.txt"), ws.join("data/eval.txt")).unwrap();
    let recipe = ws.join("experiments/compress.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let text = text
        .replace("source = \"Qwen/Qwen2.5-0.5B\"", &format!("source = \"{}\"", s(&fx.join("llama"))))
        .replace("doc_tokens = 512", &format!("doc_tokens = {DOC_TOKENS}"))
        .replace("device = \"auto\"", "device = \"cpu\"");
    std::fs::write(&recipe, text).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).current_dir(&ws).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixture model"]);

    let out = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["run", "--max-experiments", "3"])
        .current_dir(&ws)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let results = std::fs::read_to_string(ws.join("results.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = results.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{results}");
    assert_eq!(rows[0][3], "baseline", "{results}");
    assert!(rows[0][4].parse::<f64>().is_ok_and(f64::is_finite), "{results}");
    for r in &rows[1..] {
        assert!(["keep", "discard", "crash"].contains(&r[3]), "{results}");
        // Each experiment changed one searchable key of the compression recipe.
        assert!(["allocate.", "calibration.", "distill.", "finetune."].iter().any(|k| r[15].contains(k)), "{results}");
    }
    // Every finished row carries its artifact's size, within the track's gate.
    assert!(results.starts_with(autoqat_workspace::results::HEADER), "{results}");
    for r in rows.iter().filter(|r| r[3] != "crash") {
        let bytes: i64 = r[16].parse().unwrap_or_else(|_| panic!("artifact_size_bytes: {results}"));
        let bpp: f64 = r[17].parse().unwrap_or_else(|_| panic!("bits_per_param: {results}"));
        assert!(bytes > 0 && bpp > 0.5 && bpp <= 2.2125, "{results}");
    }
    // The baseline's artifact was written and verified like any compress run.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.join("runs/0000/summary.json")).unwrap()).unwrap();
    assert!(summary["verify_ppl"].as_f64().is_some(), "{summary}");

    // The frontier over the workspace's runs: every finished run listed, at least one on the
    // frontier, and a plot that decodes as a PNG.
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["frontier", "--json", "--out", "report"])
        .current_dir(&ws)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let points: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 3, "{points:?}");
    assert!(points.iter().any(|p| p["on_frontier"] == true), "{points:?}");
    for p in points.iter().filter(|p| !p["summary"].is_null()) {
        assert!(
            p["on_frontier"] == true || !p["dominated_by"].is_null() || !p["flags"].as_array().unwrap().is_empty(),
            "{p}"
        );
    }
    let png = image::open(ws.join("report/frontier.png")).expect("frontier.png decodes");
    assert!(png.width() >= 800);
}

#[test]
fn layerwise_distillation_lowers_each_block_error_and_stays_on_the_grid() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = recipe(
        tmp.path(),
        fx,
        "qwen2",
        "ternary",
        "[distill]\nenabled = true\nsteps = 20\nlr = 1e-4\n[package]\ntokenizer = true",
    );
    let a = run_compress(&config, &tmp.path().join("a"));
    let blocks = a["distill"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    for b in blocks {
        let (before, after) = (b["mse_before"].as_f64().unwrap(), b["mse_after"].as_f64().unwrap());
        assert!(after < before, "layer {}: block output MSE {before} -> {after}", b["layer"]);
    }
    // On the grid: the zip reloaded in a fresh process (verify) and in transformers scores
    // exactly what was measured in memory, so the trained weights are what the codes hold.
    assert!(common::model::rel_err(a["verify_ppl"].as_f64().unwrap(), a["eval_ppl"].as_f64().unwrap()) <= 1e-5);
    let Some(r) = transformers_check(&tmp.path().join("a/artifact"), &fx.join("qwen2"), fx) else { return };
    let rel = common::model::rel_err(a["eval_ppl"].as_f64().unwrap(), r["eval_ppl"].as_f64().unwrap());
    assert!(rel <= 1e-4, "autoqat {} vs transformers {} after distillation", a["eval_ppl"], r["eval_ppl"]);
    // This artifact ships its tokenizer: the zip alone is enough to score it.
    let e = eval_docs(&tmp.path().join("a/artifact.zip"), fx, &[]);
    assert!(common::model::rel_err(e["eval_ppl"].as_f64().unwrap(), a["eval_ppl"].as_f64().unwrap()) <= 1e-5);
}

#[test]
fn net2net_widening_keeps_the_function_and_grows_the_budget() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = recipe(tmp.path(), fx, "llama", "ternary", "[widen]\nmlp_factor = 1.5\nsplit_noise = 1.5");
    let a = run_compress(&config, &tmp.path().join("a"));
    let w = &a["widen"];
    assert_eq!((w["intermediate_before"].as_i64(), w["intermediate_after"].as_i64()), (Some(512), Some(768)));
    let diff = w["max_logit_diff"].as_f64().unwrap();
    assert!(diff <= 1e-4, "widening changed the logits by {diff}");
    // The budget follows the wider model's parameters, counted by hand and by transformers.
    let params = hand_param_count(fx, "llama", Some(768), None);
    assert_eq!(a["param_count"].as_i64().unwrap(), params);
    assert!(a["artifact_size_bytes"].as_i64().unwrap() * 8 <= (params as f64 * 2.2125).ceil() as i64);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("a/artifact/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["intermediate_size"], 768);
    let Some(r) = transformers_check(&tmp.path().join("a/artifact"), &fx.join("llama"), fx) else { return };
    assert_eq!(r["param_count"].as_i64().unwrap(), params);
    let rel = common::model::rel_err(a["eval_ppl"].as_f64().unwrap(), r["eval_ppl"].as_f64().unwrap());
    assert!(rel <= 1e-4, "autoqat {} vs transformers {}", a["eval_ppl"], r["eval_ppl"]);
    // Duplicated units must not quantize identically: the split noise makes the down columns
    // of a unit and its copy differ. Without it they are far more alike after quantization.
    assert_eq!(r["reshaped_matrices"], 6, "{r}");
    // Pairs whose gate and up rows still quantize identically (a sensitivity that sees the
    // different down shares may already give a copy's rows another kind).
    assert!(r["duplicate_units"].as_i64().unwrap() > 0, "{r}");
    let noisy = r["duplicate_down_equal_frac"].as_f64().unwrap();
    let config = recipe(tmp.path(), fx, "llama", "ternary", "[widen]\nmlp_factor = 1.5\nsplit_noise = 0.0");
    run_compress(&config, &tmp.path().join("b"));
    let Some(r) = transformers_check(&tmp.path().join("b/artifact"), &fx.join("llama"), fx) else { return };
    let plain = r["duplicate_down_equal_frac"].as_f64().unwrap();
    assert!(noisy < 0.8 * plain, "equal down entries of duplicates: {noisy} with noise, {plain} without");
}

#[test]
fn end_to_end_finetune_lowers_the_kd_loss_and_stays_on_the_grid() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let plain = run_compress(&recipe(tmp.path(), fx, "qwen2", "binary", ""), &tmp.path().join("a"));
    let ft = "[finetune]\nenabled = true\nsteps = 40\nlr = 1e-3\nbatch = 4\ntop_k = 16";
    let tuned = run_compress(&recipe(tmp.path(), fx, "qwen2", "binary", ft), &tmp.path().join("b"));
    let report = &tuned["finetune"];
    let (first, last) = (report["loss_first"].as_f64().unwrap(), report["loss_last"].as_f64().unwrap());
    assert!(last < first, "the KD loss did not fall: {first} -> {last}");
    assert_eq!(report["skipped"], 0, "{report}");
    // The packed weights are the trained ones (whether that helps on held-out text is a
    // question for a real model: random weights cannot answer it; docs/benchmarks.md has
    // SmolLM2's figures).
    assert_ne!(tuned["artifact_sha256"], plain["artifact_sha256"]);
    assert_ne!(tuned["eval_ppl"], plain["eval_ppl"]);
    // Same allocation, same size: the fine-tune changes values, never the budget.
    assert_eq!(tuned["mix"], plain["mix"]);
    assert_eq!(tuned["artifact_size_bytes"], plain["artifact_size_bytes"]);
    // On the grid: reloaded in a fresh process and in transformers, it scores what was trained.
    assert!(common::model::rel_err(tuned["verify_ppl"].as_f64().unwrap(), tuned["eval_ppl"].as_f64().unwrap()) <= 1e-5);
    let Some(r) = transformers_check(&tmp.path().join("b/artifact"), &fx.join("qwen2"), fx) else { return };
    let rel = common::model::rel_err(tuned["eval_ppl"].as_f64().unwrap(), r["eval_ppl"].as_f64().unwrap());
    assert!(rel <= 1e-4, "autoqat {} vs transformers {} after the fine-tune", tuned["eval_ppl"], r["eval_ppl"]);
    assert!(!tmp.path().join("b/resume").exists(), "a finished run leaves no resume state");
}

/// Starts `autoqat compress` into `run` and SIGKILLs it as soon as `run/file` exists.
fn compress_killed_at(config: &Path, run: &Path, file: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["compress", "--config", s(config), "--run-dir", s(run)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !run.join(file).exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it wrote {file}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_compression_resumes_to_the_same_artifact() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let body = "[distill]\nenabled = true\nsteps = 10\n[finetune]\nenabled = true\nsteps = 400\nlr = 1e-4\nbatch = 2\ntop_k = 8\ncheckpoint_every = 10";
    let config = recipe(tmp.path(), fx, "llama", "ternary", body);
    let whole = run_compress(&config, &tmp.path().join("whole"));

    // Killed (SIGKILL: no chance to clean up) at the fine-tune's first checkpoint.
    let run = tmp.path().join("killed");
    compress_killed_at(&config, &run, "resume/checkpoint/meta.json");
    assert!(!run.join("artifact.zip").exists());
    assert!(run.join("resume/distill.json").exists() && run.join("resume/mix.json").exists());

    // --resume continues from the checkpoint and packs the very same bytes.
    let out = autoqat(&["compress", "--config", s(&config), "--run-dir", s(&run), "--resume"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("allocate: resumed") && stdout.contains("layer 1 resumed"), "{stdout}");
    assert!(stdout.contains("finetune: resuming at step "), "{stdout}");
    let resumed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(resumed["finetune"]["resumed_from"].as_u64().unwrap() >= 10, "{}", resumed["finetune"]);
    assert_eq!(resumed["artifact_sha256"], whole["artifact_sha256"], "the resumed run packed other bytes");
    assert!(!run.join("resume").exists(), "a finished run leaves no resume state");

    // Nothing to resume, or another recipe: one line naming the cause and the fix.
    let out = autoqat(&["compress", "--config", s(&config), "--run-dir", s(&run), "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1 && err.contains("nothing to resume"), "{err}");
    assert_eq!(out.status.code(), Some(3), "nothing to resume is bad input");
    let other = tmp.path().join("other");
    compress_killed_at(&config, &other, "resume/mix.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("steps = 400", "steps = 401");
    std::fs::write(&config, text).unwrap();
    let out = autoqat(&["compress", "--config", s(&config), "--run-dir", s(&other), "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1, "{err}");
    assert!(err.contains("finetune.steps differs") && err.contains("without --resume"), "{err}");
    assert_eq!(out.status.code(), Some(3), "a changed recipe is bad input");
}

/// Pids of live `autoqat` processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("autoqat") && cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_compression_killed_while_verifying_resumes_and_verifies() {
    // Regression: a kill during verify left a zip that looked finished, `--resume` said there
    // was nothing to resume, and the verify child ran on after its parent died.
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = recipe(tmp.path(), fx, "llama", "ternary", "");
    let run = tmp.path().join("killed");
    compress_killed_at(&config, &run, "artifact.zip");
    assert!(run.join("resume").exists(), "an unverified artifact keeps the state to resume from");
    // The verify child dies with its parent (give the kernel a moment to deliver it).
    let zip = run.join("artifact.zip");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !processes_mentioning(s(&zip)).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(processes_mentioning(s(&zip)).is_empty(), "the verify process outlived its parent");
    let out = autoqat(&["compress", "--config", s(&config), "--run-dir", s(&run), "--resume", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["verify_ppl"].as_f64().is_some(), "the resumed run verified: {summary}");
    assert!(!run.join("resume").exists());
}

#[test]
fn an_impossible_budget_is_refused_before_any_model_work() {
    // Regression: bits_per_param = 0.5 ran the full-precision eval and calibration first, then
    // printed a negative budget, 22,256,800% and a hint to allow a cheaper kind than binary.
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = recipe(tmp.path(), fx, "llama", "binary", "bits_per_param = 0.5");
    let run = tmp.path().join("r");
    let err = compress_fails(&config, &run);
    assert!(err.contains("0.5 bits per parameter") && err.contains("raise budget.bits_per_param to at least"), "{err}");
    assert!(!err.contains('%') && !err.contains("cheaper"), "{err}");
    assert!(!run.join("resume/fp.json").exists(), "the full-precision eval must not have run");
}

#[test]
fn widening_query_heads_keeps_the_function_under_grouped_query_attention() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // qwen2: q bias, and two query heads per key/value head in the fixture.
    let config = recipe(tmp.path(), fx, "qwen2", "ternary", "[widen]\nheads_factor = 2.0\nmlp_factor = 1.25");
    let a = run_compress(&config, &tmp.path().join("a"));
    let w = &a["widen"];
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("qwen2/config.json")).unwrap()).unwrap();
    let heads = cfg["num_attention_heads"].as_i64().unwrap();
    assert_eq!((w["heads_before"].as_i64(), w["heads_after"].as_i64()), (Some(heads), Some(2 * heads)));
    let diff = w["max_logit_diff"].as_f64().unwrap();
    assert!(diff <= 1e-4, "widening the heads changed the logits by {diff}");
    let wide_i = w["intermediate_after"].as_i64().unwrap();
    let params = hand_param_count(fx, "qwen2", Some(wide_i), Some(2 * heads));
    assert_eq!(a["param_count"].as_i64().unwrap(), params);
    let art: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("a/artifact/config.json")).unwrap()).unwrap();
    assert_eq!(art["num_attention_heads"].as_i64(), Some(2 * heads));
    let hd = cfg["hidden_size"].as_i64().unwrap() / heads;
    assert_eq!(art["head_dim"].as_i64(), Some(hd), "the head width must stay, written explicitly");
    // transformers builds the wider attention from the config and scores what autoqat scored.
    let Some(r) = transformers_check(&tmp.path().join("a/artifact"), &fx.join("qwen2"), fx) else { return };
    assert_eq!(r["param_count"].as_i64().unwrap(), params);
    let rel = common::model::rel_err(a["eval_ppl"].as_f64().unwrap(), r["eval_ppl"].as_f64().unwrap());
    assert!(rel <= 1e-4, "autoqat {} vs transformers {}", a["eval_ppl"], r["eval_ppl"]);
}

#[test]
fn offloaded_layers_pack_the_same_bytes_as_a_resident_model() {
    // Decoder layers read in one at a time (the default) must change nothing but memory: every
    // sensitivity's scores, the layerwise stage and the apply pass see the same weights.
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("fisher", "[allocate]\nsensitivity = \"fisher\"\n[distill]\nenabled = true\nsteps = 6"),
        ("activation", "[allocate]\nsensitivity = \"activation\""),
        ("mse", "[allocate]\nsensitivity = \"mse\""),
    ];
    for (name, body) in cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = recipe(&dir, fx, "qwen2", "ternary", body);
        let offloaded = run_compress(&config, &dir.join("offloaded"));
        let text = std::fs::read_to_string(&config).unwrap().replacen("[model]\n", "[model]\noffload = false\n", 1);
        std::fs::write(&config, text).unwrap();
        let resident = run_compress(&config, &dir.join("resident"));
        assert_eq!(
            offloaded["artifact_sha256"], resident["artifact_sha256"],
            "{name}: offloading changed the artifact"
        );
        assert_eq!(offloaded["eval_ppl"], resident["eval_ppl"], "{name}");
        assert_eq!((offloaded["offloaded"].as_bool(), resident["offloaded"].as_bool()), (Some(true), Some(false)));
        // `autoqat eval --offload` (what verify runs) unpacks the zip to dense shards and reads
        // them a layer at a time: the same number as the whole model in memory.
        let zip = dir.join("offloaded/artifact.zip");
        let tok = fx.join("qwen2").join("tokenizer.json");
        let whole = eval_docs(&zip, fx, &["--tokenizer", s(&tok)]);
        let paged = eval_docs(&zip, fx, &["--tokenizer", s(&tok), "--offload"]);
        assert_eq!(whole["eval_ppl"], paged["eval_ppl"], "{name}: eval --offload scored another PPL");
    }
}

/// Copies the safetensors file `src` to `dst` with one more tensor, `autoqat.padding`, of `pad`
/// pseudo-random bytes appended, streamed in 1 MiB blocks: a weights file past 4 GiB that this
/// process never holds.
fn pad_safetensors(src: &Path, dst: &Path, pad: u64) {
    use std::io::{Read, Write};
    let mut f = std::fs::File::open(src).unwrap();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).unwrap();
    let mut header = vec![0u8; u64::from_le_bytes(n) as usize];
    f.read_exact(&mut header).unwrap();
    let mut meta: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).unwrap();
    let end = meta.values().filter_map(|t| t["data_offsets"][1].as_u64()).max().unwrap();
    meta.insert(
        "autoqat.padding".into(),
        serde_json::json!({"dtype": "U8", "shape": [pad], "data_offsets": [end, end + pad]}),
    );
    let mut header = serde_json::to_vec(&meta).unwrap();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    out.write_all(&header).unwrap();
    std::io::copy(&mut f, &mut out).unwrap();
    let (mut block, mut x, mut left) = (vec![0u8; 1 << 20], 0x9e37_79b9_7f4a_7c15u64, pad);
    while left > 0 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let k = left.min(block.len() as u64) as usize;
        out.write_all(&block[..k]).unwrap();
        left -= k as u64;
    }
    out.flush().unwrap();
}

/// This process's peak resident memory in MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[test]
#[ignore = "writes about 13 GB under the temporary directory (47 s on the development machine): run with `cargo test --test compress_cli -- --ignored zip64`"]
fn a_zip64_artifact_past_4_gib_is_zipped_by_streaming_and_the_validator_reads_it() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = recipe(tmp.path(), fx, "llama", "ternary", "");
    let a = run_compress(&config, &tmp.path().join("a"));
    let small = validator_path(&tmp.path().join("a/artifact.zip"), fx, 2.2125).unwrap();

    // The same artifact with its weights file grown past 4 GiB.
    let (src, big) = (tmp.path().join("a/artifact"), tmp.path().join("big"));
    std::fs::create_dir_all(&big).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name();
        if name != "model.safetensors" {
            std::fs::copy(src.join(&name), big.join(&name)).unwrap();
        }
    }
    let pad = (1u64 << 32) + (64 << 20);
    pad_safetensors(&src.join("model.safetensors"), &big.join("model.safetensors"), pad);
    let weights_len = std::fs::metadata(big.join("model.safetensors")).unwrap().len();
    assert!(weights_len > u32::MAX as u64);

    let before = peak_rss_mb();
    let zip = tmp.path().join("big.zip");
    autoqat_compress::artifact::zip_dir(&big, &zip).unwrap();
    let grew = peak_rss_mb() - before;
    assert!(grew < 64.0, "zipping {weights_len} bytes raised the peak RSS by {grew:.0} MB");
    let (sha, size) = autoqat_compress::artifact::sha256_file(&zip).unwrap();
    assert!(size as u64 > weights_len && sha.len() == 64);

    // The zip crate reads the ZIP64 sizes back from the central directory.
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip).unwrap()).unwrap();
    assert_eq!(archive.by_name("model.safetensors").unwrap().size(), weights_len);

    // Python's zipfile unpacks it (checking every CRC) and transformers loads it with the
    // validator's arguments: the same perplexity as the small artifact, and the gate now fails.
    let v = validator_path(&zip, fx, 2.2125).unwrap();
    assert_eq!(v["eval_ppl"], small["eval_ppl"], "{v} vs {small}");
    assert_eq!(v["tokens"], small["tokens"]);
    assert_eq!(v["gate_own"], false, "{v}");
    assert_eq!(a["artifact_sha256"].as_str().unwrap().len(), 64);
}
