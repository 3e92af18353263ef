//! A compression artifact whose matrices mix every row kind, decoded on the packed low-bit CPU
//! kernels (`kernel_load::load_kernels`), computes what the dense reader (`artifact::load`)
//! computes: logits within a float tolerance and the same greedy tokens, from the directory
//! and from the zip.

use std::path::Path;

use autoqat_compress::artifact::{self, ArtifactFiles};
use autoqat_compress::kernel_load::load_kernels;
use autoqat_compress::rows::{self, RowKind};
use autoqat_model::kernel_linear::ActMode;
use autoqat_model::load::{build_causal_lm, write_safetensors};
use autoqat_model::{greedy_decode, CausalLM, ModelConfig, PlainBuilder};
use tch::{Device, Kind, Tensor};

/// A Llama config with widths that are not multiples of the kernels' 128-value blocks.
const CONFIG: &str = r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 160,
    "intermediate_size": 352, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "hidden_act": "silu"}"#;

/// Writes an artifact directory of a random model: every projection and the head quantized with
/// rows of all four kinds, everything else in f16.
fn write_artifact(dir: &Path) {
    tch::manual_seed(11);
    let cfg = ModelConfig::from_json_str(CONFIG).unwrap();
    let (vs, _) = build_causal_lm(&cfg, Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors = Vec::new();
    for (i, (name, var)) in vars.iter().enumerate() {
        let quantized = name.ends_with("proj.weight") || name == "lm_head.weight";
        if !quantized {
            tensors.push((name.clone(), var.detach().to_kind(Kind::Half)));
            continue;
        }
        // Weights with some spread, so each kind rounds differently.
        let w = var.detach() * 5.0;
        let prefix = name.trim_end_matches(".weight");
        let n = w.size()[0] as usize;
        // Mostly ternary, as the track allocates, with every other kind present.
        let kinds: Vec<RowKind> = (0..n)
            .map(|r| match (r + i) % 8 {
                0 => RowKind::Binary,
                1 => RowKind::Q4,
                2 => RowKind::Q8,
                _ => RowKind::Ternary,
            })
            .collect();
        tensors.push((format!("{prefix}.row_kind"), Tensor::from_slice(&rows::pack_kinds(&kinds))));
        for (kind, idx) in rows::kind_groups(&kinds, Device::Cpu) {
            let q = rows::quantize(&w.index_select(0, &idx), kind).unwrap();
            tensors.push((format!("{prefix}.{}.codes", kind.name()), q.packed));
            tensors.push((format!("{prefix}.{}.scales", kind.name()), q.scales));
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(&tensors, &dir.join(artifact::WEIGHTS)).unwrap();
    let source: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    let cfg = artifact::artifact_config(&source, serde_json::json!({ "format": artifact::FORMAT })).unwrap();
    std::fs::write(dir.join("config.json"), cfg).unwrap();
}

/// Ids spread over the model's vocabulary (its size depends on what the fixture's tokenizer
/// learned, below 300 on some corpora).
fn prompt(model: &CausalLM) -> Vec<i64> {
    (0..24).map(|i| (i * 53 + 7) % model.cfg.vocab_size).collect()
}

fn logits(model: &CausalLM) -> Tensor {
    tch::no_grad(|| model.forward(&Tensor::from_slice(&prompt(model)).unsqueeze(0)))
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]).max(1e-30)
}

fn greedy(model: &CausalLM) -> Vec<i64> {
    greedy_decode(model, &prompt(model), 16, &[], 0, Device::Cpu).unwrap().steps.iter().map(|s| s.id).collect()
}

#[test]
fn mixed_row_artifact_decodes_the_same_on_the_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("artifact");
    write_artifact(&dir);
    let zip = tmp.path().join("artifact.zip");
    artifact::zip_dir(&dir, &zip).unwrap();
    assert!(artifact::is_artifact(&dir) && artifact::is_artifact(&zip));

    let files = ArtifactFiles::read(&dir).unwrap();
    let dense = artifact::load(&files, Device::Cpu, Kind::Float).unwrap();
    let want = logits(&dense.model);
    let want_ids = greedy(&dense.model);
    for (source, threads) in [(&dir, 1), (&zip, 2)] {
        let files = ArtifactFiles::read(source).unwrap();
        let kern = load_kernels(&files, threads, ActMode::F32).unwrap();
        // 2 layers x 7 projections + the head, none held dense.
        assert_eq!(kern.packed.len(), 15);
        assert!(!kern.vs.variables().keys().any(|k| k.ends_with("proj.weight") || k == "lm_head.weight"));
        let rel = rel_diff(&want, &logits(&kern.model));
        eprintln!("{}: f32 acts, {threads} threads: logits differ by {rel:e} relative", source.display());
        assert!(rel < 1e-4, "f32 acts: logits differ by {rel:e} relative");
        assert_eq!(greedy(&kern.model), want_ids, "greedy tokens differ");
    }

    // int8 per-block inputs (llama.cpp-style Q8 activations): close, not exact.
    let kern = load_kernels(&files, 2, ActMode::Int8PerBlock).unwrap();
    let rel = rel_diff(&want, &logits(&kern.model));
    eprintln!("int8 per-block acts: logits differ by {rel:e} relative");
    assert!(rel < 1e-1, "int8 acts: logits differ by {rel:e} relative");
}
