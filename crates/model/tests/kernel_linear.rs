//! `KernelLinear` / `KernelBuilder`: the packed-kernel layers compute what a plain f32 layer
//! with the dequantized weight computes, the builder creates no weight variable for the modules
//! it packs, and a device other than the CPU is refused in one line.

use std::collections::HashMap;
use std::sync::Arc;

use autoqat_model::autoqat_kernels::{Granularity, WeightKind};
use autoqat_model::kernel_linear::{
    var_bytes, ActMode, KernelBuilder, KernelLinear, Kernels, MixedRows, PackedMatrix, PackedWeight,
};
use autoqat_model::load::build_causal_lm;
use autoqat_model::{Linear, ModelConfig};
use tch::{Device, Kind, Tensor};

/// Deterministic pseudo-random codes of `kind`.
fn codes(kind: WeightKind, n: usize, seed: u64) -> Vec<i8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = (s >> 33) as i64;
            match kind {
                WeightKind::Binary => {
                    if r % 2 == 0 {
                        1
                    } else {
                        -1
                    }
                }
                WeightKind::Ternary => (r % 3 - 1) as i8,
                WeightKind::Q4 => (r % 15 - 7) as i8,
                WeightKind::Q8 => (r % 255 - 127) as i8,
            }
        })
        .collect()
}

fn matrix(kind: WeightKind, rows: usize, cols: usize, gran: Granularity, seed: u64) -> PackedMatrix {
    let n_scales = match gran {
        Granularity::PerTensor => 1,
        Granularity::PerRow => rows,
        Granularity::Group(g) => rows * cols.div_ceil(g),
    };
    let scales: Vec<f32> = (0..n_scales).map(|i| 0.01 + 0.001 * (i % 17) as f32).collect();
    PackedMatrix::from_codes(kind, rows, cols, &codes(kind, rows * cols, seed), &scales, gran).unwrap()
}

fn dense(w: &PackedWeight) -> Tensor {
    Tensor::from_slice(&w.dequantize()).view([w.rows() as i64, w.cols() as i64])
}

fn check(weight: PackedWeight, mode: ActMode, tol: f64) {
    tch::manual_seed(7);
    let kernels = Arc::new(Kernels::new(2));
    let (rows, cols) = (weight.rows() as i64, weight.cols() as i64);
    let w = dense(&weight);
    let bias = Tensor::randn([rows], (Kind::Float, Device::Cpu));
    let layer = KernelLinear::new("test", weight, Some(bias.shallow_clone()), mode, kernels);
    // Decode (one token) and prefill shapes.
    for shape in [vec![1, 1, cols], vec![2, 5, cols], vec![cols]] {
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let want = x.linear(&w, Some(&bias));
        let got = layer.forward(&x);
        assert_eq!(got.size(), want.size());
        let rel = (&got - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]);
        assert!(rel < tol, "{mode:?} {shape:?}: relative error {rel:e}");
    }
}

#[test]
fn kernel_linear_computes_the_dequantized_product() {
    for (kind, gran) in [
        (WeightKind::Ternary, Granularity::PerRow),
        (WeightKind::Ternary, Granularity::Group(64)),
        (WeightKind::Binary, Granularity::PerTensor),
        (WeightKind::Q4, Granularity::Group(128)),
        (WeightKind::Q8, Granularity::PerRow),
    ] {
        let m = matrix(kind, 40, 200, gran, 3);
        check(PackedWeight::Packed(m), ActMode::F32, 1e-5);
    }
    // Mixed rows: every kind present.
    let parts: Vec<(PackedMatrix, Vec<usize>)> = WeightKind::ALL
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let gran = if k == WeightKind::Q4 { Granularity::Group(128) } else { Granularity::PerRow };
            (matrix(k, 9, 300, gran, i as u64), (0..36).filter(|r| r % 4 == i).collect())
        })
        .collect();
    check(PackedWeight::Mixed(MixedRows::new(36, parts).unwrap()), ActMode::F32, 1e-5);
    // int8 inputs: close, not exact.
    check(
        PackedWeight::Packed(matrix(WeightKind::Ternary, 40, 256, Granularity::PerRow, 5)),
        ActMode::Int8PerVector,
        3e-2,
    );
}

