//! `autoqat prepare` offline: a local model directory and local texts land where the recipe
//! expects them, their tokens are cached and reused, and the recipe change is committed.

mod common;

use common::autoqat;

use std::path::Path;
use std::process::Command;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A model directory with what prepare reads: config.json and a tokenizer trained here.
fn model_dir(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,
            "num_attention_heads":2,"num_key_value_heads":1,"vocab_size":300,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(300)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(ByteLevel::default().into()))
            .with_decoder(Some(ByteLevel::default().into()))
            .build()
            .unwrap();
    tok.train(&mut trainer, text.lines()).unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

fn sample_text(seed: usize, n: usize) -> String {
    let words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "to", "see", "her", "friend", "again"];
    (0..n).map(|i| words[(i * 7 + seed * 3 + i / 5) % words.len()]).collect::<Vec<_>>().join(" ") + "\n"
}

#[test]
fn prepare_with_local_files_places_texts_caches_tokens_and_commits_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let train = sample_text(1, 3000);
    let eval = sample_text(2, 800);
    let model = tmp.path().join("my-model");
    model_dir(&model, &train);
    std::fs::write(tmp.path().join("train.txt"), &train).unwrap();
    std::fs::write(tmp.path().join("eval.txt"), &eval).unwrap();
    assert!(autoqat(&["init", "--template", "smollm-ternary", ws.to_str().unwrap()]).status.success());

    let args = [
        "prepare",
        "--workspace",
        ws.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--train-text",
        tmp.path().join("train.txt").to_str().unwrap(),
        "--eval-text",
        tmp.path().join("eval.txt").to_str().unwrap(),
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = autoqat(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(std::fs::read_to_string(ws.join("data/train.txt")).unwrap(), train);
    assert_eq!(std::fs::read_to_string(ws.join("data/eval.txt")).unwrap(), eval);
    // The token file holds exactly what the model's tokenizer makes of the text.
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    for (name, text) in [("train", &train), ("eval", &eval)] {
        let want: Vec<u32> = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        let bytes = std::fs::read(ws.join(format!("data/{name}.txt.tokens"))).unwrap();
        let got: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(got, want, "{name} tokens");
    }
    // The recipe now names the local model, parses, and the change is committed.
    let recipe = autoqat_recipe::parse(&std::fs::read_to_string(ws.join("experiments/train.toml")).unwrap()).unwrap();
    assert_eq!(Path::new(&recipe.model.source), model.canonicalize().unwrap());
    assert_eq!(git(&ws, &["status", "--porcelain"]), "");
    assert_eq!(git(&ws, &["rev-list", "--count", "HEAD"]).trim(), "2");

    // Second call: nothing to redo.
    let out = autoqat(&args);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(", cached").count(), 2, "{err}");
    assert_eq!(git(&ws, &["rev-list", "--count", "HEAD"]).trim(), "2");
}

#[test]
fn prepare_names_a_missing_local_text() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let model = tmp.path().join("m");
    model_dir(&model, &sample_text(1, 500));
    assert!(autoqat(&["init", "--template", "smollm-ternary", ws.to_str().unwrap()]).status.success());
    let out = autoqat(&[
        "prepare",
        "--workspace",
        ws.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--train-text",
        "/nonexistent/train.txt",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--train-text /nonexistent/train.txt: no such file"), "{err}");
}
