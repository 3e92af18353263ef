//! Qwen3.5/3.6 hybrid models (Gated DeltaNet + gated full attention) against Hugging Face
//! transformers on tiny random checkpoints made by `tests/reference/make_qwen3_5.py`: the
//! text-only save and the image-text wrapper the real models ship as (with `mtp.*` tensors).
//! Logits to 1e-4 relative, perplexity by both protocols to 1e-4, the parameter count as
//! transformers counts it, the chunked and recurrent forms against each other, and one-line
//! errors for malformed configs and checkpoints.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autoqat_model::{
    greedy_decode, line_documents, load_causal_lm, load_offloaded, perplexity, perplexity_docs, save_pretrained,
    DocEvalOptions, EvalOptions, KvCache, LayerType, ModelConfig, PlainBuilder, TextTokenizer,
};
use tch::{Device, Kind, Tensor};

const DIRS: [&str; 2] = ["text", "wrapped"];

fn fixture() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = common::repo_root().join("crates/model/tests/reference/make_qwen3_5.py");
        common::script_fixture("qwen3_5-ref", &script, &[], "reference.json")
    })
    .as_deref()
}

fn refs(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect()
}

/// `max |a - b| / max |b|`: relative to the logits' scale, so near-zero entries do not dominate.
fn rel_max_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