fn tiny_config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 64,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
            "hidden_act": "silu"}"#,
    )
    .unwrap()
}

#[test]
fn kernel_builder_packs_only_the_named_modules() {
    let cfg = tiny_config();
    let q = PackedWeight::Packed(matrix(WeightKind::Ternary, 64, 64, Granularity::PerRow, 1));
    let down = PackedWeight::Packed(matrix(WeightKind::Ternary, 64, 128, Granularity::PerRow, 2));
    let packed_bytes = q.bytes() + down.bytes();
    let weights = HashMap::from([
        ("model.layers.0.self_attn.q_proj".to_string(), q),
        ("model.layers.1.mlp.down_proj".to_string(), down),
    ]);
    let b = KernelBuilder::new(Device::Cpu, Arc::new(Kernels::new(1)), ActMode::F32, weights).unwrap();
    let (vs, model) = build_causal_lm(&cfg, Device::Cpu, Kind::Float, &b).unwrap();
    b.check_all_used().unwrap();
    let vars = vs.variables();
    assert!(!vars.contains_key("model.layers.0.self_attn.q_proj.weight"));
    assert!(!vars.contains_key("model.layers.1.mlp.down_proj.weight"));
    assert!(vars.contains_key("model.layers.1.self_attn.q_proj.weight"));
    assert_eq!(b.packed_bytes(), packed_bytes);
    assert!(var_bytes(&vs) > 0);
    let logits = tch::no_grad(|| model.forward(&Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0)));
    assert_eq!(logits.size(), vec![1, 3, 100]);

    // A module the model does not have, or a wrong shape, is an error.
    let stray = HashMap::from([(
        "model.layers.9.mlp.up_proj".to_string(),
        PackedWeight::Packed(matrix(WeightKind::Ternary, 128, 64, Granularity::PerRow, 1)),
    )]);
    let b = KernelBuilder::new(Device::Cpu, Arc::new(Kernels::new(1)), ActMode::F32, stray).unwrap();
    let _ = build_causal_lm(&cfg, Device::Cpu, Kind::Float, &b).unwrap();
    let err = b.check_all_used().unwrap_err().to_string();
    assert!(err.contains("model.layers.9.mlp.up_proj"), "{err}");
    let wrong = HashMap::from([(
        "model.layers.0.mlp.up_proj".to_string(),
        PackedWeight::Packed(matrix(WeightKind::Ternary, 64, 64, Granularity::PerRow, 1)),
    )]);
    let b = KernelBuilder::new(Device::Cpu, Arc::new(Kernels::new(1)), ActMode::F32, wrong).unwrap();
    let err = build_causal_lm(&cfg, Device::Cpu, Kind::Float, &b).unwrap_err().to_string();
    assert!(err.contains("64x64") && err.contains("128x64"), "{err}");
}

#[test]
fn kernel_builder_refuses_a_non_cpu_device() {
    for device in [Device::Cuda(0), Device::Mps] {
        let err = KernelBuilder::new(device, Arc::new(Kernels::new(1)), ActMode::F32, HashMap::new()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("CPU only") && !msg.contains('\n'), "{msg}");
    }
}

