//! The trace losses (Top-K+Other KL at a temperature, CE on the sampled token, format loss)
//! against plain PyTorch written row by row in float64 (tests/reference/trace_loss_ref.py), on
//! targets with padded alternatives and invalid rows, which must get exactly zero gradient.

mod common;

use autoqat_toolkit::loss::{topk_other_kl, weighted_sample_ce, TraceTargets};
use tch::{Device, Kind, Tensor};

/// Eight rows over a vocabulary of 11: rows 2 and 5 invalid, rows with 1..=4 real alternatives
/// out of K = 4, structural tokens on rows 0, 3 and 5.
fn targets() -> TraceTargets {
    let (n, k) = (8i64, 4i64);
    let mut ids = Vec::new();
    let mut lps = Vec::new();
    let mut mask = Vec::new();
    let mut other = Vec::new();
    for r in 0..n {
        let real = 1 + r % 4;
        let mut mass = 0.0f64;
        for j in 0..k {
            let on = j < real && r != 2 && r != 5;
            ids.push(if on { (r * 3 + j * 2) % 11 } else { 0 });
            let lp = -0.7 - 0.6 * j as f64 - 0.05 * r as f64;
            if on {
                mass += lp.exp();
            }
            lps.push(if on { lp as f32 } else { 0.0 });
            mask.push(on);
        }
        other.push(if r == 2 || r == 5 { -1.0 } else { (1.0 - mass).ln() as f32 });
    }
    let valid: Vec<f32> = (0..n).map(|r| if r == 2 || r == 5 { 0.0 } else { 1.0 }).collect();
    let is_struct: Vec<f32> = (0..n).map(|r| if [0, 3].contains(&r) { 1.0 } else { 0.0 }).collect();
    TraceTargets {
        topk_ids: Tensor::from_slice(&ids).reshape([n, k]),
        topk_logprobs: Tensor::from_slice(&lps).reshape([n, k]),
        topk_mask: Tensor::from_slice(&mask).reshape([n, k]),
        other_logprob: Tensor::from_slice(&other),
        sample: Tensor::from_slice(&[3i64, 1, 0, 7, 2, 0, 9, 4]),
        valid: Tensor::from_slice(&valid),
        is_struct: Tensor::from_slice(&is_struct),
    }
}

fn value_and_grad(logits: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (f64, Tensor) {
    let x = logits.copy().set_requires_grad(true);
    let v = f(&x);
    v.backward();
    (v.double_value(&[]), x.grad().copy())
}

#[test]
fn trace_losses_and_gradients_match_plain_pytorch() {
    let Some(py) = common::python() else { return };
    tch::manual_seed(7);
    let t = targets();
    let logits = Tensor::randn([8, 11], (Kind::Float, Device::Cpu)) * 2.0;
    let tau = 1.3;
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        ("logits", logits.copy()),
        ("topk_ids", t.topk_ids.copy()),
        ("topk_logprobs", t.topk_logprobs.copy()),
        ("topk_mask", t.topk_mask.to_kind(Kind::Uint8)),
        ("other_logprob", t.other_logprob.copy()),
        ("sample", t.sample.copy()),
        ("valid", t.valid.copy()),
        ("is_struct", t.is_struct.copy()),
    ];
    Tensor::write_safetensors(&inputs, dir.path().join("in.safetensors")).unwrap();
    let (inp, out) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    common::run_reference(&py, "trace_loss_ref.py", &[inp.as_os_str(), out.as_os_str(), std::ffi::OsStr::new("1.3")]);
    let want: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out).unwrap().into_iter().collect();

    let mask = t.topk_mask.to_kind(Kind::Bool);
    let t = TraceTargets { topk_mask: mask, ..t };
    let kl = value_and_grad(&logits, |x| topk_other_kl(x, &t, tau));
    let ce = value_and_grad(&logits, |x| weighted_sample_ce(x, &t, &t.valid));
    let fmt = value_and_grad(&logits, |x| weighted_sample_ce(x, &t, &(&t.valid * &t.is_struct)));
    for (name, (v, g)) in [("kl", kl), ("ce", ce), ("format", fmt)] {
        let rv = want[name].double_value(&[0]);
        assert!((v - rv).abs() <= 1e-5 * rv.abs().max(1.0), "{name}: {v} vs reference {rv}");
        let err = (&g - &want[&format!("{name}_grad")]).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{name} gradient differs by {err}");
        assert!(bool::try_from(g.isfinite().all()).unwrap(), "{name} gradient has a non-finite value");
        // Invalid rows contribute nothing: their gradient is exactly zero.
        for r in [2i64, 5] {
            assert_eq!(g.get(r).abs().max().double_value(&[]), 0.0, "{name}: invalid row {r} got a gradient");
        }
    }
}

#[test]
fn a_student_with_all_its_mass_on_the_top_k_stays_finite() {
    // The student's Other bucket is 1 - sum(top-K) = 0 here; a log of it must not give NaN.
    let t = targets();
    let t = TraceTargets { topk_mask: t.topk_mask.to_kind(Kind::Bool), ..t };
    let mut logits = Tensor::full([8, 11], -80.0, (Kind::Float, Device::Cpu));
    let _ = logits.index_put_(
        &[Some(Tensor::arange(8, (Kind::Int64, Device::Cpu))), Some(t.topk_ids.select(1, 0))],
        &Tensor::from(80.0f32),
        false,
    );
    let (v, g) = value_and_grad(&logits, |x| topk_other_kl(x, &t, 1.0));
    assert!(v.is_finite(), "{v}");
    assert!(bool::try_from(g.isfinite().all()).unwrap());
}
