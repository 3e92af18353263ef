//! Quantizers, STE gradients, activation quantizers and schedules against the plain-PyTorch
//! reference in tests/reference/quant_ref.py.

mod common;

use autoqat_qat::quant::act::act_quant;
use autoqat_qat::quant::schedule::lambda_at;
use autoqat_qat::quant::{ste_blend, WeightQuant};
use autoqat_recipe::{ActGranularity, Granularity, LambdaSchedule, LrSchedule, QuantMethod};
use autoqat_toolkit::schedule::lr_factor;
use std::collections::HashMap;
use tch::{Kind, Tensor};

const METHODS: [(QuantMethod, &str); 5] = [
    (QuantMethod::TernaryAbsmean, "ternary_absmean"),
    (QuantMethod::TernaryAbsmax, "ternary_absmax"),
    (QuantMethod::TernaryDeadzone, "ternary_deadzone"),
    (QuantMethod::ParetoqStretched, "paretoq_stretched"),
    (QuantMethod::BinaryAbsmean, "binary_absmean"),
];
const GRANS: [(Granularity, &str); 5] = [
    (Granularity::PerTensor, "per_tensor"),
    (Granularity::PerRow, "per_row"),
    (Granularity::Group64, "group64"),
    (Granularity::Group128, "group128"),
    (Granularity::Group256, "group256"),
];
const LAMBDA: f64 = 0.7;
const DEADZONE_T: f64 = 0.6;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn quantizers_ste_and_schedules_match_pytorch() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(7);
    let mut inputs: Vec<(String, Tensor)> =
        vec![("lambda".into(), Tensor::from(LAMBDA as f32)), ("deadzone_t".into(), Tensor::from(DEADZONE_T as f32))];
    for (_, m) in METHODS {
        for (_, g) in GRANS {
            inputs.push((format!("w__{m}__{g}"), Tensor::randn([24, 512], (Kind::Float, tch::Device::Cpu)) * 0.05));
            inputs.push((format!("g__{m}__{g}"), Tensor::randn([24, 512], (Kind::Float, tch::Device::Cpu))));
        }
    }
    // (batch, tokens, channels) activations with outliers in a few channels
    let x = Tensor::randn([3, 10, 64], (Kind::Float, tch::Device::Cpu))
        * (Tensor::arange(64, (Kind::Float, tch::Device::Cpu)) / 16.0 + 0.1);
    inputs.push(("x".into(), x));
    inputs.push(("gx".into(), Tensor::randn([3, 10, 64], (Kind::Float, tch::Device::Cpu))));
    let in_path = dir.path().join("in.safetensors");
    let out_path = dir.path().join("out.safetensors");
    let sched_path = dir.path().join("sched.json");
    Tensor::write_safetensors(&inputs, &in_path).unwrap();
    common::run_reference(&py, "quant_ref.py", &[in_path.as_os_str(), out_path.as_os_str(), sched_path.as_os_str()]);
    let expected: HashMap<String, Tensor> = Tensor::read_safetensors(&out_path).unwrap().into_iter().collect();
    let input: HashMap<String, Tensor> = inputs.into_iter().collect();

    let mut checked = 0;
    for (method, m) in METHODS {
        for (gran, g) in GRANS {
            let wq = WeightQuant::builtin(method, gran, DEADZONE_T);
            let w = input[&format!("w__{m}__{g}")].detach().copy().set_requires_grad(true);
            let up = &input[&format!("g__{m}__{g}")];
            let alpha = wq.learned_scale().then(|| wq.init_learned_scale(&w).detach().set_requires_grad(true));
            let q = wq.fake_quant(&w, alpha.as_ref());
            let blended = ste_blend(&w, &q, LAMBDA, alpha.is_some());
            (blended * up).sum(Kind::Float).backward();
            let case = format!("{m} x {g}");
            let dq = max_diff(&q.detach(), &expected[&format!("q__{m}__{g}")]);
            assert_eq!(dq, 0.0, "{case}: quantized weights differ by {dq}");
            let dg = max_diff(&w.grad(), &expected[&format!("gw__{m}__{g}")]);
            assert_eq!(dg, 0.0, "{case}: STE weight gradient differs by {dg}");
            if let Some(a) = &alpha {
                let ga = a.grad();
                let ea = &expected[&format!("galpha__{m}__{g}")];
                let rel = max_diff(&ga, ea) / ea.abs().max().double_value(&[]).max(1e-12);
                // Gradient sums over a group may be reduced in a different order.
                assert!(rel < 1e-5, "{case}: learned-scale gradient differs (rel {rel})");
            }
            // the quantized values really are ternary/binary multiples of the scale
            let codes = wq.codes(&w, alpha.as_ref()).codes;
            let levels = codes.unique_dim(0, true, false, false).0;
            let n_levels = levels.flatten(0, -1).unique_dim(0, true, false, false).0.numel();
            assert!(n_levels <= 3, "{case}: {n_levels} code levels");
            checked += 1;
        }
    }
    assert_eq!(checked, 25);

    for bits in [8u32, 4] {
        for (gran, g) in [(ActGranularity::PerToken, "per_token"), (ActGranularity::PerChannel, "per_channel")] {
            let x = input["x"].detach().copy().set_requires_grad(true);
            let y = act_quant(&x, bits, gran);
            (&y * &input["gx"]).sum(Kind::Float).backward();
            let d = max_diff(&y.detach(), &expected[&format!("a{bits}__{g}")]);
            assert_eq!(d, 0.0, "a{bits} {g}: values differ by {d}");
            let dg = max_diff(&x.grad(), &expected[&format!("ga{bits}__{g}")]);
            assert_eq!(dg, 0.0, "a{bits} {g}: gradient differs by {dg}");
        }
    }

    let sched: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sched_path).unwrap()).unwrap();
    let meta = &sched["meta"];
    let total = meta["total"].as_u64().unwrap();
    let warm = meta["warmup"].as_u64().unwrap();
    let decay = meta["decay"].as_u64().unwrap();
    let min_frac = meta["min_frac"].as_f64().unwrap();
    for (kind, name) in [(LrSchedule::Constant, "constant"), (LrSchedule::Cosine, "cosine"), (LrSchedule::Wsd, "wsd")] {
        for (i, s) in meta["steps"].as_array().unwrap().iter().enumerate() {
            let step = s.as_u64().unwrap();
            let want = sched[name][i].as_f64().unwrap();
            let got = lr_factor(kind, step, total, warm, min_frac, decay);
            assert!((got - want).abs() < 1e-12, "lr {name} step {step}: {got} vs transformers {want}");
        }
    }
    let lw = meta["lambda_warmup"].as_u64().unwrap();
    for (kind, name) in [
        (LambdaSchedule::Constant, "constant"),
        (LambdaSchedule::Linear, "linear"),
        (LambdaSchedule::Cosine, "cosine"),
        (LambdaSchedule::Exponential, "exponential"),
        (LambdaSchedule::Step, "step"),
        (LambdaSchedule::Sigmoid, "sigmoid"),
    ] {
        for (i, s) in meta["lambda_steps"].as_array().unwrap().iter().enumerate() {
            let step = s.as_u64().unwrap();
            let want = sched["lambda"][name][i].as_f64().unwrap();
            let got = lambda_at(kind, step, lw);
            assert!((got - want).abs() < 1e-12, "lambda {name} step {step}: {got} vs {want}");
        }
    }
}

#[test]
fn ragged_groups_are_rejected_with_the_shape() {
    let wq = WeightQuant::builtin(QuantMethod::TernaryAbsmean, Granularity::Group128, 0.5);
    let err = wq.check_shape(64, 576).unwrap_err();
    assert!(err.contains("group128") && err.contains("[64, 576]"), "{err}");
    assert!(wq.check_shape(64, 512).is_ok());
}