#[test]
fn a_plain_layer_of_a_kernel_model_computes_what_libtorch_does() {
    tch::manual_seed(7);
    let kernels = Arc::new(Kernels::new(2));
    for (rows, cols, bias) in [(1000, 576, false), (37, 130, true), (1, 1, false)] {
        let weight = Tensor::randn([rows, cols], (Kind::Float, Device::Cpu));
        let b = bias.then(|| Tensor::randn([rows], (Kind::Float, Device::Cpu)));
        let layer = autoqat_model::DenseKernelLinear::new(
            autoqat_model::PlainLinear { weight: weight.shallow_clone(), bias: b.as_ref().map(|t| t.shallow_clone()) },
            kernels.clone(),
        );
        // One token goes through the kernels' f32 product, several through libtorch: both must
        // equal the plain product.
        for n in [1i64, 3] {
            let x = Tensor::randn([1, n, cols], (Kind::Float, Device::Cpu));
            let want = x.linear(&weight, b.as_ref());
            let got = layer.forward(&x);
            assert_eq!(got.size(), want.size());
            let err = (&got - &want).abs().max().double_value(&[]);
            let scale = want.abs().max().double_value(&[]).max(1.0);
            assert!(err <= 1e-5 * scale, "{rows}x{cols} n={n}: max error {err}");
        }
    }
}

/// A model of `cfg` whose every projection is a random packed ternary matrix (one `o_proj` of
/// mixed row kinds), with random norms, biases and embedding, its lm_head tied and dense.
fn kernel_model(cfg: &ModelConfig, mode: ActMode) -> (tch::nn::VarStore, autoqat_model::CausalLM) {
    let source = |name: &str, rows: usize, cols: usize| -> autoqat_model::Result<Option<PackedWeight>> {
        if name == "lm_head" {
            return Ok(None);
        }
        let seed = name.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        if name == "model.layers.1.self_attn.o_proj" {
            let half = rows / 2;
            let parts = vec![
                (matrix(WeightKind::Binary, half, cols, Granularity::PerRow, seed), (0..half).collect()),
                (matrix(WeightKind::Q4, rows - half, cols, Granularity::Group(64), seed + 1), (half..rows).collect()),
            ];
            return Ok(Some(PackedWeight::Mixed(MixedRows::new(rows, parts).unwrap())));
        }
        let gran = if cols.is_multiple_of(64) { Granularity::Group(64) } else { Granularity::PerRow };
        Ok(Some(PackedWeight::Packed(matrix(WeightKind::Ternary, rows, cols, gran, seed))))
    };
    let b =
        KernelBuilder::new(Device::Cpu, Arc::new(Kernels::new(2)), mode, HashMap::new()).unwrap().with_source(&source);
    let (vs, model) = build_causal_lm(cfg, Device::Cpu, Kind::Float, &b).unwrap();
    tch::manual_seed(11);
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let noise = Tensor::randn(t.size().as_slice(), (Kind::Float, Device::Cpu));
            // Scales near one (or near zero where the norm adds one), the rest of order one.
            let centre = if name.ends_with("norm.weight") && !cfg.norm_unit_offset { 1.0 } else { 0.0 };
            t.copy_(&(noise * 0.2 + centre));
        }
    });
    (vs, model)
}

fn max_rel(got: &Tensor, want: &Tensor) -> f64 {
    (got - want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]).max(1e-6)
}

