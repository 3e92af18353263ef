//! A packed student export decoded on the packed low-bit CPU kernels
//! (`load_packed_kernels`) computes what the dense reference (`load_packed`: codes dequantized
//! to f32, inputs quantized as in the trial) computes: logits within a float tolerance and the
//! same greedy tokens, for full-precision, A8 per-token and A4 students.

mod common;

use std::path::{Path, PathBuf};

use autoqat_model::kernel_linear::ActMode;
use autoqat_model::{greedy_decode, CausalLM};
use autoqat_qat::export::{export_all, load_packed, load_packed_kernels};
use autoqat_qat::student::load_student;
use tch::{Device, Kind, Tensor};

/// Exports the untrained student of the tiny model under `extra` (recipe TOML) into `run`.
fn export(model: &Path, extra: &str, run: &Path) -> PathBuf {
    let recipe = common::tiny_recipe(model, extra);
    let student = load_student(&recipe, Device::Cpu).unwrap();
    export_all(&recipe, &student, run).unwrap();
    run.join("export")
}

/// Largest |a - b| over largest |a|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / a.abs().max().double_value(&[]).max(1e-30)
}

/// Ids spread over the model's vocabulary (its size depends on what the fixture's tokenizer
/// learned, below 300 on some corpora).
fn prompt(model: &CausalLM) -> Vec<i64> {
    (0..20).map(|i| (i * 37 + 5) % model.cfg.vocab_size).collect()
}

/// Full-sequence logits (the matmul path) and greedy decoding (the matvec path) agree.
fn assert_same(dense: &CausalLM, kern: &CausalLM, tol: f64, what: &str) {
    let ids = Tensor::from_slice(&prompt(dense)).unsqueeze(0);
    let (a, b) = tch::no_grad(|| (dense.forward(&ids).to_kind(Kind::Float), kern.forward(&ids).to_kind(Kind::Float)));
    let rel = rel_diff(&a, &b);
    eprintln!("{what}: logits differ by {rel:e} relative");
    assert!(rel < tol, "{what}: logits differ by {rel:e} relative (tolerance {tol:e})");
    let want = greedy_decode(dense, &prompt(dense), 16, &[], 3, Device::Cpu).unwrap();
    let got = greedy_decode(kern, &prompt(dense), 16, &[], 3, Device::Cpu).unwrap();
    let ids = |d: &autoqat_model::Decoded| d.steps.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&want), "{what}: greedy tokens differ");
    for (g, w) in got.steps.iter().zip(&want.steps) {
        assert!((g.logprob - w.logprob).abs() < 1e-3, "{what}: logprob {} vs {}", g.logprob, w.logprob);
    }
}

#[test]
fn packed_student_decodes_the_same_on_the_kernels() {
    let Some(model) = common::tiny_model() else { return };
    let run = tempfile::tempdir().unwrap();
    // Deadzone recovery folds a bias into every packed layer.
    let dir = export(
        &model,
        "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"per_row\"\n[deadzone_recovery]\nenabled = true\n",
        run.path(),
    );
    let dense = load_packed(&dir, Device::Cpu).unwrap();
    for threads in [1, 2] {
        let kern = load_packed_kernels(&dir, threads, None).unwrap();
        assert_eq!(kern.mode, ActMode::F32, "a W-only student runs with exact inputs");
        // 2 layers x 7 projections on the kernels; the tied head stays dense.
        assert!(kern.packed_bytes > 0);
        assert!(!kern.vs.variables().keys().any(|k| k.ends_with("proj.weight")), "no dense copy of a packed weight");
        assert_same(&dense.model, &kern.model, 1e-4, &format!("W1.58 A16, {threads} threads"));
    }
}

#[test]
fn a8_student_decodes_the_same_with_int8_per_token_acts() {
    let Some(model) = common::tiny_model() else { return };
    let run = tempfile::tempdir().unwrap();
    let dir = export(
        &model,
        "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"group64\"\n[activations]\nbits = \"8\"\ngranularity = \"per_token\"\n",
        run.path(),
    );
    let dense = load_packed(&dir, Device::Cpu).unwrap();
    let kern = load_packed_kernels(&dir, 2, None).unwrap();
    assert_eq!(kern.mode, ActMode::Int8PerVector, "an A8 per-token student takes int8 inputs");
    assert_same(&dense.model, &kern.model, 1e-4, "W1.58 A8 (int8 kernels)");
    // Exact f32 products after the same fake quantization agree as well.
    let f32 = load_packed_kernels(&dir, 1, Some(ActMode::F32)).unwrap();
    assert_same(&dense.model, &f32.model, 1e-4, "W1.58 A8 (f32 kernels)");
}

#[test]
fn a4_student_keeps_its_input_quantization_on_the_kernels() {
    let Some(model) = common::tiny_model() else { return };
    let run = tempfile::tempdir().unwrap();
    let dir = export(
        &model,
        "[quant]\nmethod = \"ternary_absmean\"\ngranularity = \"per_tensor\"\n[activations]\nbits = \"4\"\ngranularity = \"per_token\"\n",
        run.path(),
    );
    let dense = load_packed(&dir, Device::Cpu).unwrap();
    let kern = load_packed_kernels(&dir, 1, None).unwrap();
    assert_eq!(kern.mode, ActMode::F32);
    assert_same(&dense.model, &kern.model, 1e-4, "W1.58 A4 per tensor");
}
