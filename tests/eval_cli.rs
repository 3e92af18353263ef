//! `autoqat eval` as a user runs it: perplexity against transformers' guide algorithm, and
//! one clear line with a non-zero exit for each kind of bad input.

mod common;

use common::{autoqat, s};

use std::path::Path;

/// Runs `autoqat eval` expecting failure; returns its one stderr line.
fn eval_fails(args: &[&str]) -> String {
    let mut full = vec!["eval"];
    full.extend_from_slice(args);
    let out = autoqat(&full);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "expected failure for {args:?}, got success");
    assert_eq!(stderr.lines().count(), 1, "expected one line for {args:?}, got:\n{stderr}");
    stderr
}

/// A copy of the tiny Llama fixture in a fresh temp dir, for breaking.
fn llama_copy(fixtures: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures.join("llama").join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

#[test]
fn eval_ppl_matches_transformers_guide_at_two_settings() {
    let Some(dir) = common::model::fixtures() else { return };
    let reference = common::model::reference_ppl(dir);
    if !common::model::on_wikitext(&reference) {
        eprintln!("note: wikitext-2 absent; comparing on the generated text instead");
    }
    let (text, model) = (dir.join("text.txt"), dir.join("llama"));
    // Resident, and with the decoder layers read in one at a time (`--offload`).
    let cases = reference["models"]["llama"].as_object().unwrap().iter().flat_map(|kv| [(kv, false), (kv, true)]);
    for ((key, want), offload) in cases {
        let (ctx, stride) = key.split_once('/').unwrap();
        let mut args = vec![
            "eval",
            "--model",
            s(&model),
            "--text",
            s(&text),
            "--ctx",
            ctx,
            "--stride",
            stride,
            "--batch",
            "2",
            "--device",
            "cpu",
            "--json",
        ];
        if offload {
            args.push("--offload");
        }
        let out = autoqat(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        let (got_ppl, want_ppl) = (got["eval_ppl"].as_f64().unwrap(), want["eval_ppl"].as_f64().unwrap());
        let err = common::model::rel_err(got_ppl, want_ppl);
        assert!(err <= 1e-4, "{key} (offload {offload}): autoqat {got_ppl} vs transformers {want_ppl} (rel err {err})");
        assert_eq!(got["tokens"], want["tokens"]);
        assert_eq!(got["bytes"].as_u64().unwrap(), std::fs::metadata(&text).unwrap().len());
        for k in ["eval_loss", "eval_bpb", "tokens_per_s"] {
            assert!(got[k].as_f64().is_some_and(f64::is_finite), "{k} missing");
        }
    }
}

#[test]
fn human_output_has_grepable_lines() {
    let Some(dir) = common::model::fixtures() else { return };
    let out =
        autoqat(&["eval", "--model", s(&dir.join("qwen2")), "--text", s(&dir.join("text.txt")), "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in ["eval_loss:", "eval_ppl:", "eval_bpb:", "tokens:", "bytes:", "tokens_per_s:"] {
        assert!(stdout.lines().any(|l| l.starts_with(key)), "no {key} line in:\n{stdout}");
    }
}

#[test]
fn missing_safetensors_is_one_clear_line() {
    let Some(dir) = common::model::fixtures() else { return };
    let m = llama_copy(dir);
    std::fs::remove_file(m.path().join("model.safetensors")).unwrap();
    let err = eval_fails(&["--model", s(m.path()), "--text", s(&dir.join("text.txt")), "--device", "cpu"]);
    assert!(err.contains("no model.safetensors"), "{err}");
}

#[test]
fn corrupt_safetensors_is_one_clear_line() {
    let Some(dir) = common::model::fixtures() else { return };
    let m = llama_copy(dir);
    // A garbled header, and an empty file (a download cut off at zero bytes; the file is mapped,
    // not read, so this checks the zero-length map too).
    for bytes in [&b"\x10\x00\x00\x00\x00\x00\x00\x00not a header"[..], &b""[..]] {
        std::fs::write(m.path().join("model.safetensors"), bytes).unwrap();
        let err = eval_fails(&["--model", s(m.path()), "--text", s(&dir.join("text.txt")), "--device", "cpu"]);
        assert!(err.contains("corrupt safetensors") && err.contains("model.safetensors"), "{err}");
    }
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let Some(dir) = common::model::fixtures() else { return };
    let m = llama_copy(dir);
    let cfg_path = m.path().join("config.json");
    let cfg =
        std::fs::read_to_string(&cfg_path).unwrap().replace("\"intermediate_size\": 96", "\"intermediate_size\": 100");
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = eval_fails(&["--model", s(m.path()), "--text", s(&dir.join("text.txt")), "--device", "cpu"]);
    assert!(err.contains("mlp.") && err.contains("_proj.weight"), "{err}");
    assert!(err.contains("96") && err.contains("100"), "{err}");
}

#[test]
fn unsupported_model_type_lists_the_supported_ones() {
    let Some(dir) = common::model::fixtures() else { return };
    let m = llama_copy(dir);
    let cfg_path = m.path().join("config.json");
    let cfg =
        std::fs::read_to_string(&cfg_path).unwrap().replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    std::fs::write(&cfg_path, cfg).unwrap();
    let err = eval_fails(&["--model", s(m.path()), "--text", s(&dir.join("text.txt")), "--device", "cpu"]);
    assert!(err.contains("\"gpt2\"") && err.contains("llama, qwen2, qwen3"), "{err}");
}

#[test]
fn empty_text_is_one_clear_line() {
    let Some(dir) = common::model::fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = eval_fails(&["--model", s(&dir.join("llama")), "--text", s(&empty), "--device", "cpu"]);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn ctx_larger_than_positions_is_one_clear_line() {
    let Some(dir) = common::model::fixtures() else { return };
    let err = eval_fails(&[
        "--model",
        s(&dir.join("llama")),
        "--text",
        s(&dir.join("text.txt")),
        "--ctx",
        "4096",
        "--device",
        "cpu",
    ]);
    assert!(err.contains("ctx 4096") && err.contains("max_position_embeddings 128"), "{err}");
}

#[test]
fn unknown_device_is_one_clear_line() {
    // Needs no fixture: the device is checked before anything is loaded.
    let err = eval_fails(&["--model", "whatever", "--text", "whatever.txt", "--device", "tpu"]);
    assert!(err.contains("unknown device \"tpu\""), "{err}");
}