#[test]
fn the_host_decode_step_computes_what_the_libtorch_step_does() {
    let configs = [
        ("llama", r#""model_type": "llama", "architectures": ["LlamaForCausalLM"]"#),
        ("qwen2 (q/k/v bias)", r#""model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]"#),
        ("qwen3 (q/k norm)", r#""model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 24"#),
        (
            "qwen3.5 attention (output gate, partial rotary, 1 + w norms)",
            r#""model_type": "qwen3_5_text", "architectures": ["Qwen3_5ForCausalLM"],
               "layer_types": ["full_attention", "full_attention"], "head_dim": 16,
               "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}"#,
        ),
    ];
    for (what, arch) in configs {
        let cfg = ModelConfig::from_json_str(&format!(
            r#"{{{arch}, "hidden_size": 96, "intermediate_size": 200, "num_hidden_layers": 2,
                "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 130,
                "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                "tie_word_embeddings": true, "hidden_act": "silu"}}"#
        ))
        .unwrap();
        for (mode, tol) in [(ActMode::F32, 1e-4), (ActMode::Int8PerVector, 5e-2), (ActMode::Int8PerBlock, 5e-2)] {
            let (_vs, mut model) = kernel_model(&cfg, mode);
            assert!(model.decodes_on_host(), "{what}: the kernel model should decode on host buffers");
            tch::no_grad(|| {
                // Prefill through libtorch in both caches, then one token at a time: host vs libtorch.
                let (mut host, mut torch) = (autoqat_model::KvCache::new(), autoqat_model::KvCache::new());
                let prompt = Tensor::from_slice(&[3i64, 77, 5, 120, 9]).unsqueeze(0);
                let _ = model.forward_cached(&prompt, &mut host);
                let _ = model.forward_cached(&prompt, &mut torch);
                let mut id = 42i64;
                for step in 0..6 {
                    let x = Tensor::from_slice(&[id]).view([1, 1]);
                    model.set_host_decode(true);
                    let got = model.forward_cached(&x, &mut host);
                    model.set_host_decode(false);
                    let want = model.forward_cached(&x, &mut torch);
                    assert_eq!(got.size(), want.size());
                    let rel = max_rel(&got, &want);
                    assert!(rel < tol, "{what} {mode:?} step {step}: relative logit error {rel:e}");
                    id = want.view([-1]).argmax(0, false).int64_value(&[]);
                    assert_eq!(got.view([-1]).argmax(0, false).int64_value(&[]), id, "{what} {mode:?} step {step}");
                }
                // Several tokens after host steps go back through libtorch on the same cache.
                let more = Tensor::from_slice(&[7i64, 8, 9]).unsqueeze(0);
                let got = model.forward_cached(&more, &mut host);
                let want = model.forward_cached(&more, &mut torch);
                assert!(max_rel(&got, &want) < tol, "{what} {mode:?}: prefill after host steps");
                assert_eq!(host.len(), torch.len());
            });
            // A one-token prompt: the host step starts from an empty cache.
            tch::no_grad(|| {
                let x = Tensor::from_slice(&[1i64]).view([1, 1]);
                model.set_host_decode(true);
                let got = model.forward_cached(&x, &mut autoqat_model::KvCache::new());
                let want = model.forward(&x);
                assert!(max_rel(&got, &want) < tol, "{what} {mode:?}: first token");
            });
        }
    }
}

#[test]
fn models_without_a_host_form_decode_on_libtorch() {
    // Plain libtorch layers (the dense reference) have no host form.
    let (_vs, model) = build_causal_lm(&tiny_config(), Device::Cpu, Kind::Float, &autoqat_model::PlainBuilder).unwrap();
    assert!(!model.decodes_on_host());
    // Nor does a Gated DeltaNet layer, even with every projection on the kernels.
    let hybrid = ModelConfig::from_json_str(
        r#"{"model_type": "qwen3_5_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "layer_types": ["linear_attention", "full_attention"], "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
            "linear_key_head_dim": 16, "linear_value_head_dim": 8, "linear_conv_kernel_dim": 4,
            "vocab_size": 100, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "hidden_act": "silu"}"#,
    )
    .unwrap();
    let (_vs, mut model) = kernel_model(&hybrid, ActMode::F32);
    assert!(!model.decodes_on_host());
    // A kernel model decodes on libtorch when asked to.
    let (_vs, mut dense_head) = kernel_model(&tiny_config(), ActMode::F32);
    assert!(dense_head.decodes_on_host());
    dense_head.set_host_decode(false);
    assert!(!dense_head.decodes_on_host());
    model.set_host_decode(true);
    let logits = tch::no_grad(|| {
        model.forward_cached(&Tensor::from_slice(&[1i64]).view([1, 1]), &mut autoqat_model::KvCache::new())
    });
    assert_eq!(logits.size(), vec![1, 1, 100]);
}