#[test]
fn hybrid_logits_match_transformers_text_only_and_wrapped() {
    let Some(dir) = fixture() else { return };
    let refs = refs(dir);
    for name in DIRS {
        let loaded = load_causal_lm(dir.join(name).to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        assert_eq!(
            loaded.cfg.layer_types,
            [
                LayerType::LinearAttention,
                LayerType::FullAttention,
                LayerType::LinearAttention,
                LayerType::LinearAttention,
                LayerType::FullAttention
            ]
        );
        assert_eq!(loaded.cfg.rotary_dim(), 4, "partial rotary 0.25 of head_dim 16");
        let logits = tch::no_grad(|| loaded.model.forward(&refs["ids"]));
        let want = &refs[&format!("logits.{name}")];
        assert_eq!(logits.size(), want.size());
        let err = rel_max_err(&logits, want);
        assert!(err <= 1e-4, "{name}: logits rel err {err}");
    }
}

#[test]
fn wrapper_loads_only_the_text_decoder() {
    let Some(dir) = fixture() else { return };
    let loaded =
        load_causal_lm(dir.join("wrapped").to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    assert!(loaded.cfg.wrapped);
    let ours: BTreeSet<String> = loaded.vs.variables().into_keys().collect();
    // The variables are the text-only checkpoint's keys: nothing of model.visual.* or mtp.*.
    let text: BTreeSet<String> =
        Tensor::read_safetensors(dir.join("text/model.safetensors")).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(ours, text);
    let file: Vec<String> =
        Tensor::read_safetensors(dir.join("wrapped/model.safetensors")).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(file.iter().any(|n| n.starts_with("model.visual.")) && file.iter().any(|n| n.starts_with("mtp.")));
}

#[test]
fn parameter_count_is_what_transformers_counts() {
    let Some(dir) = fixture() else { return };
    let reference = common::reference_ppl(dir);
    for name in DIRS {
        let loaded = load_causal_lm(dir.join(name).to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        let ours: i64 = loaded.vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(ours, reference["models"][name]["param_count"].as_i64().unwrap(), "{name}");
    }
}

#[test]
fn hybrid_perplexity_matches_transformers_both_protocols() {
    let Some(dir) = fixture() else { return };
    let reference = common::reference_ppl(dir);
    let text = std::fs::read_to_string(dir.join("text.txt")).unwrap();
    for name in DIRS {
        let loaded = load_causal_lm(dir.join(name).to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        let tok = TextTokenizer::from_path(&loaded.dir).unwrap();
        let ids = tok.encode(&text).unwrap();
        let want = &reference["models"][name];
        for setting in reference["settings"].as_array().unwrap() {
            let (ctx, stride) = (setting[0].as_u64().unwrap() as usize, setting[1].as_u64().unwrap() as usize);
            let opts = EvalOptions { ctx, stride, batch: 3 };
            let got = perplexity(&loaded.model, &ids, text.len(), &opts, Device::Cpu).unwrap();
            let w = &want[format!("{ctx}/{stride}")];
            let err = common::rel_err(got.eval_ppl, w["eval_ppl"].as_f64().unwrap());
            assert!(err <= 1e-4, "{name} {ctx}/{stride}: ppl {} (rel err {err})", got.eval_ppl);
            assert_eq!(got.tokens as u64, w["tokens"].as_u64().unwrap());
        }
        let doc_tokens = reference["doc_tokens"].as_u64().unwrap() as usize;
        let opts = DocEvalOptions { max_tokens: doc_tokens, batch: reference["doc_batch"].as_u64().unwrap() as usize };
        let docs = line_documents(&tok, &text, doc_tokens).unwrap();
        let got = perplexity_docs(&loaded.model, &docs, text.len(), &opts, Device::Cpu).unwrap();
        let w = &want["docs"];
        let err = common::rel_err(got.eval_ppl, w["eval_ppl"].as_f64().unwrap());
        assert!(err <= 1e-4, "{name} docs: ppl {} vs {} (rel err {err})", got.eval_ppl, w["eval_ppl"]);
        assert_eq!(got.tokens as u64, w["tokens"].as_u64().unwrap());
    }
}

#[test]
fn chunked_and_recurrent_forms_agree() {
    let Some(dir) = fixture() else { return };
    let refs = refs(dir);
    let loaded = load_causal_lm(dir.join("text").to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let ids = refs["ids"].narrow(1, 0, 131); // two full chunks and a partial one
    tch::no_grad(|| {
        let chunked = loaded.model.forward(&ids);
        // Token by token through the recurrent form with conv and recurrent states.
        let recurrent = loaded.model.forward_recurrent(&ids, &mut KvCache::new());
        let err = rel_max_err(&recurrent.select(1, -1), &chunked.select(1, -1));
        assert!(err <= 1e-4, "last-position logits: recurrent vs chunked rel err {err}");
        let err = rel_max_err(&recurrent, &chunked);
        assert!(err <= 1e-4, "all positions: rel err {err}");
        // The decoding path: a chunked prefill, then one token at a time from its states.
        let mut cache = KvCache::new();
        let prefill = loaded.model.forward_cached(&ids.narrow(1, 0, 100), &mut cache);
        let mut last = prefill.select(1, -1);
        for t in 100..131 {
            last = loaded.model.forward_cached(&ids.narrow(1, t, 1), &mut cache).select(1, -1);
        }
        let err = rel_max_err(&last, &chunked.select(1, -1));
        assert!(err <= 1e-4, "prefill + decode vs one pass: rel err {err}");
    });
}

#[test]
fn greedy_decoding_matches_transformers_generate() {
    // transformers decodes with its own cache (conv and recurrent states); ours prefills in the
    // chunked form and then steps in the recurrent one.
    let Some(dir) = fixture() else { return };
    let reference = common::reference_ppl(dir);
    let want = &reference["models"]["wrapped"]["greedy"];
    let ids = |k: &str| want[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<Vec<i64>>();
    let loaded =
        load_causal_lm(dir.join("wrapped").to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let expected = ids("continuation");
    let got = greedy_decode(&loaded.model, &ids("prompt"), expected.len(), &[], 0, Device::Cpu).unwrap();
    assert_eq!(got.steps.iter().map(|s| s.id).collect::<Vec<_>>(), expected);
}

#[test]
fn offloaded_wrapper_matches_the_resident_model() {
    let Some(dir) = fixture() else { return };
    let refs = refs(dir);
    let (offloaded, _offload) =
        load_offloaded(dir.join("wrapped").to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let logits = tch::no_grad(|| offloaded.model.forward(&refs["ids"]));
    let err = rel_max_err(&logits, &refs["logits.wrapped"]);
    assert!(err <= 1e-4, "offloaded wrapper: rel err {err}");
}

#[test]
fn saved_hybrid_reloads_with_identical_logits() {
    let Some(dir) = fixture() else { return };
    let refs = refs(dir);
    let a = load_causal_lm(dir.join("wrapped").to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(&a.vs, &a.cfg, out.path()).unwrap();
    let b = load_causal_lm(out.path().to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    // Saved text-only: the same decoder, named as qwen3_5_text.
    assert!(!b.cfg.wrapped);
    assert_eq!(ModelConfig { wrapped: false, ..a.cfg.clone() }, b.cfg);
    let (la, lb) = tch::no_grad(|| (a.model.forward(&refs["ids"]), b.model.forward(&refs["ids"])));
    assert_eq!((la - lb).abs().max().double_value(&[]), 0.0);
}

/// The fixture's text config with `edit` applied to its JSON.
fn edited_config(edit: impl FnOnce(&mut serde_json::Value)) -> Option<String> {
    let dir = fixture()?;
    let text = std::fs::read_to_string(dir.join("text/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    Some(v.to_string())
}

#[test]
fn layer_types_of_the_wrong_length_is_one_line() {
    let Some(cfg) = edited_config(|v| {
        v["layer_types"].as_array_mut().unwrap().pop();
    }) else {
        return;
    };
    let err = ModelConfig::from_json_str(&cfg).unwrap_err().to_string();
    assert!(err.contains("layer_types has 4 entries but num_hidden_layers is 5"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn unknown_layer_type_is_named() {
    let Some(cfg) = edited_config(|v| v["layer_types"][2] = "sliding_attention".into()) else { return };
    let err = ModelConfig::from_json_str(&cfg).unwrap_err().to_string();
    assert!(err.contains("layer_types[2] = \"sliding_attention\"") && err.contains("linear_attention"), "{err}");
}

#[test]
fn wrapper_without_text_config_is_one_line() {
    let err = ModelConfig::from_json_str(r#"{"model_type":"qwen3_5","vision_config":{}}"#).unwrap_err().to_string();
    assert!(err.contains("text_config") && !err.contains('\n'), "{err}");
}

#[test]
fn checkpoint_missing_a_deltanet_tensor_names_it() {
    let Some(dir) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.join("text").join(f), tmp.path().join(f)).unwrap();
    }
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(dir.join("text/model.safetensors"))
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.2.linear_attn.A_log")
        .collect();
    Tensor::write_safetensors(&tensors, tmp.path().join("model.safetensors")).unwrap();
    let err =
        load_causal_lm(tmp.path().to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap_err().to_string();
    assert!(err.contains("model.layers.2.linear_attn.A_log"), "{err}");
}
