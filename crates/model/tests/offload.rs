//! Layer offloading against the resident model and against transformers: the same logits with
//! one layer in memory at a time, on a tied, a sharded and a Qwen3 checkpoint; a layer written
//! back is what later passes read; a truncated weights file is refused before any pass.

mod common;

use autoqat_model::{load_causal_lm, load_offloaded, LayerHook, PlainBuilder};
use tch::{Device, Kind, Tensor};

fn reference(dir: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("reference.safetensors")).expect("reference.safetensors").into_iter().collect()
}

#[test]
fn offloaded_logits_equal_the_resident_models_and_transformers() {
    let Some(dir) = common::fixtures() else { return };
    let refs = reference(dir);
    for name in ["llama", "qwen2", "qwen3"] {
        let path = dir.join(name);
        let resident = load_causal_lm(path.to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        let (loaded, offload) =
            load_offloaded(path.to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
        // Nothing of the layers is allocated until a forward enters them.
        let held: i64 = loaded
            .vs
            .variables()
            .iter()
            .filter(|(n, _)| n.starts_with("model.layers."))
            .map(|(_, v)| v.numel() as i64)
            .sum();
        assert_eq!(held, 0, "{name}: layers held before any forward");
        let full: i64 = resident.vs.variables().values().map(|v| v.numel() as i64).sum();
        let shapes: i64 = offload.shapes().map(|(_, s)| s.iter().product::<i64>()).sum();
        let outside: i64 = loaded
            .vs
            .variables()
            .iter()
            .filter(|(n, _)| !n.starts_with("model.layers."))
            .map(|(_, v)| v.numel() as i64)
            .sum();
        assert_eq!(shapes + outside, full, "{name}: the offload's shapes and the resident parameters");

        let ids = &refs["ids"];
        let a = tch::no_grad(|| resident.model.forward(ids));
        let b = tch::no_grad(|| loaded.model.forward(ids));
        offload.check().unwrap();
        assert_eq!((&a - &b).abs().max().double_value(&[]), 0.0, "{name}: offloaded vs resident logits");
        let err = (&b - &refs[&format!("logits.{name}")]).abs().max().double_value(&[]);
        assert!(err <= 1e-4, "{name}: offloaded vs transformers max abs err {err}");
        // Only the last layer entered is resident.
        let held: Vec<String> = loaded
            .vs
            .variables()
            .into_iter()
            .filter(|(n, v)| n.starts_with("model.layers.") && v.numel() > 0)
            .map(|(n, _)| n)
            .collect();
        let last = format!("model.layers.{}.", offload.num_layers() - 1);
        assert!(
            !held.is_empty() && held.iter().all(|n| n.starts_with(&last)),
            "{name}: resident after a forward: {held:?}"
        );
        offload.release();
        assert!(loaded
            .vs
            .variables()
            .iter()
            .filter(|(n, _)| n.starts_with("model.layers."))
            .all(|(_, v)| v.numel() == 0));
    }
}

#[test]
fn a_written_back_layer_is_what_later_passes_read() {
    let Some(dir) = common::fixtures() else { return };
    let path = dir.join("llama");
    let (loaded, offload) = load_offloaded(path.to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap();
    let ids = &reference(dir)["ids"];
    let before = tch::no_grad(|| loaded.model.forward(ids));
    // Zero layer 0's MLP output, write the layer back, read another layer, then run again.
    offload.enter(0);
    let mut down = loaded.vs.variables()["model.layers.0.mlp.down_proj.weight"].shallow_clone();
    let _ = tch::no_grad(|| down.zero_());
    let tmp = tempfile::tempdir().unwrap();
    offload.write_back(0, &tmp.path().join("layer0.safetensors")).unwrap();
    offload.enter(1);
    assert_eq!(loaded.vs.variables()["model.layers.0.mlp.down_proj.weight"].numel(), 0);
    let after = tch::no_grad(|| loaded.model.forward(ids));
    offload.check().unwrap();
    assert!((&before - &after).abs().max().double_value(&[]) > 1e-3, "the changed layer was not read back");
    offload.enter(0);
    assert_eq!(
        loaded.vs.variables()["model.layers.0.mlp.down_proj.weight"].abs().sum(Kind::Float).double_value(&[]),
        0.0
    );
    // Pinned, every layer stays and write-back is a no-op.
    offload.pin_all().unwrap();
    assert!(loaded.vs.variables().values().all(|v| v.numel() > 0));
}

#[test]
fn a_truncated_weights_file_is_refused_at_load() {
    let Some(dir) = common::fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir.join("llama").join(f), tmp.path().join(f)).unwrap();
    }
    let weights = tmp.path().join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&weights).unwrap().set_len(len - 100).unwrap();
    let err = load_offloaded(tmp.path().to_str().unwrap(), Device::Cpu, Kind::Float, &PlainBuilder).unwrap_err();
    assert!(err.to_string().contains("does not hold"), "{err}");
}
