//! `autoqat bench-decode` as a user runs it: a dense checkpoint with `--kernel auto` says it has
//! no packed weights and runs dense; the packed kernels refuse a non-CPU device in one line.
//! (The kernels' numerics against the dense path are checked in crates/qat/tests/kernel_decode.rs
//! and crates/compress/tests/kernel_decode.rs.)

mod common;

use common::{autoqat, s};

#[test]
fn a_dense_checkpoint_runs_dense_and_says_so() {
    let Some(fx) = common::model::fixtures() else { return };
    let model = fx.join("llama");
    let out =
        autoqat(&["bench-decode", s(&model), "--prompt-tokens", "12", "--new-tokens", "4", "--threads", "2", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-decode failed:\n{stderr}");
    assert!(stderr.contains("has no packed weights"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kernel"], "dense");
    assert_eq!(v["kernel_path"], "libtorch");
    assert_eq!(v["prompt_tokens"], 12);
    assert_eq!(v["first_ids"].as_array().unwrap().len(), 5);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["weight_bytes"].as_u64().unwrap() > 0 && v["packed_bytes"] == 0);
    // --kernel dense says nothing.
    let out = autoqat(&["bench-decode", s(&model), "--kernel", "dense", "--prompt-tokens", "4", "--new-tokens", "1"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("decode:"));
}

#[test]
fn packed_kernels_refuse_a_non_cpu_device() {
    let Some(fx) = common::model::fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A packed export (it has quant.json); it is refused before anything is read.
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join("llama").join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(
        tmp.path().join("quant.json"),
        r#"{"format":"autoqat-packed-v1","method":"ternary_absmean","granularity":"per_row","packed":[],"folded_biases":[]}"#,
    )
    .unwrap();
    let out = autoqat(&["bench-decode", s(tmp.path()), "--device", "cuda:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CPU only") && stderr.contains("--kernel dense"), "{stderr}");
}
