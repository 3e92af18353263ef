//! The tch models against Hugging Face transformers on tiny random checkpoints: fp32 logits
//! (max abs error 1e-4), checkpoint key names, tokenizer ids, and the guide's perplexity
//! (relative error 1e-4) through the library.

mod common;

use std::collections::BTreeSet;

use autoqat_model::{load_causal_lm, perplexity, save_pretrained, EvalOptions, PlainBuilder, TextTokenizer};
use tch::{Device, Kind, Tensor};

fn reference_tensors(dir: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("reference.safetensors")).expect("reference.safetensors").into_iter().collect()
}

fn logits_err(name: &str) -> Option<f64> {
    let dir = common::fixtures()?;
    let refs = reference_tensors(dir);
    let loaded = load_causal_lm(dir.join(name).to_str()?, Device::Cpu, Kind::Float, &PlainBuilder)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let logits = tch::no_grad(|| loaded.model.forward(&refs["ids"]));
    let expected = &refs[&format!("logits.{name}")];
    assert_eq!(logits.size(), expected.size(), "{name}: logits shape");
    Some((logits - expected).abs().max().double_value(&[]))
}

#[test]
fn llama_gqa_tied_llama3_rope_logits_match_transformers() {
    if let Some(err) = logits_err("llama") {
        assert!(err <= 1e-4, "llama max abs err {err}");
    }
}

#[test]
fn qwen2_bias_sharded_logits_match_transformers() {
    if let Some(err) = logits_err("qwen2") {
        assert!(err <= 1e-4, "qwen2 max abs err {err}");
    }
}

#[test]
fn qwen3_qk_norm_logits_match_transformers() {
    if let Some(err) = logits_err("qwen3") {
        assert!(err <= 1e-4, "qwen3 max abs err {err}");
    }
}

#[test]
fn bf16_checkpoint_loads_and_matches_in_f32() {
    if let Some(err) = logits_err("llama_bf16") {
        assert!(err <= 1e-4, "llama_bf16 max abs err {err}");
    }
}

#[test]
fn variable_names_are_the_checkpoint_keys() {
    let Some(dir) = common::fixtures() else { return };
    for name in ["llama", "qwen3"] {
        let path = dir.join(name);
        let loaded = load_causal_lm(path.to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        let ours: BTreeSet<String> = loaded.vs.variables().into_keys().collect();
        let theirs: BTreeSet<String> =
            Tensor::read_safetensors(path.join("model.safetensors")).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(ours, theirs, "{name}");
    }
}

#[test]
fn tokenizer_ids_match_python_tokenizers() {
    let Some(dir) = common::fixtures() else { return };
    let refs = reference_tensors(dir);
    let text = std::fs::read_to_string(dir.join("text.txt")).unwrap();
    let ids = TextTokenizer::from_path(&dir.join("llama")).unwrap().encode(&text).unwrap();
    let expected = Vec::<i64>::try_from(&refs["text_ids"]).unwrap();
    assert_eq!(ids, expected);
}

#[test]
fn perplexity_matches_the_guide_in_transformers() {
    let Some(dir) = common::fixtures() else { return };
    let reference = common::reference_ppl(dir);
    if !common::on_wikitext(&reference) {
        eprintln!("note: wikitext-2 absent; comparing on the generated text instead");
    }
    let text = std::fs::read_to_string(dir.join("text.txt")).unwrap();
    for name in ["llama", "qwen2", "qwen3"] {
        let loaded = load_causal_lm(dir.join(name).to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        let ids = TextTokenizer::from_path(&loaded.dir).unwrap().encode(&text).unwrap();
        for (key, want) in reference["models"][name].as_object().unwrap() {
            let (ctx, stride) = key.split_once('/').unwrap();
            let (ctx, stride): (usize, usize) = (ctx.parse().unwrap(), stride.parse().unwrap());
            // Batches of 3 windows: batching must not change the result.
            let opts = EvalOptions { ctx, stride, batch: 3 };
            let got = perplexity(&loaded.model, &ids, text.len(), &opts, Device::Cpu).unwrap();
            let want_ppl = want["eval_ppl"].as_f64().unwrap();
            let err = common::rel_err(got.eval_ppl, want_ppl);
            assert!(err <= 1e-4, "{name} {key}: ppl {} vs transformers {want_ppl} (rel err {err})", got.eval_ppl);
            assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap(), "{name} {key}: token count");
            let bpb = got.eval_loss * got.tokens as f64 / (text.len() as f64 * std::f64::consts::LN_2);
            assert!((got.eval_bpb - bpb).abs() < 1e-12);
        }
    }
}

#[test]
fn saved_model_reloads_with_identical_logits() {
    let Some(dir) = common::fixtures() else { return };
    let refs = reference_tensors(dir);
    let a = load_causal_lm(dir.join("qwen3").to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(&a.vs, &a.cfg, out.path()).unwrap();
    let b = load_causal_lm(out.path().to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    assert_eq!(a.cfg, b.cfg);
    let (la, lb) = tch::no_grad(|| (a.model.forward(&refs["ids"]), b.model.forward(&refs["ids"])));
    assert_eq!((la - lb).abs().max().double_value(&[]), 0.0);
}
